"""image-mapper installed from deploy/ on the e2e control plane, run as its Deployment would.

Shared by the e2e scenarios, `make demo` and the latency figures. What differs from a
real cluster, and why:

* The bundle is applied except the Deployment, the certgen Job and the ClusterIP
  Service (no kubelet runs them, no cluster network routes them). The Service becomes
  an ExternalName Service pointing at the loopback address shell-operator listens on.
* The Job's work is done by running `bin/gen-certs` in its cluster mode, with the Job's
  environment and a token of the Job's ServiceAccount: that proves the Job's RBAC. The
  Secret it creates is then read back and its files given to shell-operator, as the
  Deployment mounts them. As its last step the Job deletes its ServiceAccount; with no
  garbage collector here, the Role and RoleBinding it owns stay (the real-cluster test
  sees them go).
* shell-operator runs with the Deployment container's environment, parsed from the
  rendered bundle; only paths, listen addresses and ports are changed (see
  `operator_env`). It authenticates with a TokenRequest token of the bundle's
  `image-mapper` ServiceAccount, so the bundle's RBAC is what it has.
* Readiness is the Deployment's readiness probe: the `ready` file in the state dir.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cluster import (
    ControlPlane,
    E2EError,
    ShellOperator,
    free_port,
    kubectl_binary,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
OPERATOR_NS = "image-mapper-system"
SERVICE = "image-mapper-webhook"
SECRET = "image-mapper-tls"
OPERATOR_SA = "image-mapper"
CERTGEN_SA = "image-mapper-certgen"
CONFIGURATION = "image-mapper-hooks"
MUTATE_WEBHOOK = "pods.mutate.imagemapper.io"
VALIDATE_WEBHOOKS = ("imagemaps.validate.imagemapper.io", "mapfiles.validate.imagemapper.io")
ORIGINALS = "imagemapper.io/original-images"
MODE_LABEL = "imagemapper.io/mode"
MAP_FILE_LABEL = "imagemapper.io/map-file"
# A namespace whose only rule lets every start prove that the API server reaches the
# operator now (and not a stopped one): e2e.invalid/probe -> e2e.invalid/probed.
PROBE_NS = "image-mapper-e2e-probe"
PROBE_IMAGE, PROBED_IMAGE = "e2e.invalid/probe:1", "e2e.invalid/probed:1"


def prerequisites() -> list[str]:
    """What is missing to run image-mapper here, each with how to install it."""
    problems = []
    if not Path("/usr/bin/python3").exists():
        problems.append("/usr/bin/python3 (the hooks' shebang): apt-get install python3")
    for tool, hint in (("openssl", "apt-get install openssl"),
                       ("setpriv", "apt-get install util-linux")):
        if not shutil.which(tool):
            problems.append(f"{tool}: {hint}")
    try:
        kubectl_binary()
    except E2EError as exc:
        problems.append(str(exc))
    if _listening("127.0.0.1", 443):
        problems.append("127.0.0.1:443 is taken by another process (a demo left running? "
                        "stop it with: python3 tests/e2e/demo.py --stop)")
    elif os.geteuid() != 0 and not _can_bind_443():
        problems.append("binding 127.0.0.1:443 (the webhook port of an ExternalName Service): "
                        "run as root, or give shell-operator CAP_NET_BIND_SERVICE")
    return problems


def _listening(address: str, port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((address, port)) == 0


def _can_bind_443() -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.9", 443))
            return True
        except OSError:
            return False


def deploy_dir() -> Path:
    """The kustomization installed: deploy/, or IMAGE_MAPPER_E2E_DEPLOY (another overlay)."""
    return Path(os.environ.get("IMAGE_MAPPER_E2E_DEPLOY") or REPO / "deploy")


def pod(name: str, namespace: str, *images: str, **extra: Any) -> dict[str, Any]:
    """A Pod manifest with one container per image (c0, c1, ...)."""
    containers = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": containers},
    }
    for key, value in extra.items():
        target = manifest["metadata"] if key in ("labels", "annotations") else manifest["spec"]
        target[key] = value
    return manifest


def imagemap(name: str, namespace: str, entries: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "apiVersion": "imagemapper.io/v1alpha1",
        "kind": "ImageMap",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"map": entries},
    }


def mapfile(name: str, namespace: str, text: str, key: str = "maps") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {MAP_FILE_LABEL: "true"}},
        "data": {key: text},
    }


def images_of(stored: dict[str, Any]) -> dict[str, str]:
    """{"containers/<name>": image, ...} of a stored Pod (same keys as the annotation)."""
    spec = stored.get("spec") or {}
    found = {}
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(kind) or []:
            found[f"{kind}/{container['name']}"] = container.get("image")
    for volume in spec.get("volumes") or []:
        if "image" in volume:
            found[f"volumes/{volume['name']}"] = volume["image"].get("reference")
    return found


def originals_of(stored: dict[str, Any]) -> dict[str, str] | None:
    value = ((stored.get("metadata") or {}).get("annotations") or {}).get(ORIGINALS)
    return json.loads(value) if value is not None else None


# ------------------------------------------------------------------------ the bundle


@dataclass
class Bundle:
    """`kubectl kustomize deploy/`, split into what the e2e applies and what it replaces."""

    applied: list[dict[str, Any]]
    skipped: list[dict[str, Any]]

    @classmethod
    def render(cls, control_plane: ControlPlane | None = None, path: Path | None = None) -> Bundle:
        """``path``: an overlay of deploy/ (default: deploy/ itself)."""
        argv = [kubectl_binary(), "kustomize", str(path or deploy_dir())]
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        if result.returncode != 0:
            raise E2EError(f"kubectl kustomize deploy/ failed: {result.stderr.strip()}")
        docs = [d for d in yaml.safe_load_all(result.stdout) if d]
        applied, skipped = [], []
        for doc in docs:
            (skipped if cls._replaced(doc) else applied).append(doc)
        kinds = sorted(d["kind"] for d in skipped)
        if kinds != ["Deployment", "Job", "Service"]:
            raise E2EError(f"bundle changed shape: expected to replace a Deployment, a Job and "
                           f"the ClusterIP Service, found {kinds}")
        return cls(applied, skipped)

    @staticmethod
    def _replaced(doc: dict[str, Any]) -> bool:
        """Objects that need a kubelet or a cluster network."""
        if doc["kind"] in ("Deployment", "Job"):
            return True
        return doc["kind"] == "Service" and doc.get("spec", {}).get("type", "ClusterIP") == "ClusterIP"

    def one(self, kind: str) -> dict[str, Any]:
        return next(d for d in self.skipped + self.applied if d["kind"] == kind)

    def applied_yaml(self) -> str:
        return yaml.safe_dump_all(self.applied, sort_keys=False)

    @staticmethod
    def container_env(workload: dict[str, Any]) -> dict[str, str]:
        """The first container's env, with `fieldRef: metadata.namespace` resolved."""
        spec = workload["spec"]["template"]["spec"]
        namespace = workload["metadata"]["namespace"]
        env = {}
        for item in spec["containers"][0].get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
            elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
                env[item["name"]] = namespace
            else:
                raise E2EError(f"cannot resolve env {item['name']} of {workload['kind']} outside a Pod")
        return env


# ---------------------------------------------------------------------- installation


@dataclass
class Replica:
    """One shell-operator process standing in for one Pod of the Deployment."""

    operator: ShellOperator
    state_dir: Path
    env: dict[str, str]

    @property
    def ready_file(self) -> Path:
        return self.state_dir / "ready"

    def alive(self) -> bool:
        return self.operator.alive()

    def hook_metrics(self) -> str:
        return self.operator.metrics(hooks=True)

    def sync_runs(self) -> tuple[int, int]:
        """(sync runs started, sync runs finished), from the log. A run whose status or
        Event write the API server refused is finished too (allowFailure)."""
        started = finished = 0
        for record in self.operator.log_records():
            if record.get("hook") == "sync.py":
                started += record.get("msg") == "Execute hook"
                finished += record.get("msg") in ("Hook executed successfully",
                                                  "Hook failed, but allowed to fail")
        return started, finished

    def wait_sync_idle(self, quiet: float = 0.6, timeout: float = 20) -> None:
        """Until no sync run is going on and none started for `quiet` seconds, so that a
        test can damage the snapshot without a queued run repairing it at once."""
        deadline = time.monotonic() + timeout
        last, since = self.sync_runs(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.sync_runs()
            if now != last:
                last, since = now, time.monotonic()
            elif now[0] == now[1] and time.monotonic() - since >= quiet:
                return
        raise E2EError(f"the sync hook did not go idle within {timeout}s (runs {last})")


@dataclass
class Installation:
    """The bundle applied to `control_plane`, and the operator replicas serving it."""

    control_plane: ControlPlane
    bundle: Bundle = field(default_factory=Bundle.render)
    tls_dir: Path | None = None
    certgen_log: str = ""  # bin/gen-certs's stderr, last run
    replicas: list[Replica] = field(default_factory=list)
    _runs: int = 0

    @property
    def workdir(self) -> Path:
        assert self.control_plane.workdir is not None
        return self.control_plane.workdir

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.control_plane.kubectl(*args, **kwargs)

    # ---- install

    def install(self) -> None:
        """Apply the bundle (minus what needs a kubelet), make TLS as the Job would."""
        self.control_plane.apply(self.bundle.applied_yaml())
        self.kubectl("wait", "--for=condition=Established", "--timeout=30s",
                     "crd/imagemaps.imagemapper.io")
        # No controller-manager: ServiceAccount admission wants `default` in each namespace.
        self.control_plane.create_service_account(OPERATOR_NS, "default")
        self.control_plane.create_webhook_service(OPERATOR_NS, SERVICE, "localhost")
        self.run_certgen()
        self.tls_dir = self.read_tls_secret()
        # Labelled enabled, so that the probe works in opt-in mode too.
        self.control_plane.create_namespace(PROBE_NS, {MODE_LABEL: "enabled"})
        self.control_plane.apply(imagemap("probe", PROBE_NS, [
            {"from": PROBE_IMAGE.split(":")[0], "to": PROBED_IMAGE.split(":")[0]}]))

    def run_certgen(self) -> subprocess.CompletedProcess[str]:
        """bin/gen-certs with the Job's env, authenticated as the Job's ServiceAccount."""
        job = self.bundle.one("Job")
        env = self.bundle.container_env(job)
        command = job["spec"]["template"]["spec"]["containers"][0]["command"]
        if not command[0].endswith("/bin/gen-certs"):
            raise E2EError(f"the certgen Job runs {command}, not bin/gen-certs")
        home = self.workdir / "certgen-home"
        home.mkdir(exist_ok=True)
        config = self.control_plane.token_kubeconfig(OPERATOR_NS, CERTGEN_SA)
        env.update({
            "HOME": str(home),
            "TMPDIR": str(home),
            "KUBECONFIG": str(config),
            "PATH": f"{Path(kubectl_binary()).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        })
        result = subprocess.run([str(REPO / "bin" / "gen-certs"), *command[1:]], env=env,
                                capture_output=True, text=True, timeout=60, check=False)
        self.certgen_log = result.stderr
        if result.returncode != 0:
            raise E2EError(f"bin/gen-certs as {CERTGEN_SA} failed ({result.returncode}): "
                           f"{result.stderr.strip()}")
        return result

    def restore_certgen_rbac(self) -> None:
        """What `kubectl apply` of the bundle does after the Job removed its access."""
        names = {("ServiceAccount", CERTGEN_SA), ("Role", CERTGEN_SA), ("RoleBinding", CERTGEN_SA)}
        docs = [d for d in self.bundle.applied if (d["kind"], d["metadata"]["name"]) in names]
        assert len(docs) == 3, "the bundle no longer has the certgen ServiceAccount, Role and RoleBinding"
        self.control_plane.apply(yaml.safe_dump_all(docs, sort_keys=False))

    def read_tls_secret(self) -> Path:
        """The Secret's keys as files, as the Deployment's secret volume would show them."""
        secret = self.control_plane.kubectl_json("get", "secret", SECRET, "-n", OPERATOR_NS)
        directory = self.workdir / "validating-certs"
        directory.mkdir(exist_ok=True)
        for key in ("ca.crt", "tls.crt", "tls.key"):
            (directory / key).write_bytes(base64.b64decode(secret["data"][key]))
        (directory / "tls.key").chmod(0o600)
        return directory

    # ---- operator

    def operator_env(self, state_dir: Path, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """The Deployment container's env; only what cannot hold outside a container changes.

        Changed: the hooks dir (the image's /hooks is the repo's hooks/), PYTHONPATH
        (/opt/image-mapper/lib is lib/), the state and tmp dirs and the debug socket
        (emptyDir mounts), the certificate paths (the Secret volume), and the ports:
        the webhook listens on 443 because an ExternalName Service has no targetPort,
        the metrics port is a free one because replicas share one address space.
        """
        assert self.tls_dir is not None, "install() first"
        env = self.bundle.container_env(self.bundle.one("Deployment"))
        tmp = state_dir.parent / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        replace = {
            "SHELL_OPERATOR_HOOKS_DIR": str(REPO / "hooks"),
            "SHELL_OPERATOR_TMP_DIR": str(tmp),
            "DEBUG_UNIX_SOCKET": str(state_dir.parent / "debug.socket"),
            "VALIDATING_WEBHOOK_SERVER_CERT": str(self.tls_dir / "tls.crt"),
            "VALIDATING_WEBHOOK_SERVER_KEY": str(self.tls_dir / "tls.key"),
            "VALIDATING_WEBHOOK_CA": str(self.tls_dir / "ca.crt"),
            "VALIDATING_WEBHOOK_LISTEN_PORT": "443",
            "SHELL_OPERATOR_LISTEN_PORT": str(free_port()),
            "PYTHONPATH": str(REPO / "lib"),
            "IMAGE_MAPPER_STATE_DIR": str(state_dir),
        }
        unknown = set(replace) - set(env)
        if unknown:
            raise E2EError(f"the Deployment no longer sets {sorted(unknown)}; update install.py")
        env.update(replace)
        env.update(overrides or {})
        return env

    def start(self, overrides: Mapping[str, str] | None = None, *,
              listen_address: str = "127.0.0.1", wait: bool = True,
              hooks_dir: Path | None = None) -> Replica:
        """Start one replica (a fresh state dir, like a new Pod) and wait until it serves.

        ``hooks_dir``: another hooks directory (latency.py adds a test hook to ours)."""
        self._runs += 1
        state_dir = self.workdir / f"replica-{self._runs}" / "state"
        state_dir.mkdir(parents=True)
        env = self.operator_env(state_dir, overrides)
        assert self.tls_dir is not None
        operator = self.control_plane.start_shell_operator(
            hooks_dir or REPO / "hooks",
            env,
            self.control_plane.token_kubeconfig(OPERATOR_NS, OPERATOR_SA),
            namespace=env["SHELL_OPERATOR_NAMESPACE"],
            service_name=env["VALIDATING_WEBHOOK_SERVICE_NAME"],
            configuration_name=env["VALIDATING_WEBHOOK_CONFIGURATION_NAME"],
            listen_address=listen_address,
            metrics_port=int(env["SHELL_OPERATOR_LISTEN_PORT"]),
            create_service=False,
            tls=(self.tls_dir / "tls.crt", self.tls_dir / "tls.key", self.tls_dir / "ca.crt"),
        )
        # The webhook configuration must outlive a stopped replica, as in a cluster.
        operator.cleanup_webhooks = False
        replica = Replica(operator, state_dir, env)
        self.replicas.append(replica)
        if wait:
            self.wait_ready(replica)
        return replica

    def wait_ready(self, replica: Replica, timeout: float = 60) -> None:
        """Readiness as the Deployment probes it, then registration as the API server sees it."""

        def ready() -> bool:
            replica.operator.process.check_alive()
            return replica.ready_file.exists()

        wait_until(ready, timeout, f"the readiness file {replica.ready_file}")
        replica.operator.wait_ready(("mutating", "validating"), timeout)
        ca = (self.tls_dir / "ca.crt").read_bytes() if self.tls_dir else b""
        policy = replica.env.get("IMAGE_MAPPER_FAILURE_POLICY", "Fail")

        def registered() -> bool:
            replica.operator.process.check_alive()
            config = self.control_plane.kubectl_json(
                "get", "mutatingwebhookconfiguration", CONFIGURATION)
            hooks = {w["name"]: w for w in config.get("webhooks") or []}
            hook = hooks.get(MUTATE_WEBHOOK) or {}
            return (base64.b64decode(hook.get("clientConfig", {}).get("caBundle", "")) == ca
                    and hook.get("failurePolicy") == policy
                    and hook.get("reinvocationPolicy") == "IfNeeded")

        wait_until(registered, timeout,
                   f"{CONFIGURATION} with our CA, failurePolicy {policy} and IfNeeded")
        self.wait_effective(timeout)

    def wait_effective(self, timeout: float = 30) -> None:
        """Until the API server calls the webhook (it loads configurations asynchronously)."""

        def rewritten() -> bool:
            stored = self.control_plane.create(pod("probe", PROBE_NS, PROBE_IMAGE), dry_run=True)
            return images_of(stored)["containers/c0"] == PROBED_IMAGE

        wait_until(rewritten, timeout, "the API server to reach the image-mapper webhook")

    def stop_all(self) -> None:
        for replica in self.replicas:
            replica.operator.stop()
        self.replicas.clear()

    # ---- uninstall

    def uninstall(self) -> subprocess.CompletedProcess[str]:
        """`kubectl delete` of what install() applied (the replaced objects are not there)."""
        return self.kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false",
                            input=self.bundle.applied_yaml(), timeout=120)


@contextmanager
def serving(control_plane: ControlPlane, overrides: Mapping[str, str] | None = None, *,
            start: bool = True, bundle: Bundle | None = None) -> Iterator[Installation]:
    """A test module's installation: the bundle installed and (unless start=False) one
    replica serving with `overrides`, the probe ImageMap removed. On exit the replicas stop
    and the webhook configurations go: one that nobody serves (failurePolicy Fail) would
    block the next module's Pods."""
    missing = prerequisites()
    if missing:
        import pytest

        pytest.fail("image-mapper e2e prerequisites missing:\n  " + "\n  ".join(missing), pytrace=False)
    installation = Installation(control_plane, bundle) if bundle else Installation(control_plane)
    installation.install()
    try:
        if start:
            installation.start(overrides)
            control_plane.kubectl("delete", "imagemap", "probe", "-n", PROBE_NS, "--ignore-not-found")
        yield installation
    finally:
        installation.stop_all()
        control_plane.kubectl("delete", "mutatingwebhookconfiguration,validatingwebhookconfiguration",
                              CONFIGURATION, "--ignore-not-found", check=False)
