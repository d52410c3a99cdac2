"""The three hooks as processes, driven by the shell-operator emulator in tests/harness."""

from __future__ import annotations

import copy
import json
import os
import sys

import pytest
from harness import shellop
from harness.shellop import (
    Cluster,
    Operator,
    apply_admission,
    discover,
    load_config,
    run_hook,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOOKS_DIR = os.path.join(ROOT, "hooks")
with open(os.path.join(HOOKS_DIR, "mutate.py")) as _shebang:
    HOOK_SHEBANG = _shebang.readline()[2:].split()  # exactly the hooks' interpreter and flags: python3 -S
HOOK_PYTHON = HOOK_SHEBANG[0]
OPNS = "image-mapper-system"
MUTATE = "pods.mutate.imagemapper.io"


def hook(name: str) -> shellop.Hook:
    return shellop.Hook.from_path(os.path.join(HOOKS_DIR, name), HOOKS_DIR)


def make_env(state_dir: str, **extra: str) -> dict:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": os.path.join(ROOT, "lib"),
           "SHELL_OPERATOR_NAMESPACE": OPNS, "VALIDATING_WEBHOOK_CONFIGURATION_NAME": "image-mapper",
           "IMAGE_MAPPER_STATE_DIR": state_dir}
    env.update(extra)
    return env


def imagemap(name, items, ns="shop", created="2024-01-01T00:00:00Z", generation=1):
    return {"apiVersion": "imagemapper.io/v1alpha1", "kind": "ImageMap",
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}", "generation": generation,
                         "creationTimestamp": created},
            "spec": {"map": items}}


def mapfile(name, text, ns=OPNS):
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "uid": f"cm-{name}",
                         "labels": {"imagemapper.io/map-file": "true"}},
            "data": {"maps": text}}


def webhook_configuration(policy=None):
    hook_entry = {"name": MUTATE, "clientConfig": {}, "admissionReviewVersions": ["v1"], "sideEffects": "None"}
    if policy:
        hook_entry["reinvocationPolicy"] = policy
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "image-mapper-hooks"}, "webhooks": [hook_entry]}


def pod(images: dict, ns="shop", labels=None, annotations=None, init=None, name="web"):
    meta = {"name": name, "namespace": ns}
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    spec = {"containers": [{"name": n, "image": i} for n, i in images.items()]}
    if init:
        spec["initContainers"] = [{"name": n, "image": i} for n, i in init.items()]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def pod_request(obj, operation="CREATE", old=None, sub=None):
    req = {"uid": "req-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
           "resource": {"group": "", "version": "v1", "resource": "pods"},
           "namespace": obj["metadata"]["namespace"], "name": obj["metadata"].get("name", ""),
           "operation": operation, "userInfo": {"username": "test"}, "object": obj, "oldObject": old}
    if sub:
        req["subResource"] = sub
    return req


def images_of(obj):
    spec = obj["spec"]
    return [c["image"] for key in ("initContainers", "containers", "ephemeralContainers") for c in spec.get(key, [])]


@pytest.fixture
def state(tmp_path):
    return str(tmp_path / "state")


@pytest.fixture
def synced(state):
    """A cluster with ImageMaps and map files, after the sync hook's Synchronization."""
    cluster = Cluster([
        imagemap("team", [{"from": "nginx", "to": "registry.corp/hub/nginx"},
                          {"from": "quay.io/jetstack/*", "to": "registry.corp/jetstack/*"}]),
        mapfile("cluster-map", "default::mirror.corp\ndocker.io::mirror.corp/hub\n"),
        mapfile("shop-map", "default::\ngcr.io::shop.corp/gcr\n", ns="shop"),
        webhook_configuration(),
    ])
    operator = Operator(hook("sync.py"), cluster=cluster, env=make_env(state))
    operator.start()
    runs = operator.drain()
    assert runs and all(r.ok for r in runs), [str(r) for r in runs]
    return operator


def admit(state, request, **env):
    return run_hook(hook("mutate.py"), [{"binding": MUTATE, "type": "Mutating", "review": {"request": request}}],
                    make_env(state, **env))


# ----------------------------------------------------------------------------- config

def test_exactly_three_hooks_with_valid_configs(state):
    hooks = discover(HOOKS_DIR)
    assert [h.name for h in hooks] == ["mutate.py", "sync.py", "validate.py"]
    for h in hooks:
        load_config(h, make_env(state))  # raises on schema or extra-check failures


@pytest.mark.parametrize("variable,value", [("IMAGE_MAPPER_FAILURE_POLICY", "Sometimes"),
                                            ("IMAGE_MAPPER_NAMESPACE_MODE", "maybe"),
                                            ("IMAGE_MAPPER_TIMEOUT_SECONDS", "99"),
                                            ("IMAGE_MAPPER_STATE_DIR", "relative/dir"),
                                            ("IMAGE_MAPPER_MAP_NAMESPACE", "Not_A_Namespace"),
                                            ("IMAGE_MAPPER_EXCLUDE_NAMESPACES", "ingress,Not_A_Namespace"),
                                            ("IMAGE_MAPPER_MAX_ADMISSIONS", "0"),
                                            ("IMAGE_MAPPER_NAMESPACE_MAP_FILES", "sometimes"),
                                            ("IMAGE_MAPPER_ALLOWED_TARGETS", "ok.corp,Bad Prefix")])
def test_bad_setting_fails_config_naming_the_variable(state, variable, value):
    for name in ("mutate.py", "validate.py", "sync.py"):
        with pytest.raises(Exception) as err:
            load_config(hook(name), make_env(state, **{variable: value}))
        assert variable in str(err.value)


def test_opt_out_and_opt_in_selectors(state):
    webhook = load_config(hook("mutate.py"), make_env(state)).admission(MUTATE).raw
    expressions = webhook["namespace"]["labelSelector"]["matchExpressions"]
    assert {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [OPNS, "kube-system"]} in expressions
    assert {"key": "imagemapper.io/mode", "operator": "NotIn", "values": ["disabled"]} in expressions
    assert webhook["labelSelector"] == {"matchExpressions": [
        {"key": "imagemapper.io/mode", "operator": "NotIn", "values": ["disabled"]}]}
    opt_in = load_config(hook("mutate.py"), make_env(state, IMAGE_MAPPER_NAMESPACE_MODE="opt-in")).admission(MUTATE).raw
    assert {"key": "imagemapper.io/mode", "operator": "In", "values": ["enabled"]} in \
        opt_in["namespace"]["labelSelector"]["matchExpressions"]
    ignore = load_config(hook("mutate.py"), make_env(state, IMAGE_MAPPER_FAILURE_POLICY="Ignore",
                                                     IMAGE_MAPPER_TIMEOUT_SECONDS="5")).admission(MUTATE).raw
    assert ignore["failurePolicy"] == "Ignore" and ignore["timeoutSeconds"] == 5
    assert {r["operations"][0] for r in webhook["rules"]} == {"CREATE", "UPDATE"}
    assert sorted(res for r in webhook["rules"] for res in r["resources"]) == ["pods", "pods/ephemeralcontainers"]


def test_excluded_namespaces_are_outside_the_webhook_selector(state):
    env = make_env(state, IMAGE_MAPPER_EXCLUDE_NAMESPACES="ingress-nginx, cert-manager,calico-system")
    webhook = load_config(hook("mutate.py"), env).admission(MUTATE).raw
    assert {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
            "values": ["calico-system", "cert-manager", OPNS, "ingress-nginx", "kube-system"]} in \
        webhook["namespace"]["labelSelector"]["matchExpressions"]


# ----------------------------------------------------------------------------- mutate

def test_pods_get_expected_images_and_second_pass_changes_nothing(synced, state):
    obj = pod({"web": "nginx:1.25", "cm": "quay.io/jetstack/cert-manager:v1", "gcr": "gcr.io/x/y:1"},
              init={"init": "busybox"})
    result = admit(state, pod_request(obj))
    assert result.ok, str(result)
    assert result.admission["allowed"] is True and result.admission["patchType"] == "JSONPatch"
    out = apply_admission(result.admission, obj)
    assert images_of(out) == ["busybox", "registry.corp/hub/nginx:1.25", "registry.corp/jetstack/cert-manager:v1",
                              "shop.corp/gcr/x/y:1"]  # busybox: the namespace file's default:: keeps it
    originals = json.loads(out["metadata"]["annotations"]["imagemapper.io/original-images"])
    assert originals == {"containers/web": "nginx:1.25", "containers/cm": "quay.io/jetstack/cert-manager:v1",
                         "containers/gcr": "gcr.io/x/y:1"}
    # reinvocation: the same object again
    again = admit(state, pod_request(out))
    assert again.ok and again.admission["allowed"] is True and "patch" not in again.admission
    # UPDATE of the stored Pod (a label change): no double prefix
    updated = copy.deepcopy(out)
    updated["metadata"]["labels"] = {"tier": "web"}
    update = admit(state, pod_request(updated, "UPDATE", old=out))
    assert update.ok and "patch" not in update.admission


def test_cluster_rules_in_another_namespace(synced, state):
    obj = pod({"a": "nginx:1.25", "b": "gcr.io/x/y:1"}, ns="other")
    out = apply_admission(admit(state, pod_request(obj)).admission, obj)
    assert images_of(out) == ["mirror.corp/hub/nginx:1.25", "mirror.corp/x/y:1"]


def test_ephemeral_container_update(synced, state):
    obj = pod({"web": "registry.corp/hub/nginx:1"})
    obj["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "busybox:1.36"}]
    result = admit(state, pod_request(obj, "UPDATE", old=pod({"web": "registry.corp/hub/nginx:1"}),
                                      sub="ephemeralcontainers"))
    out = apply_admission(result.admission, obj)
    assert out["spec"]["ephemeralContainers"][0]["image"] == "busybox:1.36"  # shop's default:: keeps it
    other = pod({"web": "x.corp/a:1"}, ns="other")
    other["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "busybox:1.36"}]
    out = apply_admission(admit(state, pod_request(other, "UPDATE", sub="ephemeralcontainers")).admission, other)
    assert out["spec"]["ephemeralContainers"][0]["image"] == "mirror.corp/hub/busybox:1.36"


def _hold_slots(state, count):
    """Take admission slots the way busy hook processes would (lockf on the slot files)."""
    import fcntl

    directory = os.path.join(state, "admission-slots", "small")
    os.makedirs(directory, exist_ok=True)
    held = []
    for i in range(count):
        fd = os.open(os.path.join(directory, str(i)), os.O_RDWR | os.O_CREAT)
        fcntl.lockf(fd, fcntl.LOCK_EX)
        held.append(fd)
    return held


@pytest.mark.parametrize("policy,allowed", [("Fail", False), ("Ignore", True)])
def test_busy_replica_answers_by_the_failure_policy_without_reading(synced, state, policy, allowed):
    """Issue 11.11: a replica runs at most IMAGE_MAPPER_MAX_ADMISSIONS admission hooks at
    once; the next one waits up to half the timeout, then answers by the failure policy."""
    import time

    env = {"IMAGE_MAPPER_MAX_ADMISSIONS": "2", "IMAGE_MAPPER_TIMEOUT_SECONDS": "1",
           "IMAGE_MAPPER_FAILURE_POLICY": policy}
    held = _hold_slots(state, 2)
    try:
        start = time.monotonic()
        busy = admit(state, pod_request(pod({"web": "nginx:1.25"})), **env)
        waited = time.monotonic() - start
        assert busy.ok and busy.admission["allowed"] is allowed and "patch" not in busy.admission
        assert "IMAGE_MAPPER_MAX_ADMISSIONS" in json.dumps(busy.admission)
        assert 0.5 <= waited < 3
        os.close(held.pop())  # one admission finishes: the next one runs
        served = admit(state, pod_request(pod({"web": "nginx:1.25"})), **env)
        assert served.admission["allowed"] is True and "patch" in served.admission
    finally:
        for fd in held:
            os.close(fd)


def test_large_requests_cannot_take_the_slots_of_ordinary_pods(synced, state):
    """Requests over 64 KiB share a quarter of the slots: busy with them, small Pods pass."""
    env = {"IMAGE_MAPPER_MAX_ADMISSIONS": "4", "IMAGE_MAPPER_TIMEOUT_SECONDS": "1"}
    import fcntl

    directory = os.path.join(state, "admission-slots", "large")
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, "0"), os.O_RDWR | os.O_CREAT)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    try:
        big = pod({f"c{i}": "nginx:1.25" for i in range(2000)})
        assert admit(state, pod_request(big), **env).admission["allowed"] is False
        small = admit(state, pod_request(pod({"web": "nginx:1.25"})), **env)
        assert small.admission["allowed"] is True and "patch" in small.admission
    finally:
        os.close(fd)


def test_oversized_request_is_refused_unread(synced, state):
    """Nothing the API server sends is larger than 8 MiB; such a request is not parsed."""
    obj = pod({"web": "nginx:1.25"})
    obj["metadata"]["annotations"] = {"filler": "x" * (9 << 20)}
    refused = admit(state, pod_request(obj))
    assert refused.ok and refused.admission["allowed"] is False
    assert "larger than" in refused.admission["status"]["message"]


def test_invalid_image_is_admitted_with_a_warning(synced, state):
    obj = pod({"bad": "Not A/Ref", "ok": "nginx"})
    result = admit(state, pod_request(obj))
    assert result.admission["allowed"] is True
    assert any("containers/bad" in w for w in result.admission["warnings"])
    assert images_of(apply_admission(result.admission, obj)) == ["Not A/Ref", "registry.corp/hub/nginx"]


@pytest.mark.parametrize("policy,allowed", [("Fail", False), ("Ignore", True)])
def test_missing_snapshot_follows_failure_policy(state, policy, allowed):
    obj = pod({"web": "nginx"})
    result = admit(state, pod_request(obj), IMAGE_MAPPER_FAILURE_POLICY=policy)
    assert result.ok  # the hook itself never fails: shell-operator would say "Hook failed"
    assert result.admission["allowed"] is allowed
    if allowed:
        assert "patch" not in result.admission and result.admission["warnings"]
    else:
        assert "snapshot" in result.admission["status"]["message"]


def test_corrupt_snapshot_follows_failure_policy_and_sync_repairs_it(synced, state):
    with open(os.path.join(state, "rules.snap"), "wb") as handle:
        handle.write(b"garbage")
    obj = pod({"web": "nginx"}, ns="other")
    assert admit(state, pod_request(obj)).admission["allowed"] is False
    assert admit(state, pod_request(obj), IMAGE_MAPPER_FAILURE_POLICY="Ignore").admission["allowed"] is True
    os.unlink(os.path.join(state, "rules.snap"))
    synced.cluster.apply(mapfile("another", "default::mirror.corp\n", ns="elsewhere"))  # any event
    assert all(r.ok for r in synced.drain())
    assert "patch" in admit(state, pod_request(obj)).admission


def test_internal_error_follows_failure_policy(synced, state):
    # a namespace that is not a string makes the snapshot lookup raise inside the hook
    broken = [{"binding": MUTATE, "type": "Mutating", "review": {"request": {
        "uid": "u", "operation": "CREATE", "namespace": 5, "object": {"spec": {}}}}}]
    for policy, allowed in (("Fail", False), ("Ignore", True)):
        result = run_hook(hook("mutate.py"), broken, make_env(state, IMAGE_MAPPER_FAILURE_POLICY=policy))
        assert result.ok and result.admission["allowed"] is allowed
        assert "internal error" in json.dumps(result.admission)


def mutate_run(state, ns, store=None, **request):
    obj = pod({"web": "nginx:1"}, ns=ns)
    result = run_hook(hook("mutate.py"), [{"binding": MUTATE, "type": "Mutating",
                                           "review": {"request": {**pod_request(obj), **request}}}],
                      make_env(state), metrics=store)
    assert result.ok, str(result)
    return result


def test_metrics_are_valid_and_counters_survive_runs(synced, state):
    for ns in ("shop", "shop", "other"):
        assert mutate_run(state, ns).metric_ops == []  # one writer: the schedule below
    mutate_run(state, "shop", dryRun=True)  # a dry run changes nothing and is not counted
    synced.fire_schedule("counters")
    runs = synced.drain()
    assert runs and all(r.ok for r in runs), [str(r) for r in runs]
    text = synced.metrics.render()
    assert 'image_mapper_rewrites_total{hook="sync.py",namespace="shop",source="namespace-imagemap"} 2' in text
    assert 'image_mapper_rewrites_total{hook="sync.py",namespace="other",source="cluster-mapfile"} 1' in text
    assert 'image_mapper_admissions_total{hook="sync.py",result="patched"} 3' in text
    synced.fire_schedule("counters")
    synced.drain()
    assert 'image_mapper_admissions_total{hook="sync.py",result="patched"} 3' in synced.metrics.render()


def test_bookkeeping_touches_only_its_own_series(synced, state):
    counters_dir = os.path.join(state, "counters")
    os.makedirs(counters_dir, exist_ok=True)
    for i in range(2000):  # the history of a busy replica
        path = os.path.join(counters_dir, f"image_mapper_rewrites_total,namespace=ns{i},source=x")
        with open(path, "w") as handle:
            handle.write(f"{i:020d}\n")
        os.utime(path, ns=(0, 0))
    mutate_run(state, "shop")
    touched = sorted(n for n in os.listdir(counters_dir) if os.stat(os.path.join(counters_dir, n)).st_mtime_ns)
    assert touched == ["image_mapper_admissions_total,result=patched",
                       "image_mapper_rewrites_total,namespace=shop,source=namespace-imagemap"]


@pytest.mark.parametrize("damage", ["value", "directory"])
def test_broken_bookkeeping_never_changes_the_answer(synced, state, damage):
    counters_dir = os.path.join(state, "counters")
    if damage == "value":
        os.makedirs(counters_dir, exist_ok=True)
        with open(os.path.join(counters_dir, "image_mapper_admissions_total,result=patched"), "w") as handle:
            handle.write("not a number, {]")
    else:
        with open(counters_dir, "w") as handle:  # a file where the directory should be
            handle.write("x")
    result = mutate_run(state, "shop")
    assert result.admission["allowed"] is True and "patch" in result.admission


# ----------------------------------------------------------------------------- sync

def ready(cluster, name, ns="shop"):
    conditions = cluster.get("ImageMap", name, ns).get("status", {}).get("conditions", [])
    return next(c for c in conditions if c["type"] == "Ready")


def test_status_events_and_readiness(synced, state):
    cond = ready(synced.cluster, "team")
    assert (cond["status"], cond["reason"]) == ("True", "Accepted")
    assert synced.cluster.get("ImageMap", "team", "shop")["status"]["rules"] == 2
    events = synced.cluster.list("Event")
    assert any(e["involvedObject"]["name"] == "team" and e["reason"] == "Accepted" for e in events)
    assert os.path.exists(os.path.join(state, "ready"))
    # shell-operator cannot set reinvocationPolicy; the sync hook patched it in
    webhook = synced.cluster.get("MutatingWebhookConfiguration", "image-mapper-hooks")
    assert webhook["webhooks"][0]["reinvocationPolicy"] == "IfNeeded"
    assert synced.pending() == []  # our own writes did not wake the hook again


@pytest.mark.parametrize("mode", ["enabled", "disabled", "opt-in"])
def test_start_is_one_run_that_sees_every_kind_and_compiles_once(state, mode):
    """The grouped bindings come first, so their Synchronization absorbs the ImageMaps'
    (hookconfig.sync_config): one run at start, nothing read back and compiled again."""
    cluster = Cluster([imagemap("team", [{"from": "nginx", "to": "registry.corp/hub/nginx"}]),
                       mapfile("cluster-map", "default::mirror.corp\n"), webhook_configuration()])
    operator = Operator(hook("sync.py"), cluster=cluster,
                        env=make_env(state, IMAGE_MAPPER_NAMESPACE_MAP_FILES=mode))
    operator.start()
    runs = operator.drain()
    first = runs[0]
    grouped = {"mapfiles", "webhook"} | ({"namespaces"} if mode == "opt-in" else set())
    assert [(c["binding"], c["type"]) for c in first.contexts] == [
        ("namespaces" if mode == "opt-in" else "webhook", "Group"), ("imagemaps", "Synchronization")]
    assert set(first.contexts[0]["snapshots"]) == grouped
    assert "snapshot compiled" in first.stderr + first.stdout
    assert "waiting for the first synchronization" not in "".join(r.stderr + r.stdout for r in runs)
    assert ready(cluster, "team")["reason"] == "Accepted"


def test_conflict_then_fix_flips_status_on_next_sync(synced):
    cluster = synced.cluster
    cluster.apply(imagemap("late", [{"from": "nginx", "to": "other.corp/nginx"}], created="2025-01-01T00:00:00Z"))
    assert all(r.ok for r in synced.drain())
    cond = ready(cluster, "late")
    assert (cond["status"], cond["reason"]) == ("False", "Conflict")
    assert 'ImageMap "team"' in cond["message"]
    assert any(e["reason"] == "Conflict" and e["type"] == "Warning" for e in cluster.list("Event"))
    fixed = cluster.get("ImageMap", "team", "shop")
    fixed["spec"]["map"] = [{"from": "redis", "to": "registry.corp/hub/redis"}]
    fixed["metadata"]["generation"] = 2
    cluster.apply(fixed)
    assert all(r.ok for r in synced.drain())
    cond = ready(cluster, "late")
    assert (cond["status"], cond["reason"]) == ("True", "Accepted")
    assert cluster.get("ImageMap", "team", "shop")["status"]["observedGeneration"] == 2


def test_second_sync_on_unchanged_input_writes_no_status(synced):
    for kind in ("Synchronization", "resync"):
        if kind == "resync":  # the periodic full hand-over: every snapshot, nothing to write
            synced.fire_schedule("resync")
            runs = synced.drain()
            assert len(runs) == 1 and runs[0].contexts[0]["snapshots"]["imagemaps"]
            result = runs[0]
        else:
            context = synced.render([shellop.BindingContext("imagemaps", "kubernetes", type=kind)])
            assert context[0]["type"] == kind and len(context[0]["objects"]) == 1
            assert "object" not in context[0]["objects"][0]  # keepFullObjectsInMemory: false
            result = run_hook(synced.hook, context, synced.env)
        assert result.ok, str(result)
        assert [op for op in result.patch_operations if op["operation"] == "MergePatch"] == []
        assert [op for op in result.patch_operations if op["operation"].startswith("Create")] == []


def test_bad_map_file_lines_become_events(synced):
    synced.cluster.apply(mapfile("broken", "default::m.corp\nthis line is wrong\n", ns="shop2"))
    assert all(r.ok for r in synced.drain())
    events = [e for e in synced.cluster.list("Event") if e["involvedObject"]["kind"] == "ConfigMap"]
    assert events and "line 2" in events[0]["message"]


def _map_file_log_bytes(run) -> int:
    return sum(len(line) + 1 for line in (run.stdout + run.stderr).splitlines() if "map file line" in line)


def test_terminating_namespace_never_blocks_the_sync_queue(synced):
    """Issue 11.4: a map file with a diagnostic in a namespace being deleted. The API
    server forbids creating Events there; every run used to send one, fail and retry."""
    cluster = synced.cluster
    old_syntax = mapfile("legacy", "default:m.corp\n", ns="doomed")  # a deprecation warning
    cluster.apply(old_syntax)
    assert all(r.ok for r in synced.drain())
    assert [e["reason"] for e in cluster.list("Event", "doomed")] == ["DeprecatedMapSyntax"]
    # kubectl delete namespace doomed: Terminating, the ConfigMap held by a finalizer
    cluster.terminating.add("doomed")
    held = cluster.get("ConfigMap", "legacy", "doomed")
    held["metadata"].update(finalizers=["example.com/hold"], deletionTimestamp="2026-01-01T00:00:00Z")
    cluster.apply(held)
    # ... and a rule change elsewhere is applied by the very next run
    cluster.apply(imagemap("team", [{"from": "redis", "to": "registry.corp/hub/redis"}], generation=2))
    runs = synced.drain()
    assert runs and all(r.ok for r in runs), [str(r) for r in runs]
    assert synced.pending() == []
    assert all(op["operation"] != "CreateIfNotExists" or op["object"]["metadata"]["namespace"] != "doomed"
               for r in runs for op in r.patch_operations)


def test_refused_event_write_does_not_fail_the_sync_run(synced, state):
    """A write the API server refuses is dropped (allowFailure); the snapshot stands."""
    cluster = synced.cluster
    cluster.terminating.add("doomed")  # no deletionTimestamp seen yet: the Event is tried
    cluster.apply(mapfile("legacy", "default:m.corp\n", ns="doomed"))
    cluster.apply(imagemap("team", [{"from": "redis", "to": "registry.corp/hub/redis"}], generation=2))
    runs = synced.drain()
    assert any(r.patch_errors and "being terminated" in r.patch_errors[0] for r in runs)
    assert synced.pending() == []  # not retried: the queue moves on
    stored = admit(state, pod_request(pod({"r": "redis:7"})))
    assert apply_admission(stored.admission, pod({"r": "redis:7"}))["spec"]["containers"][0]["image"] \
        == "registry.corp/hub/redis:7"
    # the next run does not try again: the diagnostics were reported
    cluster.apply(imagemap("team", [{"from": "redis", "to": "registry.corp/hub/redis2"}], generation=3))
    again = synced.drain()
    assert again and all(r.ok for r in again), [str(r) for r in again]


def test_map_file_diagnostics_are_logged_when_they_appear(synced):
    """Issue 11.9: a warnings-only map file was logged again on every sync run."""
    cluster = synced.cluster
    text = "".join(f"registry{i}.example:mirror.corp/r{i}\n" for i in range(300))  # 300 warnings
    cluster.apply(mapfile("legacy", text, ns="team2"))
    first = synced.drain()
    assert _map_file_log_bytes(first[-1]) > 0
    for generation in (2, 3):  # unrelated rule changes
        cluster.apply(imagemap("team", [{"from": "redis", "to": f"registry.corp/r{generation}"}],
                               generation=generation))
        runs = synced.drain()
        assert runs and all(r.ok for r in runs)
        assert sum(_map_file_log_bytes(r) for r in runs) == 0
        assert [e for r in runs for e in r.patch_operations if e["operation"] == "CreateIfNotExists"
                and e["object"]["involvedObject"]["kind"] == "ConfigMap"] == []
    # one new bad line: that line is logged, and the Event tells the new state
    cluster.apply(mapfile("legacy", text + "this line is wrong\n", ns="team2"))
    runs = synced.drain()
    logged = [line for r in runs for line in (r.stdout + r.stderr).splitlines() if "map file line" in line]
    assert len(logged) == 1 and "line 301" in logged[0]
    assert any(e["reason"] == "InvalidMapLines" for e in cluster.list("Event", "team2"))


def test_namespace_map_files_can_be_turned_off(state):
    """Issue 11.12: IMAGE_MAPPER_NAMESPACE_MAP_FILES=disabled. The ConfigMap watch narrows to
    the operator's namespace, namespace map files have no effect, and new ones are refused."""
    env = make_env(state, IMAGE_MAPPER_NAMESPACE_MAP_FILES="disabled")
    binding = load_config(hook("sync.py"), env).kube("mapfiles")
    assert binding.namespace == {"nameSelector": {"matchNames": [OPNS]}}
    cluster = Cluster([mapfile("cluster-map", "default::\ndocker.io::mirror.corp/hub\n"),
                       mapfile("shop-map", "default::\ndocker.io::shop.corp/hub\n", ns="shop"),
                       webhook_configuration()])
    operator = Operator(hook("sync.py"), cluster=cluster, env=env)
    operator.start()
    assert all(r.ok for r in operator.drain())
    obj = pod({"web": "nginx:1.25"})
    result = run_hook(hook("mutate.py"), [{"binding": MUTATE, "type": "Mutating",
                                           "review": {"request": pod_request(obj)}}], env)
    assert images_of(apply_admission(result.admission, obj)) == ["mirror.corp/hub/nginx:1.25"]
    validator = Operator(hook("validate.py"), cluster=cluster, env=env)
    new = validator.admit("mapfiles.validate.imagemapper.io",
                          validation_request(mapfile("more", "default::\n", ns="shop"))).admission
    assert new["allowed"] is False and "IMAGE_MAPPER_NAMESPACE_MAP_FILES=disabled" in new["status"]["message"]
    assert validator.admit("mapfiles.validate.imagemapper.io",
                           validation_request(mapfile("more", "default::\n"))).admission["allowed"] is True


def namespace(name, labels=None):
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **(labels or {})}}}


LABELED = {"imagemapper.io/map-files": "enabled"}
UNLABELED = "unlabeled-mapfiles.validate.imagemapper.io"


def mapfile_events(cluster, ns):
    return sorted((e["involvedObject"]["name"], e["reason"]) for e in cluster.list("Event", ns)
                  if e["involvedObject"]["kind"] == "ConfigMap")


def test_namespace_map_files_opt_in_follow_the_namespace_label(state):
    """Issue 11.12: IMAGE_MAPPER_NAMESPACE_MAP_FILES=opt-in. Only the map files of namespaces
    labeled imagemapper.io/map-files=enabled count (and the cluster-wide ones); the label
    coming or going takes effect at the next sync run, and an ignored ConfigMap is reported
    once, when that starts. The watch costs nothing in the other modes."""
    env = make_env(state, IMAGE_MAPPER_NAMESPACE_MAP_FILES="opt-in")
    sync_config = load_config(hook("sync.py"), env)
    binding = sync_config.kube("namespaces")
    assert (binding.kind, binding.label_selector, binding.group) == (
        "Namespace", {"matchLabels": LABELED}, "sync")
    assert "namespaces" in sync_config.schedule("resync").include_snapshots
    for mode in ("enabled", "disabled"):
        other = load_config(hook("sync.py"), make_env(state, IMAGE_MAPPER_NAMESPACE_MAP_FILES=mode))
        assert [b.name for b in other.kubernetes] == ["mapfiles", "webhook", "imagemaps"]
        assert [w.name for w in load_config(hook("validate.py"), make_env(
            state, IMAGE_MAPPER_NAMESPACE_MAP_FILES=mode)).validating] == [
            "imagemaps.validate.imagemapper.io", "mapfiles.validate.imagemapper.io"]
    cluster = Cluster([namespace(OPNS), namespace("shop"), namespace("team", LABELED),
                       mapfile("cluster-map", "default::\ndocker.io::mirror.corp/hub\n"),
                       mapfile("shop-map", "default::\ndocker.io::shop.corp/hub\n", ns="shop"),
                       mapfile("team-map", "default::\ndocker.io::team.corp/hub\n", ns="team"),
                       webhook_configuration()])
    operator = Operator(hook("sync.py"), cluster=cluster, env=env)
    operator.start()
    assert all(r.ok for r in operator.drain())

    def image_in(ns):
        obj = pod({"web": "nginx:1.25"}, ns=ns)
        result = run_hook(hook("mutate.py"), [{"binding": MUTATE, "type": "Mutating",
                                               "review": {"request": pod_request(obj)}}], env)
        return images_of(apply_admission(result.admission, obj))[0]

    assert (image_in("shop"), image_in("team")) == ("mirror.corp/hub/nginx:1.25",
                                                    "team.corp/hub/nginx:1.25")
    assert mapfile_events(cluster, "shop") == [("shop-map", "MapFilesNotEnabled")]
    assert mapfile_events(cluster, "team") == []
    # The label comes to shop and goes from team: one sync run each way.
    cluster.apply(namespace("shop", LABELED))
    cluster.apply(namespace("team"))
    assert all(r.ok for r in operator.drain())
    assert (image_in("shop"), image_in("team")) == ("shop.corp/hub/nginx:1.25",
                                                    "mirror.corp/hub/nginx:1.25")
    assert mapfile_events(cluster, "team") == [("team-map", "MapFilesNotEnabled")]
    # Reported when it changed only: later runs (a resync, another change) send nothing.
    operator.fire_schedule("resync")
    cluster.apply(imagemap("late", [{"from": "redis", "to": "team.corp/redis"}], ns="team"))
    runs = operator.drain()
    assert runs and all(r.ok for r in runs)
    assert [op for r in runs for op in r.patch_operations
            if (op.get("object") or {}).get("involvedObject", {}).get("kind") == "ConfigMap"] == []
    assert (image_in("shop"), image_in("team")) == ("shop.corp/hub/nginx:1.25",
                                                    "mirror.corp/hub/nginx:1.25")  # labels kept
    # Apply time: the API server sends map files of unlabeled namespaces to UNLABELED.
    validate = load_config(hook("validate.py"), env).admission(UNLABELED).raw
    assert validate["namespace"]["labelSelector"]["matchExpressions"] == [
        {"key": "imagemapper.io/map-files", "operator": "NotIn", "values": ["enabled"]},
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [OPNS]}]
    assert validate["labelSelector"] == {"matchLabels": {"imagemapper.io/map-file": "true"}}
    validator = Operator(hook("validate.py"), cluster=cluster, env=env)
    new = validator.admit(UNLABELED, validation_request(mapfile("more", "default::\n", ns="team"))).admission
    assert new["allowed"] is False and "imagemapper.io/map-files=enabled" in new["status"]["message"]
    edit = validation_request(mapfile("team-map", "default::\n", ns="team"))
    edit.update(operation="UPDATE", oldObject=mapfile("team-map", "default::\nx::y\n", ns="team"))
    kept = validator.admit(UNLABELED, edit).admission
    assert kept["allowed"] is True and any("is ignored" in w for w in kept["warnings"])
    assert validator.admit(UNLABELED, validation_request(
        {**mapfile("x", "default::\n", ns="team"), "metadata": {"name": "x", "namespace": "team"}}
    )).admission["allowed"] is True  # not a map file (label removed): none of our business


def test_allowed_targets_limit_namespace_rules(state):
    """Issue 11.12: IMAGE_MAPPER_ALLOWED_TARGETS. Namespace rules that send images elsewhere
    are refused at apply time; one that got in is reported and contributes nothing."""
    env = make_env(state, IMAGE_MAPPER_ALLOWED_TARGETS="registry.corp, mirror.corp/approved")
    cluster = Cluster([
        imagemap("good", [{"from": "nginx", "to": "registry.corp/hub/nginx"}]),
        imagemap("evil", [{"from": "redis", "to": "evil.example/redis"}], ns="shop", created="2024-02-01T00:00:00Z"),
        mapfile("shop-map", "default::\ngcr.io::evil.example/gcr\n", ns="shop"),
        mapfile("cluster-map", "default::\nquay.io::anywhere.corp/quay\n"),  # the admin's own
        webhook_configuration()])
    operator = Operator(hook("sync.py"), cluster=cluster, env=env)
    operator.start()
    assert all(r.ok for r in operator.drain())
    cond = ready(cluster, "evil")
    assert (cond["status"], cond["reason"]) == ("False", "Invalid") and "ALLOWED_TARGETS" in cond["message"]
    assert ready(cluster, "good")["reason"] == "Accepted"
    assert any(e["reason"] == "TargetNotAllowed" or "not under" in e["message"]
               for e in cluster.list("Event", "shop") if e["involvedObject"]["kind"] == "ConfigMap")
    obj = pod({"a": "nginx:1", "b": "redis:7", "c": "gcr.io/x/y:1", "d": "quay.io/q/r:1"})
    result = run_hook(hook("mutate.py"), [{"binding": MUTATE, "type": "Mutating",
                                           "review": {"request": pod_request(obj)}}], env)
    assert images_of(apply_admission(result.admission, obj)) == [
        "registry.corp/hub/nginx:1", "redis:7", "gcr.io/x/y:1", "anywhere.corp/quay/q/r:1"]
    validator = Operator(hook("validate.py"), cluster=cluster, env=env)
    denied = validator.admit("imagemaps.validate.imagemapper.io", validation_request(
        imagemap("new", [{"from": "busybox", "to": "evil.example/busybox"}]))).admission
    assert denied["allowed"] is False and "spec.map[0]" in denied["status"]["message"]
    ok = validator.admit("imagemaps.validate.imagemapper.io", validation_request(
        imagemap("new", [{"from": "busybox", "to": "mirror.corp/approved/busybox"}]))).admission
    assert ok["allowed"] is True
    denied = validator.admit("mapfiles.validate.imagemapper.io", validation_request(
        mapfile("more", "default::\ndocker.io::evil.example\n", ns="shop"))).admission
    assert denied["allowed"] is False and "evil.example" in denied["status"]["message"]


def test_chain_across_layers_is_reported_in_status_and_at_apply(state):
    """Issue 11.2: a namespace entry under a cluster target never fires; it says so."""
    env = make_env(state)
    shadowed = [{"from": "mirror.corp/hub/*", "to": "team.corp/*"}, {"from": "redis", "to": "team.corp/redis"}]
    cluster = Cluster([imagemap("team", shadowed),
                       mapfile("cluster-map", "default::\ndocker.io::mirror.corp/hub\n"),
                       webhook_configuration()])
    operator = Operator(hook("sync.py"), cluster=cluster, env=env)
    operator.start()
    assert all(r.ok for r in operator.drain())
    cond = ready(cluster, "team")
    assert cond["reason"] == "Accepted" and "spec.map[0] (mirror.corp/hub/*) never fires" in cond["message"]
    assert "spec.map[1]" not in cond["message"]
    validator = Operator(hook("validate.py"), cluster=cluster, env=env)
    answer = validator.admit("imagemaps.validate.imagemapper.io",
                             validation_request(imagemap("late", shadowed[:1], ns="other"))).admission
    assert answer["allowed"] is True and any("never fires" in w for w in answer["warnings"])


def test_imagemap_chain_notes_follow_a_cluster_map_file_change(state):
    """Issue 11.2: when the cluster map files change so that a target now shadows an
    ImageMap entry (or no longer does), its Ready message says so on that run, not at the
    next 30-minute resync."""
    env = make_env(state)
    cluster = Cluster([imagemap("team", [{"from": "mirror.corp/gcr/*", "to": "team.corp/gcr/*"}]),
                       mapfile("cluster-map", "default::\n"), webhook_configuration()])
    operator = Operator(hook("sync.py"), cluster=cluster, env=env)
    operator.start()
    assert all(r.ok for r in operator.drain())
    assert "never fires" not in ready(cluster, "team")["message"]
    cluster.apply(mapfile("cluster-map", "default::\ngcr.io::mirror.corp/gcr\n"))
    runs = operator.drain()
    assert runs and all(r.ok for r in runs), [str(r) for r in runs]
    cond = ready(cluster, "team")
    assert cond["reason"] == "Accepted" and "spec.map[0] (mirror.corp/gcr/*) never fires" in cond["message"]
    assert any(e["reason"] == "Accepted" and "never fires" in e["message"] for e in cluster.list("Event", "shop"))
    cluster.apply(mapfile("cluster-map", "default::\n"))
    assert all(r.ok for r in operator.drain())
    assert "never fires" not in ready(cluster, "team")["message"]


def _configmap_events(runs, ns):
    return [op["object"] for r in runs for op in r.patch_operations if op["operation"] == "CreateIfNotExists"
            and op["object"]["involvedObject"]["kind"] == "ConfigMap" and op["object"]["metadata"]["namespace"] == ns]


def test_chain_across_layers_in_namespace_map_files_is_reported(state):
    """Issue 11.2: a namespace map-file line under a cluster target never fires. The sync hook
    says so (Event and log, once per change, also when the cluster files change) and
    `kubectl apply` warns, naming the ConfigMap, the key and the line."""
    env = make_env(state)
    cluster = Cluster([mapfile("cluster-map", "default::\nquay.io::registry.corp\n"),
                       mapfile("shop-map", "default::\nregistry.corp/team::team.corp\n"
                               "mirror.corp/gcr::team.corp/gcr\ndocker.io::team.corp/hub\n", ns="shop"),
                       imagemap("unrelated", [{"from": "redis", "to": "team.corp/redis"}], ns="other"),
                       webhook_configuration()])
    operator = Operator(hook("sync.py"), cluster=cluster, env=env)
    operator.start()
    runs = operator.drain()
    assert runs and all(r.ok for r in runs), [str(r) for r in runs]
    [event] = [e for e in cluster.list("Event", "shop") if e["reason"] == "ShadowedByClusterRule"]
    assert event["involvedObject"]["name"] == "shop-map" and event["type"] == "Warning"
    assert "configmap shop/shop-map key maps line 2: registry.corp/team::team.corp never fires" in event["message"]
    assert "line 3" not in event["message"] and "line 4" not in event["message"]
    obj = pod({"a": "registry.corp/team/app:1", "b": "nginx:1"})
    answer = run_hook(hook("mutate.py"), [{"binding": MUTATE, "type": "Mutating",
                                           "review": {"request": pod_request(obj)}}], env)
    assert images_of(apply_admission(answer.admission, obj)) == ["registry.corp/team/app:1", "team.corp/hub/nginx:1"]
    # an unrelated change: nothing reported again
    cluster.apply(imagemap("unrelated", [{"from": "redis", "to": "team.corp/redis2"}], ns="other", generation=2))
    runs = operator.drain()
    assert runs and _configmap_events(runs, "shop") == [] and sum(_map_file_log_bytes(r) for r in runs) == 0
    # the cluster files change: line 3 is newly shadowed, and the namespace's report says so
    cluster.apply(mapfile("cluster-map", "default::\nquay.io::registry.corp\ngcr.io::mirror.corp/gcr\n"))
    runs = operator.drain()
    assert runs and all(r.ok for r in runs), [str(r) for r in runs]
    [event] = _configmap_events(runs, "shop")
    assert event["reason"] == "ShadowedByClusterRule" and "line 3: mirror.corp/gcr::team.corp/gcr" in event["message"]
    logged = [line for r in runs for line in (r.stdout + r.stderr).splitlines() if "map file line" in line]
    assert len(logged) == 1 and "line 3" in logged[0] and "cluster target 'mirror.corp/gcr'" in logged[0]
    # kubectl apply of a namespace map file with such a line: allowed, with a warning
    validator = Operator(hook("validate.py"), cluster=cluster, env=env)
    answer = validator.admit("mapfiles.validate.imagemapper.io", validation_request(
        mapfile("late", "default::\nquay.io::x.corp\n[EXACT]mirror.corp/gcr/a:1::x.corp/a:1\n", ns="other"))).admission
    assert answer["allowed"] is True
    assert [w for w in answer["warnings"] if "never fires" in w] == [
        "configmap other/late key maps line 3: [EXACT]mirror.corp/gcr/a:1::x.corp/a:1 never fires: its images "
        "lie under cluster target 'mirror.corp/gcr', which keeps them (a chain across layers; idempotence wins)"]
    cluster_file = validator.admit("mapfiles.validate.imagemapper.io", validation_request(
        mapfile("more", "default::\nmirror.corp/gcr::x.corp\n"))).admission  # cluster-wide: no chain
    assert cluster_file["allowed"] is True and not any("fire" in w for w in cluster_file.get("warnings") or [])


# ----------------------------------------------------------------------------- validate

def validation_request(obj: dict) -> dict:
    """The AdmissionRequest of a CREATE of ``obj`` (an ImageMap or a ConfigMap)."""
    group, _, version = obj["apiVersion"].rpartition("/")
    resource = obj["kind"].lower() + "s"
    return {"uid": f"v-{obj['metadata']['name']}", "namespace": obj["metadata"]["namespace"],
            "kind": {"group": group, "version": version, "kind": obj["kind"]},
            "resource": {"group": group, "version": version, "resource": resource},
            "operation": "CREATE", "object": obj}


def test_validate_hook_denies_invalid_and_conflicting_imagemaps(synced, state):
    validator = Operator(hook("validate.py"), cluster=synced.cluster, env=make_env(state))
    imagemaps, mapfiles = "imagemaps.validate.imagemapper.io", "mapfiles.validate.imagemapper.io"
    bad = imagemap("bad", [{"from": "nginx", "to": "x.corp/nginx:1"}])
    result = validator.admit(imagemaps, validation_request(bad))
    assert result.admission["allowed"] is False and "spec.map[0]" in result.admission["status"]["message"]
    conflict = imagemap("late", [{"from": "nginx", "to": "other.corp/nginx"}])
    result = validator.admit(imagemaps, validation_request(conflict))
    assert result.admission["allowed"] is False and 'ImageMap "team"' in result.admission["status"]["message"]
    fine = imagemap("fine", [{"from": "redis", "to": "x.corp/redis"}])
    assert validator.admit(imagemaps, validation_request(fine)).admission["allowed"] is True
    cm = mapfile("m", "default::x.corp\nnot valid\n", ns="shop")
    result = validator.admit(mapfiles, validation_request(cm))
    assert result.admission["allowed"] is False and "line 2" in result.admission["status"]["message"]


# ----------------------------------------------------------------------------- fuzzing

text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
images = st.sampled_from(["nginx", "nginx:1.25", "quay.io/jetstack/x:1", "gcr.io/a/b@sha256:" + "a" * 64,
                          "registry.corp/hub/nginx", "", "UPPER/Case", "[::1]:5000/x"]) | text
json_values = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | text,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                           max_leaves=6)
containers = st.lists(st.fixed_dictionaries({"name": text, "image": images}) | json_values, max_size=4)
pods = st.fixed_dictionaries({
    "apiVersion": st.just("v1"), "kind": st.just("Pod"),
    "metadata": st.fixed_dictionaries({"name": text}, optional={
        "namespace": st.sampled_from(["shop", "other"]),
        "annotations": st.dictionaries(st.sampled_from(["imagemapper.io/original-images", "x"]),
                                       text | st.just('{"containers/a":"b"}'), max_size=2),
        "labels": st.dictionaries(text, text, max_size=2)}),
    "spec": st.fixed_dictionaries({}, optional={
        "containers": containers, "initContainers": containers, "ephemeralContainers": containers,
        "volumes": st.lists(st.fixed_dictionaries({"name": text, "image": st.fixed_dictionaries(
            {"reference": images})}) | json_values, max_size=2)}) | json_values,
})
requests = st.fixed_dictionaries({
    "uid": text, "kind": st.just({"group": "", "version": "v1", "kind": "Pod"}),
    "namespace": st.sampled_from(["shop", "other", ""]),
    "operation": st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT"]),
    "object": pods | json_values,
}, optional={"subResource": st.sampled_from(["ephemeralcontainers", "status", ""]), "oldObject": json_values})


@pytest.fixture(scope="module")
def fuzz_state(tmp_path_factory):
    state = str(tmp_path_factory.mktemp("fuzz") / "state")
    cluster = Cluster([imagemap("team", [{"from": "nginx", "to": "registry.corp/hub/nginx"}]),
                       mapfile("cluster-map", "default::mirror.corp\n")])
    operator = Operator(hook("sync.py"), cluster=cluster, env=make_env(state))
    operator.start()
    assert all(r.ok for r in operator.drain())
    return state


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(requests)
def test_fuzz_mutate_hook_process(fuzz_state, request):
    result = admit(fuzz_state, request)
    assert result.exit_code == 0 and result.ok, str(result)
    response = result.admission
    assert response["allowed"] in (True, False)
    if "patch" in response:
        apply_admission(response, request["object"])  # raises if the patch does not apply


def lib_copy(tmp_path, bundle: bool) -> str:
    """A copy of lib/, with the hot path's bundle built in it or not (as the image has it)."""
    import shutil
    import subprocess

    lib = str(tmp_path / ("lib-bundled" if bundle else "lib-plain"))
    shutil.copytree(os.path.join(ROOT, "lib"), lib,
                    ignore=shutil.ignore_patterns("_hotpath.bundle", "__pycache__"))
    if bundle:  # built by the hooks' interpreter, as the image build does
        subprocess.run([HOOK_PYTHON, "-m", "imagemapper.bundle"], env={**os.environ, "PYTHONPATH": lib},
                       check=True, capture_output=True)
    return lib


@pytest.mark.parametrize("variant", ["plain", "bundled", "stale-bundle", "old-layout-bundle", "cut-bundle",
                                     "garbage-bundle"])
def test_mutate_hot_path_imports_stay_small(synced, state, tmp_path, variant):
    """The per-Pod process must not pull in re, enum, json, typing or os (see docs/design.md).

    With the bundle (imagemapper.bundle) none of our modules is imported one by one; a
    bundle older than a source, of an older layout, cut short or not a bundle at all is
    ignored, and the hook imports as usual.
    """
    import marshal
    import subprocess

    lib = lib_copy(tmp_path, bundle=variant != "plain")
    bundle_file = os.path.join(lib, "imagemapper", "_hotpath.bundle")
    if variant == "stale-bundle":
        with open(os.path.join(lib, "imagemapper", "rules.py"), "a") as handle:
            handle.write("# edited after the bundle was built\n")
    elif variant != "plain" and variant != "bundled":
        with open(bundle_file, "rb") as handle:
            data = handle.read()
        with open(bundle_file, "wb") as handle:
            old_layout = marshal.dumps((b"\xa7\r\r\n", [("kube", 1, 2, compile("", "", "exec"))]))
            handle.write({"old-layout-bundle": old_layout, "cut-bundle": data[:-1],
                          "garbage-bundle": b"\xff" * 64}[variant])
    obj = pod({"web": "nginx:1", "b": "gcr.io/a/b:1"})
    context = [{"binding": MUTATE, "type": "Mutating", "review": {"request": pod_request(obj)}}]
    directory = os.path.dirname(state)
    paths = {name: os.path.join(directory, name.lower()) for name in
             ("BINDING_CONTEXT_PATH", "ADMISSION_RESPONSE_PATH", "METRICS_PATH", "KUBERNETES_PATCH_PATH")}
    with open(paths["BINDING_CONTEXT_PATH"], "w") as handle:
        json.dump(context, handle)
    env = {**make_env(state), **paths, "VALIDATING_RESPONSE_PATH": paths["ADMISSION_RESPONSE_PATH"],
           "PYTHONPATH": lib}
    script = os.path.join(HOOKS_DIR, "mutate.py")
    out = subprocess.run([*HOOK_SHEBANG, "-X", "importtime", script], env=env, capture_output=True,
                         text=True, check=True)
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "encodings" in imported  # the profile is real: the interpreter's own start-up is in it
    # with the bundle, hooks/mutate.py makes the package itself and nothing of ours, nor
    # _json, goes through the import system; otherwise every module does
    bundled = variant == "bundled"
    ours = {name for name in imported if name.split(".")[0] == "imagemapper"}
    assert (ours == set()) if bundled else {"imagemapper", "imagemapper.rules"} <= ours, sorted(imported)
    assert ("_json" in imported) is not bundled, sorted(imported)
    forbidden = {"re", "enum", "json", "typing", "os", "yaml", "jsonpatch", "site", "imagemapper.shapes"}
    assert imported.isdisjoint(forbidden | ({"__future__"} if variant == "bundled" else set())), sorted(imported)
    with open(paths["ADMISSION_RESPONSE_PATH"]) as handle:
        response = json.load(handle)
    assert "patch" in response  # and the hook really ran
    plain = admit(state, pod_request(obj), PYTHONPATH=lib_copy(tmp_path / "again", bundle=False))
    assert {k: plain.admission[k] for k in response} == response  # the bundle changes nothing but speed


@pytest.fixture(scope="module")
def bundled_lib(tmp_path_factory):
    return lib_copy(tmp_path_factory.mktemp("bundle"), bundle=True)


@pytest.fixture(scope="module")
def plain_lib(tmp_path_factory):
    return lib_copy(tmp_path_factory.mktemp("plain"), bundle=False)


def _bundle_entries(lib: str) -> list:
    import marshal

    from imagemapper import PREFIX

    with open(os.path.join(lib, "imagemapper", "_hotpath.bundle"), "rb") as handle:
        data = handle.read()
    boot, size = int.from_bytes(data[12:16], "little"), int.from_bytes(data[16:PREFIX], "little")
    return marshal.loads(data[PREFIX + boot:PREFIX + boot + size])[2]  # (module, hot code, rest offset, length)


def _python_s(code: str, lib: str, *args: str) -> str:
    import subprocess

    out = subprocess.run([sys.executable, "-S", "-c", code, *args], env={**os.environ, "PYTHONPATH": lib},
                         capture_output=True, text=True, check=True)
    return out.stdout


def test_bundled_modules_end_up_with_every_name_of_their_sources(bundled_lib, plain_lib):
    """A trimmed module completes itself on the first name its hot part lacks
    (imagemapper.bundle): afterwards it has exactly the names of its source."""
    names = [entry[0] for entry in _bundle_entries(bundled_lib)]
    # "annotations" is what `from __future__ import annotations` binds; the bundle sets the flag instead
    dunder = lambda n: (n.startswith("__") and n.endswith("__")) or n == "annotations"  # noqa: E731
    source = json.loads(_python_s(
        "import importlib, json, sys\n"
        "print(json.dumps({n: sorted(vars(importlib.import_module('imagemapper.' + n))) for n in sys.argv[1:]}))",
        plain_lib, *names))
    completed = json.loads(_python_s(
        "import json, sys\nimport imagemapper\nassert imagemapper.use_bundle()\nout = {}\n"
        "for n in sys.argv[1:]:\n"
        "    module = getattr(imagemapper, n)\n"
        "    hot = set(vars(module))\n"
        "    getattr(module, 'no such name', None)  # completes it\n"
        "    out[n] = [sorted(hot), sorted(vars(module))]\n"
        "print(json.dumps(out))", bundled_lib, *names))
    trimmed = 0
    for name in names:
        hot, full = completed[name]
        assert [n for n in full if not dunder(n)] == [n for n in source[name] if not dunder(n)], name
        trimmed += len(full) - len(hot)
    assert trimmed > 50  # the trimming is real: most of imagemap, the snapshot writer, ...


def _global_names(code) -> set:
    """Globals that the functions in ``code`` look up (module and class bodies ran when
    the bundle loaded, so theirs are proven, and their ``if TYPE_CHECKING:`` never runs)."""
    import dis
    import inspect

    found = set()
    if code.co_flags & inspect.CO_OPTIMIZED:
        found = {i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            found |= _global_names(const)
    return found


def test_hot_parts_define_every_global_their_code_looks_up(bundled_lib):
    """Checked on the bytecode, independently of the bundle's own analysis: a global the
    hot part's code can look up (on any path) and does not define would be a NameError,
    since a module's ``__getattr__`` does not serve its own globals."""
    import builtins

    entries = _bundle_entries(bundled_lib)
    hot = json.loads(_python_s(
        "import json, sys\nimport imagemapper\nassert imagemapper.use_bundle()\n"
        "print(json.dumps({n: sorted(vars(getattr(imagemapper, n))) for n in sys.argv[1:]}))",
        bundled_lib, *[e[0] for e in entries]))
    for name, code, _, _ in entries:
        missing = _global_names(code) - set(hot[name]) - set(dir(builtins))
        assert not missing, (name, sorted(missing))


def test_mutate_hook_runs_on_the_hot_parts_alone(synced, state, tmp_path, bundled_lib):
    """The usual admission (ImageMap, namespace and cluster map-file rules, an UPDATE, an
    invalid image) never loads the rest of a bundled module: that is the point of trimming."""
    import subprocess

    driver = str(tmp_path / "driver.py")
    with open(driver, "w") as handle:
        handle.write("import sys\nimport imagemapper\nassert imagemapper.use_bundle()\n"
                     "lazy = [n for n, m in list(sys.modules.items()) if '__getattr__' in vars(m)]\n"
                     "from imagemapper.entrypoints import mutate_main\nmutate_main([])\n"
                     "done = [n for n in lazy if '__getattr__' not in vars(sys.modules[n])]\n"
                     "sys.stderr.write('lazy: %d, completed: %r\\n' % (len(lazy), done))\n")
    obj = pod({"web": "nginx:1", "b": "gcr.io/a/b:1", "c": "quay.io/jetstack/x:2", "d": "Not Valid"})
    old = pod({"web": "nginx:1", "b": "gcr.io/a/b:0"})
    for request in (pod_request(obj), pod_request(obj, "UPDATE", old)):
        contexts = [{"binding": MUTATE, "type": "Mutating", "review": {"request": request}}]
        hook_run = run_hook(hook("mutate.py"), contexts, make_env(state, PYTHONPATH=bundled_lib))
        assert hook_run.ok and "patch" in hook_run.admission, str(hook_run)
        directory = tmp_path / request["operation"]
        directory.mkdir()
        (directory / "context.json").write_text(json.dumps(contexts))
        env = {**make_env(state, PYTHONPATH=bundled_lib), "BINDING_CONTEXT_PATH": str(directory / "context.json"),
               "ADMISSION_RESPONSE_PATH": str(directory / "response.json"),
               "VALIDATING_RESPONSE_PATH": str(directory / "response.json"),
               "METRICS_PATH": str(directory / "metrics.json")}
        out = subprocess.run([sys.executable, "-S", driver], env=env, capture_output=True, text=True, check=True)
        lazy = int(out.stderr.split("lazy: ")[1].split(",")[0])
        assert lazy >= 5 and "completed: []" in out.stderr, out.stderr
        assert shellop.parse_response_file((directory / "response.json").read_text()) == hook_run.admission_response


def test_mutate_config_is_the_same_with_the_bundle(state, bundled_lib, plain_lib):
    """``--config`` leaves the hot path (hookconfig is not bundled): the trimmed modules
    complete themselves for it."""
    import subprocess

    script = os.path.join(HOOKS_DIR, "mutate.py")
    runs = [subprocess.run([script, "--config"], env=make_env(state, PYTHONPATH=lib), capture_output=True,
                           text=True, check=False) for lib in (bundled_lib, plain_lib)]
    assert [r.returncode for r in runs] == [0, 0] and runs[0].stdout == runs[1].stdout, runs
    assert json.loads(runs[0].stdout)["kubernetesMutating"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(requests)
def test_fuzz_bundled_hook_answers_as_the_sources_do(fuzz_state, bundled_lib, plain_lib, request):
    """Whatever the request, the trimmed bundle answers, logs and counts as the plain modules."""
    bundled = admit(fuzz_state, request, PYTHONPATH=bundled_lib)
    plain = admit(fuzz_state, request, PYTHONPATH=plain_lib)
    assert bundled.exit_code == plain.exit_code == 0
    assert bundled.admission == plain.admission
    assert bundled.stdout == plain.stdout and bundled.stderr == plain.stderr


@pytest.mark.parametrize("extra", [{"IMAGE_MAPPER_ALLOWED_TARGETS": "registry.corp,mirror.corp"},
                                   {"IMAGE_MAPPER_TIMEOUT_SECONDS": "99"},
                                   {"IMAGE_MAPPER_STATE_DIR": "/nonexistent/state",
                                    "IMAGE_MAPPER_FAILURE_POLICY": "Ignore"},
                                   {"IMAGE_MAPPER_STATE_DIR": "/nonexistent/state"}])
def test_bundled_hook_answers_as_the_sources_do_off_the_usual_path(synced, state, bundled_lib, plain_lib, extra):
    """Settings and failures that reach code outside the hot parts (completed on demand)."""
    request = pod_request(pod({"web": "nginx:1", "b": "gcr.io/a/b:1"}, annotations={"x": "1"}))
    bundled = admit(state, request, PYTHONPATH=bundled_lib, **extra)
    plain = admit(state, request, PYTHONPATH=plain_lib, **extra)
    assert bundled.exit_code == plain.exit_code == 0
    assert bundled.admission == plain.admission
    assert bundled.stdout == plain.stdout and bundled.stderr == plain.stderr


@pytest.mark.parametrize("stdout", ["/dev/full", "closed"])
def test_mutate_hook_exits_0_when_stdout_cannot_take_the_log_lines(synced, state, tmp_path, stdout):
    """The hook ends with protocol.exit_now (no interpreter teardown); a full or closed
    stdout, where the log lines go, must not turn into a non-zero exit (a denial)."""
    import subprocess

    directory = tmp_path / "files"
    directory.mkdir()
    request = pod_request(pod({"web": "nginx:1"}))
    (directory / "context.json").write_text(
        json.dumps([{"binding": MUTATE, "type": "Mutating", "review": {"request": request}}]))
    env = {**make_env(state), "BINDING_CONTEXT_PATH": str(directory / "context.json"),
           "ADMISSION_RESPONSE_PATH": str(directory / "response.json"),
           "VALIDATING_RESPONSE_PATH": str(directory / "response.json"),
           "METRICS_PATH": str(directory / "metrics.json")}
    script = os.path.join(HOOKS_DIR, "mutate.py")
    if stdout == "closed":
        run = subprocess.run(f"exec {script} >&-", shell=True, env=env, capture_output=False, stderr=subprocess.PIPE,
                             text=True, check=False)
    else:
        with open(stdout, "w") as handle:
            run = subprocess.run([script], env=env, stdout=handle, stderr=subprocess.PIPE, text=True, check=False)
    assert run.returncode == 0, run.stderr
    response = json.loads((directory / "response.json").read_text())
    assert response["allowed"] is True and "patch" in response
    assert "image-mapper:" in run.stderr  # said where it could be


def test_every_exported_metric_and_label_is_documented(synced, state):
    """Each series name and label key on /metrics/hooks has a row in docs/operations.md."""
    import re

    mutate_run(state, "shop")
    synced.fire_schedule("counters")
    synced.drain()
    text = synced.metrics.render()
    with open(os.path.join(os.path.dirname(HOOKS_DIR), "docs", "operations.md"), encoding="utf-8") as handle:
        docs = handle.read()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(image_mapper_\w+)` \| ([^|]*) \|", docs, re.M)}
    series = re.findall(r"^(image_mapper_\w+)(?:\{([^}]*)\})? ", text, re.M)
    assert {name for name, _ in series} >= {"image_mapper_rules", "image_mapper_admissions_total",
                                             "image_mapper_rewrites_total", "image_mapper_imagemaps"}
    for name, labels in series:
        assert name in rows, f"{name} is not documented"
        for key in re.findall(r'(\w+)="', labels):
            assert key == "hook" or f"`{key}`" in rows[name], (name, key)
    assert "label `hook`" in docs


def test_bundle_preloads_what_the_hot_parts_import_from_outside(bundled_lib):
    """The bundle names the interpreter's modules that the hot parts import when they load
    (imagemapper.bundle.preloads), so the hook loads them without the import system."""
    import marshal

    from imagemapper import PREFIX

    with open(os.path.join(bundled_lib, "imagemapper", "_hotpath.bundle"), "rb") as handle:
        data = handle.read()
    boot, size = int.from_bytes(data[12:16], "little"), int.from_bytes(data[16:PREFIX], "little")
    sources, preloads, _ = marshal.loads(data[PREFIX + boot:PREFIX + boot + size])
    assert [s[0] for s in sources][:2] == ["__init__", "kube"]  # the package's own code is checked too
    names = {name: origin for name, origin, _, _ in preloads}
    assert {"_json", "binascii"} <= set(names) and "fcntl" not in names
    assert not names["binascii"] or names["binascii"].endswith(".so")  # built in, or a file


def test_preload_loads_only_the_recorded_file_on_this_interpreters_path(tmp_path, plain_lib):
    """imagemapper._preload, in a fresh hook interpreter: the recorded _json file loads;
    the same file with another size or mtime, or a byte-identical copy off this
    interpreter's own path (a bundle built by another Python of the same bytecode), is
    left to the usual import."""
    import shutil
    import subprocess

    probe = ("import os, sys\nimport imagemapper\n"
             "if sys.argv[1] == 'copy':\n"
             "    import shutil; shutil.copy2(sys.argv[2], sys.argv[3])\n"
             "import _imp\n"
             "origin = sys.argv[2] if sys.argv[1] != 'copy' else sys.argv[3]\n"
             "info = os.stat(origin)\n"
             "size = info.st_size + (1 if sys.argv[1] == 'size' else 0)\n"
             "imagemapper._preload('_json', origin, size, info.st_mtime_ns)\n"
             "print('_json' in sys.modules, getattr(sys.modules.get('_json'), '__file__', None) == origin)")
    where = subprocess.run([HOOK_PYTHON, "-S", "-c", "import _json; print(_json.__file__)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.endswith(".so"), where  # a C extension in the hooks' interpreter, as on Debian and Alpine
    copy = str(tmp_path / os.path.basename(where))
    outs = {case: subprocess.run([HOOK_PYTHON, "-S", "-c", probe, case, where, copy], capture_output=True, text=True,
                                 check=True, env={**os.environ, "PYTHONPATH": plain_lib}).stdout.split()
            for case in ("same", "size", "copy")}
    assert outs == {"same": ["True", "True"], "size": ["False", "False"], "copy": ["False", "False"]}, outs
    shutil.rmtree(tmp_path, ignore_errors=True)
