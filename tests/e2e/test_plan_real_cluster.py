"""Relocation end to end on the real one-node cluster: plan, copy with skopeo, check, apply.

The sample application (examples/deployment.yaml, unmodified) names public images. A
second docker-registry in the cluster's network namespace plays the public registries
for skopeo only: skopeo reaches it as a mirror of docker.io and quay.io through a
registries.conf (bind-mounted over /etc/containers/registries.conf in a mount namespace
of the copy's own: this skopeo does not read CONTAINERS_REGISTRIES_CONF), as at a site
with a pull-through mirror. containerd cannot reach it
(it sends every public name to a closed port), so a Pod starts only from what the plan
copied into the cluster's private registry. Then one copy is removed: ``plan --check``
names it, and the Pod that needs it fails to pull exactly that image.

It shares the session's one-node cluster and installation with test_real_cluster.py,
and its file name sorts before that file's, whose last tests uninstall image-mapper.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import wait_until
from install import OPERATOR_NS, imagemap, mapfile
from realcluster import in_netns

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

import registries  # noqa: E402 (tests/ on the path first)

pytestmark = pytest.mark.e2e

UPSTREAM = "127.0.0.1:5001"  # in the cluster's network namespace; containerd never goes there
APP = REPO / "examples" / "deployment.yaml"
# The images of the sample application, as the public registries would serve them.
PUBLIC = (("busybox", "docker.io/library/busybox:1.36", "echo init done"),
          ("nginx", "docker.io/library/nginx:1.25", registries.SERVE),
          ("node-exporter", "quay.io/prometheus/node-exporter:v1.8.0", registries.SERVE))


@pytest.fixture(scope="module")
def site(installed: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The upstream registry, a registries.conf that mirrors the public names to it, rules."""
    cluster = installed
    work = tmp_path_factory.mktemp("relocation")
    layout = str(work / "oci")
    for label, _, command in PUBLIC:
        registries.oci_image(layout, label, label, ("amd64",), command)
    upstream = in_netns(cluster.netns_path, lambda: registries.Registry(str(work), "upstream", listen=UPSTREAM))
    try:
        conf = work / "registries.conf"
        conf.write_text("".join(
            f'[[registry]]\nprefix = "{name}"\nlocation = "{name}"\n'
            f'[[registry.mirror]]\nlocation = "{UPSTREAM}/{name}"\ninsecure = true\n\n'
            for name in ("docker.io", "quay.io")))
        for label, name, _ in PUBLIC:
            domain, _, rest = name.partition("/")
            cluster.run_in_netns("skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                                 f"oci:{layout}:{label}", f"docker://{UPSTREAM}/{domain}/{rest}")
        # Unique destinations per run: the cluster's registry keeps its storage between runs.
        mirror = f"{cluster.registry}/reloc{os.getpid()}"
        maps = work / "maps.conf"
        maps.write_text(f"default::\ndocker.io::{mirror}/hub\nquay.io::{mirror}/quay\n")
        imap = imagemap("shop-mirror", "shop", [{"from": "nginx", "to": f"{mirror}/shop/nginx"}])
        (work / "imagemap.yaml").write_text(yaml.safe_dump(imap))
        yield {"cluster": cluster, "work": work, "conf": conf, "mirror": mirror, "upstream": upstream,
               "rules": ["--imagemap", str(work / "imagemap.yaml"), "--map-file", str(maps)]}
    finally:
        upstream.stop()
        forget_rules(cluster)


def forget_rules(cluster: Any) -> None:
    """Remove this test's rules, and wait until admission no longer applies them: the
    cluster is shared, and later tests expect no cluster-wide map file."""
    cluster.kubectl("delete", "configmap", "relocation", "-n", OPERATOR_NS, "--ignore-not-found")
    cluster.kubectl("delete", "namespace", "shop", "--ignore-not-found", "--wait=false", check=False)
    probe = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe", "namespace": "default"},
             "spec": {"containers": [{"name": "c", "image": PUBLIC[2][1]}]}}
    wait_until(lambda: cluster.create(probe, dry_run=True)["spec"]["containers"][0]["image"] == PUBLIC[2][1],
               60, "the relocation map file to be forgotten")


def in_site(site: Any, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A command in the cluster's network namespace, from the repository root."""
    environ = dict(os.environ, PYTHONPATH=str(REPO / "lib"), HOME=str(site["work"]), **(env or {}))
    return site["cluster"].run_in_netns(*argv, check=False, env=environ, cwd=str(REPO))


def copy_in_site(site: Any, *argv: str) -> subprocess.CompletedProcess[str]:
    """A copy command that sees the site's registries.conf (the public names -> UPSTREAM)."""
    mount = 'mount --bind "$0" /etc/containers/registries.conf && exec "$@"'
    return in_site(site, "unshare", "--mount", "sh", "-c", mount, str(site["conf"]), *argv)


def plan(site: Any, *argv: str) -> subprocess.CompletedProcess[str]:
    return in_site(site, sys.executable, "-m", "imagemapper", "plan", *site["rules"], "-f", str(APP), *argv)


def app_pods(cluster: Any) -> list[dict[str, Any]]:
    return cluster.kubectl_json("get", "pods", "-n", "shop", "-l", "app=web").get("items") or []


def test_plan_copy_check_apply_then_remove_one(site: Any) -> None:
    cluster, mirror = site["cluster"], site["mirror"]
    planned = plan(site, "--format", "skopeo-copy")
    assert planned.returncode == 0, planned.stderr
    script = site["work"] / "copy.sh"
    script.write_text(planned.stdout)
    copied = copy_in_site(site, "sh", str(script), "--quiet", "--dest-tls-verify=false")
    assert copied.returncode == 0, copied.stderr

    checked = plan(site, "--check", "--insecure-registry", cluster.registry)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.splitlines() == [f"present  {mirror}/hub/busybox:1.36",
                                           f"present  {mirror}/shop/nginx:1.25",
                                           f"present  {mirror}/quay/prometheus/node-exporter:v1.8.0"]

    # The rules, then the application as its authors wrote it.
    cluster.create_namespace("shop")
    cluster.apply(yaml.safe_load((site["work"] / "imagemap.yaml").read_text()))
    cluster.apply(mapfile("relocation", OPERATOR_NS, (site["work"] / "maps.conf").read_text()))
    cluster.kubectl("wait", "-n", "shop", "--for=condition=Ready", "imagemap/shop-mirror", "--timeout=60s")
    probe = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe", "namespace": "shop"},
             "spec": {"containers": [{"name": "c", "image": "quay.io/prometheus/node-exporter:v1.8.0"}]}}
    wait_until(lambda: cluster.create(probe, dry_run=True)["spec"]["containers"][0]["image"].startswith(mirror),
               60, "the cluster map file to take effect")
    cluster.kubectl("apply", "-f", str(APP))
    cluster.kubectl("rollout", "status", "-n", "shop", "deployment/web", "--timeout=180s")
    (running,) = app_pods(cluster)
    assert running["status"]["phase"] == "Running"
    images = {c["name"]: c["image"] for c in running["spec"]["initContainers"] + running["spec"]["containers"]}
    assert images == {"init": f"{mirror}/hub/busybox:1.36", "web": f"{mirror}/shop/nginx:1.25",
                      "metrics": f"{mirror}/quay/prometheus/node-exporter:v1.8.0"}
    statuses = running["status"]["containerStatuses"] + running["status"]["initContainerStatuses"]
    assert all(s["imageID"].startswith(mirror) for s in statuses), statuses

    # Remove one copy, from the registry and from the node's image store.
    missing = f"{mirror}/quay/prometheus/node-exporter:v1.8.0"
    repo = missing.split("/", 1)[1].rsplit(":", 1)[0]
    delete_manifest(cluster, repo, "v1.8.0")
    cluster.run_in_netns("ctr", "--address", str(cluster.containerd_socket), "-n", "k8s.io",
                         "images", "rm", missing, check=False)
    checked = plan(site, "--check", "--insecure-registry", cluster.registry)
    assert checked.returncode == 1
    assert (f"MISSING  {missing}: registry {cluster.registry}: manifest unknown (404) "
            "(copy of quay.io/prometheus/node-exporter:v1.8.0;") in checked.stdout

    # The Pod that needs it fails, on exactly that image.
    cluster.kubectl("delete", "pod", "-n", "shop", running["metadata"]["name"], "--wait=false")

    def failed_pull() -> dict[str, Any] | None:
        for pod in app_pods(cluster):
            if pod["metadata"]["name"] == running["metadata"]["name"]:
                continue
            for status in pod["status"].get("containerStatuses") or []:
                waiting = status.get("state", {}).get("waiting") or {}
                if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff"):
                    return status
        return None

    status = wait_until(failed_pull, 120, "the new Pod to fail pulling the removed image")
    assert (status["name"], status["image"]) == ("metrics", missing)


def delete_manifest(cluster: Any, repository: str, tag: str) -> None:
    """Delete a tag's manifest through the distribution API of the cluster's registry."""
    def delete() -> None:
        accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"
        head = urllib.request.Request(f"http://{cluster.registry}/v2/{repository}/manifests/{tag}",
                                      method="HEAD", headers={"Accept": accept})
        digest = urllib.request.urlopen(head, timeout=10).headers["Docker-Content-Digest"]
        urllib.request.urlopen(urllib.request.Request(
            f"http://{cluster.registry}/v2/{repository}/manifests/{digest}", method="DELETE"), timeout=10)

    in_netns(cluster.netns_path, delete)
