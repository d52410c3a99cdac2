"""Self-tests: the harness catches each shell-operator rule and accepts the good cases."""
from __future__ import annotations

import base64
import json
import os
import re

import pytest

from . import cases, shellop
from .admission import AdmissionResponseError, parse_response_file
from .cluster import Monitor, make_item
from .config import KubernetesBinding

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
ADMISSION = os.path.join(FIXTURES, "admission")
CONFIGS = os.path.join(FIXTURES, "configs")
RULES = os.path.join(FIXTURES, "sync", "rules.py")
MUTATING = "image-swap.example.com"


@pytest.fixture(scope="module", autouse=True)
def _executable_fixtures():
    """Fixture hooks must be executable even if a checkout dropped the mode bits."""
    for directory in (ADMISSION, CONFIGS, os.path.dirname(RULES)):
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                os.chmod(path, 0o755)


def pod(name="p", namespace="default", image="docker.io/library/nginx:1.25", labels=None):
    meta = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "c", "image": image}]}}


def request(obj=None, uid="705ab4f5-6393-11e8-b7cc-42010a800002"):
    obj = obj or pod()
    return {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": obj["metadata"]["namespace"], "operation": "CREATE",
            "userInfo": {"username": "admin"}, "object": obj}


def admit(fixture: str, **kwargs) -> shellop.RunResult:
    hook = shellop.Hook.from_path(os.path.join(ADMISSION, fixture))
    operator = shellop.Operator(hook, **kwargs)
    return operator.admit(MUTATING, request())


# --------------------------------------------------------------------------- discovery


def test_discover_filters_and_sorts(tmp_path):
    def make(rel, mode=0o755):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(mode)

    for rel in ("b.py", "a/z.sh", "a/lib/inner.sh", "lib/x.sh", ".hidden.sh", ".git/hook.sh",
                "conf.yaml", "data.json", "README.md", "notes.txt", "a/.dot/y.sh", "sub/lib2/ok.sh"):
        make(rel)
    make("noexec.sh", 0o644)
    make("group-exec.sh", 0o710)
    hooks = shellop.discover(tmp_path)
    assert [h.name for h in hooks] == ["a/z.sh", "b.py", "group-exec.sh", "sub/lib2/ok.sh"]
    assert all(os.path.isabs(h.path) and h.root == str(tmp_path) for h in hooks)


def test_safe_name_of_temporary_files():
    assert shellop.safe_name("sub/dir/hook_x.py") == "sub-dir-hook-x-py"


# --------------------------------------------------------------------------- run contract


def test_run_contract_seen_by_the_hook(tmp_path):
    hook = shellop.Hook.from_path(os.path.join(ADMISSION, "probe.py"))
    env = {"PATH": os.environ["PATH"], "PROBE_ROOT": ADMISSION, "PROBE_EXTRA": "kept",
           "BINDING_CONTEXT_PATH": "/leaked/from/operator/env"}
    shellop.load_config(hook, env)  # the probe exits 1 if cwd or env were wrong
    contexts = [{"binding": MUTATING, "type": "Mutating", "review": {"request": request()}}]
    result = shellop.run_hook(hook, contexts, env, tmp_dir=str(tmp_path))
    assert result.ok, result
    report = json.loads(result.stdout)
    assert report["argv"] == [hook.path]
    assert report["cwd"] == ADMISSION
    assert report["stdin"] == ""
    assert report["extra"] == "kept"
    paths = report["env"]
    assert paths["VALIDATING_RESPONSE_PATH"] == paths["ADMISSION_RESPONSE_PATH"]
    assert paths["BINDING_CONTEXT_PATH"] != "/leaked/from/operator/env"
    assert set(report["sizes"].values()) == {0}
    assert set(report["modes"].values()) == {"0o644"}
    names = {k: os.path.basename(v) for k, v in paths.items()}
    uuid = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    assert re.fullmatch(f"hook-probe-py-binding-context-{uuid}.json", names["BINDING_CONTEXT_PATH"])
    assert re.fullmatch(f"hook-probe-py-metrics-{uuid}.json", names["METRICS_PATH"])
    assert re.fullmatch(f"hook-probe-py-admission-response-{uuid}.json", names["ADMISSION_RESPONSE_PATH"])
    assert re.fullmatch(f"hook-probe-py-conversion-response-{uuid}.json", names["CONVERSION_RESPONSE_PATH"])
    assert re.fullmatch(f"probe-py-object-patch-{uuid}", names["KUBERNETES_PATCH_PATH"])
    assert report["context_raw"].endswith("]\n")
    assert json.loads(report["context_raw"]) == contexts
    assert not os.listdir(tmp_path), "temporary files are removed after the run"


def test_admission_runs_take_exactly_one_context():
    contexts = [{"binding": MUTATING, "type": "Mutating", "review": {"request": request()}}] * 2
    with pytest.raises(ValueError, match="exactly one"):
        shellop.run_hook(os.path.join(ADMISSION, "good_patch.sh"), contexts)


def test_safety_timeout(tmp_path):
    hook = tmp_path / "sleepy.sh"
    hook.write_text("#!/bin/sh\nsleep 5\n")
    hook.chmod(0o755)
    with pytest.raises(shellop.HookTimeout):
        shellop.run_hook(hook, [{"binding": "onStartup"}], timeout=0.2)


# --------------------------------------------------------------------------- admission hooks

HOOK_FAILED = {"allowed": False, "status": {"code": 403, "message": "Hook failed"}}


@pytest.mark.parametrize(("fixture", "expected", "error"), [
    ("exit_nonzero.sh", HOOK_FAILED, "something went wrong"),
    ("empty_response.sh", {"allowed": False, "status": {
        "code": 500, "message": "handle AdmissionReview: hook task prop error"}}, None),
    ("whitespace_response.sh", HOOK_FAILED, "EOF"),
    ("raw_array_patch.sh", HOOK_FAILED, "bad validating response"),
    ("non_base64_patch.sh", HOOK_FAILED, "base64"),
    ("unpadded_patch.sh", HOOK_FAILED, "base64"),
    ("patch_file_array.sh", HOOK_FAILED, "cannot unmarshal"),
    ("bad_metrics.sh", HOOK_FAILED, "got bad metrics"),
    ("invalid_metric_op.sh", HOOK_FAILED, "'value' is required"),
    ("trailing_garbage.sh", {"allowed": True}, None),
    ("good_deny.sh", {"allowed": False, "status": {"code": 403, "message": "image not allowed"},
                      "warnings": ["w1"]}, None),
])
def test_admission_outcomes(fixture, expected, error):
    result = admit(fixture)
    assert result.admission == {**expected, "uid": request()["uid"]}, result
    if error:
        assert not result.ok and error in result.error
    else:
        assert result.ok, result


def test_nonzero_exit_ignores_every_output_file():
    result = admit("exit_nonzero.sh")
    assert result.files["ADMISSION_RESPONSE_PATH"] == '{"allowed":true}\n'
    assert result.admission_response is None and result.metric_ops == []


def test_good_patch_is_base64_json_patch_and_applies():
    result = admit("good_patch.sh")
    assert result.ok, result
    response = result.admission
    assert response["patchType"] == "JSONPatch" and "status" not in response
    assert "message" not in response, "message is dropped when allowed"
    patched = shellop.apply_admission(response, pod())
    assert patched["spec"]["containers"][0]["image"] == "mirror.local/library/nginx:1.25"
    assert pod()["spec"]["containers"][0]["image"] == "docker.io/library/nginx:1.25"


def test_apply_admission_rejects_denials_and_broken_patches():
    with pytest.raises(shellop.AdmissionDenied):
        shellop.apply_admission({"allowed": False, "status": {"code": 403}}, pod())
    bad_path = base64.b64encode(b'[{"op":"replace","path":"/nope/x","value":1}]').decode()
    with pytest.raises(ValueError, match="does not apply"):
        shellop.apply_admission({"allowed": True, "patch": bad_path}, pod())
    assert shellop.apply_admission({"allowed": True}, pod()) == pod()


def test_metrics_and_patches_of_a_good_run():
    cluster = shellop.Cluster()
    store = shellop.MetricsStore()
    result = admit("good_metrics.sh", cluster=cluster, metrics=store)
    assert result.ok, result
    assert store.value("admissions_total", result="allowed") == 1
    assert store.value("last_run", hook="good_metrics.sh") == 7.0
    assert {s["group"] for s in store.series()} == {"good_metrics.sh"}
    assert cluster.get("Event", "e1", "default")["kind"] == "Event"
    assert result.patch_operations == [{"operation": "Create", "object": {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1", "namespace": "default"}},
        "ignoreMissingObject": False, "ignoreHookError": False}]


def test_failed_patch_operation_fails_the_admission():
    cluster = shellop.Cluster([{"apiVersion": "v1", "kind": "Event",
                                "metadata": {"name": "e1", "namespace": "default"}}])
    result = admit("good_metrics.sh", cluster=cluster)
    assert result.admission["status"]["message"] == "Hook failed"
    assert "already exists" in result.error


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize(("fixture", "message"), [
    ("schema_fail.sh", "'kind' is a required property"),
    ("mode.sh", "kubernetes.0: 'mode' does not match"),
    ("two_segments.sh", "at least three segments"),
    ("only_version.sh", "does not have enough properties"),
    ("config_fails.sh", "exit status 1: cannot build config"),
    ("blank_shebang.sh", "Exec format error"),
])
def test_broken_configs_stop_shell_operator(fixture, message):
    with pytest.raises(shellop.HookConfigError, match=re.escape(message)):
        shellop.load_config(os.path.join(CONFIGS, fixture))


def test_good_config_effective_values():
    config = shellop.load_config(os.path.join(CONFIGS, "good.sh"))
    imagemaps, mapfiles = config.kubernetes
    assert imagemaps.include_snapshots == ["imagemaps", "mapfiles"]
    assert mapfiles.keep_full_objects is False and mapfiles.queue == "main"
    assert config.schedule("resync").include_snapshots == ["imagemaps", "mapfiles"]
    assert config.admission(MUTATING).include_snapshots == ["mapfiles"]
    assert config.admission(MUTATING).type == "Mutating"
    assert config.settings == {"executionMinInterval": 0.5, "executionBurst": 3}


@pytest.mark.parametrize(("cid", "text", "accepted"), cases.CONFIG, ids=[c[0] for c in cases.CONFIG])
def test_config_rules(cid, text, accepted):
    if accepted:
        shellop.parse_config(text, registration=False)
    else:
        with pytest.raises(shellop.HookConfigError):
            shellop.parse_config(text, registration=False)


@pytest.mark.parametrize("text", [
    "configVersion: v1\nkubernetesMutating:\n- name: a.b\n",
    "configVersion: v1\nkubernetesMutating:\n- name: a.b.c\n  timeoutSeconds: 31\n",
])
def test_mutating_webhooks_are_checked_as_at_registration(text):
    with pytest.raises(shellop.HookConfigError, match="kubernetesMutating"):
        shellop.parse_config(text)


def test_legacy_config_without_version_is_refused():
    with pytest.raises(shellop.HookConfigError, match="v0"):
        shellop.parse_config("onStartup: 1\n")


# --------------------------------------------------------------------------- output files


@pytest.mark.parametrize(("cid", "text", "expected"), cases.ADMISSION, ids=[c[0] for c in cases.ADMISSION])
def test_admission_response_file(cid, text, expected):
    if expected == "error":
        with pytest.raises(AdmissionResponseError):
            parse_response_file(text)
        return
    parsed = parse_response_file(text)
    if expected is None:
        assert parsed is None
    else:
        assert {**parsed, "patch": base64.b64encode(parsed["patch"]).decode()} == expected


def _apply_metric_runs(files):
    store, oks = shellop.MetricsStore(), []
    for text in files:
        try:
            store.apply(shellop.parse_metrics(text, "hk")[0], "hk")
            oks.append(True)
        except shellop.MetricsError:
            oks.append(False)
    return store, oks


@pytest.mark.parametrize(("cid", "files", "oks", "text"), cases.METRICS, ids=[c[0] for c in cases.METRICS])
def test_metrics_runs(cid, files, oks, text):
    store, got = _apply_metric_runs(files)
    assert got == oks
    assert store.render() == text


def test_metrics_store_edge_cases():
    store = shellop.MetricsStore()
    store.apply(shellop.parse_metrics('{"name":"m","set":1}', "h")[0], "h")
    store.apply(shellop.parse_metrics('{"name":"m","add":1}', "h")[0], "h")
    assert store.warnings and store.render() == ""  # gauge expired by the run, counter refused
    store.apply(shellop.parse_metrics('{"name":"d","set":1,"group":"g"}', "h1")[0], "h1")
    store.apply(shellop.parse_metrics('{"name":"d","set":2,"group":"x"}', "h1")[0], "h1")
    with pytest.raises(shellop.MetricsError, match="collected before"):
        store.render()


@pytest.mark.parametrize(("cid", "text", "expected"), cases.PATCH, ids=[c[0] for c in cases.PATCH])
def test_kubernetes_patch_file(cid, text, expected):
    if expected == "error":
        with pytest.raises(shellop.PatchError):
            shellop.parse_operations(text)
    else:
        assert len(shellop.parse_operations(text)) == expected


# --------------------------------------------------------------------------- binding contexts


def _binding(**kwargs):
    return KubernetesBinding(**{"name": "pods", "kind": "Pod", **kwargs})


def test_context_shapes():
    b = _binding(jq_filter=".metadata.labels", keep_full_objects=False)
    items = shellop.sort_items([make_item(pod("z", "a", labels={"app": "z"}), b),
                                make_item(pod("y", "b"), b)])
    sync = shellop.BindingContext("pods", "kubernetes", type="Synchronization", objects=items)
    assert sync.to_dict() == {"binding": "pods", "type": "Synchronization",
                              "objects": [{"filterResult": {"app": "z"}}, {"filterResult": None}]}
    empty = shellop.BindingContext("pods", "kubernetes", type="Synchronization")
    assert empty.to_dict()["objects"] == []
    full = make_item(pod("x"), _binding())
    event = shellop.BindingContext("pods", "kubernetes", type="Event", watch_event="Deleted", objects=[full])
    assert event.to_dict() == {"binding": "pods", "type": "Event", "watchEvent": "Deleted",
                               "object": pod("x")}
    group = shellop.BindingContext("pods", "kubernetes", type="Event", watch_event="Added", objects=[full],
                                   group="g", include_snapshots=["pods"])
    assert group.to_dict({"pods": []}) == {"binding": "pods", "type": "Group", "groupName": "g",
                                           "snapshots": {"pods": []}}
    assert shellop.BindingContext("onStartup", "onStartup").to_dict() == {"binding": "onStartup"}
    assert shellop.BindingContext("every", "schedule").to_dict() == {"binding": "every", "type": "Schedule"}


def test_items_sort_by_namespace_then_name():
    b = _binding()
    items = shellop.sort_items([make_item(pod(n, ns), b) for ns, n in
                                [("b", "a"), ("a", "z"), ("a", "b"), ("", "c")]])
    assert [(i.namespace, i.name) for i in items] == [("", "c"), ("a", "b"), ("a", "z"), ("b", "a")]


def test_admission_context_exact_json():
    operator = shellop.Operator(RULES)
    context = operator.admission_context(MUTATING, request())
    assert context == {"binding": MUTATING, "type": "Mutating", "snapshots": {"imagemaps": []},
                       "review": {"request": {**request(), "oldObject": None, "options": None}}}
    assert "apiVersion" not in context["review"] and "kind" not in context["review"]


def test_compaction_keeps_last_of_each_run_of_a_group():
    def ctx(name, group=""):
        return shellop.BindingContext(name, "kubernetes", type="Event", group=group)

    combined = shellop.compact([ctx("A", "g"), ctx("B", "g"), ctx("C"), ctx("D", "g")])
    assert [c.binding for c in combined] == ["B", "C", "D"]


# --------------------------------------------------------------------------- operator


def imagemap(namespace, name, to, status=None):
    obj = {"apiVersion": "example.io/v1", "kind": "ImageMap",
           "metadata": {"name": name, "namespace": namespace}, "spec": {"to": to}}
    if status:
        obj["status"] = status
    return obj


MAPFILE = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"map": "a=b"},
           "metadata": {"name": "m", "namespace": "a", "labels": {"imagemapper.io/map": "true"}}}


@pytest.fixture(scope="module")
def rules_config():
    return shellop.load_config(RULES)


@pytest.fixture
def operator(rules_config):
    cluster = shellop.Cluster([imagemap("b", "m1", "r1"), imagemap("a", "m2", "r2"), MAPFILE, pod("p", "a")])
    return shellop.Operator(RULES, cluster=cluster, config=rules_config)


def test_startup_combines_grouped_synchronizations(operator):
    warnings = operator.admit(MUTATING, request()).admission["warnings"]
    assert warnings == ["imagemaps=0"], "before the monitors start, snapshots are empty"
    operator.start()
    runs = operator.drain()
    assert len(runs) == 1 and runs[0].ok, runs
    first, second = runs[0].contexts
    # [Sync imagemaps(g), Sync mapfiles(g), Sync pods] -> the grouped head absorbs the
    # rest and the first of the two "rules" contexts is compacted away.
    assert set(first) == {"binding", "type", "groupName", "snapshots"}
    assert (first["binding"], first["type"], first["groupName"]) == ("mapfiles", "Group", "rules")
    assert [i["object"]["metadata"]["namespace"] for i in first["snapshots"]["imagemaps"]] == ["a", "b"]
    assert first["snapshots"]["mapfiles"] == [{"filterResult": {"map": "a=b"}}]
    assert second["binding"] == "pods" and second["type"] == "Synchronization"
    assert [i["object"]["metadata"]["name"] for i in second["objects"]] == ["p"]
    assert operator.cluster.get("ImageMap", "m1", "b")["status"] == {"seen": {"to": "r1"}}
    assert operator.pending() == [], "status writes are outside the jqFilter: no new event"
    assert operator.metrics.value("imagemaps") == 2.0
    assert operator.admit(MUTATING, request()).admission["warnings"] == ["imagemaps=2"]


def test_unchanged_filter_result_is_not_delivered(operator):
    operator.start()
    operator.drain()
    cluster = operator.cluster
    cluster.apply({**cluster.get("ImageMap", "m1", "b"), "metadata": {
        "name": "m1", "namespace": "b", "labels": {"new": "label"}}})
    assert operator.pending() == [], "Modified with the same filterResult is skipped"
    cluster.apply(imagemap("b", "m1", "r1-changed"))
    assert [t.contexts[0].watch_event for t in operator.pending()] == ["Modified"]
    cluster.apply(pod("p", "a", labels={"x": "y"}))
    assert len(operator.pending()) == 1, "pods only run on Added"


def test_group_compaction_in_the_queue(operator):
    operator.start()
    operator.drain()
    cluster = operator.cluster
    cluster.apply(imagemap("b", "m1", "A"))                  # A(g)
    cluster.apply({**MAPFILE, "data": {"map": "B"}})         # B(g)
    cluster.apply(pod("new", "a"))                           # C
    cluster.apply(imagemap("a", "m2", "D"))                  # D(g)
    assert [t.contexts[0].binding for t in operator.pending()] == ["imagemaps", "mapfiles", "pods", "imagemaps"]
    result = operator.step()
    assert [(c["binding"], c["type"]) for c in result.contexts] == [
        ("mapfiles", "Group"), ("pods", "Event"), ("imagemaps", "Group")]
    assert result.contexts[1]["watchEvent"] == "Added"
    assert result.contexts[0]["snapshots"] == result.contexts[2]["snapshots"], "read once per run"
    assert operator.pending() == []


def test_non_group_synchronization_runs_alone(tmp_path):
    hook = tmp_path / "two.sh"
    hook.write_text("#!/bin/sh\n[ \"$1\" = --config ] && printf 'configVersion: v1\\nkubernetes:\\n"
                    "- {name: a, kind: Pod}\\n- {name: b, kind: ConfigMap}\\n'\nexit 0\n")
    hook.chmod(0o755)
    operator = shellop.Operator(hook, cluster=shellop.Cluster([pod()]))
    operator.start()
    runs = operator.drain()
    assert [[c["binding"] for c in r.contexts] for r in runs] == [["a"], ["b"]]


def test_events_wait_for_synchronization_and_failures_are_retried(operator, monkeypatch):
    operator.start()
    operator.step()  # EnableKubernetesBindings: monitors started, Synchronization queued
    operator.cluster.apply(imagemap("c", "m3", "r3"))
    monitor: Monitor = operator.monitors["imagemaps"]
    assert len(monitor.buffer) == 1, "buffered until Synchronization succeeded"
    monkeypatch.setenv("RULES_FAIL", "1")
    failed = operator.step()
    assert not failed.ok and monitor.buffer == [], "the snapshot read dropped the buffer"
    assert len(operator.pending()) == 2, "the failed task stays at the head, combined"
    assert operator.cluster.find("ImageMap", "m3", "c").get("status") is None, "patches ignored"
    monkeypatch.delenv("RULES_FAIL")
    retried = operator.step()
    assert retried.ok and retried.contexts == failed.contexts
    operator.cluster.apply(imagemap("c", "m3", "changed"))
    assert len(operator.pending()) == 2, "events flow once the Synchronization succeeded"


def test_execute_on_synchronization_false_still_unlocks_events(tmp_path):
    hook = tmp_path / "nosync.sh"
    hook.write_text("#!/bin/sh\n[ \"$1\" = --config ] && printf 'configVersion: v1\\nkubernetes:\\n"
                    "- {name: a, kind: Pod, executeHookOnSynchronization: false}\\n'\nexit 0\n")
    hook.chmod(0o755)
    operator = shellop.Operator(hook, cluster=shellop.Cluster([pod()]))
    operator.start()
    assert operator.drain() == []
    operator.cluster.apply(pod("q"))
    result = operator.drain()[0]
    assert result.contexts[0]["type"] == "Event" and result.contexts[0]["object"]["metadata"]["name"] == "q"
