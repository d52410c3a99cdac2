#!/usr/bin/env python3
"""`make demo`: image-mapper on a local control plane, a Pod's images before -> after.

Brings up etcd + kube-apiserver, installs deploy/ the way the e2e tests do (install.py),
applies examples/imagemap.yaml and examples/maps.conf (in a labelled ConfigMap), creates
the Pod of examples/deployment.yaml's template in namespace `shop`, and prints each image
before -> after and `kubectl get imagemaps -A`. Then it tears everything down.

    python3 tests/e2e/demo.py           # run and tear down
    KEEP=1 python3 tests/e2e/demo.py    # leave it running in the background
    python3 tests/e2e/demo.py --stop    # stop a demo left running
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml
from cluster import BUILD_SCRIPT, ControlPlane, cache_dir, missing_binaries
from install import (
    OPERATOR_NS,
    PROBE_NS,
    REPO,
    Installation,
    images_of,
    mapfile,
    prerequisites,
)

PID_FILE = cache_dir() / "demo.pid"
LOG_FILE = cache_dir() / "demo.log"
READY_MARK = "== demo ready =="


def say(text: str = "") -> None:
    print(text, flush=True)


def build_binaries() -> None:
    """Check the prerequisites; build etcd, kube-apiserver and shell-operator if missing,
    showing the script's progress."""
    problems = prerequisites()
    if problems:
        sys.exit("demo: missing prerequisites:\n  " + "\n  ".join(problems))
    missing = missing_binaries()
    if not missing:
        return
    say(f"building the control plane (first run only; missing: {', '.join(missing)})…")
    say("  this takes about 10 minutes on 2 cores; progress follows")
    if subprocess.run(["bash", str(REPO / BUILD_SCRIPT)], check=False).returncode != 0:
        sys.exit(f"demo: {BUILD_SCRIPT} failed (see its output above)")


def pod_of_deployment(path: Path) -> dict[str, Any]:
    """The Pod a ReplicaSet would create from the Deployment's template."""
    deployment = yaml.safe_load(path.read_text())
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{deployment['metadata']['name']}-demo",
                     "namespace": deployment["metadata"]["namespace"],
                     "labels": template["metadata"].get("labels", {})},
        "spec": template["spec"],
    }


def run_demo(cp: ControlPlane) -> None:
    start = time.monotonic()
    installation = Installation(cp)
    installation.install()
    say(f"  bundle applied: deploy/ without the Deployment, the certgen Job and the ClusterIP "
        f"Service ({time.monotonic() - start:.1f} s)")
    say(f"  TLS Secret {OPERATOR_NS}/image-mapper-tls made by bin/gen-certs as the Job's "
        "ServiceAccount")
    start = time.monotonic()
    replica = installation.start()
    say(f"  shell-operator with hooks/ ready, as ServiceAccount image-mapper "
        f"({time.monotonic() - start:.1f} s)")
    # The ImageMap install.py uses to see the webhook answer is not part of the demo.
    cp.kubectl("delete", "imagemap", "probe", "-n", PROBE_NS)

    imagemap = yaml.safe_load((REPO / "examples" / "imagemap.yaml").read_text())
    namespace = imagemap["metadata"]["namespace"]
    cp.create_namespace(namespace)
    cp.apply(imagemap)
    maps = mapfile("demo-maps", OPERATOR_NS, (REPO / "examples" / "maps.conf").read_text())
    cp.apply(maps)
    say(f"  applied examples/imagemap.yaml (ImageMap {namespace}/{imagemap['metadata']['name']}) "
        f"and examples/maps.conf (ConfigMap {OPERATOR_NS}/demo-maps, cluster-wide)")
    wait_for_rules(cp, namespace, imagemap["metadata"]["name"], replica.state_dir)

    manifest = pod_of_deployment(REPO / "examples" / "deployment.yaml")
    before = images_of(manifest)
    stored = cp.create(manifest)
    after = images_of(stored)
    say()
    say(f"Pod {namespace}/{manifest['metadata']['name']} (the template of examples/deployment.yaml):")
    width = max(len(k) for k in before)
    for key, image in before.items():
        new = after.get(key)
        arrow = f"-> {new}" if new != image else "-> (unchanged)"
        say(f"  {key:<{width}}  {image} {arrow}")
    say()
    say("$ kubectl get imagemaps -A")
    say(cp.kubectl("get", "imagemaps", "-A").stdout.rstrip())


def wait_for_rules(cp: ControlPlane, namespace: str, name: str, state_dir: Path) -> None:
    """Until the ImageMap is Ready and the cluster map file is in the snapshot."""
    from cluster import wait_until

    def ready() -> bool:
        status = cp.kubectl_json("get", "imagemap", name, "-n", namespace).get("status") or {}
        conditions = status.get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    wait_until(ready, 30, f"ImageMap {namespace}/{name} to be Ready")
    probe = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe", "namespace": namespace},
             "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}
    wait_until(lambda: images_of(cp.create(probe, dry_run=True))["containers/c"] != "busybox:1.36",
               30, "the cluster map file to take effect")


def foreground() -> int:
    """Run the demo and tear it down."""
    say("image-mapper demo")
    build_binaries()
    start = time.monotonic()
    with ControlPlane() as cp:
        say(f"  control plane up: etcd + kube-apiserver on {cp.server} "
            f"({time.monotonic() - start:.1f} s)")
        run_demo(cp)
        say()
        say("tearing down (KEEP=1 leaves it running)")
    return 0


def serve() -> int:
    """The background half of KEEP=1: set up, announce, then wait for SIGTERM."""
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with ControlPlane() as cp:
        say(f"  control plane up: etcd + kube-apiserver on {cp.server}")
        run_demo(cp)
        say()
        say("It keeps running. Point kubectl at it:")
        say(f"  export KUBECONFIG={cp.admin_kubeconfig}")
        say("  kubectl get imagemaps -A; kubectl get pods -n shop -o yaml")
        pids = " ".join(str(p.pid) for p in [*cp.processes, *(o.process for o in cp.operators)])
        say("Stop it with:")
        say(f"  python3 tests/e2e/demo.py --stop     (or: kill {os.getpid()})")
        say(f"  (processes: demo {os.getpid()}; etcd, kube-apiserver, shell-operator {pids})")
        say(READY_MARK)
        while not stop:
            time.sleep(0.5)
    PID_FILE.unlink(missing_ok=True)
    say("demo stopped")
    return 0


def background() -> int:
    """KEEP=1: start serve() detached, show its output until it is ready, then return."""
    if running_pid():
        sys.exit(f"demo: a demo is already running (pid {running_pid()}); "
                 "stop it with: python3 tests/e2e/demo.py --stop")
    say("image-mapper demo (KEEP=1)")
    build_binaries()
    cache_dir().mkdir(parents=True, exist_ok=True)
    with LOG_FILE.open("w") as log:
        child = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
    PID_FILE.write_text(f"{child.pid}\n")
    shown = 0
    while True:
        text = LOG_FILE.read_text(errors="replace")
        sys.stdout.write(text[shown:].replace(READY_MARK + "\n", ""))
        sys.stdout.flush()
        shown = len(text)
        if READY_MARK in text:
            say(f"(log: {LOG_FILE})")
            return 0
        if child.poll() is not None:
            PID_FILE.unlink(missing_ok=True)
            sys.exit(f"demo: the background demo exited with {child.returncode}; log: {LOG_FILE}")
        time.sleep(0.3)


def running_pid() -> int | None:
    try:
        pid = int(PID_FILE.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def stop_background() -> int:
    pid = running_pid()
    if pid is None:
        say("demo: no demo is running")
        PID_FILE.unlink(missing_ok=True)
        return 0
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if running_pid() is None:
            break
        time.sleep(0.2)
    say(f"demo: stopped (pid {pid})")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--stop"]:
        return stop_background()
    if argv[:1] == ["--serve"]:
        return serve()
    if os.environ.get("KEEP") == "1":
        return background()
    return foreground()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
