"""A user's first hour on the real kube-apiserver and shell-operator.

* `kubectl image-mapper explain`, the kubectl plugin that `pip install .` installs, reads
  the live cluster and says why each image is, or is not, rewritten;
* `kubectl apply` of a map file shows the warnings `image-mapper check` shows, and the
  Events carry one reason per cause;
* IMAGE_MAPPER_EXCLUDE_NAMESPACES keeps the API server from calling the webhook;
* shell-operator prints the hooks' log fields with a `hook_` prefix, and serves HELP
  lines that repeat the metric name (what docs/operations.md says);
* at start, one sync run gets the map files and every ImageMap and compiles (the grouped
  bindings come first; see hookconfig.sync_config).
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cluster import ControlPlane, kubectl_binary, wait_until
from install import OPERATOR_NS, REPO, Installation, imagemap, images_of, mapfile, pod, serving

pytestmark = pytest.mark.e2e

EXCLUDED = "fh-excluded"


@pytest.fixture(scope="module")
def installation(control_plane: ControlPlane) -> Iterator[Installation]:
    with serving(control_plane, {"IMAGE_MAPPER_EXCLUDE_NAMESPACES": f"other-ns,{EXCLUDED}"}) as installation:
        try:
            yield installation
        finally:
            control_plane.kubectl("delete", "namespace", EXCLUDED, "--ignore-not-found", "--wait=false",
                                  check=False)


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """`pip install .` into a throwaway venv; PATH with its bin dir and kubectl's."""
    base = tmp_path_factory.mktemp("plugin")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True)
    src = base / "src"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "lib",
                            "pyproject.toml", "README.md"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes((REPO / name).read_bytes())
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                           "--quiet", "--no-deps", "--no-build-isolation", str(src)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert (venv / "bin" / "kubectl-image_mapper").exists()
    return f"{venv / 'bin'}:{Path(kubectl_binary()).parent}:{os.environ['PATH']}"


def kubectl_plugin(cp: ControlPlane, path: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PATH=path, KUBECONFIG=str(cp.admin_kubeconfig), HOME=str(cp.workdir))
    return subprocess.run(["kubectl", "image-mapper", *argv], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def wait_rewritten(cp: ControlPlane, ns: str, image: str) -> None:
    wait_until(lambda: images_of(cp.create(pod("probe", ns, image), dry_run=True))["containers/c0"] != image,
               30, f"a rule for {image} to take effect in {ns}")


def test_explain_through_the_kubectl_plugin(installation: Installation, plugin_path: str,
                                            make_namespace: Callable[..., str]) -> None:
    cp = installation.control_plane
    ns = make_namespace("explain")
    off = make_namespace("explain-off", labels={"imagemapper.io/mode": "disabled"})
    cp.apply(imagemap("team", ns, [{"from": "nginx", "to": "registry.corp/hub/nginx"}]))
    cp.apply(mapfile("fh-cluster", OPERATOR_NS, "default::\nquay.io::registry.corp/quay\n"))
    try:
        wait_rewritten(cp, ns, "nginx:1.25")
        wait_rewritten(cp, ns, "quay.io/a/b:1")
        stored = cp.create(pod("web", ns, "nginx:1.25", "redis:7"))
        assert images_of(stored)["containers/c0"] == "registry.corp/hub/nginx:1.25"

        done = kubectl_plugin(cp, plugin_path, "explain", "-n", ns, "nginx:1.25", "quay.io/a/b:1", "redis:7",
                              "pod/web")
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == ("nginx:1.25 -> registry.corp/hub/nginx:1.25\t"
                            "# imagemap team spec.map[0]: nginx -> registry.corp/hub/nginx")
        assert lines[1].startswith("quay.io/a/b:1 -> registry.corp/quay/a/b:1\t# configmap "
                                   f"{OPERATOR_NS}/fh-cluster key maps line 2")
        assert lines[2].startswith("redis:7 (unchanged)\t# configmap")  # default:: decides
        assert lines[3] == f"pod {ns}/web:"
        assert lines[4].startswith("  containers/c0: nginx:1.25 -> registry.corp/hub/nginx:1.25")
        assert lines[5].startswith("  containers/c1: redis:7 (unchanged)")
        assert done.stderr == ""

        skipped = kubectl_plugin(cp, plugin_path, "explain", "-n", off, "nginx:1.25")
        assert skipped.stdout.startswith(f"nginx:1.25 (unchanged)\t# not rewritten: namespace '{off}' is "
                                         "labeled imagemapper.io/mode=disabled")
        for system in ("kube-system", EXCLUDED):
            out = kubectl_plugin(cp, plugin_path, "explain", "-n", system, "quay.io/a/b:1")
            assert "never rewrites Pods in namespace" in out.stdout, out.stderr
    finally:
        cp.kubectl("delete", "configmap", "fh-cluster", "-n", OPERATOR_NS, "--ignore-not-found")


def test_apply_shows_the_check_warnings_and_events_name_their_cause(
        installation: Installation, make_namespace: Callable[..., str], tmp_path: Path) -> None:
    cp = installation.control_plane
    ns = make_namespace("warn")
    text = "quay.io::registry.corp/quay\nquay.io::registry.corp/quay2\n"
    done = cp.kubectl("apply", "-f", "-", input=_yaml(mapfile("dups", ns, text)), check=False)
    assert done.returncode == 0, done.stderr
    assert f"Warning: configmap {ns}/dups key maps line 2: key repeats" in done.stderr
    assert "registry keys are inactive without a default key" in done.stderr

    saved = tmp_path / "dups.yaml"
    saved.write_text(cp.kubectl("get", "cm", "dups", "-n", ns, "-o", "yaml").stdout)
    check = subprocess.run([sys.executable, "-m", "imagemapper", "check", str(saved)], capture_output=True,
                           text=True, env=dict(os.environ, PYTHONPATH=str(REPO / "lib")), check=False)
    assert "line 2: key repeats" in check.stderr and "without a default key" in check.stderr

    def reasons() -> set[str]:
        events = cp.kubectl_json("get", "events", "-n", ns).get("items") or []
        return {e.get("reason") for e in events if (e.get("involvedObject") or {}).get("name") == "dups"}

    wait_until(lambda: {"DuplicateMapKey", "InactiveMapRules"} <= reasons(), 30, "one Event per cause")
    assert "DeprecatedMapSyntax" not in reasons()


def _yaml(obj: dict) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False)


def test_excluded_namespace_is_never_sent_to_the_webhook(installation: Installation) -> None:
    cp = installation.control_plane
    cp.create_namespace(EXCLUDED)
    cp.apply(imagemap("team", EXCLUDED, [{"from": "nginx", "to": "registry.corp/hub/nginx"}]))
    config = cp.kubectl_json("get", "mutatingwebhookconfiguration", "image-mapper-hooks")
    [hook] = [w for w in config["webhooks"] if w["name"] == "pods.mutate.imagemapper.io"]
    names = next(e for e in hook["namespaceSelector"]["matchExpressions"]
                 if e["key"] == "kubernetes.io/metadata.name")
    assert {EXCLUDED, "other-ns", "kube-system", OPERATOR_NS} <= set(names["values"])
    wait_until(lambda: cp.kubectl_json("get", "imagemap", "team", "-n", EXCLUDED).get("status"), 30,
               "the ImageMap to get a status")
    stored = cp.create(pod("web", EXCLUDED, "nginx:1.25"), dry_run=True)
    assert images_of(stored)["containers/c0"] == "nginx:1.25"


def test_shell_operator_prefixes_log_fields_and_help_is_the_name(installation: Installation,
                                                                make_namespace: Callable[..., str]) -> None:
    cp = installation.control_plane
    ns = make_namespace("logs")
    cp.apply(imagemap("team", ns, [{"from": "nginx", "to": "registry.corp/hub/nginx"}]))
    wait_rewritten(cp, ns, "nginx:1.25")
    cp.create(pod("web", ns, "nginx:1.25"))
    operator = installation.replicas[0].operator
    record = operator.wait_log(lambda r: r.get("msg") == "rewrite" and r.get("hook_namespace") == ns)
    assert {"hook_pod", "hook_container", "hook_image", "hook_to", "hook_rule"} <= set(record)
    assert "namespace" not in record and record.get("hook") == "mutate.py"
    compiled = operator.wait_log(lambda r: r.get("msg") == "snapshot compiled")
    assert {"hook_namespaces", "hook_recompiled", "hook_namespace_rules", "hook_cluster_rules"} <= set(compiled)
    with urllib.request.urlopen(operator.hook_metrics_url, timeout=10) as response:
        text = response.read().decode()
    assert "# HELP image_mapper_rules image_mapper_rules\n" in text
    assert 'image_mapper_rules{hook="sync.py",scope="namespace"}' in text


def test_start_up_is_one_sync_run_that_compiles(installation: Installation) -> None:
    """shell-operator queues the Synchronization tasks in binding order, and the grouped
    head task absorbs the ImageMaps' one: no run waits for the other kind."""
    operator = installation.replicas[0].operator
    operator.wait_log(lambda r: r.get("msg") == "snapshot compiled" and r.get("hook") == "sync.py")
    records = [r for r in operator.log_records() if r.get("hook") == "sync.py"]
    assert not [r for r in records if str(r.get("msg", "")).startswith("waiting for the first synchronization")]
    first = next(i for i, r in enumerate(records) if r.get("msg") == "Execute hook")
    done = next(i for i, r in enumerate(records) if r.get("msg") == "snapshot compiled")
    assert not [r for r in records[first + 1:done] if r.get("msg") == "Execute hook"], \
        "the first sync run compiled the snapshot"
