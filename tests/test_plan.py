"""plan: pair extraction, deduplication, digest handling and every output format (no network)."""

from __future__ import annotations

import json

import pytest
import yaml
from imagemapper import cli, plan
from imagemapper.reference import parse

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64

MAPS = """\
default::
docker.io::registry.corp/hub
quay.io::
[EXACT]busybox:1.36::registry.corp/tools/busybox:1.36-patched
"""

IMAGEMAP = """\
apiVersion: imagemapper.io/v1alpha1
kind: ImageMap
metadata: {name: team, namespace: shop}
spec:
  map:
  - {from: nginx, to: registry.corp/shop/nginx}
  - {from: "redis@{D1}", to: "registry.corp/shop/redis@{D1}"}
  - {from: "ghcr.io/acme/*", to: "registry.corp/acme/x/*"}
""".replace("{D1}", D1)


@pytest.fixture
def rules_files(tmp_path):
    maps = tmp_path / "maps.conf"
    maps.write_text(MAPS)
    imap = tmp_path / "imagemap.yaml"
    imap.write_text(IMAGEMAP)
    return str(maps), str(imap)


def run(capsys, *argv):
    code = cli.main(["plan", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def build(images_by_ns, maps_text=MAPS):
    """A plan from (namespace, image) uses, with the map file as cluster rules only."""
    import argparse
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as handle:
        handle.write(maps_text)
    args = argparse.Namespace(namespace="default", imagemap=[], ns_map_file=[], map_file=[handle.name])
    rules_ = cli.Rules(args)
    uses = [plan.Use(image, ns, f"use {i}") for i, (ns, image) in enumerate(images_by_ns)]
    return plan.build(uses, rules_.decide)


# ----------------------------------------------------------------------------- digests

@pytest.mark.parametrize("source,destination,expected", [
    ("nginx:1.25", "r.corp/nginx:1.25", ("docker.io/library/nginx:1.25", "r.corp/nginx:1.25")),
    ("nginx", "r.corp/nginx", ("docker.io/library/nginx:latest", "r.corp/nginx:latest")),
    # a digest is pulled by digest; the kept tag is where it is pushed
    (f"nginx:1.25@{D1}", f"r.corp/nginx:1.25@{D1}", (f"docker.io/library/nginx@{D1}", "r.corp/nginx:1.25")),
    (f"nginx@{D1}", f"r.corp/nginx@{D1}", (f"docker.io/library/nginx@{D1}", f"r.corp/nginx@{D1}")),
    # an exact rule that pins a tag for a digest: copy that digest to the tag
    (f"nginx@{D1}", "r.corp/nginx:pinned", (f"docker.io/library/nginx@{D1}", "r.corp/nginx:pinned")),
    # an exact rule whose target has a digest the source tag must match: push by digest
    ("nginx:1.25", f"r.corp/nginx@{D2}", ("docker.io/library/nginx:1.25", f"r.corp/nginx@{D2}")),
])
def test_copy_refs(source, destination, expected):
    assert plan.copy_refs(parse(source), parse(destination)) == expected


def test_digest_pairs_keep_tag_and_digest():
    p = build([("default", f"nginx:1.25@{D1}")])
    (pair,) = p.sorted_pairs()
    assert str(pair.destination) == f"registry.corp/hub/nginx:1.25@{D1}"
    assert (pair.copy_from, pair.copy_to) == (f"docker.io/library/nginx@{D1}", "registry.corp/hub/nginx:1.25")


# ----------------------------------------------------------------------------- pairs and dedup

def test_spellings_of_one_image_are_one_pair():
    p = build([("a", "nginx:1.25"), ("b", "docker.io/library/nginx:1.25"), ("a", "index.docker.io/library/nginx:1.25")])
    (pair,) = p.sorted_pairs()
    assert pair.key == ("docker.io/library/nginx:1.25", "registry.corp/hub/nginx:1.25")
    assert pair.namespaces == ["a", "b"]
    assert pair.seen == ["use 0", "use 1", "use 2"]
    assert pair.rules == [pair.rules[0]] and "line 2" in pair.rules[0]


def test_tag_and_digest_are_different_copies():
    p = build([("a", "nginx:1.25"), ("a", f"nginx@{D1}"), ("a", "nginx:1.26")])
    assert [pair.copy_from for pair in p.sorted_pairs()] == [
        "docker.io/library/nginx:1.25", "docker.io/library/nginx:1.26", f"docker.io/library/nginx@{D1}"]


def test_unchanged_images_are_not_pairs_but_reported():
    p = build([("a", "quay.io/x/y:1"), ("b", "quay.io/x/y:1"), ("a", "registry.corp/hub/library/nginx:1")])
    assert p.pairs == {}
    reasons = {entry["image"]: entry["reason"] for entry in p.unchanged.values()}
    assert "quay.io::" in reasons["quay.io/x/y:1"]
    assert "already under target" in reasons["registry.corp/hub/library/nginx:1"]
    assert next(e for e in p.unchanged.values() if e["image"] == "quay.io/x/y:1")["namespaces"] == ["a", "b"]


def test_invalid_source_is_an_error_naming_the_use():
    p = build([("a", "Not/A:Ref:"), ("a", 42)])
    assert p.pairs == {}
    assert p.errors[0].startswith("use 0: invalid reference") and "use 1: image is not a string" in p.errors[1]


def test_one_destination_from_two_sources_is_reported():
    maps = MAPS + "[EXACT]busybox:1.37::registry.corp/tools/busybox:1.36-patched\n"
    p = build([("a", "busybox:1.36"), ("a", "busybox:1.37")], maps)
    assert len(p.pairs) == 2
    assert p.errors == [("destination registry.corp/tools/busybox:1.36-patched is the copy of several "
                         "sources: docker.io/library/busybox:1.36, docker.io/library/busybox:1.37")]


def test_invalid_destination_names_image_rule_and_registry(rules_files, capsys):
    _, imap = rules_files
    long_path = "ghcr.io/acme/" + "a" * 250  # valid (path 255), but registry.corp/acme/x/... is 257
    code, out, err = run(capsys, "--imagemap", imap, "-n", "shop", long_path + ":1")
    assert code == 0 and out == ""
    assert f"error: argument 1: {long_path}:1 -> registry.corp/acme/x/" in err
    assert "repository name must not be more than 255 characters" in err
    assert "(registry registry.corp; rule imagemap team spec.map[2]" in err


def test_object_uses_every_kind_and_the_original_images_annotation():
    docs = list(yaml.safe_load_all("""
kind: Pod
metadata:
  name: p
  namespace: shop
  annotations:
    imagemapper.io/original-images: '{"containers/app": "nginx:1.25"}'
spec:
  containers: [{name: app, image: registry.corp/shop/nginx:1.25}, {name: side, image: "redis:7"}]
  volumes: [{name: data, image: {reference: "ghcr.io/acme/data:1"}}]
---
kind: CronJob
metadata: {name: c}
spec: {jobTemplate: {spec: {template: {spec: {initContainers: [{name: i, image: "busybox:1.36"}]}}}}}
---
kind: ConfigMap
metadata: {name: ignored}
"""))
    uses = [u for d in docs for u in plan.object_uses(d, cli.POD_SPECS, "default")]
    assert [(u.image, u.namespace, u.where) for u in uses] == [
        ("nginx:1.25", "shop", "shop/Pod/p containers/app"),
        ("redis:7", "shop", "shop/Pod/p containers/side"),
        ("ghcr.io/acme/data:1", "shop", "shop/Pod/p volumes/data"),
        ("busybox:1.36", "default", "default/CronJob/c initContainers/i"),
    ]


def test_garbled_annotation_plans_the_image_as_written():
    pod = {"kind": "Pod", "metadata": {"name": "p", "annotations": {"imagemapper.io/original-images": "{"}},
           "spec": {"containers": [{"name": "a", "image": "nginx:1"}]}}
    assert [u.image for u in plan.object_uses(pod, cli.POD_SPECS, "x")] == ["nginx:1"]


# ----------------------------------------------------------------------------- formats

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  template:
    spec:
      initContainers: [{name: init, image: "busybox:1.36"}]
      containers:
      - {name: web, image: "nginx:1.25"}
      - {name: cache, image: "redis@{D1}"}
      - {name: metrics, image: "quay.io/prometheus/node-exporter:v1.8.0"}
---
apiVersion: v1
kind: Pod
metadata: {name: again, namespace: shop}
spec:
  containers: [{name: web, image: "docker.io/library/nginx:1.25"}]
""".replace("{D1}", D1)


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "app.yaml"
    path.write_text(MANIFEST)
    return str(path)


def test_plain_format(rules_files, manifest, capsys):
    maps, imap = rules_files
    code, out, err = run(capsys, "--imagemap", imap, "--map-file", maps, "-f", manifest)
    assert code == 0
    assert out == (
        "docker.io/library/busybox:1.36 registry.corp/tools/busybox:1.36-patched\n"
        "docker.io/library/nginx:1.25 registry.corp/shop/nginx:1.25\n"
        f"docker.io/library/redis@{D1} registry.corp/shop/redis@{D1}\n")
    assert "note: quay.io/prometheus/node-exporter:v1.8.0 is not relocated" in err


def test_plain_explain_and_arguments(rules_files, capsys):
    maps, imap = rules_files
    _, out, _ = run(capsys, "--imagemap", imap, "--map-file", maps, "-n", "shop", "--explain",
                       "nginx:1.25", "nginx:1.25")
    assert out == ("docker.io/library/nginx:1.25 registry.corp/shop/nginx:1.25"
                   "\t# imagemap team spec.map[0]: nginx -> registry.corp/shop/nginx\n")


def test_json_format(rules_files, manifest, capsys):
    maps, imap = rules_files
    _, out, _ = run(capsys, "--imagemap", imap, "--map-file", maps, "-f", manifest, "--format", "json")
    doc = json.loads(out)
    nginx = doc["pairs"][1]
    assert nginx == {
        "source": "docker.io/library/nginx:1.25", "destination": "registry.corp/shop/nginx:1.25",
        "copy": {"from": "docker.io/library/nginx:1.25", "to": "registry.corp/shop/nginx:1.25"},
        "rule": "imagemap team spec.map[0]: nginx -> registry.corp/shop/nginx",
        "rules": ["imagemap team spec.map[0]: nginx -> registry.corp/shop/nginx"],
        "layers": ["namespace-imagemap"], "namespaces": ["shop"],
        "seen": ["shop/Deployment/web containers/web", "shop/Pod/again containers/web"]}
    assert doc["unchanged"][0]["image"] == "quay.io/prometheus/node-exporter:v1.8.0"
    assert doc["errors"] == []


def test_skopeo_copy_script(rules_files, manifest, capsys):
    maps, imap = rules_files
    _, out, _ = run(capsys, "--imagemap", imap, "--map-file", maps, "-f", manifest, "--format", "skopeo")
    lines = out.splitlines()
    assert lines[0] == "#!/bin/sh" and "set -eu" in lines
    copies = [line for line in lines if not line.startswith(("#", "set"))]
    command = 'skopeo copy --all --preserve-digests "$@"'
    assert copies == [
        f"{command} docker://docker.io/library/busybox:1.36 docker://registry.corp/tools/busybox:1.36-patched",
        f"{command} docker://docker.io/library/nginx:1.25 docker://registry.corp/shop/nginx:1.25",
        f"{command} docker://docker.io/library/redis@{D1} docker://registry.corp/shop/redis@{D1}"]
    assert lines[lines.index(copies[1]) - 1] == "# imagemap team spec.map[0]: nginx -> registry.corp/shop/nginx"


def test_crane_script(rules_files, manifest, capsys):
    maps, imap = rules_files
    _, out, _ = run(capsys, "--imagemap", imap, "--map-file", maps, "-f", manifest, "--format", "crane")
    copies = [line for line in out.splitlines() if line.startswith("crane")]
    assert copies == [
        'crane copy "$@" docker.io/library/busybox:1.36 registry.corp/tools/busybox:1.36-patched',
        'crane copy "$@" docker.io/library/nginx:1.25 registry.corp/shop/nginx:1.25',
        f'crane copy "$@" docker.io/library/redis@{D1} registry.corp/shop/redis@{D1}']


def test_skopeo_sync_when_one_run_fits(capsys, tmp_path):
    maps = tmp_path / "m.conf"
    maps.write_text("[REPLACE]*::registry.corp/flat\n")  # every image -> registry.corp/flat/<last component>
    code, out, _ = run(capsys, "--map-file", str(maps), "--format", "skopeo", "nginx:1.25",
                       "quay.io/prometheus/node-exporter:v1.8.0",
                       f"ghcr.io/acme/tool@{D1}", "nginx:1.26")
    assert code == 0
    assert out.startswith("# 4 image(s) to copy, planned by image-mapper. Run:\n"
                          "#   skopeo sync --all --preserve-digests --src yaml --dest docker THIS-FILE"
                          " registry.corp/flat\n")
    assert yaml.safe_load(out.split("\n", 6)[-1]) == {
        "docker.io": {"images": {"library/nginx": ["1.25", "1.26"]}},
        "ghcr.io": {"images": {"acme/tool": [D1]}},
        "quay.io": {"images": {"prometheus/node-exporter": ["v1.8.0"]}}}
    assert yaml.safe_load(out) == yaml.safe_load(out.split("\n", 6)[-1])  # comments only above


def test_skopeo_sync_scoped_layout():
    p = build([("a", "nginx:1.25"), ("a", "quay.io/x/y:2")], "[REPLACE]nomatch::x\ndefault::registry.corp/m-\n")
    # default with '-' gives registry.corp/m-<host>/<path>: not a sync layout
    assert plan.sync_layout(p.sorted_pairs()) is None
    pairs = [plan.Pair(parse("nginx:1.25"), parse("registry.corp/all/docker.io/library/nginx:1.25")),
             plan.Pair(parse("quay.io/x/y:2"), parse("registry.corp/all/quay.io/x/y:2"))]
    assert plan.sync_layout(pairs) == ("registry.corp/all", True)


@pytest.mark.parametrize("source,destination", [
    (f"nginx:1.25@{D1}", f"r.corp/nginx:1.25@{D1}"),  # sync would drop the kept tag
    ("nginx:1.25", "r.corp/nginx:patched"),            # sync keeps tags as they are
    ("nginx:1.25", "r.corp/a/nginx:1.25"),             # two prefixes, no single run
])
def test_skopeo_falls_back_to_copy_lines(source, destination):
    pairs = [plan.Pair(parse(source), parse(destination)),
             plan.Pair(parse("redis:7"), parse("r.corp/b/redis:7"))]
    assert plan.sync_layout(pairs) is None
    p = plan.Plan()
    p.pairs = {pair.key: pair for pair in pairs}
    for pair in pairs:
        pair.rules.append("a rule")
    assert plan.render(p, "skopeo").startswith("#!/bin/sh\n")


def test_skopeo_copy_format_never_syncs(capsys, tmp_path):
    maps = tmp_path / "m.conf"
    maps.write_text("[REPLACE]*::registry.corp/flat\n")
    _, out, _ = run(capsys, "--map-file", str(maps), "--format", "skopeo-copy", "nginx:1.25")
    assert out.splitlines()[-1] == ('skopeo copy --all --preserve-digests "$@" docker://docker.io/library/nginx:1.25 '
                                    "docker://registry.corp/flat/nginx:1.25")


def test_empty_plan_formats(capsys):
    for fmt in plan.FORMATS:
        code, out, _ = run(capsys, "--format", fmt, "quay.io/a/b:1")
        assert code == 0
        if fmt == "plain":
            assert out == ""
        elif fmt == "json":
            assert json.loads(out)["pairs"] == []
        else:
            assert "0 image(s) to copy" in out


def test_plan_needs_images(capsys):
    code, _, err = run(capsys)
    assert code == 2 and "plan needs IMAGE arguments, -f MANIFESTS or --from-cluster" in err


def test_pods_outside_the_webhook_scope_are_not_relocated(rules_files, tmp_path, capsys):
    maps, _ = rules_files
    manifest = tmp_path / "scope.yaml"
    manifest.write_text("""
kind: Pod
metadata: {name: dns, namespace: kube-system}
spec: {containers: [{name: c, image: "nginx:1.25"}]}
---
kind: Deployment
metadata: {name: legacy, namespace: shop}
spec: {template: {metadata: {labels: {imagemapper.io/mode: disabled}},
                  spec: {containers: [{name: c, image: "nginx:1.26"}]}}}
---
kind: Pod
metadata: {name: web, namespace: shop}
spec: {containers: [{name: c, image: "nginx:1.27"}]}
""")
    code, out, err = run(capsys, "--map-file", maps, "-f", str(manifest), "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert [p["source"] for p in doc["pairs"]] == ["docker.io/library/nginx:1.27"]
    reasons = {u["image"]: u["reason"] for u in doc["unchanged"]}
    assert reasons["docker.io/library/nginx:1.25"].startswith("not rewritten: ")
    assert "kube-system" in reasons["docker.io/library/nginx:1.25"]
    assert "imagemapper.io/mode" in reasons["docker.io/library/nginx:1.26"]
    assert "note: docker.io/library/nginx:1.25 is not relocated (not rewritten: " in err
