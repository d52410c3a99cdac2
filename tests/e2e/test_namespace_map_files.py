"""IMAGE_MAPPER_NAMESPACE_MAP_FILES=opt-in on the real chain (issue 11.12).

Installed from an overlay of deploy/ with the `map-files-opt-in` component, as a cluster
admin would: the operator runs with that component's setting and ClusterRole. The
namespace label is read by two real parts: the API server (the validating webhook's
namespaceSelector, at apply time) and shell-operator's Namespace watch (the sync hook).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cluster import ControlPlane, wait_until
from install import REPO, Bundle, Installation, images_of, mapfile, pod, serving

pytestmark = pytest.mark.e2e

LABEL = "imagemapper.io/map-files"


@pytest.fixture(scope="module")
def installation(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[Installation]:
    overlay = tmp_path_factory.mktemp("overlay")
    deploy = os.path.relpath(REPO / "deploy", overlay)  # kustomize refuses absolute paths
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n- {deploy}\ncomponents:\n- {deploy}/components/map-files-opt-in\n")
    with serving(control_plane, bundle=Bundle.render(path=Path(overlay))) as installation:
        yield installation


def dry_run_image(cp: ControlPlane, namespace: str) -> str:
    return images_of(cp.create(pod("probe", namespace, "nginx:1.25"), dry_run=True))["containers/c0"]


def wait_image(cp: ControlPlane, namespace: str, expected: str, timeout: float = 15) -> float:
    start = time.monotonic()
    wait_until(lambda: dry_run_image(cp, namespace) == expected, timeout,
               f"nginx:1.25 -> {expected} in {namespace}", interval=0.1)
    return time.monotonic() - start


def apply(cp: ControlPlane, obj: dict) -> tuple[int, str]:
    result = cp.kubectl("apply", "-f", "-", input=json.dumps(obj), check=False)
    return result.returncode, result.stderr


def test_map_files_count_only_while_the_namespace_is_labeled(
    installation: Installation, make_namespace: Callable[..., str]
) -> None:
    cp = installation.control_plane
    [replica] = installation.replicas
    assert replica.env["IMAGE_MAPPER_NAMESPACE_MAP_FILES"] == "opt-in"
    ns = make_namespace("optin")
    cm = mapfile("team-map", ns, "default::\ndocker.io::team.corp/hub\n")
    # Unlabeled: refused at apply time (the API server routes it by the namespace's labels).
    code, stderr = apply(cp, cm)
    assert code != 0 and f"is not labeled {LABEL}=enabled" in stderr, stderr
    # Labeled by a cluster admin: accepted, and its rules apply.
    cp.kubectl("label", "namespace", ns, f"{LABEL}=enabled")
    wait_until(lambda: apply(cp, cm)[0] == 0, 10, "the map file to be accepted once labeled")
    on = wait_image(cp, ns, "team.corp/hub/nginx:1.25")
    # Unlabeled again: the map file stops counting, and an Event says why.
    cp.kubectl("label", "namespace", ns, f"{LABEL}-")
    off = wait_image(cp, ns, "nginx:1.25")

    def reported() -> bool:
        events = cp.kubectl_json("get", "events", "-n", ns)["items"]
        return any(e["reason"] == "MapFilesNotEnabled" and e["involvedObject"]["name"] == "team-map"
                   for e in events)

    wait_until(reported, 10, "the MapFilesNotEnabled Event on team-map")
    # The ConfigMap that got in stays manageable: edited (with a warning), then deleted.
    code, stderr = apply(cp, {**cm, "data": {"maps": "default::\ndocker.io::other.corp/hub\n"}})
    assert code == 0 and "team-map is ignored" in stderr, stderr
    # Labeled again: counts again, with its edited rules.
    cp.kubectl("label", "namespace", ns, f"{LABEL}=enabled")
    again = wait_image(cp, ns, "other.corp/hub/nginx:1.25")
    cp.kubectl("delete", "configmap", "team-map", "-n", ns)
    wait_image(cp, ns, "nginx:1.25")
    print(f"\nlabel -> rules in {on:.2f} s, unlabel -> gone in {off:.2f} s, relabel -> back in {again:.2f} s")
    assert max(on, off, again) < 10


def test_operator_may_watch_namespaces_but_not_label_them(installation: Installation) -> None:
    """The component grants namespaces list/watch, no more (the base bundle grants none)."""
    cp = installation.control_plane
    config = cp.token_kubeconfig("image-mapper-system", "image-mapper")

    def can(*args: str) -> bool:
        return cp.kubectl("auth", "can-i", *args, kubeconfig=config, check=False).stdout.strip() == "yes"

    assert can("list", "namespaces") and can("watch", "namespaces")
    for verb in ("get", "update", "patch", "delete", "create"):
        assert not can(verb, "namespaces"), f"the operator may {verb} namespaces"
