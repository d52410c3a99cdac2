"""Mutate and validate decisions as pure functions (the process level is in test_hooks.py)."""

from __future__ import annotations

import base64
import json

import jsonpatch
import pytest
from imagemapper import admission, builder, podpatch
from imagemapper.imagemap import MapInput
from imagemapper.mapfile import MapFileInput
from imagemapper.settings import Settings

OPNS = "image-mapper-system"


@pytest.fixture
def state(tmp_path):
    maps = [MapInput("shop", "team", "2024-01-01T00:00:00Z", 1, [
        {"from": "nginx", "to": "registry.corp/hub/nginx"},
        {"from": "quay.io/jetstack/*", "to": "registry.corp/quay/jetstack/*"}])]
    cms = [MapFileInput(OPNS, "cluster", "u", {"maps": "default::mirror.corp\nnoswap_wildcards::registry.corp\n"})]
    builder.build(str(tmp_path), maps, cms, OPNS)
    return Settings(operator_namespace=OPNS, state_dir=str(tmp_path))


def pod(containers=(), init=(), ephemeral=(), volumes=(), annotations=None, name="p"):
    meta = {"name": name, "namespace": "shop"}
    if annotations is not None:
        meta["annotations"] = annotations
    spec = {"containers": [{"name": n, "image": i} for n, i in containers]}
    if init:
        spec["initContainers"] = [{"name": n, "image": i} for n, i in init]
    if ephemeral:
        spec["ephemeralContainers"] = [{"name": n, "image": i} for n, i in ephemeral]
    if volumes:
        spec["volumes"] = [{"name": n, "image": {"reference": r}} for n, r in volumes]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def request(obj, operation="CREATE", sub=None, namespace="shop", old=None):
    req = {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "namespace": namespace,
           "operation": operation, "object": obj, "oldObject": old}
    if sub:
        req["subResource"] = sub
    return req


def apply(obj, response):
    assert response["allowed"] is True
    if "patch" not in response:
        return obj
    ops = json.loads(base64.b64decode(response["patch"], validate=True))
    return jsonpatch.apply_patch(obj, ops)


def images(obj):
    return [f.image for f in podpatch.image_fields(obj["spec"])]


def test_all_image_fields_are_rewritten_and_originals_recorded(state):
    obj = pod(containers=[("web", "nginx:1.25"), ("side", "gcr.io/x/y:1")], init=[("init", "busybox")],
              ephemeral=[("debug", "quay.io/jetstack/ctl:v1")], volumes=[("data", "quay.io/org/data:1")])
    out = apply(obj, admission.mutate(request(obj), state))
    assert images(out) == ["registry.corp/hub/nginx:1.25", "mirror.corp/x/y:1", "mirror.corp/busybox",
                           "registry.corp/quay/jetstack/ctl:v1", "mirror.corp/org/data:1"]
    originals = json.loads(out["metadata"]["annotations"][podpatch.ANNOTATION])
    assert originals == {"containers/web": "nginx:1.25", "containers/side": "gcr.io/x/y:1",
                         "initContainers/init": "busybox", "ephemeralContainers/debug": "quay.io/jetstack/ctl:v1",
                         "volumes/data": "quay.io/org/data:1"}


def test_patch_is_one_replace_per_changed_image(state):
    obj = pod(containers=[("a", "nginx"), ("b", "registry.corp/already:1"), ("c", "nginx")])
    ops = json.loads(base64.b64decode(admission.mutate(request(obj), state)["patch"]))
    replaces = [op for op in ops if op["op"] == "replace"]
    assert [op["path"] for op in replaces] == ["/spec/containers/0/image", "/spec/containers/2/image"]


def test_nothing_to_change_means_no_patch(state):
    obj = pod(containers=[("a", "registry.corp/hub/nginx:1")])
    assert admission.mutate(request(obj), state) == {"allowed": True}


def test_update_and_reinvocation_are_idempotent(state):
    obj = pod(containers=[("web", "nginx:1.25")])
    once = apply(obj, admission.mutate(request(obj), state))
    assert admission.mutate(request(once, "UPDATE"), state) == {"allowed": True}
    # kubectl set image to another public image: relocated, first original kept
    once["spec"]["containers"][0]["image"] = "nginx:1.27"
    twice = apply(once, admission.mutate(request(once, "UPDATE"), state))
    assert images(twice) == ["registry.corp/hub/nginx:1.27"]
    assert json.loads(twice["metadata"]["annotations"][podpatch.ANNOTATION]) == {"containers/web": "nginx:1.25"}


def test_update_rewrites_only_images_the_update_changed(state):
    """A Pod admitted before a rule existed keeps its images through a label change."""
    stored = pod(containers=[("web", "nginx:1.25"), ("side", "quay.io/jetstack/ctl:1")],
                 init=[("init", "nginx:1.24")], volumes=[("v", "nginx:data")])
    labeled = json.loads(json.dumps(stored))
    labeled["metadata"]["labels"] = {"x": "y"}
    assert admission.mutate(request(labeled, "UPDATE", old=stored), state) == {"allowed": True}
    # kubectl set image web=...: only that container is decided
    changed = json.loads(json.dumps(stored))
    changed["spec"]["containers"][0]["image"] = "nginx:1.27"
    out = apply(changed, admission.mutate(request(changed, "UPDATE", old=stored), state))
    assert images(out) == ["registry.corp/hub/nginx:1.27", "quay.io/jetstack/ctl:1", "nginx:1.24", "nginx:data"]
    assert json.loads(out["metadata"]["annotations"][podpatch.ANNOTATION]) == {"containers/web": "nginx:1.27"}
    # an ephemeral container added through the subresource is new, so it is decided
    debug = json.loads(json.dumps(stored))
    debug["spec"]["ephemeralContainers"] = [{"name": "dbg", "image": "nginx:debug"}]
    out = apply(debug, admission.mutate(request(debug, "UPDATE", sub="ephemeralcontainers", old=stored), state))
    assert out["spec"]["ephemeralContainers"][0]["image"] == "registry.corp/hub/nginx:debug"
    assert out["spec"]["containers"][0]["image"] == "nginx:1.25"


def test_existing_annotations_are_kept(state):
    obj = pod(containers=[("web", "nginx")], annotations={"team": "a", podpatch.ANNOTATION: "not json"})
    out = apply(obj, admission.mutate(request(obj), state))
    assert out["metadata"]["annotations"]["team"] == "a"
    assert json.loads(out["metadata"]["annotations"][podpatch.ANNOTATION]) == {"containers/web": "nginx"}


def test_ephemeral_subresource_patches_only_ephemeral_containers(state):
    obj = pod(containers=[("web", "nginx")], ephemeral=[("dbg", "busybox")])
    ops = json.loads(base64.b64decode(admission.mutate(request(obj, "UPDATE", "ephemeralcontainers"), state)["patch"]))
    assert ops == [{"op": "replace", "path": "/spec/ephemeralContainers/0/image", "value": "mirror.corp/busybox"}]


def test_invalid_image_warns_and_stays(state):
    obj = pod(containers=[("bad", "Not A Ref"), ("ok", "nginx"), ("num", 5)])
    response = admission.mutate(request(obj), state)
    out = apply(obj, response)
    assert images(out) == ["Not A Ref", "registry.corp/hub/nginx", 5]
    assert any("containers/bad" in w and "not a valid reference" in w for w in response["warnings"])
    assert any("containers/num" in w for w in response["warnings"])


@pytest.mark.parametrize("spec", [None, {}, {"containers": None}, {"containers": [None, 1, {"name": "x"}]},
                                  {"volumes": [{"name": "v", "image": None}]}, "junk"])
def test_odd_shapes_never_raise(state, spec):
    obj = {"metadata": {"name": "p"}, "spec": spec}
    assert admission.mutate(request(obj), state)["allowed"] is True


def test_missing_snapshot_follows_failure_policy(tmp_path):
    obj = pod(containers=[("web", "nginx")])
    fail = admission.mutate(request(obj), Settings(state_dir=str(tmp_path), failure_policy="Fail"))
    assert fail["allowed"] is False and "snapshot" in fail["message"] and "retry" in fail["message"]
    ignore = admission.mutate(request(obj), Settings(state_dir=str(tmp_path), failure_policy="Ignore"))
    assert ignore["allowed"] is True and "patch" not in ignore and ignore["warnings"]


def test_other_operations_pass(state):
    assert admission.mutate(request(None, "DELETE"), state) == {"allowed": True}


# ----------------------------------------------------------------------------- validate

def imagemap_request(items, name="new", operation="CREATE", old=None, namespace="shop"):
    obj = {"apiVersion": "imagemapper.io/v1alpha1", "kind": "ImageMap",
           "metadata": {"name": name, "namespace": namespace}, "spec": {"map": items}}
    return {"kind": {"group": "imagemapper.io", "version": "v1alpha1", "kind": "ImageMap"},
            "namespace": namespace, "operation": operation, "object": obj, "oldObject": old}


def test_validate_denies_invalid_entry_naming_it(state):
    response = admission.validate(imagemap_request([{"from": "ok", "to": "x.corp/ok"}, {"from": "Bad Ref"}]), state)
    assert response["allowed"] is False
    assert "spec.map[1]" in response["message"] and 'ImageMap "shop/new"' in response["message"]


def test_validate_denies_conflict_with_accepted_map(state):
    response = admission.validate(imagemap_request([{"from": "nginx", "to": "other.corp/nginx"}]), state)
    assert response["allowed"] is False and 'ImageMap "team"' in response["message"]


def test_validate_denies_chain_with_accepted_map(state):
    response = admission.validate(imagemap_request([{"from": "registry.corp/hub/nginx", "to": "x.corp/n"}]), state)
    assert response["allowed"] is False and "chain" in response["message"]


def test_validate_allows_update_of_itself_and_other_namespaces(state):
    update = imagemap_request([{"from": "nginx", "to": "registry.corp/hub/nginx2"}], name="team", operation="UPDATE")
    assert admission.validate(update, state)["allowed"] is True
    other_ns = imagemap_request([{"from": "nginx", "to": "other.corp/nginx"}], namespace="elsewhere")
    assert admission.validate(other_ns, state)["allowed"] is True


def test_validate_metadata_only_update_is_never_blocked(state):
    items = [{"from": "nginx", "to": "other.corp/nginx"}]
    old = {"spec": {"map": items}}
    assert admission.validate(imagemap_request(items, operation="UPDATE", old=old), state)["allowed"] is True


def test_validate_without_snapshot_checks_syntax_and_allows(tmp_path):
    settings = Settings(state_dir=str(tmp_path))
    assert admission.validate(imagemap_request([{"from": "Bad Ref"}]), settings)["allowed"] is False
    ok = admission.validate(imagemap_request([{"from": "nginx", "to": "x.corp/nginx"}]), settings)
    assert ok["allowed"] is True and ok["warnings"]


def mapfile_object(data, labeled=True, **meta):
    labels = {"imagemapper.io/map-file": "true"} if labeled else {}
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "maps", "namespace": "shop", "labels": labels, **meta}, "data": data}


def mapfile_request(data, old=None, **meta):
    return {"kind": {"group": "", "version": "v1", "kind": "ConfigMap"}, "namespace": "shop",
            "operation": "UPDATE" if old else "CREATE", "object": mapfile_object(data, **meta),
            "oldObject": old}


def test_validate_map_file_denies_only_what_the_request_makes_worse(state):
    """A map file that got in with a bad line (validation was down) stays manageable."""
    bad = {"maps": "default::x.corp\nbad line here\n"}
    stuck = mapfile_object(bad, finalizers=["example.com/hold"], deletionTimestamp="2026-01-01T00:00:00Z")
    released = admission.validate(mapfile_request(bad, old=stuck), state)
    assert released["allowed"] is True and any("line 2" in w for w in released["warnings"])
    annotated = admission.validate(mapfile_request(bad, old=stuck, annotations={"a": "b"}), state)
    assert annotated["allowed"] is True
    unlabeled = admission.validate(mapfile_request(bad, old=stuck, labeled=False), state)
    assert unlabeled == {"allowed": True}
    # an edit that keeps the old bad line but adds a good one is no worse
    kept = {"maps": "default::x.corp\nbad line here\ngcr.io::y.corp\n"}
    assert admission.validate(mapfile_request(kept, old=stuck), state)["allowed"] is True
    # a new bad line, a new key with a bad line, or labeling a bad ConfigMap are denied
    worse = {"maps": "default::x.corp\nbad line here\nanother bad one\n"}
    denied = admission.validate(mapfile_request(worse, old=stuck), state)
    assert denied["allowed"] is False and "line 3" in denied["message"] and "line 2" not in denied["message"]
    assert admission.validate(mapfile_request({**bad, "more": "x y"}, old=stuck), state)["allowed"] is False
    assert admission.validate(mapfile_request(bad, old=mapfile_object(bad, labeled=False)),
                              state)["allowed"] is False


def test_validate_map_file_names_the_line(state):
    response = admission.validate(mapfile_request({"maps": "default::x.corp\nbad line here\n"}), state)
    assert response["allowed"] is False
    assert "configmap shop/maps key maps line 2" in response["message"]


def test_validate_map_file_deprecated_separator_is_a_warning(state):
    response = admission.validate(mapfile_request({"maps": "default:x.corp\n"}), state)
    assert response["allowed"] is True and any("line 1" in w for w in response["warnings"])


def test_validate_denies_every_invalid_entry_not_just_the_first(state):
    items = [{"from": "Bad Ref"}, {"from": "ok", "to": "x.corp/ok"}, {"from": "https://quay.io/x"}]
    response = admission.validate(imagemap_request(items), state)
    assert "spec.map[0]" in response["message"] and "spec.map[2]" in response["message"]
    assert "more)" not in response["message"]
    assert "URL scheme 'https://'" in response["message"]


def test_validate_imagemap_warns_about_repeated_entries(state):
    items = [{"from": "redis", "to": "x.corp/redis"}, {"from": "docker.io/library/redis", "to": "x.corp/redis"}]
    response = admission.validate(imagemap_request(items), state)
    assert response["allowed"] is True
    assert response["warnings"] == [('ImageMap "shop/new": spec.map[1] (from '
                                    "'docker.io/library/redis') repeats spec.map[0]; remove one of them")]


def test_validate_map_file_returns_the_compile_warnings_check_shows(state):
    text = "quay.io::q.corp\nquay.io::q2.corp\n[REPLACE]*::r.corp\n"
    response = admission.validate(mapfile_request({"maps": text}), state)
    assert response["allowed"] is True
    found = " | ".join(response["warnings"])
    assert "line 2: key repeats" in found and "without a default key" in found
    assert "never used" in found


def test_validate_warnings_fit_the_api_server_limits(state):
    text = "default::\n" + "".join(f"r{i}.io:x.corp/{'p' * 200}\n" for i in range(60))
    response = admission.validate(mapfile_request({"maps": text}), state)
    warnings = response["warnings"]
    assert all(len(w) <= 256 and w.isprintable() for w in warnings)
    assert sum(len(w) for w in warnings) <= 4096
    assert warnings[-1].startswith("and ") and "more warnings: run `image-mapper check`" in warnings[-1]


def test_chain_warnings_read_large_cluster_target_tables(tmp_path):
    """Over 64 cluster targets are stored as hashed tables: the validating hook reads them
    whole for its chain warnings (it raised KeyError on iterating one)."""
    text = "default::\n" + "".join(f"r{i}.example::mirror.corp/m{i}\n" for i in range(100))
    builder.build(str(tmp_path), [], [MapFileInput(OPNS, "cluster", "u", {"maps": text})], OPNS)
    settings = Settings(operator_namespace=OPNS, state_dir=str(tmp_path))
    imap = {"apiVersion": "imagemapper.io/v1alpha1", "kind": "ImageMap", "metadata": {"name": "m", "namespace": "shop"},
            "spec": {"map": [{"from": "mirror.corp/*", "to": "t.corp/*"}]}}
    answer = admission.validate({"operation": "CREATE", "kind": {"kind": "ImageMap"}, "object": imap}, settings)
    assert answer["allowed"] is True and "'mirror.corp/m0', 'mirror.corp/m1', 'mirror.corp/m10' and 97 more" \
        in answer["warnings"][0]
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"maps": "default::\nmirror.corp/m7::t.corp\n"},
          "metadata": {"name": "team", "namespace": "shop", "labels": {"imagemapper.io/map-file": "true"}}}
    answer = admission.validate({"operation": "CREATE", "kind": {"kind": "ConfigMap"}, "object": cm}, settings)
    assert answer["allowed"] is True and answer["warnings"] == [
        "configmap shop/team key maps line 2: mirror.corp/m7::t.corp fires only for images on other ports of "
        "its registry: the others lie under cluster target 'mirror.corp/m7', which keeps them (a chain across "
        "layers; idempotence wins)"]
