"""The CLI as other tools drive it: arguments, stdout, stderr and exit codes."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args: str, stdin: str | None = None, cwd: str = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "lib"))
    return subprocess.run([sys.executable, "-m", "imagemapper", *args], input=stdin, cwd=cwd, env=env,
                          capture_output=True, text=True, check=False)


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


IMAGEMAPS = """
apiVersion: imagemapper.io/v1alpha1
kind: ImageMapList
items:
- apiVersion: imagemapper.io/v1alpha1
  kind: ImageMap
  metadata: {name: a}
  spec: {map: [{from: nginx, to: a.corp/nginx}]}
- apiVersion: imagemapper.io/v1alpha1
  kind: ImageMap
  metadata: {name: b, namespace: other}
  spec: {map: [{from: nginx, to: b.corp/nginx}]}
---
apiVersion: imagemapper.io/v1alpha1
kind: ImageMap
metadata: {name: c}
spec: {map: [{from: redis, to: c.corp/redis}, {from: "quay.io/*", to: "q.corp/*"}]}
"""


def test_rewrite_prints_one_line_per_image_in_order(tmp_path):
    maps = write(tmp_path, "maps.yaml", IMAGEMAPS)
    out = cli("rewrite", "--imagemap", maps, "-n", "shop", "nginx:1", "redis", "quay.io/x/y:2", "busybox")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["a.corp/nginx:1", "c.corp/redis", "q.corp/x/y:2", "busybox"]
    # maps without a namespace take -n: here "a" joins "other", is older in file order, and wins
    other = cli("rewrite", "--imagemap", maps, "-n", "other", "nginx:1")
    assert other.stdout.splitlines() == ["a.corp/nginx:1"]
    assert 'ImageMap "other/b" rejected (Conflict)' in other.stderr


def test_explain_names_the_rule(tmp_path):
    maps = write(tmp_path, "maps.yaml", IMAGEMAPS)
    out = cli("rewrite", "--imagemap", maps, "--explain", "nginx", "busybox")
    first, second = out.stdout.splitlines()
    assert first.startswith("a.corp/nginx\t# imagemap a spec.map[0]")
    assert second == "busybox\t# no rule matches"


def test_rejected_imagemaps_and_bad_lines_go_to_stderr(tmp_path):
    maps = write(tmp_path, "maps.yaml", IMAGEMAPS + """---
apiVersion: imagemapper.io/v1alpha1
kind: ImageMap
metadata: {name: d}
spec: {map: [{from: nginx, to: d.corp/nginx}]}
""")
    mapfile = write(tmp_path, "m.conf", "default::m.corp\nnot a line\n")
    out = cli("rewrite", "--imagemap", maps, "--map-file", mapfile, "nginx")
    assert out.stdout.splitlines() == ["a.corp/nginx"]
    assert 'ImageMap "default/d" rejected (Conflict)' in out.stderr
    assert "m.conf line 2" in out.stderr


def test_invalid_image_is_printed_unchanged(tmp_path):
    out = cli("rewrite", "Not/A Ref", "nginx")
    assert out.returncode == 0
    assert out.stdout.splitlines() == ["Not/A Ref", "nginx"]
    assert "left unchanged" in out.stderr


def test_manifest_stream_rewrites_every_pod_template_kind(tmp_path):
    mapfile = write(tmp_path, "m.conf", "default::m.corp\n")
    kinds = {
        "Pod": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}},
        "Deployment": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}}},
        "StatefulSet": {"spec": {"template": {"spec": {"initContainers": [{"name": "c", "image": "nginx"}]}}}},
        "DaemonSet": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}}},
        "ReplicaSet": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}}},
        "Job": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}}},
        "CronJob": {"spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "c", "image": "nginx"}]}}}}}},
        "ConfigMap": {"data": {"image": "nginx"}},
    }
    docs = [{"apiVersion": "v1", "kind": k, "metadata": {"name": k.lower()}, **body} for k, body in kinds.items()]
    stream = yaml.safe_dump_all(docs[:4]) + "---\n" + yaml.safe_dump(
        {"apiVersion": "v1", "kind": "List", "items": docs[4:]})
    out = cli("rewrite", "--map-file", mapfile, "-f", "-", stdin=stream)
    assert out.returncode == 0, out.stderr
    result = list(yaml.safe_load_all(out.stdout))
    text = yaml.safe_dump_all(result)
    assert text.count("image: m.corp/nginx") == 7
    assert "image: nginx" in text  # the ConfigMap is data, not a Pod
    assert text.count("imagemapper.io/original-images") == 7


def test_check_exit_codes_and_line_numbers(tmp_path):
    good = write(tmp_path, "good.conf", "default::m.corp\n")
    bad = write(tmp_path, "bad.conf", "default::m.corp\n# fine\nquay.io:::x\nweird key::x\n")
    assert cli("check", good).returncode == 0
    out = cli("check", good, bad)
    assert out.returncode == 1
    assert "bad.conf line 3" in out.stderr and "bad.conf line 4" in out.stderr
    imaps = write(tmp_path, "im.yaml", "apiVersion: imagemapper.io/v1alpha1\nkind: ImageMap\n"
                  "metadata: {name: x, namespace: s}\nspec: {map: [{from: 'Bad Ref'}]}\n")
    out = cli("check", imaps)
    assert out.returncode == 1 and 'ImageMap "s/x" (Invalid)' in out.stderr and "spec.map[0]" in out.stderr


def test_unreadable_file_is_a_usage_error(tmp_path):
    out = cli("rewrite", "--map-file", str(tmp_path / "missing.conf"), "nginx")
    assert out.returncode == 2 and "missing.conf" in out.stderr


def test_snapshot_dump(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "lib"))
    from imagemapper import compiler
    from imagemapper.imagemap import MapInput

    compiler.build(str(tmp_path), [MapInput("shop", "m", "", 1, [{"from": "nginx", "to": "a.corp/nginx"}])], [],
                   "image-mapper-system")
    out = cli("snapshot-dump", str(tmp_path), "shop")
    assert out.returncode == 0 and '"docker.io/library/nginx"' in out.stdout
    assert cli("snapshot-dump", str(tmp_path / "nope")).returncode == 2
