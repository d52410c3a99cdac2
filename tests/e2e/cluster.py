"""A throwaway Kubernetes control plane (etcd + kube-apiserver) and shell-operator runs.

The point is to test the real chain: kube-apiserver -> admission webhook ->
shell-operator -> hook -> stored object, without Docker, kubelet, scheduler or
controller-manager. Everything listens on 127.0.0.1 only and is stopped by PID.

Missing controller-manager means: no `default` ServiceAccount is created for new
namespaces (create_namespace() does it), namespaces never finish deleting, and no Pod
ever runs (Pods stay Pending, which is all admission tests need).

Webhook routing without a cluster network: shell-operator registers its webhooks with
`clientConfig.service` (<service>.<namespace>, port 443). kube-apiserver resolves a
Service of type ExternalName to `https://<externalName>:443` and checks the serving
certificate against `<service>.<namespace>.svc`. So start_shell_operator() creates such a
Service pointing at `localhost`, and shell-operator listens on 127.0.0.1:443 with a
certificate for that name, signed by the control plane CA.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

import yaml

T = TypeVar("T")

BUILD_SCRIPT = "tests/e2e/build-binaries.sh"
BINARIES = ("etcd", "kube-apiserver", "shell-operator")
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/24"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"


class E2EError(RuntimeError):
    """The environment (not the product) misbehaved: a process died, a wait timed out."""


def cache_dir() -> Path:
    """Where build-binaries.sh puts its output; both must agree."""
    default = Path.home() / ".cache" / "image-mapper-e2e"
    return Path(os.environ.get("IMAGE_MAPPER_E2E_CACHE", default))


def bin_dir() -> Path:
    return cache_dir() / "bin"


def missing_binaries() -> list[str]:
    """Names of the binaries build-binaries.sh has not produced yet."""
    return [name for name in BINARIES if not os.access(bin_dir() / name, os.X_OK)]


def kubectl_binary() -> str:
    """kubectl from IMAGE_MAPPER_E2E_KUBECTL or PATH (a prerequisite, not built)."""
    found = os.environ.get("IMAGE_MAPPER_E2E_KUBECTL") or shutil.which("kubectl")
    if not found:
        raise E2EError("kubectl not found: install it or set IMAGE_MAPPER_E2E_KUBECTL")
    return found


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports that were free on 127.0.0.1 a moment ago (the race
    with other programs is accepted; the sockets are held together so that the ports
    differ from each other)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def wait_until(
    probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2
) -> T:
    """Poll `probe` until it returns something truthy; raise E2EError naming `what`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise E2EError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


# --------------------------------------------------------------------------- PKI


class PKI:
    """A CA and the certificates signed by it, made with the openssl CLI (no Python deps)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_cert = self.dir / "ca.crt"
        self.ca_key = self.dir / "ca.key"
        self._openssl(
            "req",
            "-x509",
            *self._new_key(self.ca_key),
            "-out",
            str(self.ca_cert),
            "-subj",
            "/CN=image-mapper-e2e-ca",
            *self._extensions(
                "ca",
                [
                    "basicConstraints = critical,CA:TRUE",
                    "keyUsage = critical,keyCertSign,cRLSign,digitalSignature",
                    "subjectKeyIdentifier = hash",
                ],
            ),
        )

    def _openssl(self, *args: str) -> None:
        result = subprocess.run(
            ["openssl", *args], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise E2EError(f"openssl {args[0]} failed: {result.stderr.strip()}")

    @staticmethod
    def _new_key(key: Path) -> list[str]:
        # P-256 keys: generated in milliseconds, accepted by Go's TLS and JWT code.
        options = "-new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3"
        return [*options.split(), "-keyout", str(key)]

    def _extensions(self, name: str, lines: list[str]) -> list[str]:
        """A throwaway openssl config so that the system openssl.cnf cannot add defaults."""
        cnf = self.dir / f"{name}.cnf"
        cnf.write_text(
            "[req]\ndistinguished_name = dn\n[dn]\n[ext]\n" + "\n".join(lines) + "\n"
        )
        return ["-config", str(cnf), "-extensions", "ext"]

    def issue(
        self,
        name: str,
        common_name: str,
        *,
        organization: str | None = None,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        client: bool = False,
    ) -> tuple[Path, Path]:
        """Sign a leaf certificate; returns (cert, key) paths under the PKI dir."""
        cert, key = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        subject = f"/CN={common_name}" + (f"/O={organization}" if organization else "")
        lines = [
            "basicConstraints = critical,CA:FALSE",
            "keyUsage = critical,digitalSignature,keyEncipherment",
            f"extendedKeyUsage = {'clientAuth' if client else 'serverAuth'}",
            "authorityKeyIdentifier = keyid",
        ]
        sans = [f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips]
        if sans:
            lines.append("subjectAltName = " + ",".join(sans))
        self._openssl(
            "req",
            "-x509",
            *self._new_key(key),
            "-out",
            str(cert),
            "-subj",
            subject,
            "-CA",
            str(self.ca_cert),
            "-CAkey",
            str(self.ca_key),
            *self._extensions(name, lines),
        )
        return cert, key

    def key_pair(self, name: str) -> tuple[Path, Path]:
        """A bare key pair (private, public) for service-account token signing."""
        private, public = self.dir / f"{name}.key", self.dir / f"{name}.pub"
        self._openssl(
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            str(private),
        )
        self._openssl("pkey", "-in", str(private), "-pubout", "-out", str(public))
        return private, public


# ---------------------------------------------------------------------- processes


def _die_with_parent(argv: list[str]) -> list[str]:
    """Prefix argv so that the child gets SIGKILL when the test process dies: even a
    killed pytest leaves no etcd, apiserver or shell-operator behind. setpriv (from
    util-linux) sets the signal and execs argv in place, so the PID stays the same."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv


@dataclass
class Process:
    """A child process with its log file; stop() signals its whole process group."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    stopped: bool = False

    @classmethod
    def spawn(
        cls,
        name: str,
        argv: list[str],
        log_path: Path,
        env: Mapping[str, str],
        die_with_parent: bool = True,
    ) -> Process:
        """Start argv; die_with_parent=False for processes that must outlive the
        caller (a cluster kept running by `make demo KEEP=1`)."""
        log = log_path.open("ab")
        try:
            popen = subprocess.Popen(
                _die_with_parent(argv) if die_with_parent else argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env),
                start_new_session=True,
            )
        finally:
            log.close()
        return cls(name, popen, log_path)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def logs(self) -> str:
        return (
            self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        )

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.logs().splitlines()[-lines:])

    def check_alive(self) -> None:
        if not self.alive():
            raise E2EError(
                f"{self.name} (pid {self.pid}) exited with {self.popen.returncode}; "
                f"log {self.log_path}:\n{self.tail()}"
            )

    def kill(self) -> None:
        """SIGKILL the process group at once, as a crash or an OOM kill would."""
        if self.stopped:
            return
        self.stopped = True
        self._signal(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process, then SIGKILL the process group we created.

        Only the process itself gets SIGTERM, as a container runtime signals PID 1:
        hook processes still running finish their work (a SIGTERMed admission hook
        would turn into "Hook failed") and are killed with the group afterwards.
        """
        if self.stopped:
            return
        self.stopped = True
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.popen.wait(5)
        # Hook processes may outlive shell-operator; they are in the same group.
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


# ------------------------------------------------------------------ shell-operator


@dataclass
class ShellOperator:
    """A running shell-operator; see ControlPlane.start_shell_operator()."""

    process: Process
    control_plane: ControlPlane
    namespace: str
    service_name: str
    configuration_name: str
    listen_address: str
    listen_port: int
    metrics_port: int
    tmp_dir: Path
    ca_file: Path
    cleanup_webhooks: bool = True

    @property
    def metrics_url(self) -> str:
        """Prometheus text of shell-operator itself; hook metrics are at .../metrics/hooks."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def hook_metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics/hooks"

    @property
    def healthz_url(self) -> str:
        return f"https://{self.listen_address}:{self.listen_port}/healthz"

    @property
    def webhook_configuration(self) -> str:
        """Name of the Validating/MutatingWebhookConfiguration shell-operator creates."""
        return f"{self.configuration_name}-hooks"

    def logs(self) -> str:
        return self.process.logs()

    def log_records(self) -> list[dict[str, Any]]:
        """The log as parsed JSON records (LOG_TYPE=json); non-JSON lines are skipped."""
        records = []
        for line in self.logs().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def wait_log(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30
    ) -> dict[str, Any]:
        """Wait for a JSON log record matching `predicate`; returns it. For example
        lambda r: r.get("msg") == "Hook executed successfully" and r.get("hook") ==
        "sync.py" (records carry "hook", "binding", "event", "task", "queue")."""

        def found() -> dict[str, Any] | None:
            match = next((r for r in self.log_records() if predicate(r)), None)
            if match is None:
                self.process.check_alive()
            return match

        return wait_until(
            found, timeout, f"a matching log record in {self.process.log_path}"
        )

    def alive(self) -> bool:
        return self.process.alive()

    def metrics(self, hooks: bool = False) -> str:
        url = self.hook_metrics_url if hooks else self.metrics_url
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    def wait_ready(
        self, kinds: tuple[str, ...] = ("mutating",), timeout: float = 60
    ) -> None:
        """Wait for the webhook server and the named webhook configuration kinds.

        kinds: "mutating" and/or "validating" - the configurations the hooks declare.
        Pass () for hooks without admission bindings (then only metrics are awaited).
        """
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.check_hostname = False
        # Present the API server's webhook client certificate, as a probe that works
        # whether or not the operator requires it (VALIDATING_WEBHOOK_CLIENT_CA).
        client = getattr(self.control_plane, "webhook_client_pki", None)
        if client is not None:
            context.load_cert_chain(client.dir / "client.crt", client.dir / "client.key")

        def metrics_up() -> bool:
            self.process.check_alive()
            with urllib.request.urlopen(self.metrics_url, timeout=2) as response:
                return response.status == 200

        def healthz() -> bool:
            self.process.check_alive()
            with urllib.request.urlopen(
                self.healthz_url, timeout=2, context=context
            ) as response:
                return response.status == 200

        def configured(kind: str) -> bool:
            self.process.check_alive()
            result = self.control_plane.kubectl(
                "get",
                f"{kind}webhookconfiguration",
                self.webhook_configuration,
                "-o",
                "name",
                check=False,
            )
            return result.returncode == 0

        if kinds:
            wait_until(
                healthz, timeout, f"shell-operator webhook server {self.healthz_url}"
            )
        for kind in kinds:
            wait_until(
                lambda k=kind: configured(k),
                timeout,
                f"{kind}webhookconfiguration {self.webhook_configuration}",
            )
        wait_until(metrics_up, timeout, f"shell-operator metrics {self.metrics_url}")

    def stop(self) -> None:
        """Stop the process; delete its webhook configurations so that no later request
        is refused by a webhook nobody serves (shell-operator never deletes them)."""
        self.process.stop()
        if self.cleanup_webhooks and self.control_plane.running():
            for kind in ("mutating", "validating"):
                self.control_plane.kubectl(
                    "delete",
                    f"{kind}webhookconfiguration",
                    self.webhook_configuration,
                    "--ignore-not-found",
                    "--wait=false",
                    check=False,
                )


# ------------------------------------------------------------------ control plane


@dataclass
class ControlPlane:
    """etcd + kube-apiserver in a temporary directory. Use as a context manager:

    with ControlPlane() as cp:
        cp.kubectl("get", "ns")
    """

    workdir: Path | None = None
    keep_workdir: bool = False
    processes: list[Process] = field(default_factory=list)
    operators: list[ShellOperator] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._own_workdir = self.workdir is None
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="image-mapper-e2e-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.api_port = 0
        self.etcd_port = 0
        self.pki: PKI | None = None
        self.admin_kubeconfig = self.workdir / "admin.kubeconfig"
        self._operator_count = 0
        self._die_with_parent = True

    # ---- lifecycle

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def ca_file(self) -> Path:
        assert self.pki is not None, "control plane not started"
        return self.pki.ca_cert

    def start(self, timeout: float = 90) -> None:
        """Start etcd and kube-apiserver; on any failure stop what was started."""
        try:
            missing = missing_binaries()
            if missing:
                raise E2EError(
                    f"missing e2e binaries {missing} in {bin_dir()}: run {BUILD_SCRIPT}"
                )
            self._make_pki()
            self._start_etcd()
            self._start_apiserver()
            self._write_kubeconfig(
                self.admin_kubeconfig,
                "admin",
                {
                    "client-certificate": str(self.pki.dir / "admin.crt"),
                    "client-key": str(self.pki.dir / "admin.key"),
                },
            )
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop shell-operators, then kube-apiserver, then etcd; remove the temp dir."""
        for operator in reversed(self.operators):
            operator.cleanup_webhooks = False  # the API server goes away anyway
            operator.stop()
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        if self._own_workdir and not self.keep_workdir and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)

    def running(self) -> bool:
        return bool(self.processes) and all(p.alive() for p in self.processes)

    def logs(self, name: str) -> str:
        """Log of "etcd" or "kube-apiserver" (for failure messages)."""
        return next((p.logs() for p in self.processes if p.name == name), "")

    # ---- setup steps

    def _make_pki(self) -> None:
        self.pki = PKI(self.workdir / "pki")
        self.pki.issue(
            "apiserver",
            "kube-apiserver",
            dns=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=("127.0.0.1", "10.96.0.1", *self._apiserver_extra_ips()),
        )
        self.pki.issue("admin", "e2e-admin", organization="system:masters", client=True)
        self.pki.key_pair("service-account")
        self._webhook_client_config()

    def _webhook_client_config(self) -> None:
        """The API server presents a client certificate to every webhook Service (`*.svc`),
        from a CA of its own, so a webhook can require it (docs/security.md)."""
        self.webhook_client_pki = PKI(self.workdir / "webhook-client-pki")
        cert, key = self.webhook_client_pki.issue("client", "kube-apiserver-webhook-client", client=True)
        kubeconfig = self.workdir / "webhook-client.kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "users": [{"name": "*.svc", "user": {"client-certificate": str(cert), "client-key": str(key)}}]}))
        plugin = {"apiVersion": "apiserver.config.k8s.io/v1", "kind": "WebhookAdmissionConfiguration",
                  "kubeConfigFile": str(kubeconfig)}
        self.admission_config = self.workdir / "admission.yaml"
        self.admission_config.write_text(yaml.safe_dump({
            "apiVersion": "apiserver.config.k8s.io/v1", "kind": "AdmissionConfiguration",
            "plugins": [{"name": name, "configuration": plugin}
                        for name in ("MutatingAdmissionWebhook", "ValidatingAdmissionWebhook")]}))

    @property
    def webhook_client_ca(self) -> Path:
        """The CA that signed the API server's webhook client certificate."""
        return self.webhook_client_pki.ca_cert

    def _apiserver_extra_ips(self) -> tuple[str, ...]:
        """More IP SANs for the API server certificate (a subclass's node address)."""
        return ()

    def _http_get(self, url: str) -> str:
        """GET url from where the control plane lives (see _wrap)."""
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()

    def _wrap(self, argv: list[str]) -> list[str]:
        """The command line that runs argv where the control plane lives. Here as is;
        realcluster.RealCluster runs it inside the cluster's network namespace."""
        return argv

    def _spawn(
        self, name: str, argv: list[str], env: Mapping[str, str] | None = None
    ) -> Process:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            **dict(env or {}),
        }
        process = Process.spawn(
            name,
            self._wrap(argv),
            self.workdir / f"{name}.log",
            env,
            die_with_parent=self._die_with_parent,
        )
        self.processes.append(process)
        return process

    def _start_etcd(self) -> None:
        self.etcd_port, peer_port = free_ports(2)
        client, peer = (
            f"http://127.0.0.1:{self.etcd_port}",
            f"http://127.0.0.1:{peer_port}",
        )
        etcd = self._spawn(
            "etcd",
            [
                str(bin_dir() / "etcd"),
                "--name=e2e",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=e2e={peer}",
                "--initial-cluster-state=new",
                "--logger=zap",
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            etcd.check_alive()
            return json.loads(self._http_get(f"{client}/health")).get("health") == "true"

        wait_until(healthy, 30, "etcd /health")

    def apiserver_flags(self) -> list[str]:
        """The kube-apiserver command line (kept public so that a report can show it)."""
        assert self.pki is not None
        pki = self.pki.dir
        return [
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.api_port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki / 'service-account.pub'}",
            f"--service-account-signing-key-file={pki / 'service-account.key'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # The defaults already include both webhook plugins; naming them keeps the
            # environment honest if a future default set drops one.
            "--enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
            f"--admission-control-config-file={self.admission_config}",
            # No kubelet, no nodes: the 127.0.0.1 endpoint of Service `kubernetes` is
            # invalid anyway, so do not reconcile it.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            # Image volumes (spec.volumes[*].image) are beta and off by default in 1.34;
            # without the gate the API server silently drops such volumes, and the
            # webhook could not be shown to rewrite them.
            "--feature-gates=ImageVolume=true",
        ]

    def _start_apiserver(self) -> None:
        self.api_port = free_port()
        self._spawn(
            "kube-apiserver",
            [str(bin_dir() / "kube-apiserver"), *self.apiserver_flags()],
        )

    def _write_kubeconfig(
        self, path: Path, user: str, credentials: dict[str, str]
    ) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "e2e",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.ca_file),
                    },
                }
            ],
            "users": [{"name": user, "user": credentials}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": user}}],
            "current-context": "e2e",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    # ---- client helpers

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this control plane (admin unless `kubeconfig` is given).

        Returns the CompletedProcess (text). With check=True a non-zero exit raises
        E2EError carrying stderr.
        """
        argv = self._wrap(
            [
                kubectl_binary(),
                f"--kubeconfig={kubeconfig or self.admin_kubeconfig}",
                *args,
            ]
        )
        result = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(self.workdir),
            },
        )
        if check and result.returncode != 0:
            raise E2EError(
                f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def kubectl_json(self, *args: str, **kwargs: Any) -> Any:
        """kubectl ... -o json, parsed."""
        return json.loads(self.kubectl(*args, "-o", "json", **kwargs).stdout)

    def apply(
        self, manifest: str | dict[str, Any] | list[dict[str, Any]], **kwargs: Any
    ) -> str:
        """kubectl apply -f - with YAML text or objects; returns kubectl's stdout."""
        if not isinstance(manifest, str):
            docs = manifest if isinstance(manifest, list) else [manifest]
            manifest = yaml.safe_dump_all(docs, sort_keys=False)
        return self.kubectl("apply", "-f", "-", input=manifest, **kwargs).stdout

    def create(
        self, manifest: dict[str, Any], dry_run: bool = False, **kwargs: Any
    ) -> dict[str, Any]:
        """kubectl create; returns the object as stored (after admission).

        dry_run=True asks the server to run admission (webhooks included, since
        shell-operator registers sideEffects None) without storing anything.
        """
        args = ["create", "-f", "-", "-o", "json"] + (
            ["--dry-run=server"] if dry_run else []
        )
        return json.loads(
            self.kubectl(*args, input=json.dumps(manifest), **kwargs).stdout
        )

    def wait_ready(self, timeout: float = 90) -> None:
        """Wait until /readyz is ok and the default namespace and RBAC roles exist."""

        def ready() -> bool:
            for process in self.processes:
                process.check_alive()
            result = self.kubectl("get", "--raw=/readyz", check=False, timeout=10)
            return result.returncode == 0 and result.stdout.strip() == "ok"

        wait_until(ready, timeout, "kube-apiserver /readyz", interval=0.5)
        # Bootstrap objects appear a moment after readyz turns ok.
        wait_until(
            lambda: (
                self.kubectl(
                    "get", "namespace", "default", "-o", "name", check=False
                ).returncode
                == 0
            ),
            timeout,
            "namespace default",
        )
        self.create_service_account("default", "default")

    def create_service_account(self, namespace: str, name: str) -> None:
        """Create a ServiceAccount if absent (no controller-manager creates them)."""
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": namespace},
            }
        )

    def create_namespace(
        self, name: str, labels: Mapping[str, str] | None = None
    ) -> None:
        """Create (or relabel) a namespace and its `default` ServiceAccount.

        Without the default ServiceAccount the ServiceAccount admission plugin rejects
        every Pod that does not name another one.
        """
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": dict(labels or {})},
            }
        )
        self.create_service_account(name, "default")

    def token_kubeconfig(
        self, namespace: str, serviceaccount: str, duration: str = "2h"
    ) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount (TokenRequest API)."""
        token = self.kubectl(
            "create", "token", serviceaccount, "-n", namespace, f"--duration={duration}"
        ).stdout.strip()
        path = self.workdir / f"sa-{namespace}-{serviceaccount}.kubeconfig"
        return self._write_kubeconfig(
            path, f"{namespace}-{serviceaccount}", {"token": token}
        )

    def create_webhook_service(
        self, namespace: str, name: str, external_name: str = "localhost"
    ) -> None:
        """A Service of type ExternalName: kube-apiserver dials `external_name`:443 for
        webhooks whose clientConfig.service names it (see the module docstring)."""
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"type": "ExternalName", "externalName": external_name},
            }
        )

    # ---- shell-operator

    def start_shell_operator(
        self,
        hooks_dir: Path | str,
        env: Mapping[str, str] | None = None,
        kubeconfig: Path | None = None,
        *,
        namespace: str = "image-mapper-e2e",
        service_name: str = "image-mapper-webhook",
        configuration_name: str | None = None,
        listen_address: str = "127.0.0.1",
        listen_port: int = 443,
        metrics_port: int | None = None,
        create_service: bool = True,
        log_level: str = "info",
        tls: tuple[Path, Path, Path] | None = None,
    ) -> ShellOperator:
        """Run shell-operator on `hooks_dir` against this control plane.

        - kubeconfig: whose identity shell-operator uses (admin by default; pass
          token_kubeconfig(...) to test RBAC).
        - namespace/service_name: SHELL_OPERATOR_NAMESPACE and the webhook Service;
          the namespace is created if missing and, with create_service, the ExternalName
          Service pointing at `localhost` (at `listen_address` if that is another
          loopback address such as 127.0.0.2: then two operators can serve port 443
          at once).
        - configuration_name: VALIDATING_WEBHOOK_CONFIGURATION_NAME (shell-operator
          appends "-hooks"); defaults to a unique name per run.
        - env: extra environment for shell-operator and therefore for every hook;
          it overrides the settings made here.
        - tls: (cert, key, ca) files to serve instead of a certificate issued from
          the control plane CA (for example the material of the bundle's Secret).
        Call .wait_ready() on the result before sending requests; .stop() (or the end
        of the control plane) stops it.
        """
        assert self.pki is not None, "control plane not started"
        self._operator_count += 1
        run_id = self._operator_count
        configuration_name = configuration_name or f"image-mapper-e2e-{run_id}"
        metrics_port = metrics_port or free_port()
        run_dir = self.workdir / f"shell-operator-{run_id}"
        tmp_dir = run_dir / "tmp"
        tmp_dir.mkdir(parents=True)
        fqdn = f"{service_name}.{namespace}.svc"
        if tls:
            cert, key, ca_file = tls
        else:
            ca_file = self.ca_file
            cert, key = self.pki.issue(
                f"webhook-{run_id}",
                fqdn,
                dns=(
                    fqdn,
                    f"{fqdn}.cluster.local",
                    f"{service_name}.{namespace}",
                    "localhost",
                ),
                ips=("127.0.0.1",),
            )
        if self.kubectl("get", "namespace", namespace, check=False).returncode != 0:
            self.create_namespace(namespace)
        if create_service:
            # Another loopback address lets a second operator serve port 443 too.
            target = "localhost" if listen_address == "127.0.0.1" else listen_address
            self.create_webhook_service(namespace, service_name, target)
        config = str(kubeconfig or self.admin_kubeconfig)
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(run_dir),
            "LANG": "C.UTF-8",
            "KUBECONFIG": config,
            "KUBE_CONFIG": config,
            "SHELL_OPERATOR_NAMESPACE": namespace,
            "SHELL_OPERATOR_TMP_DIR": str(tmp_dir),
            "SHELL_OPERATOR_LISTEN_ADDRESS": "127.0.0.1",
            "SHELL_OPERATOR_LISTEN_PORT": str(metrics_port),
            "VALIDATING_WEBHOOK_SERVICE_NAME": service_name,
            "VALIDATING_WEBHOOK_CONFIGURATION_NAME": configuration_name,
            "VALIDATING_WEBHOOK_SERVER_CERT": str(cert),
            "VALIDATING_WEBHOOK_SERVER_KEY": str(key),
            "VALIDATING_WEBHOOK_CA": str(ca_file),
            "VALIDATING_WEBHOOK_LISTEN_ADDRESS": listen_address,
            "VALIDATING_WEBHOOK_LISTEN_PORT": str(listen_port),
            # Unused here, but its defaults are 0.0.0.0 and /conversion-certs.
            "CONVERSION_WEBHOOK_LISTEN_ADDRESS": "127.0.0.1",
            "DEBUG_UNIX_SOCKET": str(run_dir / "debug.socket"),
            "LOG_TYPE": "json",
            "LOG_LEVEL": log_level,
            **dict(env or {}),
        }
        process = Process.spawn(
            f"shell-operator-{run_id}",
            [
                str(bin_dir() / "shell-operator"),
                "start",
                f"--hooks-dir={Path(hooks_dir).resolve()}",
            ],
            run_dir / "shell-operator.log",
            full_env,
        )
        operator = ShellOperator(
            process=process,
            control_plane=self,
            namespace=namespace,
            service_name=service_name,
            configuration_name=configuration_name,
            listen_address=listen_address,
            listen_port=listen_port,
            metrics_port=metrics_port,
            tmp_dir=tmp_dir,
            ca_file=Path(ca_file),
        )
        self.operators.append(operator)
        return operator
