"""Container image references, parsed and normalized like ``docker pull`` does.

The rules are those of the Docker distribution reference grammar
(``ParseNormalizedNamed`` followed by ``Parse``) with go-digest v1.0.0 digest
validation.  The admission hook imports this module in a fresh ``python3 -S``
process for every Pod, so it imports nothing (not even ``re``) and does no work
at import time beyond defining a few constant strings: the scanner is written
with ``str`` methods.

Deliberate divergence: when the first component looks like a registry (it has a
``.``) but is not a valid host name while still being a valid path component
(``my_reg.local/app``), the distribution library returns a reference with an
*empty* domain.  A :class:`Reference` always has a domain, so such strings are
rejected here; they are never rewritten.
"""

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
NAME_MAX = 255  # limit on the repository path (the domain is not counted)
TAG_MAX = 128

_LOWER_DIGITS = "abcdefghijklmnopqrstuvwxyz0123456789"
_ALNUM = _LOWER_DIGITS + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_PATH_CHARS = _LOWER_DIGITS + "._-/"
_DOMAIN_CHARS = _ALNUM + "-."
_TAG_CHARS = _ALNUM + "_.-"
_DIGITS = "0123456789"
_HEX_LOWER = "0123456789abcdef"
_IPV6_CHARS = "0123456789abcdefABCDEF:"
_PATH_SEPARATORS = "._-"
# Adjacent characters that can never occur in a valid path: a separator run
# must be exactly ".", "_", "__" or one or more "-", and "/" only joins
# non-empty components that start and end with a letter or digit.
_PATH_BAD_PAIRS = (
    "..", "._", ".-", "_.", "_-", "-.", "-_", "___",
    "/.", "/_", "/-", "./", "_/", "-/",
)
# go-digest v1.0.0 registers these (sha384 is available in every docker and
# containerd binary because crypto/tls links crypto/sha512): lower-case hex of
# exactly this length.
_DIGEST_HEX_LEN = {"sha256": 64, "sha384": 96, "sha512": 128}
_DIGEST_ALG_SEPARATORS = "-_+."
_ALPHA = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


# What is wrong with a string that is not a reference (InvalidReference.code), after the
# Err* values of distribution/reference and go-digest, so that callers and tests check
# the cause and never the wording.
NOT_A_STRING = "NotAString"
NAME_EMPTY = "NameEmpty"                          # ErrNameEmpty
NAME_NOT_CANONICAL = "NameNotCanonical"          # 64 hex digits: an image ID, not a name
NAME_CONTAINS_UPPERCASE = "NameContainsUppercase"  # ErrNameContainsUppercase
PATH_INVALID = "ReferenceInvalidFormat"          # ErrReferenceInvalidFormat (the path)
TAG_INVALID = "TagInvalidFormat"                 # ErrTagInvalidFormat
DIGEST_INVALID = "DigestInvalidFormat"           # ErrDigestInvalidFormat
DIGEST_UNSUPPORTED = "DigestUnsupported"         # go-digest ErrDigestUnsupported
DIGEST_LENGTH = "DigestInvalidLength"            # go-digest ErrDigestInvalidLength
REGISTRY_INVALID = "RegistryInvalidFormat"       # the domain part
NAME_TOO_LONG = "NameTooLong"                    # ErrNameTooLong


class InvalidReference(ValueError):
    """A string that is not an image reference; ``code`` says why, the message in words."""

    def __init__(self, message: str, code: str = PATH_INVALID):
        super().__init__(message)
        self.code = code


class Reference:
    """A normalized image reference: ``domain/path[:tag][@digest]``.

    Plain data with no validation in ``__init__`` so that callers holding
    already-valid parts (rules building a target) pay nothing.
    """

    __slots__ = ("domain", "path", "tag", "digest")  # noqa: RUF023 (field order is the interface)

    def __init__(self, domain: str, path: str, tag: str | None = None, digest: str | None = None):
        self.domain = domain
        self.path = path
        self.tag = tag
        self.digest = digest

    @property
    def name(self) -> str:
        """Repository name without tag or digest, e.g. ``docker.io/library/nginx``."""
        return self.domain + "/" + self.path

    @property
    def suffix(self) -> str:
        """``:tag`` and ``@digest`` as present, so rewrites can carry them over."""
        s = ""
        if self.tag is not None:
            s = ":" + self.tag
        if self.digest is not None:
            s += "@" + self.digest
        return s

    @property
    def familiar(self) -> str:
        """The short form docker prints (``nginx:1.25`` for docker.io/library/nginx:1.25).

        For display only: like docker's, it does not always parse back to the
        same reference (``docker.io/a.b/c`` prints as ``a.b/c``, a registry).
        """
        if self.domain != DEFAULT_DOMAIN:
            return str(self)
        return short_path(self.domain, self.path) + self.suffix

    def __str__(self) -> str:
        return self.domain + "/" + self.path + self.suffix

    def __repr__(self) -> str:
        return f"Reference({self.domain!r}, {self.path!r}, {self.tag!r}, {self.digest!r})"

    def _key(self) -> tuple[str, str, str | None, str | None]:
        return (self.domain, self.path, self.tag, self.digest)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Reference):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


def _quote(s: str, limit: int = 256) -> str:
    """Quote input for an error message; keep it one bounded line for logs."""
    if len(s) > limit:
        s = s[:limit] + "..."
    if s.isprintable():
        return '"' + s + '"'
    return repr(s)


def _fail(s: str, problem: str, code: str) -> InvalidReference:
    return InvalidReference("invalid reference " + _quote(s) + ": " + problem, code)


def _is_hex64(s: str) -> bool:
    return len(s) == 64 and not s.strip(_HEX_LOWER)


def _only(s: str, chars: str) -> bool:
    """True if every character of non-empty ``s`` is in ``chars`` (strip is one C call)."""
    return bool(s) and not s.strip(chars)


def split_domain(name: str) -> tuple[str, str]:
    """Split off the registry the way docker decides it, without adding ``library/``.

    The first component is a registry only if :func:`is_registry` says so; anything
    else lives on Docker Hub.
    """
    first, slash, rest = name.partition("/")
    if not slash:
        return DEFAULT_DOMAIN, name
    if first == LEGACY_DOMAIN:
        return DEFAULT_DOMAIN, rest
    if is_registry(first):
        return first, rest
    return DEFAULT_DOMAIN, name


def is_registry(first: str) -> bool:
    """docker's test for a name's first component: a registry has ``.`` or ``:``, is
    ``localhost`` or has an upper-case letter (``bitnami`` is a Docker Hub namespace)."""
    return first == "localhost" or "." in first or ":" in first or first.lower() != first


def split_prefix(prefix: str) -> tuple[str, str]:
    """``registry[/path]`` -> (domain, path), split like a name but with no ``library/``
    and the path possibly empty: ``quay.io`` -> ("quay.io", ""), ``bitnami`` ->
    ("docker.io", "bitnami"). Rule prefixes name paths, not images."""
    domain, rest = split_domain(prefix + "/x")
    return domain, rest[:-2]


def short_path(domain: str, path: str) -> str:
    """The path as docker spells it: ``library/nginx`` on Docker Hub is ``nginx``."""
    if domain == DEFAULT_DOMAIN and path.startswith(OFFICIAL_PREFIX) and "/" not in path[len(OFFICIAL_PREFIX):]:
        return path[len(OFFICIAL_PREFIX):]
    return path


def _valid_host(h: str) -> bool:
    if h[:1] == "[":
        return len(h) > 2 and h[-1] == "]" and _only(h[1:-1], _IPV6_CHARS)
    return (
        _only(h, _DOMAIN_CHARS)
        and h[0] not in "-."
        and h[-1] not in "-."
        and ".." not in h
        and ".-" not in h
        and "-." not in h
    )


def valid_domain(s: str) -> bool:
    """``host[:port]``: dotted DNS-like labels or a bracketed IPv6 literal, port digits."""
    return isinstance(s, str) and bool(s) and _domain_ok(s)


def _domain_ok(s: str) -> bool:
    if s[0] == "[":
        end = s.find("]")
        if end < 0:
            return False
        host, port = s[: end + 1], s[end + 1 :]
        if port:
            if port[0] != ":":
                return False
            port = port[1:]
            if not port:
                return False
    else:
        host, colon, port = s.partition(":")
        if colon and not port:
            return False
    return _valid_host(host) and (not port or _only(port, _DIGITS))


def _path_ok(s: str) -> bool:
    if not s or s.strip(_PATH_CHARS) or s[0] in "/._-" or s[-1] in "/._-" or "//" in s:
        return False
    if "." not in s and "_" not in s:
        # the common shape (``team/some-app``): only "-" next to "/" can be wrong
        return "/-" not in s and "-/" not in s
    for pair in _PATH_BAD_PAIRS:
        if pair in s:
            return False
    return True


def valid_path(s: str) -> bool:
    """One or more lower-case components (``a``, ``a.b``, ``a_b``, ``a__b``, ``a--b``) joined by ``/``."""
    return isinstance(s, str) and _path_ok(s)


def _tag_ok(s: str) -> bool:
    return 0 < len(s) <= TAG_MAX and s[0] not in ".-" and not s.strip(_TAG_CHARS)


def valid_tag(s: str) -> bool:
    """``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``."""
    return isinstance(s, str) and _tag_ok(s)


def _valid_algorithm(a: str) -> bool:
    """The reference grammar's algorithm: letter-led words joined by ``-_+.``."""
    if not _only(a, _ALNUM + _DIGEST_ALG_SEPARATORS):
        return False
    prev = "."
    for c in a:
        if prev in _DIGEST_ALG_SEPARATORS and c not in _ALPHA:
            return False
        prev = c
    return prev not in _DIGEST_ALG_SEPARATORS


def _digest_error(s: str) -> tuple[str, str] | None:
    """(problem, code) if ``s`` is not a digest that ``Parse`` accepts, else None."""
    alg, colon, enc = s.partition(":")
    hexlen = _DIGEST_HEX_LEN.get(alg)
    if hexlen is not None and len(enc) == hexlen and not enc.strip(_HEX_LOWER):
        return None
    if not colon or len(enc) < 32 or not _only(enc, _HEX_LOWER + "ABCDEF") or not _valid_algorithm(alg):
        return "invalid digest format", DIGEST_INVALID
    if hexlen is None:
        return "unsupported digest algorithm " + _quote(alg, 64), DIGEST_UNSUPPORTED
    if len(enc) != hexlen:
        return f"invalid {alg} digest length {len(enc)} (want {hexlen})", DIGEST_LENGTH
    return "digest hex must be lower case", DIGEST_INVALID


def valid_digest(s: str) -> bool:
    """``algorithm:hex`` that go-digest accepts: sha256/sha384/sha512, exact-length lower-case hex."""
    return isinstance(s, str) and _digest_error(s) is None


def name_prefixes(name: str) -> list[str]:
    """``a/b/c`` -> ``["a/b/c", "a/b", "a"]``: the name cut at each path boundary.

    Rule lookups and overlap checks walk these, longest first.
    """
    out = [name]
    cut = name.rfind("/")
    while cut > 0:
        name = name[:cut]
        out.append(name)
        cut = name.rfind("/")
    return out


def split_port(domain: str) -> tuple[str, str]:
    """``host:port`` -> (host, port); an IPv6 literal's colons are not a port."""
    if domain.endswith("]") or ":" not in domain:
        return domain, ""
    host, _, port = domain.rpartition(":")
    return host, port


# Parsed references by input string: a cluster's rules repeat the same strings (a mirror
# policy copied into many namespaces), and a sync compiles 100k of them. Bounded: the
# whole table is dropped when full. A Reference is never changed after it is made, so
# callers can share one.
_PARSED: dict[str, Reference] = {}
_PARSED_MAX = 2048
# First path components already judged: True for a registry that the fast path may take
# as it is (not Docker Hub's names, a valid host[:port]), False for anything else.
_REGISTRIES: dict[str, bool] = {}
_REGISTRIES_MAX = 1024


def parse(s: str) -> Reference:
    """Parse and normalize ``s``; raise :class:`InvalidReference` if docker would refuse it.

    The same answer as :func:`parse_full`, the validator, which decides every string the
    fast path and the table of earlier answers do not.
    """
    if type(s) is not str:
        return parse_full(s)
    ref = _PARSED.get(s)
    if ref is None:
        ref = _fast(s) or parse_full(s)
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[s] = ref
    return ref


def _fast(s: str) -> Reference | None:
    """``registry/path[:tag]`` with a plain path (no ``.``/``_``, no digest), or None.

    Returns only what :func:`parse_full` returns for ``s``, and None for every other
    string, which then takes the full validator (tests/test_reference.py compares them).
    """
    first, slash, rest = s.partition("/")
    if not slash:
        return None
    known = _REGISTRIES.get(first)
    if known is None:
        known = (first != DEFAULT_DOMAIN and first != LEGACY_DOMAIN and is_registry(first)
                 and _domain_ok(first))
        if len(_REGISTRIES) >= _REGISTRIES_MAX:
            _REGISTRIES.clear()
        _REGISTRIES[first] = known
    if not known or "@" in rest:
        return None
    path, colon, tag = rest.partition(":")
    if (not path or len(path) > NAME_MAX or path.strip(_PATH_CHARS) or path[0] in "/-"
            or path[-1] in "/-" or "." in path or "_" in path or "//" in path
            or "/-" in path or "-/" in path or (colon and not _tag_ok(tag))):
        return None
    return Reference(first, path, tag if colon else None, None)


def parse_full(s: str) -> Reference:
    """The reference grammar, every rule checked in turn; errors say which one failed."""
    if not isinstance(s, str):
        raise InvalidReference("invalid reference: expected a string, got " + type(s).__name__, NOT_A_STRING)
    if not s:
        raise _fail(s, "repository name must have at least one component", NAME_EMPTY)
    if _is_hex64(s):
        raise _fail(s, "cannot specify 64-byte hexadecimal strings", NAME_NOT_CANONICAL)
    domain, rest = split_domain(s)
    if domain == DEFAULT_DOMAIN and "/" not in rest:
        rest = OFFICIAL_PREFIX + rest

    rest, at, digest = rest.partition("@")
    path, colon, tag = rest.partition(":")
    if not _path_ok(path):
        if path.lower() != path:
            raise _fail(s, "repository name must be lowercase", NAME_CONTAINS_UPPERCASE)
        raise _fail(s, "invalid repository path " + _quote(path, 64), PATH_INVALID)
    if colon and not _tag_ok(tag):
        raise _fail(s, "invalid tag " + _quote(tag, 64), TAG_INVALID)
    if at:
        found = _digest_error(digest)
        if found is not None:
            raise _fail(s, *found)
    if domain != DEFAULT_DOMAIN and not _domain_ok(domain):
        raise _fail(s, "invalid registry " + _quote(domain, 64), REGISTRY_INVALID)
    if len(path) > NAME_MAX:
        raise _fail(s, f"repository name must not be more than {NAME_MAX} characters", NAME_TOO_LONG)
    return Reference(domain, path, tag if colon else None, digest if at else None)


def is_valid(s: str) -> bool:
    """True if :func:`parse` accepts ``s``."""
    try:
        parse(s)
    except InvalidReference:
        return False
    return True
