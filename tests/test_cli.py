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
    assert out.returncode == 1 and "(ImageMap s/x): spec.map[0]" in out.stderr


def test_unreadable_file_is_a_usage_error(tmp_path):
    out = cli("rewrite", "--map-file", str(tmp_path / "missing.conf"), "nginx")
    assert out.returncode == 2 and "missing.conf" in out.stderr


def test_snapshot_dump(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "lib"))
    from imagemapper import builder
    from imagemapper.imagemap import MapInput

    builder.build(str(tmp_path), [MapInput("shop", "m", "", 1, [{"from": "nginx", "to": "a.corp/nginx"}])], [],
                   "image-mapper-system")
    out = cli("snapshot-dump", str(tmp_path), "shop")
    assert out.returncode == 0 and '"docker.io/library/nginx"' in out.stdout
    assert cli("snapshot-dump", str(tmp_path / "nope")).returncode == 2


# ----------------------------------------------------------------------------- check tells the truth

def check(tmp_path, name: str, text: str) -> subprocess.CompletedProcess:
    return cli("check", write(tmp_path, name, text))


IMAGEMAP_HEAD = "apiVersion: imagemapper.io/v1alpha1\nkind: ImageMap\nmetadata: {name: x, namespace: s}\n"


def test_check_rejects_unknown_fields_like_strict_validation(tmp_path):
    out = check(tmp_path, "typo.yaml", IMAGEMAP_HEAD + "spec:\n  map:\n  - from: nginx\n    too: m.corp/nginx\n")
    assert out.returncode == 1
    assert 'unknown field "spec.map[0].too" (did you mean "to"?)' in out.stderr
    assert "FAILED (1 error, 0 warnings)" in out.stdout
    meta = check(tmp_path, "meta.yaml", IMAGEMAP_HEAD.replace("namespace: s", "namespace: s, lables: {}")
                 + "spec: {map: [{from: nginx}]}\n")
    assert 'unknown field "metadata.lables" (did you mean "labels"?)' in meta.stderr


def test_check_rejects_wrong_kind_api_version_and_no_rules(tmp_path):
    kind = check(tmp_path, "kind.yaml", IMAGEMAP_HEAD.replace("kind: ImageMap", "kind: ImageMapp")
                 + "spec: {map: [{from: nginx}]}\n")
    assert kind.returncode == 1
    assert "kind 'ImageMapp' is neither ImageMap nor ConfigMap (did you mean ImageMap?)" in kind.stderr
    api = check(tmp_path, "api.yaml", IMAGEMAP_HEAD.replace("v1alpha1", "v1") + "spec: {map: [{from: nginx}]}\n")
    assert api.returncode == 1 and "apiVersion 'imagemapper.io/v1' is not 'imagemapper.io/v1alpha1'" in api.stderr
    empty = check(tmp_path, "empty.yaml", IMAGEMAP_HEAD + "spec: {map: []}\n")
    assert empty.returncode == 1 and "spec.map is empty" in empty.stderr
    comments = check(tmp_path, "comments.conf", "# nothing here\n\n# default::x.corp\n")
    assert comments.returncode == 1 and "no rules" in comments.stderr
    assert check(tmp_path, "nothing.yaml", "---\n").returncode == 1


def test_check_shows_compile_warnings(tmp_path):
    out = check(tmp_path, "m.conf",
                "quay.io::q.corp\nquay.io::q2.corp\n[REPLACE]*::r.corp\n[REPLACE]gcr.io/*::g.corp\n")
    assert out.returncode == 0
    assert "m.conf line 2: key repeats" in out.stderr and "m.conf line 1; this line wins" in out.stderr
    assert "registry keys are inactive without a default key" in out.stderr
    assert "m.conf line 4: never used" in out.stderr
    assert "m.conf: WARNINGS (0 errors, 4 warnings)" in out.stdout
    strict = cli("check", "--strict", write(tmp_path, "m.conf", "quay.io::q.corp\n"))
    assert strict.returncode == 1 and "WARNINGS (0 errors, 1 warning)" in strict.stdout


def test_check_names_entries_a_cluster_target_keeps_from_firing(tmp_path):
    """Issue 11.2: a chain across layers is reported by check, as at apply and in status."""
    cluster = write(tmp_path, "cluster.conf", "default::\ndocker.io::mirror.corp/hub\n")
    imap = write(tmp_path, "im.yaml", "apiVersion: imagemapper.io/v1alpha1\nkind: ImageMap\n"
                 "metadata: {name: m, namespace: shop}\nspec:\n  map:\n"
                 "  - {from: mirror.corp/hub/*, to: team.corp/*}\n  - {from: redis, to: team.corp/redis}\n")
    out = cli("check", "--cluster-map-file", cluster, imap)
    assert out.returncode == 0 and "WARNINGS (0 errors, 1 warning)" in out.stdout
    assert "spec.map[0] (mirror.corp/hub/*) never fires" in out.stderr and "spec.map[1]" not in out.stderr
    assert "ok (0 errors, 0 warnings)" in cli("check", imap).stdout  # without the cluster file


def test_check_names_namespace_map_file_lines_a_cluster_target_keeps_from_firing(tmp_path):
    """Issue 11.2 for map files: a namespace ConfigMap or raw file checked with the cluster
    map file names each line that never fires; a cluster-wide ConfigMap is not a namespace's."""
    cluster = write(tmp_path, "cluster.conf", "default::\nquay.io::registry.corp\n")
    raw = write(tmp_path, "ns.conf", "default::\nregistry.corp/team::team.corp\ngcr.io::team.corp/gcr\n")
    cms = write(tmp_path, "cms.yaml", "".join(
        f"---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
        "  labels: {imagemapper.io/map-file: 'true'}\n"
        "data:\n  maps: |\n    default::\n    [REPLACE]registry.corp/team/*::team.corp\n"
        for name, ns in (("team", "shop"), ("more", "image-mapper-system"))))
    out = cli("check", "--cluster-map-file", cluster, raw, cms, cluster)
    assert out.returncode == 0, out.stderr
    assert f"{raw}: WARNINGS (0 errors, 1 warning)" in out.stdout
    assert f"{cms}: WARNINGS (0 errors, 1 warning)" in out.stdout
    assert f"{cluster}: ok (0 errors, 0 warnings)" in out.stdout
    assert f"warning: {raw} line 2: registry.corp/team::team.corp never fires" in out.stderr
    assert (f"warning: {cms}: configmap shop/team key maps line 2: [REPLACE]registry.corp/team/*::team.corp "
            "never fires") in out.stderr and "image-mapper-system/more" not in out.stderr
    assert cli("check", "--strict", "--cluster-map-file", cluster, raw).returncode == 1
    as_yaml = write(tmp_path, "cluster.yaml", "apiVersion: v1\nkind: List\nitems:\n" + "".join(
        f"- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: c\n    namespace: {ns}\n"
        "    labels: {imagemapper.io/map-file: 'true'}\n"
        f"  data:\n    maps: \"default::\\n{line}\\n\"\n"
        for ns, line in (("image-mapper-system", "quay.io::registry.corp"), ("shop", "docker.io::gcr.io"))))
    out = cli("check", "--cluster-map-file", as_yaml, raw)  # kubectl get cm -A -o yaml: only its cluster files
    assert "line 2: registry.corp/team::team.corp never fires" in out.stderr and "line 3" not in out.stderr
    assert "ok (0 errors, 0 warnings)" in cli("check", raw).stdout  # without the cluster file


def test_check_reports_every_problem_without_cutting_the_list(tmp_path):
    items = "".join(f"  - from: 'Bad {i}'\n" for i in range(4))
    out = check(tmp_path, "many.yaml", IMAGEMAP_HEAD + "spec:\n  map:\n" + items)
    assert all(f"spec.map[{i}]" in out.stderr for i in range(4))
    assert "more)" not in out.stderr and "FAILED (4 errors, 0 warnings)" in out.stdout


def test_check_reports_yaml_syntax_errors_as_yaml(tmp_path):
    out = check(tmp_path, "broken.yaml", IMAGEMAP_HEAD + "spec:\n  map:\n  - from: nginx\n   to: x\n")
    assert out.returncode == 1
    assert "YAML syntax error: line 7 column" in out.stderr
    assert "expected key::value" not in out.stderr


def test_check_reports_repeated_yaml_fields_and_entries(tmp_path):
    out = check(tmp_path, "dup.yaml", IMAGEMAP_HEAD + "spec:\n  map:\n  - from: nginx\n    to: a.corp/nginx\n"
                "    to: b.corp/nginx\n  - from: redis\n    to: r.corp/redis\n  - from: docker.io/library/redis\n"
                "    to: r.corp/redis\n")
    assert "line 8: duplicate field 'to'" in out.stderr
    assert "spec.map[2] (from 'docker.io/library/redis') repeats spec.map[1]" in out.stderr


def test_check_says_why_a_value_is_wrong(tmp_path):
    out = check(tmp_path, "why.conf", "default::\nquay.io::https://mirror.corp\ngcr.io::mirror.corp/Team\n")
    assert "URL scheme 'https://'; image names have none, write 'mirror.corp'" in out.stderr
    assert "'Team' has upper-case letters" in out.stderr


def test_check_reads_configmaps_as_kubectl_prints_them(tmp_path):
    out = check(tmp_path, "cms.yaml", """apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: a, namespace: image-mapper-system, labels: {imagemapper.io/map-file: "true"},
             resourceVersion: "1", uid: u1, managedFields: []}
  data: {maps: "default::m.corp\\nquay.io:q.corp\\n"}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: plain, namespace: x}
  data: {k: "v"}
""")
    assert out.returncode == 0, out.stderr
    assert "configmap image-mapper-system/a key maps line 2: deprecated separator" in out.stderr
    assert "ConfigMap x/plain): no label imagemapper.io/map-file" in out.stderr


# ----------------------------------------------------------------------------- reading what users have

KUBECTL_CMS = """apiVersion: v1
items:
- apiVersion: v1
  data:
    maps: |
      default::registry.corp/mirror
      docker.io::registry.corp/hub
  kind: ConfigMap
  metadata:
    labels: {imagemapper.io/map-file: "true"}
    name: mirrors
    namespace: image-mapper-system
    resourceVersion: "812"
    uid: 0f6b
- apiVersion: v1
  data:
    maps: |
      [REPLACE]quay.io/*::registry.corp/shop-quay
  kind: ConfigMap
  metadata:
    labels: {imagemapper.io/map-file: "true"}
    name: shop-maps
    namespace: shop
kind: List
metadata: {resourceVersion: ""}
"""


def test_map_file_accepts_kubectl_get_configmaps_output(tmp_path):
    saved = write(tmp_path, "cms.yaml", KUBECTL_CMS)
    out = cli("rewrite", "--map-file", saved, "-n", "shop", "--explain", "nginx:1", "quay.io/a/b:2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "registry.corp/hub/nginx:1\t# configmap image-mapper-system/mirrors key maps line 2: "
        "docker.io::registry.corp/hub",
        "registry.corp/shop-quay/b:2\t# configmap shop/shop-maps key maps line 1: "
        "[REPLACE]quay.io/*::registry.corp/shop-quay"]
    assert out.stderr == ""
    other = cli("rewrite", "--map-file", saved, "-n", "web", "quay.io/a/b:2")
    assert other.stdout.splitlines() == ["registry.corp/mirror/a/b:2"]


def test_imagemap_accepts_kubectl_output_with_status_and_configmaps(tmp_path):
    saved = write(tmp_path, "all.yaml", """apiVersion: v1
kind: List
items:
- apiVersion: imagemapper.io/v1alpha1
  kind: ImageMap
  metadata: {name: team, namespace: shop, creationTimestamp: "2024-01-01T00:00:00Z", generation: 1}
  spec: {map: [{from: nginx, to: r.corp/nginx}]}
  status: {observedGeneration: 1, rules: 1, conditions: [{type: Ready, status: "True", reason: Accepted}]}
""" + "---\n" + KUBECTL_CMS)
    out = cli("rewrite", "--imagemap", saved, "-n", "shop", "nginx:1", "quay.io/a:1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["r.corp/nginx:1", "registry.corp/shop-quay/a:1"]
    assert cli("check", saved).returncode == 0


# ----------------------------------------------------------------------------- the webhook's scope

def test_preview_applies_the_webhook_scope(tmp_path):
    maps = write(tmp_path, "m.conf", "default::m.corp\n")
    for ns in ("kube-system", "image-mapper-system"):
        out = cli("rewrite", "--map-file", maps, "-n", ns, "nginx")
        assert out.stdout == "nginx\n" and "never rewrites Pods in namespace" in out.stderr
    excluded = cli("rewrite", "--map-file", maps, "--exclude-namespaces", "ingress-nginx,cert-manager",
                   "-n", "cert-manager", "nginx")
    assert excluded.stdout == "nginx\n"
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "lib"), IMAGE_MAPPER_EXCLUDE_NAMESPACES="cni")
    by_env = subprocess.run([sys.executable, "-m", "imagemapper", "rewrite", "--map-file", maps, "-n", "cni",
                             "nginx"], env=env, capture_output=True, text=True, check=False)
    assert by_env.stdout == "nginx\n"
    assert cli("rewrite", "--map-file", maps, "-n", "shop", "nginx").stdout == "m.corp/nginx\n"


def test_rewrite_f_says_on_stderr_what_the_cluster_will_not_rewrite(tmp_path):
    maps = write(tmp_path, "m.conf", "default::m.corp\n")
    manifests = write(tmp_path, "d.yaml", """apiVersion: apps/v1
kind: DaemonSet
metadata: {name: proxy, namespace: kube-system}
spec: {template: {spec: {containers: [{name: a, image: nginx}]}}}
---
apiVersion: v1
kind: ReplicationController
metadata: {name: legacy, namespace: shop}
spec: {template: {metadata: {labels: {app: x}}, spec: {containers: [{name: a, image: nginx}]}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: optout, namespace: shop}
spec: {template: {metadata: {labels: {imagemapper.io/mode: disabled}}, spec: {containers: [{name: a, image: nginx}]}}}
""")
    out = cli("rewrite", "--map-file", maps, "-f", manifests)
    docs = list(yaml.safe_load_all(out.stdout))
    assert docs[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx"
    assert docs[1]["spec"]["template"]["spec"]["containers"][0]["image"] == "m.corp/nginx"
    assert docs[2]["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx"
    assert "DaemonSet/proxy in namespace kube-system is not rewritten" in out.stderr
    assert ("Deployment/optout in namespace shop is not rewritten: the Pod is labeled "
            "imagemapper.io/mode=disabled") in out.stderr


# ----------------------------------------------------------------------------- command-line manners

def test_version():
    from imagemapper import __version__

    out = cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"image-mapper {__version__}"
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as handle:
        assert f'version = "{__version__}"' in handle.read()


def test_help_has_no_markup_and_explains_every_argument():
    from imagemapper import cli as climod

    top = climod.parser()
    subs = next(a for a in top._actions if a.dest == "command").choices
    for name, sub in subs.items():
        text = sub.format_help()
        assert "``" not in text and ":mod:" not in text, name
        for action in sub._actions:
            assert action.help, f"{name}: {action.dest} has no help"
    assert "``" not in top.format_help()


def test_rewrite_with_f_and_images_is_an_error(tmp_path):
    manifests = write(tmp_path, "p.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n")
    out = cli("rewrite", "-f", manifests, "nginx")
    assert out.returncode == 2 and "not both" in out.stderr and out.stdout == ""


def test_plurals(tmp_path):
    out = check(tmp_path, "one.conf", "default::m.corp\nbad line\nquay.io:q.corp\n")
    assert "(1 error, 1 warning)" in out.stdout
    maps = write(tmp_path, "im.yaml", IMAGEMAP_HEAD + "spec: {map: [{from: nginx, to: a.corp/nginx}]}\n")
    note = cli("rewrite", "--imagemap", maps, "-n", "other", "nginx")
    assert "no image was looked up in namespace s, so its ImageMaps" in note.stderr


def test_ctrl_c_exits_130_without_a_traceback():
    import signal
    import time

    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "lib"))
    proc = subprocess.Popen([sys.executable, "-m", "imagemapper", "check", "-"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    time.sleep(1.0)  # reading stdin
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and "Traceback" not in err


def test_rewrite_of_bad_yaml_is_a_usage_error_not_a_traceback(tmp_path):
    out = cli("rewrite", "-f", write(tmp_path, "bad.yaml", "kind: [\n"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "bad.yaml: YAML syntax error: line 2" in out.stderr


def test_rewrite_passes_odd_documents_through(tmp_path):
    """`kind: 1`, a List whose items are not a list, and scalars are not Pods: left as they are."""
    text = "kind: 1\n---\napiVersion: v1\nkind: List\nitems: 3\n---\n5\n---\nkind: PodList\nitems: []\n"
    out = cli("rewrite", "-f", write(tmp_path, "odd.yaml", text))
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert list(yaml.safe_load_all(out.stdout)) == list(yaml.safe_load_all(text))
