"""kubeclient drives the kubectl binary: arguments, JSON, and errors in kubectl's words.

A tiny executable stands in for kubectl here and records its argv; the e2e tests run the
same code against a real kube-apiserver with the real kubectl.
"""

from __future__ import annotations

import stat

import pytest
from imagemapper import kubeclient

FAKE = """#!/bin/sh
printf '%s\\n' "$@" > "$0.argv"
case "$*" in
  *imagemaps*missing*) echo 'Error from server (NotFound): imagemaps "missing" not found' >&2; exit 1 ;;
  *forbidden*) echo 'Error from server (Forbidden): configmaps is forbidden' >&2; exit 1 ;;
  *config\\ view*) printf 'team' ;;
  *) printf '{"kind": "List", "items": [{"metadata": {"name": "a"}}, 3]}' ;;
esac
"""


@pytest.fixture
def kubectl(tmp_path):
    path = tmp_path / "kubectl"
    path.write_text(FAKE)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def argv(binary: str) -> list[str]:
    with open(binary + ".argv", encoding="utf-8") as handle:
        return handle.read().splitlines()


def test_list_passes_context_namespace_and_selector(kubectl):
    kc = kubeclient.Kubectl(context="prod", kubeconfig="/k", binary=kubectl)
    assert kc.list("configmaps", "shop", "imagemapper.io/map-file=true") == [{"metadata": {"name": "a"}}]
    assert argv(kubectl) == ["--kubeconfig", "/k", "--context", "prod", "get", "configmaps", "-n", "shop",
                             "-l", "imagemapper.io/map-file=true", "-o", "json"]
    kc.list("imagemaps")
    assert "--all-namespaces" in argv(kubectl)


def test_errors_keep_kubectl_words(kubectl):
    kc = kubeclient.Kubectl(binary=kubectl)
    with pytest.raises(kubeclient.NotFound, match='imagemaps "missing" not found'):
        kc.get("imagemaps", "missing", "shop")
    with pytest.raises(kubeclient.KubectlError, match="forbidden"):
        kc.list("forbidden")


def test_current_namespace(kubectl):
    assert kubeclient.Kubectl(binary=kubectl).current_namespace() == "team"


def test_missing_kubectl_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.delenv("KUBECTL", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(kubeclient.KubectlError, match="kubectl not found: install kubectl"):
        kubeclient.Kubectl().list("imagemaps")
