"""The world docs/relocating.md runs in: the registries it names and a cluster, on this machine only.

Run by tests/e2e/test_relocating_guide.py as
``unshare --net --mount --fork python3 tests/e2e/guide_world.py WORKDIR``, so it has a network
namespace and a mount namespace of its own: only ``lo``, and an /etc/hosts (bind-mounted,
visible to nothing outside) that points the public names at 127.0.0.2 and
``registry.corp`` at 127.0.0.3. There, two docker-registry processes serve HTTPS with a
certificate from a CA made here, which the commands trust through ``SSL_CERT_FILE``
(Python's ssl and Go's crypto/x509 both read it). The upstream one holds small busybox
images under the sample application's names. The e2e control plane (etcd,
kube-apiserver, shell-operator with image-mapper installed as tests/e2e/install.py does)
runs there too, with namespace ``shop`` made, for the guide's kubectl commands. So the
guide's commands run verbatim, with their real output, and nothing can leave the machine.

WORKDIR/commands.json is a list of shell commands; WORKDIR/results.json receives
``[{"command", "output", "status"}]``. The commands run in WORKDIR/run, which has
``examples`` linked to the repository's, with ``image-mapper`` on PATH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [HERE, os.path.join(ROOT, "tests")]

import registries  # noqa: E402 (after the path set-up)
from cluster import ControlPlane, kubectl_binary  # noqa: E402
from install import PROBE_NS, Installation  # noqa: E402

UPSTREAM_NAMES = ("docker.io", "registry-1.docker.io", "index.docker.io", "quay.io")
PRIVATE_NAMES = ("registry.corp",)
UPSTREAM_IMAGES = (  # (label, platforms, name in the public registry)
    ("busybox", ("amd64", "arm64"), "docker.io/library/busybox:1.36"),
    ("nginx", ("amd64",), "docker.io/library/nginx:1.25"),
    ("node-exporter", ("amd64",), "quay.io/prometheus/node-exporter:v1.8.0"),
)


def isolate(work: str) -> None:
    """Loopback up, and a private /etc/hosts for this mount namespace."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    hosts = os.path.join(work, "hosts")
    with open(hosts, "w") as handle:
        handle.write("127.0.0.1 localhost\n")
        handle.write(f"127.0.0.2 {' '.join(UPSTREAM_NAMES)}\n")
        handle.write(f"127.0.0.3 {' '.join(PRIVATE_NAMES)}\n")
    subprocess.run(["mount", "--bind", hosts, "/etc/hosts"], check=True)


def environment(work: str, ca: str, kubeconfig: str) -> dict:
    shims = os.path.join(work, "bin")
    os.makedirs(shims, exist_ok=True)
    shim = os.path.join(shims, "image-mapper")
    with open(shim, "w") as handle:
        handle.write(f'#!/bin/sh\nexec {sys.executable} -m imagemapper "$@"\n')
    os.chmod(shim, 0o755)
    home = os.path.join(work, "home")
    os.makedirs(home, exist_ok=True)
    keep = {k: os.environ[k] for k in ("PATH", "LANG", "TERM") if k in os.environ}
    path = f"{shims}:{os.path.dirname(kubectl_binary())}:{keep.get('PATH', '/usr/bin:/bin')}"
    return {**keep, "PATH": path, "HOME": home, "PYTHONPATH": os.path.join(ROOT, "lib"),
            "SSL_CERT_FILE": ca, "KUBECONFIG": kubeconfig}


def main(work: str) -> int:
    isolate(work)
    with ControlPlane() as cp:
        installation = Installation(cp)
        installation.install()
        try:
            installation.start()
            cp.kubectl("delete", "imagemap", "probe", "-n", PROBE_NS)
            cp.create_namespace("shop")
            return in_world(work, str(cp.admin_kubeconfig))
        finally:
            installation.stop_all()


def in_world(work: str, kubeconfig: str) -> int:
    ca, cert, key = registries.ca_signed(work, UPSTREAM_NAMES + PRIVATE_NAMES)
    env = environment(work, ca, kubeconfig)
    started = []
    try:
        started.append(registries.Registry(work, "upstream", listen="127.0.0.2:443", certificate=(cert, key)))
        started.append(registries.Registry(work, "private", listen="127.0.0.3:443", certificate=(cert, key)))
        layout = os.path.join(work, "oci")
        for label, platforms, name in UPSTREAM_IMAGES:
            registries.oci_image(layout, label, label, platforms)
            subprocess.run(["skopeo", "copy", "--quiet", "--all", "--preserve-digests",
                            f"oci:{layout}:{label}", f"docker://{name}"], env=env, check=True,
                           capture_output=True, timeout=120)
        run = os.path.join(work, "run")
        os.makedirs(run, exist_ok=True)
        os.symlink(os.path.join(ROOT, "examples"), os.path.join(run, "examples"))
        with open(os.path.join(work, "commands.json")) as handle:
            commands = json.load(handle)
        results = []
        for command in commands:
            done = subprocess.run(["sh", "-c", command], cwd=run, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=300, check=False)
            results.append({"command": command, "output": done.stdout, "status": done.returncode})
        with open(os.path.join(work, "results.json"), "w") as handle:
            json.dump(results, handle)
    finally:
        for reg in started:
            reg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
