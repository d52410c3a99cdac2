"""Image reference parsing: docker's grammar, normalization, and the no-`re` import budget.

Expected values were written by hand from the distribution/reference rules and
cross-checked against the Go library (v0.6.0 with go-digest v1.0.0).
"""

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "lib"
if str(LIB) not in sys.path:
    sys.path.insert(0, str(LIB))

from imagemapper.reference import (
    DIGEST_INVALID,
    DIGEST_LENGTH,
    DIGEST_UNSUPPORTED,
    NAME_CONTAINS_UPPERCASE,
    NAME_EMPTY,
    NAME_NOT_CANONICAL,
    NAME_TOO_LONG,
    NOT_A_STRING,
    PATH_INVALID,
    REGISTRY_INVALID,
    TAG_INVALID,
    InvalidReference,
    Reference,
    is_valid,
    parse,
    split_domain,
    valid_digest,
    valid_domain,
    valid_path,
    valid_tag,
)

H64 = "0123456789abcdef" * 4
H96 = "fedcba9876543210" * 6
H128 = "00112233445566778899aabbccddeeff" * 4
D256 = "sha256:" + H64
D384 = "sha384:" + H96
D512 = "sha512:" + H128
HUB = "docker.io"

# (input, domain, path, tag, digest)
VALID = [
    # Docker Hub and the library/ prefix
    ("nginx", HUB, "library/nginx", None, None),
    ("nginx:1.25", HUB, "library/nginx", "1.25", None),
    ("library/nginx", HUB, "library/nginx", None, None),
    ("docker.io/nginx", HUB, "library/nginx", None, None),
    ("docker.io/library/nginx:latest", HUB, "library/nginx", "latest", None),
    ("index.docker.io/nginx", HUB, "library/nginx", None, None),
    ("index.docker.io/bitnami/redis:7", HUB, "bitnami/redis", "7", None),
    ("bitnami/redis", HUB, "bitnami/redis", None, None),
    ("a/b/c/d", HUB, "a/b/c/d", None, None),
    ("docker.io", HUB, "library/docker.io", None, None),
    # registry detection
    ("quay.io/jetstack/cert-manager-controller:v1.14.4", "quay.io", "jetstack/cert-manager-controller",
     "v1.14.4", None),
    ("localhost/app", "localhost", "app", None, None),
    ("localhost:5000/app:dev", "localhost:5000", "app", "dev", None),
    ("localhost", HUB, "library/localhost", None, None),
    ("localhost:5000", HUB, "library/localhost", "5000", None),
    ("myhost:5000", HUB, "library/myhost", "5000", None),
    ("myhost:5000/app", "myhost:5000", "app", None, None),
    ("Foo.io/x", "Foo.io", "x", None, None),
    ("FOO/x", "FOO", "x", None, None),
    ("Foo/bar", "Foo", "bar", None, None),
    ("LOCALHOST/x", "LOCALHOST", "x", None, None),
    ("1.2.3.4/x", "1.2.3.4", "x", None, None),
    ("reg-1.corp.example:443/team/app", "reg-1.corp.example:443", "team/app", None, None),
    ("a.io:0/x", "a.io:0", "x", None, None),
    ("a.io:00080/x", "a.io:00080", "x", None, None),
    ("x.y/z", "x.y", "z", None, None),
    # IPv6 literals
    ("[::1]:5000/foo:tag", "[::1]:5000", "foo", "tag", None),
    ("[fe80::1]/x", "[fe80::1]", "x", None, None),
    ("[::1]/x", "[::1]", "x", None, None),
    ("[2001:DB8::1]:443/a/b", "[2001:DB8::1]:443", "a/b", None, None),
    ("[ABC]/x", "[ABC]", "x", None, None),  # upper case makes it a registry; the brackets then fit
    # path separators
    ("a__b", HUB, "library/a__b", None, None),
    ("a--b", HUB, "library/a--b", None, None),
    ("a---b", HUB, "library/a---b", None, None),
    ("a.b", HUB, "library/a.b", None, None),
    ("a_b", HUB, "library/a_b", None, None),
    ("quay.io/a__b/c--d/e.f/g_h/0", "quay.io", "a__b/c--d/e.f/g_h/0", None, None),
    ("a.b.c/d", "a.b.c", "d", None, None),
    # tags
    ("nginx:V_1.2-rc", HUB, "library/nginx", "V_1.2-rc", None),
    ("nginx:_", HUB, "library/nginx", "_", None),
    ("nginx:" + "T" * 128, HUB, "library/nginx", "T" * 128, None),
    ("Ab.io/c:D", "Ab.io", "c", "D", None),
    # digests
    ("nginx@" + D256, HUB, "library/nginx", None, D256),
    ("nginx:1.25@" + D256, HUB, "library/nginx", "1.25", D256),
    ("quay.io/a/b:t@" + D512, "quay.io", "a/b", "t", D512),
    ("x@" + D384, HUB, "library/x", None, D384),
    ("localhost:5000/team/app@" + D256, "localhost:5000", "team/app", None, D256),
    ("nginx:" + H64, HUB, "library/nginx", H64, None),  # hex as a tag is fine
    (H64 + ":tag", HUB, "library/" + H64, "tag", None),
    (H64[:63], HUB, "library/" + H64[:63], None, None),
    # length limit: the repository path after normalization, the domain not counted
    ("x" * 247, HUB, "library/" + "x" * 247, None, None),
    ("a/" + "x" * 253, HUB, "a/" + "x" * 253, None, None),
    ("quay.io/" + "x" * 255, "quay.io", "x" * 255, None, None),
]

# (input, the cause: InvalidReference.code)
INVALID = [
    ("", NAME_EMPTY),
    (" ", PATH_INVALID),
    (" nginx", PATH_INVALID),
    ("nginx ", PATH_INVALID),
    ("ng inx", PATH_INVALID),
    ("nginx\n", PATH_INVALID),
    ("ngïnx", PATH_INVALID),
    ("é/x", PATH_INVALID),
    ("a\x00b", PATH_INVALID),
    (":latest", PATH_INVALID),
    ("@" + D256, PATH_INVALID),
    ("nginx:", TAG_INVALID),
    ("nginx@", DIGEST_INVALID),
    ("nginx:@" + D256, TAG_INVALID),
    ("/", PATH_INVALID),
    ("/x", PATH_INVALID),
    ("x/", PATH_INVALID),
    ("x//y", PATH_INVALID),
    ("quay.io/", PATH_INVALID),
    ("quay.io//x", PATH_INVALID),
    ("quay.io/x/", PATH_INVALID),
    # upper case in the path
    ("foo/Bar", NAME_CONTAINS_UPPERCASE),
    ("Nginx", NAME_CONTAINS_UPPERCASE),
    ("quay.io/Team/app", NAME_CONTAINS_UPPERCASE),
    ("A" * 64, NAME_CONTAINS_UPPERCASE),
    # bad separators
    ("a._b", PATH_INVALID),
    ("a_.b", PATH_INVALID),
    ("a..b", PATH_INVALID),
    ("a___b", PATH_INVALID),
    ("a-_b", PATH_INVALID),
    ("a-.b", PATH_INVALID),
    ("-a", PATH_INVALID),
    ("a-", PATH_INVALID),
    ("_a", PATH_INVALID),
    ("a.", PATH_INVALID),
    ("x/.a", PATH_INVALID),
    ("x/a-/b", PATH_INVALID),
    # domains
    ("-a.io/x", REGISTRY_INVALID),
    ("a-.io/x", REGISTRY_INVALID),
    ("a..io/x", REGISTRY_INVALID),
    (".a.io/x", REGISTRY_INVALID),
    ("a.io:/x", REGISTRY_INVALID),
    ("a.io:-1/x", REGISTRY_INVALID),
    ("a.io:80a/x", REGISTRY_INVALID),
    ("a:b:1/x", REGISTRY_INVALID),
    ("[::1]:/x", REGISTRY_INVALID),
    ("[fe80::1%eth0]/x", REGISTRY_INVALID),
    ("[]/x", PATH_INVALID),
    ("[abc]/x", PATH_INVALID),  # no ".", ":" or upper case: a Hub path, and "[" is not a path character
    ("[::1/x", REGISTRY_INVALID),
    ("x/[::1]", PATH_INVALID),
    ("a_b.c/d", REGISTRY_INVALID),  # see the module docstring: upstream would return an empty domain
    ("É/x", REGISTRY_INVALID),
    # tags
    ("nginx:" + "T" * 129, TAG_INVALID),
    ("nginx:.x", TAG_INVALID),
    ("nginx:-x", TAG_INVALID),
    ("nginx:a:b", TAG_INVALID),
    ("nginx:a/b", REGISTRY_INVALID),
    ("nginx:é", TAG_INVALID),
    # digests
    ("nginx@sha256:" + H64[:63], DIGEST_LENGTH),
    ("nginx@sha256:" + H64 + "0", DIGEST_LENGTH),
    ("nginx@sha256:" + H96, DIGEST_LENGTH),
    ("nginx@sha512:" + H64, DIGEST_LENGTH),
    ("nginx@sha256:" + H64.upper(), DIGEST_INVALID),
    ("nginx:t@SHA256:" + H64, DIGEST_UNSUPPORTED),
    ("nginx@md5:" + H64[:32], DIGEST_UNSUPPORTED),
    ("nginx@sha256+b64:" + H64, DIGEST_UNSUPPORTED),
    ("nginx@sha256:" + H64[:31], DIGEST_INVALID),
    ("nginx@sha256:" + H64[:60] + "ghij", DIGEST_INVALID),
    ("nginx@:" + H64, DIGEST_INVALID),
    ("nginx@sha256" + H64, DIGEST_INVALID),
    ("nginx@1sha:" + H64, DIGEST_INVALID),
    ("nginx@sha256@" + D256, DIGEST_INVALID),
    ("nginx@" + D256 + "@" + D256, DIGEST_INVALID),
    ("nginx@" + D256 + ":tag", DIGEST_INVALID),
    # the bare 64-hex string
    (H64, NAME_NOT_CANONICAL),
    # length limit
    ("x" * 248, NAME_TOO_LONG),
    ("a/" + "x" * 254, NAME_TOO_LONG),
    ("quay.io/" + "x" * 256, NAME_TOO_LONG),
    ("quay.io/" + "/".join(["abcdefg"] * 32 + ["x"]), NAME_TOO_LONG),
]


@pytest.mark.parametrize(("text", "domain", "path", "tag", "digest"), VALID)
def test_valid(text, domain, path, tag, digest):
    ref = parse(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert is_valid(text)


@pytest.mark.parametrize(("text", "code"), INVALID)
def test_invalid(text, code):
    with pytest.raises(InvalidReference) as err:
        parse(text)
    assert err.value.code == code
    assert str(err.value).startswith("invalid reference ")
    assert not is_valid(text)


def test_tables_do_not_overlap():
    assert not {v[0] for v in VALID} & {i[0] for i in INVALID}


@pytest.mark.parametrize("text", [v[0] for v in VALID])
def test_normalized_form_reparses_to_itself(text):
    ref = parse(text)
    assert parse(str(ref)) == ref
    assert parse(ref.familiar) == ref
    assert str(parse(str(ref))) == str(ref)


@pytest.mark.parametrize(
    ("text", "normalized", "familiar"),
    [
        ("nginx", "docker.io/library/nginx", "nginx"),
        ("index.docker.io/library/nginx:1", "docker.io/library/nginx:1", "nginx:1"),
        ("bitnami/redis@" + D256, "docker.io/bitnami/redis@" + D256, "bitnami/redis@" + D256),
        ("library/a/b", "docker.io/library/a/b", "library/a/b"),
        ("quay.io/library/x:t", "quay.io/library/x:t", "quay.io/library/x:t"),
        ("localhost:5000/x:t@" + D256, "localhost:5000/x:t@" + D256, "localhost:5000/x:t@" + D256),
    ],
)
def test_normalized_and_familiar_strings(text, normalized, familiar):
    ref = parse(text)
    assert str(ref) == normalized
    assert ref.familiar == familiar


def test_reference_object():
    ref = Reference("quay.io", "a/b", "v1", D256)
    assert ref.name == "quay.io/a/b"
    assert ref.suffix == ":v1@" + D256
    assert Reference("quay.io", "a/b").suffix == ""
    assert Reference("quay.io", "a/b", digest=D256).suffix == "@" + D256
    assert ref == parse("quay.io/a/b:v1@" + D256)
    assert ref != Reference("quay.io", "a/b", "v1")
    assert ref != "quay.io/a/b:v1@" + D256
    assert len({ref, parse("quay.io/a/b:v1@" + D256), Reference("quay.io", "a/b")}) == 2
    assert eval(repr(ref), {"Reference": Reference}) == ref
    assert not hasattr(ref, "__dict__")
    assert isinstance(InvalidReference("x"), ValueError)


@pytest.mark.parametrize("value", [None, 1, b"nginx", ["nginx"], object()])
def test_non_string_input(value):
    with pytest.raises(InvalidReference) as err:
        parse(value)
    assert err.value.code == NOT_A_STRING
    assert not is_valid(value)
    assert not valid_domain(value) and not valid_path(value)
    assert not valid_tag(value) and not valid_digest(value)


def test_error_message_quotes_input():
    with pytest.raises(InvalidReference, match=r'^invalid reference "foo/Bar": repository name must be lowercase$'):
        parse("foo/Bar")
    with pytest.raises(InvalidReference) as err:
        parse("bad\nname" + "x" * 1000)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400


def test_familiar_is_for_display_only():
    # docker's FamiliarString drops docker.io/ even when the first path component then looks
    # like a registry; the short form is still a valid reference, just a different one
    ref = parse("docker.io/a.b/c")
    assert ref.familiar == "a.b/c"
    assert parse(ref.familiar) == Reference("a.b", "c")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nginx", (HUB, "nginx")),
        ("nginx:1", (HUB, "nginx:1")),
        ("library/nginx", (HUB, "library/nginx")),
        ("quay.io/a/b", ("quay.io", "a/b")),
        ("index.docker.io/nginx", (HUB, "nginx")),
        ("docker.io/nginx", (HUB, "nginx")),
        ("localhost/x", ("localhost", "x")),
        ("localhost:5000/x", ("localhost:5000", "x")),
        ("Foo/x", ("Foo", "x")),
        ("foo/x", (HUB, "foo/x")),
        ("[::1]:5000/x", ("[::1]:5000", "x")),
    ],
)
def test_split_domain(name, expected):
    assert split_domain(name) == expected


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("docker.io", True), ("a", True), ("A-b.C9", True), ("localhost:5000", True), ("a.io:0", True),
        ("[::1]", True), ("[fe80::1]:443", True), ("[ABCD:ef::]", True), ("1.2.3.4:5", True),
        ("", False), ("-a", False), ("a-", False), ("a..b", False), (".a", False), ("a.", False),
        ("a_b", False), ("a:", False), ("a:b", False), ("a:1:2", False), ("[]", False), ("[::1]:", False),
        ("[::1]x", False), ("[g::1]", False), ("a/b", False), ("a b", False), ("é.io", False),
    ],
)
def test_valid_domain(text, ok):
    assert valid_domain(text) is ok


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("a", True), ("a/b", True), ("a__b", True), ("a--b", True), ("a.b_c-d", True), ("0/9", True),
        ("", False), ("A", False), ("a/", False), ("/a", False), ("a//b", False), ("a._b", False),
        ("a___b", False), ("a-", False), ("a:b", False), ("a b", False), ("a/-b", False), ("ä", False),
    ],
)
def test_valid_path(text, ok):
    assert valid_path(text) is ok


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("latest", True), ("_", True), ("A", True), ("1.0-rc_2", True), ("x" * 128, True),
        ("", False), ("x" * 129, False), (".a", False), ("-a", False), ("a:b", False), ("a@b", False),
        ("a b", False), ("é", False),
    ],
)
def test_valid_tag(text, ok):
    assert valid_tag(text) is ok


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        (D256, True), (D384, True), (D512, True),
        ("sha256:" + H64.upper(), False), ("sha256:" + H64[:63], False), ("sha512:" + H64, False),
        ("md5:" + H64[:32], False), ("SHA256:" + H64, False), ("sha256", False), (H64, False),
        ("sha256:", False), (":" + H64, False), ("sha256:" + H64 + " ", False),
    ],
)
def test_valid_digest(text, ok):
    assert valid_digest(text) is ok


def test_import_is_cheap():
    """The admission hook runs `python3 -S`: importing must pull in nothing, not even `re` or `enum`."""
    code = (
        "import sys; sys.path.insert(0, 'lib'); before = set(sys.modules); "
        "import imagemapper.reference; "
        "print('re' in sys.modules, 'enum' in sys.modules, sorted(set(sys.modules) - before))"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split(None, 2)
    assert out[:2] == ["False", "False"]
    assert out[2].strip() == "['imagemapper', 'imagemapper.reference']"


# ---- properties -------------------------------------------------------------

_lower = "abcdefghijklmnopqrstuvwxyz0123456789"
_alnum_run = st.text(_lower, min_size=1, max_size=4)
_component = st.builds(
    lambda pairs, last: "".join(a + s for a, s in pairs) + last,
    st.lists(st.tuples(_alnum_run, st.sampled_from([".", "_", "__", "-", "--"])), max_size=3),
    _alnum_run,
)
_label = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,5}[a-zA-Z0-9])?", fullmatch=True)
_domain = st.one_of(
    st.lists(_label, min_size=2, max_size=3).map(".".join),
    st.just("localhost"),
    st.from_regex(r"\[[a-fA-F0-9:]{1,8}\]", fullmatch=True),
    st.sampled_from(["index.docker.io", "docker.io", "FOO", "Reg"]),
)
_port = st.one_of(st.just(""), st.integers(0, 99999).map(lambda p: f":{p}"))
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_digest = st.sampled_from([D256, D384, D512])
_candidate = st.builds(
    lambda dom, port, comps, tag, dig: (dom + port + "/" if dom else "") + "/".join(comps) + tag + dig,
    st.one_of(st.just(""), _domain),
    _port,
    st.lists(_component, min_size=1, max_size=3),
    st.one_of(st.just(""), _tag.map(lambda t: ":" + t)),
    st.one_of(st.just(""), _digest.map(lambda d: "@" + d)),
)
_noise = st.text(alphabet="aZ09._-/:@[]é ", max_size=24)
_fast = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _check_round_trip(text):
    try:
        ref = parse(text)
    except InvalidReference:
        return False
    again = parse(str(ref))
    assert again == ref
    assert str(again) == str(ref)
    assert is_valid(str(ref))
    assert valid_domain(ref.domain) and valid_path(ref.path)
    assert ref.tag is None or valid_tag(ref.tag)
    assert ref.digest is None or valid_digest(ref.digest)
    return True


@_fast
@given(st.one_of(st.text(max_size=40), _noise))
def test_parse_only_raises_invalid_reference(text):
    _check_round_trip(text)


@_fast
@given(_candidate)
def test_generated_references_round_trip(text):
    # a few generated strings are invalid (a first component like "a_b.c"); the next test makes
    # sure most are valid, so this property does test something
    _check_round_trip(text)


def test_generator_mostly_valid():
    seen = []

    @settings(max_examples=200, deadline=None, database=None)
    @given(_candidate)
    def collect(text):
        seen.append(_check_round_trip(text))

    collect()
    assert sum(seen) > len(seen) * 0.7


# ---- the fast path and the table of earlier answers against the full validator ----------

def _outcome(fn, text):
    """What ``fn`` says about ``text``: the reference's parts, or the error's code and words."""
    try:
        ref = fn(text)
    except InvalidReference as exc:
        return ("error", exc.code, str(exc))
    return ("ok", ref.domain, ref.path, ref.tag, ref.digest)


def _agrees(text):
    from imagemapper import reference

    want = _outcome(reference.parse_full, text)
    fast = reference._fast(text) if isinstance(text, str) else None
    assert fast is None or ("ok", fast.domain, fast.path, fast.tag, fast.digest) == want, text
    assert _outcome(parse, text) == want, text
    assert _outcome(parse, text) == want, text  # the second answer comes from the table
    return fast is not None


# registry-qualified strings near the fast path's edges: upper case, separators at the
# ends of components, empty components, long paths, odd tags, digests, Hub's own names
_near_path = st.text(alphabet="ab0-_./A", min_size=0, max_size=12)
_near = st.builds(
    lambda dom, port, path, tag, dig: dom + port + "/" + path + tag + dig,
    st.one_of(_domain, st.sampled_from(["a_b.c", "-a.io", "a..io", "quay.io", "Quay.IO", "x"])),
    _port,
    st.one_of(_near_path, st.lists(_component, min_size=1, max_size=4).map("/".join),
              st.integers(250, 260).map(lambda n: "x" * n)),
    st.one_of(st.just(""), st.text(alphabet="aZ9_.-:/é", max_size=8).map(lambda t: ":" + t),
              st.integers(127, 130).map(lambda n: ":" + "t" * n)),
    st.one_of(st.just(""), st.just("@" + D256), st.just("@sha256:abc")),
)


@pytest.mark.parametrize("text", [v[0] for v in VALID] + [i[0] for i in INVALID])
def test_parse_agrees_with_the_full_validator_on_the_tables(text):
    _agrees(text)


@_fast
@given(st.one_of(_candidate, _near, _noise, st.text(max_size=40)))
def test_parse_agrees_with_the_full_validator(text):
    _agrees(text)


def test_fast_path_takes_the_common_shapes():
    """The property above tests something: these are decided by the fast path."""
    for text in ("quay.io/org/app", "mirror.corp/team/app:v1", "localhost:5000/a-b/c", "[::1]:5000/x:y"):
        assert _agrees(text), text
    for text in ("nginx", "bitnami/redis", "docker.io/x", "index.docker.io/x", "quay.io/a.b",
                 "quay.io/a@" + D256, "a_b.c/d"):
        assert not _agrees(text), text


def test_tables_of_earlier_answers_are_bounded():
    from imagemapper import reference

    for i in range(reference._PARSED_MAX + 10):
        parse(f"reg{i % (reference._REGISTRIES_MAX + 5)}.io/app{i}:v{i}")
    assert 0 < len(reference._PARSED) <= reference._PARSED_MAX
    assert 0 < len(reference._REGISTRIES) <= reference._REGISTRIES_MAX
    with pytest.raises(InvalidReference):
        parse("quay.io/Team/app")
    assert "quay.io/Team/app" not in reference._PARSED, "refusals are not kept"
