"""Layer precedence, scope, the idempotence guard, and properties over generated rules."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imagemapper import compiler, rules
from imagemapper.imagemap import MapInput
from imagemapper.mapfile import MapFileInput
from imagemapper.reference import is_valid, parse


def docs(ns_maps=(), ns_files=(), cluster_files=(), namespace="shop"):
    """Compile like the sync hook does, without touching the disk."""
    ns_doc = compiler.compile_namespace(
        namespace, list(ns_maps),
        [MapFileInput(namespace, f"ns-{i}", "", {"maps": t}) for i, t in enumerate(ns_files)])[0]
    cluster_doc = compiler.compile_cluster(
        [MapFileInput("image-mapper-system", f"c-{i}", "", {"maps": t}) for i, t in enumerate(cluster_files)])[0]
    return ns_doc, cluster_doc


def f(image, ns_doc, cluster_doc):
    decision = rules.decide(image, ns_doc, cluster_doc)
    return decision.new if decision.changed else image


def test_namespace_rules_decide_before_cluster_rules():
    ns_doc, cluster_doc = docs(
        [MapInput("shop", "m", "", 1, [{"from": "nginx", "to": "team.corp/nginx"}, {"from": "redis"}])],
        ["docker.io/bitnami::ns.corp/bitnami\ndefault::"],
        ["default::cluster.corp\ndocker.io::cluster.corp/hub"])
    assert f("nginx:1", ns_doc, cluster_doc) == "team.corp/nginx:1"        # ImageMap
    assert f("redis:7", ns_doc, cluster_doc) == "redis:7"                  # exclusion is a match
    assert f("bitnami/kafka:3", ns_doc, cluster_doc) == "ns.corp/bitnami/kafka:3"  # namespace map file
    # the namespace file has default:: (keep), which is a match too: the cluster file never sees it
    assert f("busybox", ns_doc, cluster_doc) == "busybox"


def test_cluster_rules_apply_when_namespace_has_none():
    ns_doc, cluster_doc = docs([], [], ["default::cluster.corp\ndocker.io::cluster.corp/hub"])
    assert ns_doc is None
    assert f("busybox", ns_doc, cluster_doc) == "cluster.corp/hub/busybox"
    assert f("gcr.io/a/b:1", ns_doc, cluster_doc) == "cluster.corp/a/b:1"


def test_guard_keeps_rewritten_images_and_images_already_at_a_target():
    ns_doc, cluster_doc = docs([MapInput("shop", "m", "", 1, [{"from": "docker.io/*", "to": "hub.corp/mirror/*"}])],
                               [], ["default::registry.example.com/mirror"])
    once = f("nginx:1", ns_doc, cluster_doc)
    assert once == "hub.corp/mirror/library/nginx:1"
    assert f(once, ns_doc, cluster_doc) == once
    gcr = f("gcr.io/x/y", ns_doc, cluster_doc)
    assert gcr == "registry.example.com/mirror/x/y"
    assert f(gcr, ns_doc, cluster_doc) == gcr   # imageswap would give .../mirror/mirror/x/y
    decision = rules.decide(gcr, ns_doc, cluster_doc)
    assert "already under target" in decision.rule


def test_identity_rules_guard_nothing():
    """Issue 11.2: a no-op cluster line used to turn off every namespace's Docker Hub rules."""
    ns_doc, cluster_doc = docs([MapInput("shop", "m", "", 1, [{"from": "nginx", "to": "team.corp/nginx"},
                                                             {"from": "quay.io/a", "to": "quay.io/a"}])],
                               [], ["default::\nindex.docker.io::docker.io"])
    assert f("nginx:1", ns_doc, cluster_doc) == "team.corp/nginx:1"
    assert f("docker.io/library/redis:7", ns_doc, cluster_doc) == "docker.io/library/redis:7"  # same image
    assert cluster_doc["targets"]["prefix"] == {} and ns_doc["targets"]["repo"] == {"team.corp/nginx": 1}


def test_a_target_guards_only_endpoints_its_rule_can_produce():
    """A port is another registry unless the rule keeps the image's port (a bare registry value)."""
    ns_map = [MapInput("shop", "m", "", 1, [{"from": "registry.corp:5000/*", "to": "ns.corp/*"}])]
    ns_doc, cluster_doc = docs(ns_map, [], ["default::\nquay.io::registry.corp/quay"])
    assert f("registry.corp:5000/quay/x:1", ns_doc, cluster_doc) == "ns.corp/quay/x:1"
    assert f("registry.corp/quay/x:1", ns_doc, cluster_doc) == "registry.corp/quay/x:1"
    # quay.io::registry.corp keeps the port: quay.io:5000/x becomes registry.corp:5000/x, so
    # that endpoint is guarded (a chain across layers; idempotence wins)
    ns_doc, cluster_doc = docs(ns_map, [], ["default::\nquay.io::registry.corp"])
    assert f("quay.io:5000/x:1", ns_doc, cluster_doc) == "registry.corp:5000/x:1"
    assert f("registry.corp:5000/x:1", ns_doc, cluster_doc) == "registry.corp:5000/x:1"


def test_a_rewrite_never_gives_an_invalid_reference():
    """Issue 11.3: an ImageMap prefix rule could make a repository path over 255 characters."""
    long = "a" * 200
    ns_doc, cluster_doc = docs([MapInput("shop", "m", "", 1, [{"from": "quay.io/*", "to": f"r.corp/{long}/*"}])])
    image = "quay.io/" + "b" * 60 + "/x:1"
    decision = rules.decide(image, ns_doc, cluster_doc)
    assert not decision.changed and "not a valid reference" in decision.warning
    assert f("quay.io/short:1", ns_doc, cluster_doc) == f"r.corp/{long}/short:1"


def test_chains_across_layers_are_named():
    from imagemapper.chains import cross_layer

    _, cluster_doc = docs([], [], ["default::\ndocker.io::registry.corp/hub\nindex.docker.io/x::docker.io/x"])
    items = [{"from": "registry.corp/hub/*", "to": "ns.corp/*"},    # every image under the target
             {"from": "registry.corp/*", "to": "ns.corp/all/*"},    # all but those under it
             {"from": "docker.io/x/*", "to": "ns.corp/x/*"},        # under an identity: fires
             {"from": "quay.io/a", "to": "ns.corp/a"}]
    notes = cross_layer(items, cluster_doc["targets"])
    assert len(notes) == 2
    assert notes[0].startswith("spec.map[0] (registry.corp/hub/*) never fires") and "registry.corp/hub" in notes[0]
    assert notes[1].startswith("spec.map[1] (registry.corp/*) does not fire for images under")


def test_invalid_images_are_reported_not_rewritten():
    ns_doc, cluster_doc = docs([], [], ["default::cluster.corp"])
    for image in ["", " ", "upper/Case", "a//b", "nginx:", "x" * 300]:
        decision = rules.decide(image, ns_doc, cluster_doc)
        assert decision.error and not decision.changed


def test_namespace_isolation_concrete():
    mine = docs([MapInput("shop", "m", "", 1, [{"from": "nginx", "to": "a.corp/nginx"}])], namespace="shop")
    theirs = docs([MapInput("other", "m", "", 1, [{"from": "nginx", "to": "b.corp/nginx"}])], namespace="other")
    assert f("nginx", *mine) == "a.corp/nginx"
    assert f("nginx", *theirs) == "b.corp/nginx"


# ----------------------------------------------------------------------------- properties

REGISTRIES = ["docker.io", "quay.io", "gcr.io", "localhost:5000", "mirror.corp", "[::1]:5000", "registry.corp:8443"]
PATHS = ["library/nginx", "library/redis", "org/app", "org/app/sub", "team/tool", "mirror/org/app"]
TAGS = ["", ":1", ":v1.2", ":latest", "@sha256:" + "b" * 64, ":2@sha256:" + "c" * 64]

images = st.builds(lambda r, p, t: f"{r}/{p}{t}", st.sampled_from(REGISTRIES), st.sampled_from(PATHS),
                   st.sampled_from(TAGS)) | st.sampled_from(["nginx", "nginx:1.25", "org/app:2", "redis"])
repos = st.builds(lambda r, p: f"{r}/{p}", st.sampled_from(REGISTRIES), st.sampled_from(PATHS))
prefixes = st.builds(lambda r, p: f"{r}/{p}" if p else r, st.sampled_from(REGISTRIES),
                     st.sampled_from(["", "library", "org", "org/app", "mirror"]))


@st.composite
def entries(draw):
    kind = draw(st.sampled_from(["exact", "repo", "prefix", "exclude"]))
    if kind == "exact":
        return {"from": draw(repos) + draw(st.sampled_from(TAGS[1:])), "to": draw(repos) + ":t"}
    if kind == "repo":
        return {"from": draw(repos), "to": draw(repos)}
    if kind == "prefix":
        return {"from": draw(prefixes) + "/*", "to": draw(prefixes) + "/*"}
    return {"from": draw(repos)}


@st.composite
def map_lines(draw):
    key = draw(st.sampled_from(["default", "docker.io", "quay.io", "gcr.io", "localhost", "mirror.corp",
                                "docker.io/library", "quay.io/org", "registry.corp", "noswap_wildcards",
                                "[EXACT]nginx:1.25", "[REPLACE]*app*"]))
    value = draw(st.sampled_from(["", "mirror.corp", "mirror.corp/hub", "mirror.corp/x-", "team",
                                  "registry.corp:8443/m", "quay.io/mirror", "org,corp", "gcr.io/x/y:1",
                                  "docker.io", "quay.io", "registry.corp"]))
    return f"{key}::{value}"


rule_sets = st.tuples(
    st.lists(st.lists(entries(), min_size=1, max_size=4), max_size=3),
    st.lists(st.lists(map_lines(), max_size=5).map("\n".join), max_size=2),
    st.lists(st.lists(map_lines(), max_size=6).map("\n".join), max_size=2),
)


def compiled(rule_set, namespace="shop"):
    maps, ns_files, cluster_files = rule_set
    return docs([MapInput(namespace, f"m{i}", f"2024-01-0{i + 1}", 1, items) for i, items in enumerate(maps)],
                 ns_files, cluster_files, namespace)


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(rule_sets, images)
def test_idempotence(rule_set, image):
    ns_doc, cluster_doc = compiled(rule_set)
    once = f(image, ns_doc, cluster_doc)
    assert f(once, ns_doc, cluster_doc) == once


@FAST
@given(rule_sets, images)
def test_namespace_first_whenever_idempotence_allows(rule_set, image):
    """A namespace rule that would rewrite an image loses only to the idempotence guard of
    a cluster target the image lies under (a chain across layers), never otherwise."""
    ns_doc, cluster_doc = compiled(rule_set)
    alone = rules.decide(image, ns_doc, None)
    if not alone.changed:
        return
    decision = rules.decide(image, ns_doc, cluster_doc)
    if decision.new != alone.new:
        assert decision.source == "cluster" and "already under target" in decision.rule
        assert rules.under_targets(parse(image), cluster_doc["targets"]) is not None


@FAST
@given(rule_sets, images)
def test_outputs_are_valid_references(rule_set, image):
    out = f(image, *compiled(rule_set))
    assert is_valid(out), out


@FAST
@given(rule_sets, st.lists(st.lists(entries(), min_size=1, max_size=4), max_size=3), images)
def test_namespace_isolation(rule_set, other_maps, image):
    """ImageMaps of another namespace never change a decision here."""
    ns_doc, cluster_doc = compiled(rule_set, "shop")
    before = f(image, ns_doc, cluster_doc)
    # compile another namespace and make sure nothing of it reaches "shop"
    other = compiler.compile_namespace("other", [MapInput("other", f"o{i}", "", 1, items)
                                                 for i, items in enumerate(other_maps)], [])[0]
    assert f(image, ns_doc, cluster_doc) == before
    if other:
        assert other is not ns_doc


@FAST
@given(rule_sets, st.text(max_size=80))
def test_decide_never_raises(rule_set, text):
    decision = rules.decide(text, *compiled(rule_set))
    assert isinstance(decision, rules.Decision)


@FAST
@given(repos, st.sampled_from(TAGS[1:]), prefixes)
def test_most_specific_wins_property(repo, tag, prefix):
    """Exact beats repository beats any matching prefix, whatever the declaration order."""
    image = repo + tag
    items = [{"from": prefix + "/*", "to": "p.corp/*"}, {"from": repo, "to": "r.corp/repo"},
             {"from": image, "to": "e.corp/exact:1"}]
    for ordering in (items, items[::-1]):
        ns_doc, cluster_doc = docs([MapInput("shop", "m", "", 1, ordering)])
        assert f(image, ns_doc, cluster_doc) == "e.corp/exact:1"
        assert f(repo + ":other", ns_doc, cluster_doc) == "r.corp/repo:other"


@FAST
@given(st.lists(entries(), min_size=1, max_size=4), st.lists(map_lines(), max_size=6).map("\n".join),
       st.sampled_from(["", "/sub/app", "/org/app"]), st.sampled_from(TAGS))
def test_every_entry_a_cluster_target_stops_is_reported(items, cluster_file, path, tag):
    """Whenever an accepted ImageMap entry matches an image but the cluster guard keeps it,
    cross_layer names that entry: no rule is silently dead."""
    from imagemapper.chains import cross_layer

    ns_doc, cluster_doc = docs([MapInput("shop", "m", "", 1, items)], [], [cluster_file])
    notes = cross_layer(items, cluster_doc["targets"])
    for index, item in enumerate(items):
        origin = item["from"]
        image = origin[:-2] + (path or "/app") + tag if origin.endswith("/*") else origin
        if not is_valid(image):
            continue
        alone = rules.decide(image, ns_doc, None)
        if f"spec.map[{index}]" not in alone.rule or "already under" in alone.rule:
            continue  # another entry decided, or the namespace's own guard
        decision = rules.decide(image, ns_doc, cluster_doc)
        if decision.source == "cluster" and "already under target" in decision.rule:
            assert any(n.startswith(f"spec.map[{index}] ") for n in notes), (image, decision.rule, notes)


def test_chains_across_layers_in_namespace_map_files_are_named():
    """Issue 11.2 for map files: a namespace line under a cluster target is named, with its
    ConfigMap, key and line; lines that take no effect anyway are left to their own warnings."""
    from imagemapper.chains import mapfile_lines

    _, cluster_doc = docs([], [], ["default::\ndocker.io::mirror.corp/hub\nquay.io::registry.corp\n"
                                   "index.docker.io/x::docker.io/x\ngcr.io::mirror.corp/x-"])
    text = ("default::ns.corp\n"
            "registry.corp/team::ns.corp/team\n"            # 2: every port: never fires
            "mirror.corp/hub::ns.corp/hub\n"                # 3: fires on other ports only
            "mirror.corp::ns.corp/all\n"                    # 4: all but what lies under the targets
            "docker.io/x::ns.corp/x\n"                      # under an identity: fires
            "[EXACT]mirror.corp/hub/library/a:1::ns.corp/a:1\n"   # 6
            "[REPLACE]mirror.corp/hub/*::ns.corp/r\n"       # 7
            "[REPLACE]*app*::ns.corp/app\n"                 # matches anywhere: not named
            "quay.io::ns.corp/q\n")                          # quay.io itself is no target: fires
    cms = [MapFileInput("shop", "team", "", {"maps": text})]
    notes = {d.line: d for d in mapfile_lines(cms, cluster_doc["targets"])}
    assert sorted(notes) == [2, 3, 4, 6, 7]
    assert all(d.source == "configmap shop/team key maps" and d.severity == "warning"
               and d.reason == "ShadowedByClusterRule" for d in notes.values())
    assert str(notes[2]) == ("configmap shop/team key maps line 2: registry.corp/team::ns.corp/team never fires: "
                             "its images lie under cluster target 'registry.corp', which keeps them "
                             "(a chain across layers; idempotence wins)")
    assert "fires only for images on other ports" in notes[3].message
    assert "does not fire for images under cluster targets 'mirror.corp/hub', 'mirror.corp/x-'" in notes[4].message
    assert "never fires" in notes[6].message and "never fires" in notes[7].message
    # without default, registry keys take no effect at all (InactiveMapRules says so)
    inactive = [MapFileInput("shop", "team", "", {"maps": "registry.corp/team::ns.corp\n"})]
    assert mapfile_lines(inactive, cluster_doc["targets"]) == []
    assert mapfile_lines(cms, None) == []


NS_KEYS = ["default", "mirror.corp", "mirror.corp/hub", "mirror.corp/x-gcr.io", "registry.corp",
           "registry.corp:8443", "registry.corp:8443/m", "quay.io", "quay.io/mirror", "docker.io",
           "docker.io/team", "docker.io/library", "gcr.io/x", "noswap_wildcards",
           "[EXACT]mirror.corp/hub/library/nginx:1",
           "[EXACT]registry.corp:8443/m/app:1", "[EXACT]nginx:1.25", "[REPLACE]mirror.corp/hub/*",
           "[REPLACE]quay.io/mirror/*", "[REPLACE]registry.corp/*", "[REPLACE]*app*", "[REPLACE]registry.corp*"]
ns_lines = st.builds(lambda k, v: f"{k}::{v}", st.sampled_from(NS_KEYS),
                     st.sampled_from(["", "ns.corp", "ns.corp/team", "ns.corp/x-", "mirror"]))


def _probes(line_key: str, cluster_targets: dict) -> list[str]:
    """Images a line matches (from its key) and images at each cluster target."""
    key = line_key.removeprefix("[EXACT]").removeprefix("[REPLACE]")
    out = [key.replace("*", "app"), key.replace("*", "")]
    if "[" not in line_key and line_key not in ("default", "noswap_wildcards"):
        host, _, rest = key.partition("/")
        ported = (host if ":" in host else host + ":8443") + ("/" + rest if rest else "")
        out += [base + tail for base in (key, ported) for tail in ("/app", "/library/nginx:1", "/x-gcr.io/app:1",
                                                                    "/hub/app", "/m/app:1", "")]
    for kind, names in cluster_targets.items():
        for target in names:
            out += [target] if kind == "exact" else [target + "app", target + "/app:1", target + "/sub/app", target]
    return [image for image in dict.fromkeys(out) if is_valid(image)]


@FAST
@given(st.sampled_from(["", "default::\n", "default::ns.corp/d\n"]), st.lists(ns_lines, min_size=1, max_size=5),
       st.lists(map_lines(), max_size=6).map("\n".join), st.lists(images, max_size=4))
def test_every_map_file_line_a_cluster_target_stops_is_reported(head, lines, cluster_file, extra):
    """Whenever a namespace map-file line decides an image alone but the cluster guard keeps
    it, that line is named (source and line); a line named "never fires" fires for no image."""
    from imagemapper.chains import mapfile_lines

    text = head + "\n".join(lines)
    ns_doc, cluster_doc = docs([], [text], [cluster_file])
    notes = {d.line: d.message for d in mapfile_lines([MapFileInput("shop", "ns-0", "", {"maps": text})],
                                                      cluster_doc["targets"])}
    source = "configmap shop/ns-0 key maps line "
    probes = [p for line in lines for p in _probes(line.partition("::")[0], cluster_doc["targets"])] + extra
    for image in dict.fromkeys(probes):
        alone = rules.decide(image, ns_doc, None)
        if alone.source != "namespace-mapfile" or not alone.rule.startswith(source):
            continue  # the namespace's own guard, or no line decided
        number = int(alone.rule[len(source):].partition(":")[0])
        line_key = text.split("\n")[number - 1].partition("::")[0]
        glob = line_key.startswith("[REPLACE]")
        anywhere = line_key in ("default", "noswap_wildcards") or (glob and "/" not in line_key.partition("*")[0])
        stopped = rules.decide(image, ns_doc, cluster_doc)
        if stopped.source == "cluster" and "already under target" in stopped.rule and not anywhere:
            assert number in notes, (image, alone.rule, stopped.rule, notes)
        elif number in notes:
            assert "never fires" not in notes[number], (image, alone.rule, stopped.rule, notes[number])


@FAST
@given(st.lists(entries(), min_size=1, max_size=4), st.lists(map_lines(), max_size=6).map("\n".join))
def test_every_imagemap_entry_a_cluster_target_stops_is_reported(items, cluster_file):
    """The ImageMap counterpart, with images at each cluster target as well (exact and
    string-prefix targets inside a prefix entry used to go unnamed)."""
    from imagemapper.chains import cross_layer

    ns_doc, cluster_doc = docs([MapInput("shop", "m", "", 1, items)], [], [cluster_file])
    notes = cross_layer(items, cluster_doc["targets"])
    probes = [p for item in items for p in _probes(item["from"], cluster_doc["targets"])]
    for image in dict.fromkeys(probes):
        alone = rules.decide(image, ns_doc, None)
        if alone.source != "namespace-imagemap" or not alone.rule.startswith("imagemap m spec.map["):
            continue
        index = alone.rule.removeprefix("imagemap m ").partition("]")[0] + "] "
        named = [n for n in notes if n.startswith(index)]
        stopped = rules.decide(image, ns_doc, cluster_doc)
        if stopped.source == "cluster" and "already under target" in stopped.rule:
            assert named, (image, alone.rule, stopped.rule, notes)
        elif named:
            assert "never fires" not in named[0], (image, alone.rule, stopped.rule, named)


def test_imagemap_entries_inside_which_exact_or_string_prefix_targets_lie_are_named():
    """A prefix entry with an exact or a dash-value cluster target below it does not fire for
    those images, and says so; an entry whose every image a target keeps never fires."""
    from imagemapper.chains import cross_layer

    _, cluster_doc = docs([], [], ["default::mirror.corp/x-\n[EXACT]nginx:1::mirror.corp/n/nginx:1\n"
                                   "quay.io::registry.corp/q"])
    items = [{"from": "mirror.corp/*", "to": "ns.corp/*"}, {"from": "mirror.corp/n/nginx", "to": "ns.corp/nginx"},
             {"from": "registry.corp/q/a", "to": "ns.corp/a"}, {"from": "registry.corp/*", "to": "ns.corp/r/*"}]
    notes = cross_layer(items, cluster_doc["targets"])
    assert [n.partition(" ")[0] for n in notes] == ["spec.map[0]", "spec.map[1]", "spec.map[2]", "spec.map[3]"]
    assert "'mirror.corp/n/nginx:1', 'mirror.corp/x-'" in notes[0] and "does not fire" in notes[1]
    assert "never fires" in notes[2] and "does not fire for images under cluster target 'registry.corp/q'" in notes[3]
