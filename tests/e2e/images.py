"""Tiny container images made here from busybox-static, and pushing to the private registry.

The cluster cannot pull anything from outside, so every image a test or the demo runs
is built on this machine with buildah (daemonless; images live in its local storage,
/var/lib/containers) and copied with skopeo into the registry of a RealCluster.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from cluster import E2EError

BUSYBOX = Path("/bin/busybox")
# Applets the test workloads use, as links to /bin/busybox.
APPLETS = ("sh", "sleep", "echo", "cat", "ls", "true", "false", "env", "date",
           "hostname", "wget", "httpd", "test", "mkdir", "touch")
# The sandbox ("pause") container: sleep until told to stop.
PAUSE_COMMAND = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done"]
APP_COMMAND = ["/bin/sh", "-c", "echo started; trap 'exit 0' TERM; while :; do sleep 3600 & wait; done"]


def _run(*argv: str, input: str | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, input=input, check=False,
                            timeout=600)
    if result.returncode != 0:
        raise E2EError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def local_image_exists(name: str) -> bool:
    return subprocess.run(["buildah", "inspect", "--type", "image", name],
                          capture_output=True, check=False).returncode == 0


def busybox_image(name: str, command: list[str], label: str,
                  applets: tuple[str, ...] = APPLETS) -> str:
    """A one-layer image: static busybox, a few applet links, `command` as its
    entrypoint. Built once into buildah's storage; returns `name`."""
    if local_image_exists(name):
        return name
    if not BUSYBOX.exists() or shutil.which("buildah") is None:
        raise E2EError("building test images needs /bin/busybox (busybox-static) and "
                       "buildah: run tests/e2e/install-packages.sh")
    ctr = _run("buildah", "from", "--quiet", "scratch").strip()
    try:
        mnt = Path(_run("buildah", "mount", ctr).strip())
        (mnt / "bin").mkdir()
        (mnt / "tmp").mkdir(mode=0o1777)
        shutil.copy2(BUSYBOX, mnt / "bin" / "busybox")
        for applet in applets:
            (mnt / "bin" / applet).symlink_to("busybox")
        _run("buildah", "umount", ctr)
        _run("buildah", "config", "--entrypoint", json.dumps(command), "--cmd", "",
             "--label", f"org.opencontainers.image.description={label}", ctr)
        _run("buildah", "commit", "--quiet", "--timestamp", "0", ctr, name)
    finally:
        subprocess.run(["buildah", "rm", ctr], capture_output=True, check=False)
    return name


def pause_image() -> str:
    return busybox_image("localhost/image-mapper-e2e/pause:1", PAUSE_COMMAND,
                         "sandbox image of the image-mapper e2e cluster")


def app_image() -> str:
    return busybox_image("localhost/image-mapper-e2e/app:1", APP_COMMAND,
                         "stand-in for public application images in the e2e cluster")


def netcheck_image() -> str:
    """A client for network checks: `nc` (TCP connect) and `wget` (HTTP)."""
    return busybox_image("localhost/image-mapper-e2e/netcheck:2", APP_COMMAND,
                         "network checks of the image-mapper e2e cluster",
                         (*APPLETS, "nc", "timeout"))


def push(cluster: Any, local: str, dest: str) -> str:
    """Copy a buildah image to `dest` (a reference in the cluster's registry);
    returns the manifest digest the registry serves for it."""
    cluster.run_in_netns("skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                         f"containers-storage:{local}", f"docker://{dest}")
    return digest(cluster, dest)


def digest(cluster: Any, ref: str) -> str:
    """The manifest digest the registry serves for `ref` (sha256:...)."""
    out = cluster.run_in_netns("skopeo", "inspect", "--tls-verify=false",
                               f"docker://{ref}").stdout
    return json.loads(out)["Digest"]
