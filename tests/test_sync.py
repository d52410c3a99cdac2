"""The sync hook's logic: status only on change, stable Events, reinvocation, metrics."""

from __future__ import annotations

import copy

import pytest
from imagemapper import hookconfig, snapshot, sync
from imagemapper.settings import Settings

OPNS = "image-mapper-system"


def imap_obj(name, items, created="2024-01-01T00:00:00Z", ns="shop", generation=1, status=None):
    obj = {"apiVersion": "imagemapper.io/v1alpha1", "kind": "ImageMap",
           "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "generation": generation,
                        "creationTimestamp": created}, "spec": {"map": items}}
    if status:
        obj["status"] = status
    return obj


def filtered(obj):
    """What the jqFilter of the imagemaps binding yields."""
    meta = obj["metadata"]
    return {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "generation": meta["generation"], "created": meta["creationTimestamp"], "spec": obj["spec"]}


def group_context(objs, configmaps=(), webhooks=None):
    snaps = {"imagemaps": [{"object": o, "filterResult": filtered(o)} for o in objs],
             "mapfiles": [{"filterResult": {"name": n, "namespace": ns, "uid": f"cm-{n}", "data": d}}
                          for ns, n, d in configmaps],
             "webhook": [] if webhooks is None else [{"filterResult": webhooks}]}
    return [{"binding": "imagemaps", "type": "Group", "groupName": "sync", "snapshots": snaps}]


def apply_status(objs, out):
    """Apply the status MergePatches the way the API server would."""
    by_name = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objs}
    for op in out.operations:
        if op["operation"] == "MergePatch" and op.get("subresource") == "status":
            by_name[(op["namespace"], op["name"])]["status"] = copy.deepcopy(op["mergePatch"]["status"])


@pytest.fixture
def settings(tmp_path):
    return Settings(operator_namespace=OPNS, state_dir=str(tmp_path), configuration_name="image-mapper")


def ops(out, kind):
    return [op for op in out.operations if op["operation"] == kind]


def test_first_run_writes_status_and_event_second_run_writes_nothing(settings):
    objs = [imap_obj("team", [{"from": "nginx", "to": "r.corp/nginx"}])]
    out = sync.run(group_context(objs), settings, now="2024-05-01T00:00:00Z")
    [patch] = ops(out, "MergePatch")
    status = patch["mergePatch"]["status"]
    assert status["rules"] == 1 and status["observedGeneration"] == 1
    assert status["conditions"][0] == {"type": "Ready", "status": "True", "reason": "Accepted",
                                       "message": "1 rule active", "lastTransitionTime": "2024-05-01T00:00:00Z",
                                       "observedGeneration": 1}
    [event] = ops(out, "CreateIfNotExists")
    assert event["object"]["kind"] == "Event" and event["object"]["reason"] == "Accepted"
    assert snapshot.is_ready(settings.state_dir)
    apply_status(objs, out)
    again = sync.run(group_context(objs), settings, now="2024-05-02T00:00:00Z")
    assert again.operations == []


def test_conflict_then_fix_flips_status_without_timer(settings):
    winner = imap_obj("old", [{"from": "nginx", "to": "a.corp/nginx"}], created="2024-01-01T00:00:00Z")
    loser = imap_obj("new", [{"from": "nginx", "to": "b.corp/nginx"}], created="2024-02-01T00:00:00Z")
    objs = [winner, loser]
    out = sync.run(group_context(objs), settings, now="2024-05-01T00:00:00Z")
    apply_status(objs, out)
    cond = loser["status"]["conditions"][0]
    assert (cond["status"], cond["reason"]) == ("False", "Conflict")
    assert 'ImageMap "old"' in cond["message"] and loser["status"]["rules"] == 0
    events = ops(out, "CreateIfNotExists")
    assert {e["object"]["reason"] for e in events} == {"Accepted", "Conflict"}
    assert {e["object"]["type"] for e in events} == {"Normal", "Warning"}
    # fix the winner: the next sync (triggered by that very change) accepts the loser
    winner["spec"]["map"] = [{"from": "redis", "to": "a.corp/redis"}]
    winner["metadata"]["generation"] = 2
    out = sync.run(group_context(objs), settings, now="2024-05-01T00:01:00Z")
    apply_status(objs, out)
    cond = loser["status"]["conditions"][0]
    assert (cond["status"], cond["reason"]) == ("True", "Accepted")
    assert cond["lastTransitionTime"] == "2024-05-01T00:01:00Z"
    assert winner["status"]["observedGeneration"] == 2


def test_last_transition_time_kept_while_status_unchanged(settings):
    obj = imap_obj("m", [{"from": "Bad Ref"}])
    objs = [obj]
    apply_status(objs, sync.run(group_context(objs), settings, now="2024-05-01T00:00:00Z"))
    assert obj["status"]["conditions"][0]["reason"] == "Invalid"
    obj["spec"]["map"] = [{"from": "x", "to": "Bad Ref"}]
    obj["metadata"]["generation"] = 2
    out = sync.run(group_context(objs), settings, now="2024-05-03T00:00:00Z")
    apply_status(objs, out)
    cond = obj["status"]["conditions"][0]
    assert cond["lastTransitionTime"] == "2024-05-01T00:00:00Z" and cond["observedGeneration"] == 2


def test_event_names_are_stable_across_replicas(settings, tmp_path_factory):
    objs = [imap_obj("team", [{"from": "nginx", "to": "r.corp/nginx"}])]
    other = Settings(operator_namespace=OPNS, state_dir=str(tmp_path_factory.mktemp("replica2")))
    a = ops(sync.run(group_context(objs), settings, now="t1"), "CreateIfNotExists")
    b = ops(sync.run(group_context(objs), other, now="t2"), "CreateIfNotExists")
    assert [e["object"]["metadata"]["name"] for e in a] == [e["object"]["metadata"]["name"] for e in b]


def test_map_file_line_errors_become_events_and_metrics(settings):
    cms = [(OPNS, "cluster", {"maps": "default::mirror.corp\nthis is wrong\n"})]
    out = sync.run(group_context([], cms), settings, now="t")
    [event] = ops(out, "CreateIfNotExists")
    assert event["object"]["involvedObject"]["kind"] == "ConfigMap"
    assert event["object"]["reason"] == "InvalidMapLines" and "line 2" in event["object"]["message"]
    errors = [m for m in out.metrics if m["name"] == "image_mapper_mapfile_line_errors"]
    assert errors == [{"name": "image_mapper_mapfile_line_errors", "group": sync.SYNC_METRICS_GROUP,
                       "action": "set", "value": 1, "labels": {"namespace": OPNS, "configmap": "cluster"}}]
    assert any(line["msg"] == "map file line" and "line 2" in line["problem"] for line in out.logs)


def test_metrics_count_rules_and_reasons(settings):
    objs = [imap_obj("a", [{"from": "nginx", "to": "a.corp/nginx"}]), imap_obj("b", [{"from": "Bad Ref"}])]
    out = sync.run(group_context(objs, [(OPNS, "c", {"maps": "default::m.corp\n"})]), settings, now="t")
    values = {(m["name"], tuple(sorted(m["labels"].items()))): m["value"] for m in out.metrics}
    assert values[("image_mapper_rules", (("scope", "namespace"),))] == 1
    assert values[("image_mapper_rules", (("scope", "cluster"),))] == 1
    assert values[("image_mapper_imagemaps", (("reason", "Invalid"),))] == 1
    assert values[("image_mapper_imagemaps", (("reason", "Accepted"),))] == 1


def test_reinvocation_policy_is_patched_until_set(settings):
    hooks = [{"name": hookconfig.MUTATE_WEBHOOK, "reinvocationPolicy": "Never"}]
    [patch] = ops(sync.run(group_context([], webhooks=hooks), settings, now="t"), "JSONPatch")
    assert patch["name"] == "image-mapper-hooks" and patch["kind"] == "MutatingWebhookConfiguration"
    assert patch["jsonPatch"][-1] == {"op": "add", "path": "/webhooks/0/reinvocationPolicy", "value": "IfNeeded"}
    hooks[0]["reinvocationPolicy"] = "IfNeeded"
    assert ops(sync.run(group_context([], webhooks=hooks), settings, now="t"), "JSONPatch") == []


def test_cluster_map_namespace_is_configurable(tmp_path):
    settings = Settings(operator_namespace=OPNS, map_namespace="maps", state_dir=str(tmp_path))
    sync.run(group_context([], [("maps", "c", {"maps": "default::m.corp\n"}),
                                (OPNS, "ignored", {"maps": "default::nope.corp\n"})]), settings, now="t")
    cluster = snapshot.load_cluster(str(tmp_path))
    assert cluster["mapfiles"]["default"][0] == "m.corp"
    # a map file in any other namespace (the operator's included) is namespace-scoped
    assert snapshot.load_namespace(str(tmp_path), OPNS)["mapfiles"]["default"][0] == "nope.corp"


def test_each_map_file_event_reason_matches_its_cause(settings):
    text = "quay.io::q.corp\nquay.io::q2.corp\ngcr.io:g.corp\n"
    out = sync.run(group_context([], [(OPNS, "mixed", {"maps": text})]), settings, now="t")
    events = {e["object"]["reason"]: e["object"]["message"] for e in ops(out, "CreateIfNotExists")}
    assert set(events) == {"DuplicateMapKey", "InactiveMapRules", "DeprecatedMapSyntax"}
    assert "line 2: key repeats" in events["DuplicateMapKey"]
    assert "without a default key" in events["InactiveMapRules"]
    assert "line 3: deprecated separator" in events["DeprecatedMapSyntax"]


def _documented_logs() -> dict[str, str]:
    """msg -> the fields cell of the log table in docs/operations.md."""
    import os
    import re

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "docs", "operations.md"), encoding="utf-8") as handle:
        text = handle.read()
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| `([a-z ]+)` \| ([^|]*) \|", text, re.M)}


def test_every_sync_log_line_is_documented_with_shell_operators_hook_prefix(settings):
    text = "".join(f"bad line {i}\n" for i in range(sync.LOGGED_PER_CHANGE + 5))
    objs = [imap_obj("bad", [{"from": "Bad Ref"}])]
    out = sync.run(group_context(objs, [(OPNS, "many", {"maps": text})]), settings, now="t")
    documented = _documented_logs()
    seen = set()
    for line in out.logs:
        msg = line["msg"]
        seen.add(msg)
        assert msg in documented, f"log line {msg!r} is not in docs/operations.md"
        for key in set(line) - {"msg", "level"}:
            assert f"`hook_{key}`" in documented[msg], (msg, key)
    assert {"snapshot compiled", "imagemap status", "map file line", "map file lines"} <= seen


def test_rewrite_log_fields_are_documented():
    import inspect

    from imagemapper import entrypoints

    source = inspect.getsource(entrypoints._report_mutation)
    call = source[source.index('protocol.log("rewrite"'):].split(")\n")[0]
    import re

    fields = re.findall(r"(\w+)=", call)
    assert fields == ["namespace", "pod", "container", "image", "to", "rule"]
    assert all(f"`hook_{f}`" in _documented_logs()["rewrite"] for f in fields)
