"""plan --from-cluster on the real kube-apiserver with image-mapper admitting Pods.

A Pod that the webhook rewrote is planned from its original images (the annotation),
so it and the Deployment that carries the same image as written are one pair.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from cluster import ControlPlane, kubectl_binary, wait_until
from install import REPO, Installation, imagemap, images_of, pod, serving

pytestmark = pytest.mark.e2e

TEAM_MIRROR = yaml.safe_load((REPO / "examples" / "imagemap.yaml").read_text())["spec"]["map"]


@pytest.fixture(scope="module")
def installation(control_plane: ControlPlane) -> Iterator[Installation]:
    with serving(control_plane) as installation:
        yield installation


def plan(cp: ControlPlane, *argv: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, with kubectl on PATH and the admin kubeconfig."""
    kubectl_dir = str(Path(kubectl_binary()).parent)
    env = dict(os.environ, PYTHONPATH=str(REPO / "lib"), KUBECONFIG=str(cp.admin_kubeconfig),
               PATH=f"{kubectl_dir}:{os.environ['PATH']}")
    return subprocess.run([sys.executable, "-m", "imagemapper", "plan", *argv], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)


def test_plan_from_cluster_uses_original_images(installation: Installation,
                                                make_namespace: Callable[..., str], tmp_path: Path) -> None:
    cp = installation.control_plane
    ns = make_namespace("plan")
    cp.apply(imagemap("team-mirror", ns, TEAM_MIRROR))
    wait_until(lambda: any(c.get("status") == "True" for c in
                           (cp.kubectl_json("get", "imagemap", "team-mirror", "-n", ns).get("status") or {})
                           .get("conditions") or []), 30, "the ImageMap to be Ready")
    probe = pod("probe", ns, "nginx:1.25")
    wait_until(lambda: images_of(cp.create(probe, dry_run=True))["containers/c0"] != "nginx:1.25",
               30, "the ImageMap to take effect")
    stored = cp.create(pod("web", ns, "nginx:1.25", "quay.io/jetstack/cert-manager-controller:v1.14.4",
                           "quay.io/jetstack/cert-manager-ctl:v1.14.4"))
    assert images_of(stored)["containers/c0"] == "registry.corp/hub/nginx:1.25"
    cp.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns},
              "spec": {"selector": {"matchLabels": {"app": "web"}},
                       "template": {"metadata": {"labels": {"app": "web"}},
                                    "spec": {"containers": [{"name": "web", "image": "docker.io/library/nginx:1.25"},
                                                            {"name": "cache", "image": "redis:7"}]}}}})

    # The rules as they are in the cluster, saved the way the README says.
    maps = tmp_path / "imagemaps.yaml"
    maps.write_text(cp.kubectl("get", "imagemaps", "-A", "-o", "yaml").stdout)
    done = plan(cp, "--imagemap", str(maps), "--from-cluster", "--format", "json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    mine = [p for p in doc["pairs"] if any(s.startswith(f"{ns}/") for s in p["seen"])]
    assert [(p["copy"]["from"], p["copy"]["to"], p["seen"]) for p in mine] == [
        ("docker.io/library/nginx:1.25", "registry.corp/hub/nginx:1.25",
         [f"{ns}/Pod/web containers/c0", f"{ns}/Deployment/web containers/web"]),
        ("quay.io/jetstack/cert-manager-controller:v1.14.4",
         "registry.corp/quay/jetstack/cert-manager-controller:v1.14.4", [f"{ns}/Pod/web containers/c1"]),
    ]
    assert mine[0]["rule"] == "imagemap team-mirror spec.map[1]: nginx -> registry.corp/hub/nginx"
    stays = {u["image"]: u["reason"] for u in doc["unchanged"] if any(s.startswith(f"{ns}/") for s in u["seen"])}
    assert stays == {"quay.io/jetstack/cert-manager-ctl:v1.14.4":
                     "imagemap team-mirror spec.map[3]: quay.io/jetstack/cert-manager-ctl -> (excluded)",
                     "docker.io/library/redis:7": "no rule matches"}


def test_plan_from_cluster_reports_kubectl_failure(installation: Installation) -> None:
    done = plan(installation.control_plane, "--from-cluster", "--context", "nowhere")
    assert done.returncode == 2
    assert done.stderr.startswith("error: --from-cluster: ") and "context: nowhere" in done.stderr, done.stderr
