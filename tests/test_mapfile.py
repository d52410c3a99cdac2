"""Map-file grammar, compiled layers and lookup: imageswap v1.5.3 MAPS mode plus our divergences."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from imagemapper import mapfile, maplookup
from imagemapper.reference import parse as parse_ref

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "imageswap"
CASES = json.loads((DATA / "cases.json").read_text())["cases"]


def layer_of(*texts: str) -> tuple[dict | None, dict, list]:
    """Compile texts as files src0, src1, ... in that order."""
    return mapfile.compile_files([(f"src{i}", t) for i, t in enumerate(texts)])


def swap(layer: dict | None, image: str) -> str:
    """The image the Pod ends up with when this layer is the only one."""
    if layer is None:
        return image
    hit = maplookup.lookup(layer, parse_ref(image), image)
    if hit is None or hit[0] is None:
        return image
    return hit[0]


def msgs(diags: list, severity: str) -> list[tuple[str, int, str]]:
    return [(d.source, d.line, d.message) for d in diags if d.severity == severity]


# ---------------------------------------------------------------- upstream imageswap cases

RUN = [c for c in CASES if "excluded" not in c]


def test_case_table_is_complete():
    assert [c["id"] for c in CASES] == list(range(1, 68))
    excluded = {c["id"] for c in CASES if "excluded" in c}
    assert excluded == {62, 63, 64, 65, 66}
    assert all("LEGACY" in c["excluded"] for c in CASES if "excluded" in c)
    assert len(RUN) == 62


@pytest.mark.parametrize("case", RUN, ids=[f'{c["id"]}-{c["test"].split(".")[-1]}' for c in RUN])
def test_upstream_case(case):
    text = (DATA / case["map_file"]).read_text()
    layer, targets, _ = mapfile.compile_files([("file " + case["map_file"], text)])
    want = case["expected"] if case["expected"] is not None else case["image"]
    got = swap(layer, case["image"])
    assert got == want
    if got != case["image"]:
        parse_ref(got)
        assert under_targets(got, targets)


def test_upstream_map_file_diagnostics():
    """Fixture map_file.conf: three bad lines, deprecated ':' everywhere else it is used."""
    _, _, diags = mapfile.compile_files([("f", (DATA / "map_file.conf").read_text())])
    assert msgs(diags, "error") == [
        ("f", 14, mapfile.PORT_ERROR),
        ("f", 15, mapfile.PORT_ERROR),
        ("f", 16, mapfile.SYNTAX_ERROR),
    ]
    assert [line for _, line, _ in msgs(diags, "warning")] == [3, 4, 5, 6, 8, 9, 10, 17]


def test_no_default_fixture_warns_once():
    _, targets, diags = mapfile.compile_files([("f", (DATA / "map_file_no_default.conf").read_text())])
    assert ("f", 3, mapfile.NO_DEFAULT) in msgs(diags, "warning")
    assert targets == {"exact": [], "repo": [], "prefix": [], "strprefix": []}


# ---------------------------------------------------------------- grammar and diagnostics


def test_diagnostic_str_and_fields():
    _, diags = mapfile.parse_lines("default::x\n\n# c\nbogus::y\n", "configmap shop/mirrors key maps")
    (d,) = diags
    assert (d.source, d.line, d.severity) == ("configmap shop/mirrors key maps", 4, "error")
    assert str(d) == "configmap shop/mirrors key maps line 4: " + mapfile.KEY_ERROR


@pytest.mark.parametrize("line, code", [
    ("a.io:b.io:5000/x", mapfile.PORT_NEEDS_SEPARATOR),
    ("a.io:5000:b.io", mapfile.PORT_NEEDS_SEPARATOR),
    ("a.io;b.io", mapfile.BAD_SYNTAX),
    ("a.io::b.io::c.io", mapfile.BAD_SYNTAX),
    ("justakey", mapfile.BAD_SYNTAX),
    ("nginx::mirror.corp", mapfile.BAD_KEY),
    ("myorg/app::mirror.corp", mapfile.BAD_KEY),
    ("::mirror.corp", mapfile.BAD_KEY),
    ("[exact]nginx::mirror.corp/nginx", mapfile.BAD_KEY),
    ("quay.io/MyOrg::mirror.corp", mapfile.BAD_KEY),
    ("bad_host.io::mirror.corp", mapfile.BAD_KEY),
    ("quay.io::mirror.corp/", mapfile.BAD_VALUE),
    ("quay.io::Mirror/Hub", mapfile.BAD_VALUE),
    ("default::nginx:1.0", mapfile.BAD_VALUE),
    ("a.io:::b.io", mapfile.BAD_VALUE),
    ("default::m.io/a_-", mapfile.BAD_VALUE),
    ("[REPLACE]::m.io", mapfile.BAD_KEY),
    ("[REPLACE]x*::m.io//bad", mapfile.BAD_VALUE),
    ("[REPLACE]x*::/", mapfile.BAD_VALUE),
    ("[EXACT]m.io/a::m.io/b:c:d", mapfile.BAD_VALUE),
])
def test_error_lines_are_skipped_with_their_cause(line, code):
    entries, diags = mapfile.parse_lines("default::ok.io\n" + line + "\n", "s")
    assert [e.key for e in entries] == ["default"]
    [diag] = [d for d in diags if d.severity == "error"]
    assert (diag.source, diag.line, diag.code, diag.reason) == ("s", 2, code, mapfile.INVALID_LINES)


@pytest.mark.parametrize("line,why", [
    ("quay.io::https://mirror.corp", "URL scheme 'https://'; image names have none, write 'mirror.corp'"),
    ("https://quay.io::mirror.corp", "URL scheme 'https://'"),
    ("quay.io::mirror.corp/Hub", "'Hub' has upper-case letters; repository paths must be lower case"),
    ("quay.io/MyOrg::mirror.corp", "'MyOrg' has upper-case letters"),
])
def test_error_lines_say_why(line, why):
    _, diags = mapfile.parse_lines(line, "s")
    assert len(diags) == 1 and why in diags[0].message, diags


def test_each_warning_has_the_reason_of_its_cause():
    text = "quay.io:a.io\nquay.io::b.io\n[REPLACE]*::c.io\n[REPLACE]gcr.io/*::d.io\nbad line\n"
    _, _, diags = mapfile.compile_files([("s", text)])
    assert sorted((d.line, d.reason) for d in diags) == [
        (1, mapfile.DEPRECATED_SYNTAX), (2, mapfile.DUPLICATE_KEY), (2, mapfile.INACTIVE_RULES),
        (2, mapfile.SHADOWED_RULE), (4, mapfile.SHADOWED_RULE), (5, mapfile.INVALID_LINES)]
    assert sorted((d.line, d.code) for d in diags) == [  # a warning's cause is its reason
        (1, mapfile.DEPRECATED_SYNTAX), (2, mapfile.DUPLICATE_KEY), (2, mapfile.INACTIVE_RULES),
        (2, mapfile.SHADOWED_RULE), (4, mapfile.SHADOWED_RULE), (5, mapfile.BAD_SYNTAX)]


def test_shadowed_rules_are_reported_soundly():
    text = "default::\n[REPLACE]quay.io/*::a.io\n[REPLACE]quay.io/org/*::b.io\n" \
           "[REPLACE]gcr.io/?x::c.io\n[REPLACE]gcr.io/*::d.io\nquay.io::e.io\n[REPLACE]*::f.io\n"
    _, _, diags = mapfile.compile_files([("s", text)])
    shadowed = sorted(d.line for d in diags if d.reason == mapfile.SHADOWED_RULE)
    # line 3 lies inside line 2; line 5 is not inside line 4 (a `?` glob); key quay.io keeps
    # its port-fallback images (quay.io:5000/x), which no glob before [REPLACE]* covers;
    # line 7 comes after everything else, but shadows the key: globs are tried first.
    assert shadowed == [3, 6]


def test_exact_key_error_names_the_reference_problem():
    entries, diags = mapfile.parse_lines("[EXACT]Nginx::m.io/nginx", "s")
    assert entries == []
    assert diags[0].message.startswith("[EXACT] key: invalid reference")
    assert diags[0].code == mapfile.BAD_KEY


def test_deprecated_separator_is_a_warning_and_still_works():
    layer, _, diags = layer_of("default:m.io")
    assert msgs(diags, "warning") == [("src0", 1, mapfile.DEPRECATED)]
    assert swap(layer, "gcr.io/a/b:1") == "m.io/a/b:1"


def test_comment_starts_at_first_hash_and_all_whitespace_goes():
    text = "\ufeff\tdefault :: m.io # first # second\r\n  # indented comment\n\n quay.io\t::\tq.io#x\n#k::v\n"
    entries, diags = mapfile.parse_lines(text, "s")
    assert diags == []
    assert [(e.line, e.key, e.value) for e in entries] == [(1, "default", "m.io"), (4, "quay.io", "q.io")]
    assert entries[0].rule == "s line 1: default::m.io"


def test_several_files_read_as_one_last_duplicate_wins():
    a = "default::m.io\nquay.io::first.io\n[REPLACE]x-*::r1.io\n[REPLACE]x-y*::r2.io\n"
    b = "# second configmap\nquay.io::second.io\n[REPLACE]x-*::r3.io\n"
    layer, targets, diags = layer_of(a, b)
    assert swap(layer, "quay.io/a/b") == "second.io/a/b"
    assert maplookup.lookup(layer, parse_ref("quay.io/a"), "quay.io/a")[1] == "src1 line 2: quay.io::second.io"
    # [REPLACE] keeps the first position and takes the last value: x-* still beats x-y*
    assert swap(layer, "x-yz") == "r3.io/x-yz"
    assert [r[0] for r in layer["replace"]] == ["x-*", "x-y*"]
    assert msgs(diags, "warning") == [
        ("src1", 2, "key repeats src0 line 2; this line wins and the earlier one is ignored"),
        ("src1", 3, "key repeats src0 line 3; this line wins and the earlier one is ignored"),
        ("src0", 4, ("never used: src1 line 3: [REPLACE]x-*::r3.io is tried before it and "
                    "matches every image this glob matches")),
    ]
    assert "first.io" not in targets["prefix"]


def test_duplicates_compare_normalized_keys():
    layer, _, _ = layer_of("default::\nindex.docker.io::a.io\ndocker.io::b.io\n[EXACT]nginx::c.io/x\n"
                           "[EXACT]docker.io/library/nginx::d.io/y\n")
    assert swap(layer, "nginx") == "d.io/y"
    assert swap(layer, "bitnami/redis") == "b.io/bitnami/redis"


def test_empty_input_has_no_layer():
    assert layer_of("# nothing\n\n") == (None, {"exact": [], "repo": [], "prefix": [], "strprefix": []}, [])


def test_noswap_wildcards_ignores_empty_patterns():
    layer, _, _ = layer_of("default::m.io\nnoswap_wildcards::keep.io,\n")
    assert layer["noswap"][0] == ["keep.io"]
    assert swap(layer, "gcr.io/a") == "m.io/a"
    assert swap(layer, "keep.io/a") == "keep.io/a"


def test_noswap_matches_raw_or_normalized_and_registry_keys_beat_it():
    layer, _, _ = layer_of("default::m.io\nnoswap_wildcards::docker.io/library/,twr.io\nx.twr.io::y.io\n")
    assert swap(layer, "nginx") == "nginx"             # only the normalized form contains it
    assert swap(layer, "a.twr.io/b") == "a.twr.io/b"
    assert swap(layer, "x.twr.io/b") == "y.io/b"       # registry key first, as upstream


# ---------------------------------------------------------------- keys and results


def test_path_keys_longest_match():
    layer, targets, _ = layer_of(
        "default::\n"
        "registry.gitlab.com::mirror.io/gitlab\n"
        "registry.gitlab.com/myorg/clients::10.0.0.1:2000/myorg/apps\n"
        "registry.gitlab.com/myorg::mirror.io/myorg\n"
    )
    assert swap(layer, "registry.gitlab.com/myorg/clients/web:1") == "10.0.0.1:2000/myorg/apps/web:1"
    assert swap(layer, "registry.gitlab.com/myorg/clientsx/web:1") == "mirror.io/myorg/clientsx/web:1"
    assert swap(layer, "registry.gitlab.com/other/web:1") == "mirror.io/gitlab/other/web:1"
    # an image named exactly like a path key takes the value as its repository
    assert swap(layer, "registry.gitlab.com/myorg/clients:2") == "10.0.0.1:2000/myorg/apps:2"
    assert "10.0.0.1:2000/myorg/apps" in targets["prefix"]


def test_path_key_with_empty_value_excludes_one_image():
    layer, _, _ = layer_of("default::m.io\nquay.io/example/test-image::\n")
    hit = maplookup.lookup(layer, parse_ref("quay.io/example/test-image:1"), "quay.io/example/test-image:1")
    assert hit == (None, "src0 line 2: quay.io/example/test-image::")
    assert swap(layer, "quay.io/example/other:1") == "m.io/example/other:1"


def test_path_key_naming_an_image_with_a_registry_value_leaves_it():
    layer, _, _ = layer_of("default::\nquay.io/a/b::m.io\n")
    new, rule = maplookup.lookup(layer, parse_ref("quay.io/a/b:1"), "quay.io/a/b:1")
    assert new is None and rule.endswith(maplookup.NOT_A_REPO)
    assert swap(layer, "quay.io/a/b/c:1") == "m.io/c:1"


def test_docker_io_library_key():
    layer, _, _ = layer_of("default::\ndocker.io/library::h.io/library\n")
    assert swap(layer, "nginx:1") == "h.io/library/nginx:1"
    assert swap(layer, "docker.io/library/nginx:1") == "h.io/library/nginx:1"
    assert swap(layer, "bitnami/nginx") == "bitnami/nginx"      # no crash without docker.io key
    layer, _, _ = layer_of("default::\ndocker.io/library::h.io/library\ndocker.io::h.io\n")
    assert swap(layer, "bitnami/nginx") == "h.io/bitnami/nginx"
    assert swap(layer, "nginx") == "h.io/library/nginx"


def test_both_spellings_of_an_official_image_map_alike():
    layer, _, _ = layer_of("default::m.io\n")
    for image in ("nginx:1", "library/nginx:1", "docker.io/library/nginx:1", "index.docker.io/library/nginx:1"):
        assert swap(layer, image) == "m.io/nginx:1"
    assert swap(layer, "docker.io/library/a/b") == "m.io/library/a/b"


def test_port_fallback():
    layer, targets, _ = layer_of(
        "default::d.io\nreg.io::m.io\nreg.io:5000::p.io\nhub.io::h.io/path\nlocalhost::l.io\n")
    assert swap(layer, "reg.io:5000/a:1") == "p.io/a:1"            # exact port key first
    assert swap(layer, "reg.io:443/a:1") == "m.io:443/a:1"         # fallback keeps the port
    assert swap(layer, "hub.io:443/a:1") == "h.io/path/a:1"        # unless the value has a path
    assert swap(layer, "localhost:5000/a") == "l.io:5000/a"
    assert swap(layer, "other.io:443/a:1") == "d.io/a:1"           # default drops it
    assert "m.io:" in targets["strprefix"]


def test_dash_values():
    layer, targets, _ = layer_of("default::x-\ngcr.io::my.io/mirror-\nquay.io/org::q-\n")
    assert swap(layer, "ghcr.io/foo/bar:1") == "x-ghcr.io/foo/bar:1"
    assert swap(layer, "gcr.io:443/foo/bar:1") == "my.io/mirror-gcr.io/foo/bar:1"
    assert swap(layer, "quay.io/org/app") == "q-quay.io/org/app"
    assert swap(layer, "nginx") == "x-docker.io/nginx"
    assert swap(layer, "Upper.io/foo") == "x-upper.io/foo"
    assert targets["strprefix"] == ["docker.io/q-", "docker.io/x-", "my.io/mirror-", "q-", "x-"]


def test_dash_value_with_ipv6_host_leaves_the_image():
    layer, _, _ = layer_of("default::my.io/m-\n")
    new, rule = maplookup.lookup(layer, parse_ref("[::1]:5000/a"), "[::1]:5000/a")
    assert new is None and "is not a valid reference" in rule


def test_no_default_makes_registry_keys_inactive():
    layer, targets, diags = layer_of("quay.io::q.io\n[EXACT]a::b.io/a\n[REPLACE]c*::r.io\n")
    assert msgs(diags, "warning") == [("src0", 1, mapfile.NO_DEFAULT)]
    assert maplookup.lookup(layer, parse_ref("quay.io/a"), "quay.io/a") is None
    assert swap(layer, "a") == "b.io/a"
    assert swap(layer, "cx:1") == "r.io/cx:1"
    assert targets == {"exact": ["b.io/a"], "repo": [], "prefix": ["r.io"], "strprefix": []}


def test_exact_is_normalized_and_beats_replace():
    layer, targets, _ = layer_of("default::\n[REPLACE]*hello*::r.io\n[EXACT]hello-world::e.io/hw:1\n"
                                 "[EXACT]keep:1::\n")
    assert swap(layer, "docker.io/library/hello-world") == "e.io/hw:1"
    assert swap(layer, "hello-world:2") == "r.io/hello-world:2"
    assert maplookup.lookup(layer, parse_ref("keep:1"), "keep:1") == (None, "src0 line 4: [EXACT]keep:1::")
    assert targets["exact"] == ["e.io/hw:1"]


def test_replace_matches_normalized_form_and_empty_value_leaves():
    layer, _, _ = layer_of("[REPLACE]docker.io/library/ng*::r.io/\n[REPLACE]auto*::\n")
    assert swap(layer, "nginx@sha256:" + "a" * 64) == "r.io/nginx@sha256:" + "a" * 64
    assert maplookup.lookup(layer, parse_ref("quay.io/auto"), "quay.io/auto") is None
    assert maplookup.lookup(layer, parse_ref("auto"), "auto") == (None, "src0 line 2: [REPLACE]auto*::")


def test_identity_result_is_still_a_match():
    layer, _, _ = layer_of("default::\nquay.io::quay.io\n")
    assert maplookup.lookup(layer, parse_ref("quay.io/a:1"), "quay.io/a:1") == (
        "quay.io/a:1", "src0 line 2: quay.io::quay.io")


def test_layer_and_targets_are_json():
    text = (DATA / "map_file.conf").read_text() + "\n[EXACT]a::b.io/c:1\n[REPLACE]x*::r.io/\n"
    layer, targets, _ = mapfile.compile_files([("f", text)])
    again = json.loads(json.dumps(layer))
    assert again == layer and json.loads(json.dumps(targets)) == targets
    for image in ("alpine", "quay.io/solo/gloo:v1.0", "registry.internal.twr.io:443/a", "a", "xy"):
        assert maplookup.lookup(again, parse_ref(image), image) == maplookup.lookup(layer, parse_ref(image), image)


# ---------------------------------------------------------------- hot path


def _imports_after_lookup(layer: dict) -> list[str]:
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT / 'lib')!r})\n"
        "from imagemapper import maplookup, reference\n"
        f"layer = {layer!r}\n"
        "for image in ('nginx', 'quay.io/a/b:1', 'reg.io:443/x', 'zzz'):\n"
        "    maplookup.lookup(layer, reference.parse(image), image)\n"
        "print(' '.join(m for m in ('re', 'fnmatch', 'json', 'dataclasses', 'typing') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-S", "-c", code], check=True, capture_output=True, text=True)
    return out.stdout.split()


def test_lookup_without_replace_does_not_import_re():
    layer, _, _ = layer_of((DATA / "map_file.conf").read_text() + "[EXACT]zzz::a.io/b\nquay.io/a::\n")
    assert _imports_after_lookup(layer) == []


def test_lookup_with_replace_imports_fnmatch():
    """Control for the test above: the probe does see ``re`` when it is imported."""
    layer, _, _ = layer_of("default::m.io\n[REPLACE]q*::r.io\n")
    assert _imports_after_lookup(layer) == ["re", "fnmatch"]


# ---------------------------------------------------------------- properties


def under_targets(image: str, targets: dict) -> bool:
    ref = parse_ref(image)
    name = ref.name
    return (
        str(ref) in targets["exact"]
        or name in targets["repo"]
        or any(name == p or name.startswith(p + "/") for p in targets["prefix"])
        or any(name.startswith(p) for p in targets["strprefix"])
    )


DOMAINS = ["docker.io", "index.docker.io", "gcr.io", "gcr.io:443", "quay.io", "localhost",
           "localhost:5000", "reg.io:5000", "Upper.io", "10.0.0.1:2000", "[::1]:5000", "a-b.c.d"]
COMPONENTS = ["library", "nginx", "org", "a", "b-c", "x.y", "p__q"]
TAGS = ["1", "latest", "v1.2-rc_3", "A" * 128]
DIGEST = "@sha256:" + "0123456789abcdef" * 4

domains = st.sampled_from(DOMAINS)
paths = st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=4).map("/".join)
suffixes = st.tuples(st.sampled_from([""] + [":" + t for t in TAGS]), st.sampled_from(["", DIGEST])).map("".join)


@st.composite
def images(draw) -> str:
    """Valid references in both spellings: with a registry, or Docker Hub short forms."""
    path = draw(paths)
    if draw(st.booleans()):
        name = draw(domains) + "/" + path
    else:
        name = path
    image = name + draw(suffixes)
    parse_ref(image)
    return image


values = st.one_of(
    st.just(""),
    st.sampled_from(["m.io", "m.io:5000", "localhost", "Mirror.io", "hub", "m.io/a/b", "m.io/x-",
                     "x-", "hub/x-", "X-", "10.0.0.1:2000/apps", "docker.io", "index.docker.io/o",
                     "docker.io/one", "reg.io/" + "p" * 250, "m.io/", "bad_", "a::b", "Bad/x"]),
)
keys = st.one_of(
    st.sampled_from(["default", "default", "noswap_wildcards"]),
    st.builds(lambda d, p: d + p, domains, st.sampled_from(["", "", "/org", "/library", "/org/a", "/nginx"])),
    st.builds(lambda d, p: d + ("/" + p if p else ""), domains, st.one_of(st.just(""), paths)),
    images().map(lambda i: "[EXACT]" + i),
    st.sampled_from(["[REPLACE]*", "[REPLACE]*nginx*", "[REPLACE]gcr.io/*", "[REPLACE]", "[exact]x",
                     "nginx", "bad key", "#"]),
)
exact_values = st.one_of(values, images())
rule_lines = st.builds(lambda k, s, v: k + s + v, keys, st.sampled_from(["::", ":", " :: ", "\t::"]),
                       st.one_of(values, exact_values, st.just("twr.io,org,")))
junk_lines = st.text(alphabet=" \t#:/.,-abc[]EXACT", max_size=20)
first_lines = st.sampled_from(["", "default::", "default::m.io", "default::x-", "default::hub/x-", "default::hub"])
mapfiles = st.builds(lambda first, rest: "\n".join([first, *rest]),
                     first_lines, st.lists(st.one_of(rule_lines, rule_lines, rule_lines, junk_lines), max_size=10))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mapfiles, min_size=1, max_size=3), st.lists(images(), min_size=1, max_size=5))
@example(["default::\nquay.io/org::docker.io/one\n"], ["quay.io/org:1"])   # repo target
@example(["default::hub/x-\n"], ["[::1]:5000/a"])                          # invalid after a dash
@example(["default::reg.io/" + "p" * 250], ["gcr.io/org/nginx:1"])           # too long
@example(["default::\nreg.io::m.io\n"], ["reg.io:443/a"])                  # port kept
def test_lookup_results_are_valid_and_under_targets(files, imgs):
    layer, targets, diags = layer_of(*files)
    assert all(d.severity in ("error", "warning") and d.line >= 1 for d in diags)
    assert json.loads(json.dumps([layer, targets])) == [layer, targets]
    for image in imgs:
        hit = None if layer is None else maplookup.lookup(layer, parse_ref(image), image)
        if hit is None:
            continue
        new, rule = hit
        assert isinstance(rule, str) and " line " in rule
        if new is not None:
            parse_ref(new)
            # an identity line (docker.io/library::library) has no target: it moves nothing
            same = str(parse_ref(new)) == str(parse_ref(image))
            assert same or under_targets(new, targets), (new, targets)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.lists(images(), min_size=1, max_size=3))
def test_parse_never_raises_on_arbitrary_text(text, imgs):
    layer, _, diags = mapfile.compile_files([("s", text)])
    assert all(1 <= d.line <= text.count("\n") + 1 for d in diags)
    for image in imgs:
        if layer is not None:
            maplookup.lookup(layer, parse_ref(image), image)
