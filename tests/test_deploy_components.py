"""Upgrades never undo user configuration: the install owns no user-edited object,
settings come from overlays and the components in deploy/components, and the docs show
an overlay that works."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from imagemapper import settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPONENTS = sorted(p.name for p in (DEPLOY / "components").iterdir() if p.is_dir())


def render(path: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed: install kubectl 1.33-1.35 "
                    "(https://kubernetes.io/docs/tasks/tools/) to render the kustomizations")
    done = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def overlay(tmp_path: Path, *components: str, extra: str = "") -> list[dict]:
    """An overlay of deploy/ with the given components, as a user would write it."""
    deploy = os.path.relpath(DEPLOY, tmp_path)  # kustomize refuses absolute paths
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n- {deploy}\n"
        + ("components:\n" + "".join(f"- {deploy}/components/{c}\n" for c in components)
           if components else "") + extra)
    return render(tmp_path)


def find(docs: list[dict], kind: str, name: str) -> dict | None:
    return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


def operator_env(docs: list[dict]) -> dict:
    [container] = find(docs, "Deployment", "image-mapper")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_install_owns_no_object_users_edit():
    docs = render(DEPLOY)
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"] == []
    assert not [d for d in docs if d["kind"] == "ImageMap"]
    bundle = [d for d in yaml.safe_load_all((DEPLOY / "bundle.yaml").read_text()) if d]
    assert not [d for d in bundle if d["kind"] in ("ConfigMap", "ImageMap")]


def test_components_ship_the_common_choices():
    assert {"opt-in", "failure-policy-ignore", "exclude-namespaces", "cert-manager", "pull-secret"} <= set(COMPONENTS)


@pytest.mark.parametrize("component,variable,value", [
    ("opt-in", "IMAGE_MAPPER_NAMESPACE_MODE", "opt-in"),
    ("failure-policy-ignore", "IMAGE_MAPPER_FAILURE_POLICY", "Ignore"),
    ("map-files-opt-in", "IMAGE_MAPPER_NAMESPACE_MAP_FILES", "opt-in"),
])
def test_setting_components_change_one_variable(tmp_path, component, variable, value):
    base = operator_env(render(DEPLOY))
    env = operator_env(overlay(tmp_path, component))
    assert env == {**base, variable: value}


def test_map_files_opt_in_grants_namespace_reads_only_with_it(tmp_path):
    """Issue 11.12: the sync hook watches Namespaces only in opt-in mode, so only the
    component that turns it on adds namespaces list/watch, and nothing else."""
    base = find(render(DEPLOY), "ClusterRole", "image-mapper")["rules"]
    assert not [r for r in base if "namespaces" in r["resources"]]
    rules = find(overlay(tmp_path, "map-files-opt-in"), "ClusterRole", "image-mapper")["rules"]
    assert rules == [*base, {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}]


def test_exclude_namespaces_component_is_a_valid_setting(tmp_path):
    env = operator_env(overlay(tmp_path, "exclude-namespaces"))
    parsed = settings.from_env({**env, "SHELL_OPERATOR_NAMESPACE": "image-mapper-system"})
    assert {"ingress-nginx", "cert-manager", "calico-system"} <= set(parsed.excluded_namespaces)


def test_cert_manager_component_replaces_the_job_in_any_overlay(tmp_path):
    docs = overlay(tmp_path, "cert-manager", "opt-in")
    assert find(docs, "Job", "image-mapper-certgen") is None
    assert find(docs, "ServiceAccount", "image-mapper-certgen") is None
    for name in ("image-mapper-ca", "image-mapper-webhook"):
        assert find(docs, "Certificate", name)["metadata"]["namespace"] == "image-mapper-system"
    assert operator_env(docs)["IMAGE_MAPPER_NAMESPACE_MODE"] == "opt-in"


def test_pull_secret_component(tmp_path):
    docs = overlay(tmp_path, "pull-secret")
    for kind, name in (("Deployment", "image-mapper"), ("Job", "image-mapper-certgen")):
        spec = find(docs, kind, name)["spec"]["template"]["spec"]
        assert spec["imagePullSecrets"] == [{"name": "image-mapper-pull"}]


def test_documented_overlay_combines_an_image_and_a_setting():
    docs = render(ROOT / "examples" / "overlay")
    images = {c["image"] for d in docs if d["kind"] in ("Deployment", "Job")
              for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {"registry.corp/image-mapper:v0.1.0"}
    assert operator_env(docs)["IMAGE_MAPPER_NAMESPACE_MODE"] == "opt-in"
    shown = yaml.safe_load((ROOT / "examples" / "overlay" / "kustomization.yaml").read_text())
    for doc in ("README.md", "docs/install.md"):
        text = (ROOT / doc).read_text()
        blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]
        assert shown in blocks, f"{doc} does not show examples/overlay/kustomization.yaml"


def test_documented_timeout_patch_sets_one_variable(tmp_path):
    text = (ROOT / "docs" / "install.md").read_text()
    [patch] = [b for b in re.findall(r"```yaml\n(patches:.*?)```", text, re.S)]
    env = operator_env(overlay(tmp_path, extra=patch))
    assert env["IMAGE_MAPPER_TIMEOUT_SECONDS"] == "5"


def test_readme_uninstall_warns_about_the_crd_and_the_map_files():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("To uninstall"):text.index("See [docs/install.md]")]
    assert "every ImageMap in every namespace" in section
    assert "map files" in section and "kubectl get imagemaps -A -o yaml" in section


def test_readme_creates_a_map_file_configmap_in_one_command(tmp_path):
    text = (ROOT / "README.md").read_text()
    [command] = re.findall(r"```sh\n(kubectl create configmap .*?)```", text, re.S)
    local = command.replace("\\\n", " ").rsplit("| kubectl apply -f -", 1)[0]
    done = subprocess.run(["bash", "-o", "pipefail", "-c", local], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    cm = yaml.safe_load(done.stdout)
    assert cm["metadata"]["labels"] == {"imagemapper.io/map-file": "true"}
    assert cm["metadata"]["namespace"] == "image-mapper-system"
    assert cm["data"]["maps"] == (ROOT / "examples" / "maps.conf").read_text()


def test_deployment_priority_class_suits_the_admission_path():
    spec = find(render(DEPLOY), "Deployment", "image-mapper")["spec"]["template"]["spec"]
    assert spec["priorityClassName"] == "system-cluster-critical"
