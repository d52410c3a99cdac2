"""image-mapper on the one-node cluster, exactly as a user installs it.

1. The image is built from the repository's Dockerfile with `make image`, on the
   stand-in base (tests/e2e/build-standin-base.sh; BASE_IMAGE is the only change),
   and pushed with `make push` into the cluster's registry.
2. The bundle is installed with `kubectl apply -k tests/e2e/overlay`, an overlay that
   changes only `images:`. The certgen Job runs as a Job, the Deployment's replicas
   turn Ready through their readiness probe, and the API server calls the webhook
   through the Service.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import images
from cluster import E2EError, wait_until
from install import (
    CONFIGURATION,
    OPERATOR_NS,
    PROBE_IMAGE,
    PROBE_NS,
    PROBED_IMAGE,
    imagemap,
    images_of,
    pod,
)
from realcluster import REGISTRY, RealCluster

REPO = Path(__file__).resolve().parents[2]
OVERLAY = REPO / "tests" / "e2e" / "overlay"
IMAGE = f"{REGISTRY}/image-mapper/image-mapper:e2e"
STANDIN_BASE = "localhost/image-mapper/standin-base:v1.20.3"
DEPLOYMENT = "image-mapper"
CERTGEN_JOB = "image-mapper-certgen"
SELECTOR = "app.kubernetes.io/name=image-mapper,app.kubernetes.io/component=webhook"

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _make(*args: str, cluster: RealCluster | None = None) -> None:
    argv = ["make", "--no-print-directory", "-s", *args]
    if cluster is not None:
        result = cluster.run_in_netns(*argv, check=False, cwd=REPO)
    else:
        result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                                check=False, timeout=900)
    if result.returncode != 0:
        raise E2EError(f"make {' '.join(args)} failed:\n{result.stdout[-2000:]}"
                       f"{result.stderr[-3000:]}")


def build_image(say: Say = _quiet) -> None:
    """The stand-in base (cached), then `make image` on it."""
    started = time.monotonic()
    result = subprocess.run(["bash", "tests/e2e/build-standin-base.sh"], cwd=REPO,
                            capture_output=True, text=True, check=False, timeout=900)
    if result.returncode != 0:
        raise E2EError(f"build-standin-base.sh failed:\n{result.stdout}{result.stderr}")
    say(f"stand-in base {STANDIN_BASE} ready ({time.monotonic() - started:.0f}s)")
    started = time.monotonic()
    # --network=none: nothing in the Dockerfile needs the network on the stand-in
    # (its RUN steps only check and compile), and buildah then sets up no network.
    _make("image", f"IMG={IMAGE}", f"BASE_IMAGE={STANDIN_BASE}",
          "IMAGE_BUILD_FLAGS=--network=none --pull=false")
    say(f"make image: {IMAGE} built from the Dockerfile ({time.monotonic() - started:.0f}s)")


def push_image(cluster: RealCluster, say: Say = _quiet) -> str:
    """`make push` into the cluster's registry; returns the digest it serves."""
    started = time.monotonic()
    _make("push", f"IMG={IMAGE}", "PUSH_FLAGS=--tls-verify=false", cluster=cluster)
    found = images.digest(cluster, IMAGE)
    say(f"make push: {IMAGE} -> {found[:19]} ({time.monotonic() - started:.0f}s)")
    return found


def operator_pods(cluster: RealCluster) -> list[dict[str, Any]]:
    return cluster.kubectl_json("get", "pods", "-n", OPERATOR_NS, "-l", SELECTOR).get(
        "items", [])


def ready(pod_obj: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod_obj.get("status", {}).get("conditions", []))


def install(cluster: RealCluster, say: Say = _quiet, timeout: float = 240
            ) -> subprocess.CompletedProcess[str]:
    """kubectl apply -k the test overlay; wait for the Job, both replicas, the webhook.
    Returns kubectl apply's result (its stderr carries any Pod Security warning)."""
    started = time.monotonic()
    applied = cluster.kubectl("apply", "-k", str(OVERLAY), timeout=120)
    cluster.kubectl("wait", "-n", OPERATOR_NS, f"job/{CERTGEN_JOB}",
                    "--for=condition=Complete", f"--timeout={int(timeout)}s",
                    timeout=timeout + 10)
    say(f"certgen Job complete ({time.monotonic() - started:.0f}s)")
    wait_rollout(cluster, timeout)
    say(f"deploy/{DEPLOYMENT}: 2/2 Ready ({time.monotonic() - started:.0f}s)")
    wait_effective(cluster, timeout)
    say(f"webhook answering through Service image-mapper-webhook "
        f"({time.monotonic() - started:.0f}s)")
    return applied


def wait_rollout(cluster: RealCluster, timeout: float = 240) -> None:
    cluster.kubectl("rollout", "status", "-n", OPERATOR_NS, f"deploy/{DEPLOYMENT}",
                    f"--timeout={int(timeout)}s", timeout=timeout + 10)


def wait_effective(cluster: RealCluster, timeout: float = 60) -> None:
    """Until a dry-run Pod in a probe namespace is rewritten: the API server reaches
    the webhook (through the Service) and the rules have been synced."""
    if cluster.kubectl("get", "namespace", PROBE_NS, check=False).returncode != 0:
        cluster.create_namespace(PROBE_NS)
    wait_until(
        lambda: cluster.kubectl(
            "apply", "-f", "-", check=False,
            input=_yaml(imagemap("probe", PROBE_NS, [{"from": PROBE_IMAGE, "to": PROBED_IMAGE}])),
        ).returncode == 0,
        timeout, "the validating webhook to accept the probe ImageMap")

    def rewritten() -> bool:
        stored = cluster.create(pod("probe", PROBE_NS, PROBE_IMAGE), dry_run=True)
        return images_of(stored)["containers/c0"] == PROBED_IMAGE

    wait_until(rewritten, timeout, "the API server to reach the image-mapper webhook")


def uninstall(cluster: RealCluster, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """kubectl delete -k of the same overlay, as a user removes it."""
    return cluster.kubectl("delete", "-k", str(OVERLAY), "--ignore-not-found",
                           f"--timeout={int(timeout)}s", timeout=timeout + 10)


def webhook_configurations(cluster: RealCluster) -> list[str]:
    found = []
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        result = cluster.kubectl("get", kind, CONFIGURATION, "-o", "name", check=False)
        if result.returncode == 0:
            found.append(result.stdout.strip())
    return found


def _yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False)
