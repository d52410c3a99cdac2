"""imageswap-compatible map files: text -> lines + diagnostics -> compiled layer.

The grammar and the MAPS-mode swap rules are those of imageswap-webhook v1.5.3, so an
imageswap user can move a map file over unchanged. Every upstream MAPS-mode test case
gives the same result here (``tests/data/imageswap/cases.json``).

The layer's lookup, which runs in the admission hook, is :mod:`imagemapper.maplookup`, so
that the per-Pod process loads none of the grammar. This module imports no ``re`` either
(:mod:`fnmatch` only to report shadowed ``[REPLACE]`` rules). A compiled layer and its
targets are plain dicts and lists: they go into the (``marshal``) snapshot file as they are.

Deliberate divergences from imageswap, each also listed in ``docs/mapfiles.md``:

* a comment starts at the *first* ``#`` of a line (imageswap cut at the last one, so
  ``a::b # c # d`` gave the value ``b#c``);
* all whitespace is removed, tabs included (imageswap kept tabs, so an indented
  ``\\tdefault::x`` was a key nobody could match);
* registry detection is the reference grammar's: ``localhost:5000/x`` has the registry
  ``localhost:5000`` and ``index.docker.io`` is ``docker.io``;
* keys may be a registry followed by a path (``registry.gitlab.com/myorg/clients``) and
  the longest matching key wins (imageswap issues #105 and #117); ``<registry>/library``
  is the special case imageswap had, and it no longer crashes without a ``<registry>`` key;
* ``[EXACT]`` keys are references compared after normalization (``[EXACT]hello-world``
  also matches ``docker.io/library/hello-world``); imageswap compared raw strings;
* ``[REPLACE]`` globs are tried against the raw image and its normalized form; an empty
  ``[REPLACE]`` value leaves the image alone (imageswap produced the bare last component);
* only the registry (or key path) part is replaced, never by regex or substring
  substitution inside paths or tags; ``nginx`` and ``docker.io/library/nginx`` map alike
  (``library/`` of an official image is dropped for a bare-registry key and ``default``);
* a ``default::x-`` dash value no longer repeats the registry (``x-gcr.io/foo/bar:1``, not
  ``x-gcr.io/gcr.io/foo/bar:1``), and the registry host is lower-cased when it is pasted
  after a dash so the result stays a valid reference;
* an empty pattern in ``noswap_wildcards`` (trailing comma) is ignored;
* a value that is not a registry, ``registry/path`` or Docker Hub namespace is an error
  line, and a rule whose result would not be a valid reference leaves the image alone.
"""

from __future__ import annotations

from imagemapper import kube
from imagemapper.maplookup import DEFAULT, bare_registry
from imagemapper.reference import (
    DEFAULT_DOMAIN,
    LEGACY_DOMAIN,
    InvalidReference,
    is_registry,
    is_valid,
    split_domain,
    split_port,
    split_prefix,
    valid_domain,
    valid_path,
)
from imagemapper.reference import parse as parse_reference
from imagemapper.rules import TARGET_KINDS

TYPE_CHECKING = False
if TYPE_CHECKING:

    from imagemapper.shapes import CompiledTargets, MapFileLayer

NOSWAP = "noswap_wildcards"
EXACT_KEYWORD = "[EXACT]"  # key prefixes; the "exact" and "replace" kinds are what they make
REPLACE_KEYWORD = "[REPLACE]"

KEY_ERROR = "key must be default, noswap_wildcards, [EXACT]..., [REPLACE]... or start with a registry"
PORT_ERROR = "port in key or value requires '::'"
SYNTAX_ERROR = "expected key::value"
DEPRECATED = "deprecated separator ':'; write key::value"
NO_DEFAULT = (
    "registry keys are inactive without a default key; "
    "add `default::` to keep images unchanged by default"
)
NO_DEFAULT_NOSWAP = (
    "noswap_wildcards is inactive without a default key; "
    "add `default::` to keep images unchanged by default"
)
# Event reasons, one per cause, so that `kubectl get events --field-selector reason=...`
# finds one kind of problem.
INVALID_LINES = "InvalidMapLines"
DEPRECATED_SYNTAX = "DeprecatedMapSyntax"
INACTIVE_RULES = "InactiveMapRules"
DUPLICATE_KEY = "DuplicateMapKey"
SHADOWED_RULE = "ShadowedMapRule"
# The cause of an error line (Diagnostic.code; every warning's code is its reason).
BAD_SYNTAX = "MapLineSyntax"                          # not key::value
PORT_NEEDS_SEPARATOR = "MapLinePortNeedsDoubleColon"  # key:port:value with one-colon separators
BAD_KEY = "MapLineInvalidKey"
BAD_VALUE = "MapLineInvalidValue"



class Diagnostic:
    """One problem found in a map file, located by source and 1-based line."""

    __slots__ = ("code", "line", "message", "reason", "severity", "source")

    def __init__(self, source: str, line: int, severity: str, message: str, reason: str = "",
                 code: str = ""):
        self.source = source
        self.line = line
        self.severity = severity  # "error" (line skipped) or "warning"
        self.message = message
        # The Event reason it is reported under, and the precise cause (for tests and tools).
        self.reason = reason or (INVALID_LINES if severity == "error" else DEPRECATED_SYNTAX)
        self.code = code or self.reason

    def __str__(self) -> str:
        return f"{self.source} line {self.line}: {self.message}"

    def __repr__(self) -> str:
        return f"Diagnostic({self.source!r}, {self.line}, {self.severity!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Diagnostic):
            return NotImplemented
        return (self.source, self.line, self.severity, self.message) == (
            other.source, other.line, other.severity, other.message)


class MapLine:
    """One accepted ``key::value`` line.

    ``kind`` is ``default``, ``noswap``, ``exact``, ``replace`` or ``registry``; ``key`` is
    the form two lines are compared by (normalized reference, glob, normalized
    ``domain[/path]``, or the keyword), so "last duplicate wins" sees ``index.docker.io``
    and ``docker.io`` as one key.
    """

    __slots__ = ("key", "kind", "line", "source", "text", "value")

    def __init__(self, source: str, line: int, kind: str, key: str, value: str, text: str):
        self.source = source
        self.line = line
        self.kind = kind
        self.key = key
        self.value = value
        self.text = text  # the line as read, whitespace removed, separator "::"

    @property
    def rule(self) -> str:
        """What the admission log and the CLI show for a decision made by this line."""
        return f"{self.source} line {self.line}: {self.text}"

    def __repr__(self) -> str:
        return f"MapLine({self.kind!r}, {self.key!r}, {self.value!r}, {self.source!r} line {self.line})"


class MapFileInput:
    """One labeled ConfigMap: every data key holds one map file."""

    __slots__ = ("data", "label", "name", "namespace", "uid")

    def __init__(self, namespace: str, name: str, uid: str, data: dict, label: str = ""):
        self.namespace = namespace
        self.name = name
        self.uid = uid or ""
        self.data = {k: v for k, v in (data or {}).items() if isinstance(v, str)}
        self.label = label  # overrides the source text (the CLI names files, not ConfigMaps)

    @classmethod
    def from_object(cls, obj: object) -> MapFileInput:
        return cls(kube.text(obj, "metadata", "namespace"), kube.text(obj, "metadata", "name"),
                   kube.text(obj, "metadata", "uid"), kube.mapping(obj, "data"))

    def files(self) -> list[tuple[str, str]]:
        """(source, text) per key in key order; the source names ConfigMap and key."""
        return [(self.label or f"{self.prefix()}{key}", self.data[key]) for key in sorted(self.data)]

    def prefix(self) -> str:
        return self.label or f"configmap {self.namespace}/{self.name} key "


# ---------------------------------------------------------------------------- parsing


def parse_lines(text: str, source: str) -> tuple[list[MapLine], list[Diagnostic]]:
    """Read one map file; bad lines become error diagnostics and are skipped, never raised."""
    entries: list[MapLine] = []
    diags: list[Diagnostic] = []
    text = text.removeprefix("\ufeff")  # a byte-order mark is not part of the first key
    for number, raw in enumerate(text.split("\n"), 1):
        line = "".join(raw.partition("#")[0].split())
        if not line:
            continue
        parts = line.split("::")
        deprecated = False
        if len(parts) != 2:
            if line.count(":") != 1:
                many = line.count(":") > 1 and "::" not in line
                message = PORT_ERROR if many else SYNTAX_ERROR
                if "://" in line:
                    message += "; " + _scheme_hint(line)
                diags.append(Diagnostic(source, number, "error", message, INVALID_LINES,
                                        PORT_NEEDS_SEPARATOR if many else BAD_SYNTAX))
                continue
            parts = line.split(":")
            deprecated = True
        key, value = parts
        kind, norm, problem = _classify(key, value)
        if problem is not None:
            diags.append(Diagnostic(source, number, "error", problem[0], INVALID_LINES, problem[1]))
            continue
        if deprecated:
            diags.append(Diagnostic(source, number, "warning", DEPRECATED))
        entries.append(MapLine(source, number, kind, norm, value, key + "::" + value))
    return entries, diags


def _classify(key: str, value: str) -> tuple[str, str, tuple[str, str] | None]:
    """Return (kind, normalized key, (problem, code) or None) for one line."""
    if key == DEFAULT:
        return DEFAULT, key, _bad_value(_prefix_value_error(value))
    if key == NOSWAP:
        return "noswap", key, None
    if key.startswith(EXACT_KEYWORD):
        return _classify_exact(key[len(EXACT_KEYWORD):], value)
    if key.startswith(REPLACE_KEYWORD):
        glob = key[len(REPLACE_KEYWORD):]
        if not glob:
            return "replace", glob, ("[REPLACE] needs a glob pattern after the keyword", BAD_KEY)
        return "replace", glob, _bad_value(_replace_value_error(value))
    norm = _registry_key(key)
    if norm is None:
        return "registry", key, (_with_hint(KEY_ERROR, key), BAD_KEY)
    return "registry", norm, _bad_value(_prefix_value_error(value))


def _bad_value(problem: str | None) -> tuple[str, str] | None:
    return None if problem is None else (problem, BAD_VALUE)


def _classify_exact(ref: str, value: str) -> tuple[str, str, tuple[str, str] | None]:
    try:
        norm = str(parse_reference(ref))
    except InvalidReference as exc:
        return "exact", ref, ("[EXACT] key: " + str(exc), BAD_KEY)
    if value and not is_valid(value):
        return "exact", norm, ("[EXACT] value must be empty or a full image reference", BAD_VALUE)
    return "exact", norm, None


def _registry_key(key: str) -> str | None:
    """Normalize ``domain[/path]`` (``index.docker.io`` -> ``docker.io``), or None if not one."""
    first, _, path = key.rstrip("/").partition("/")
    if not is_registry(first) or not valid_domain(first):
        return None
    if path and not valid_path(path):
        return None
    if first == LEGACY_DOMAIN:
        first = DEFAULT_DOMAIN
    return first + "/" + path if path else first


def _prefix_value_error(value: str) -> str | None:
    """Values of registry keys and default: empty, a dash value, or a prefix for images."""
    if not value:
        return None
    if value.endswith("-"):
        if is_valid(value + "docker.io/x"):
            return None
        return "a value ending in '-' must give a valid image name when a registry is appended"
    if is_valid(value + "/x"):
        return None
    return _with_hint("value must be empty, a registry, registry/path or Docker Hub namespace", value)


def _replace_value_error(value: str) -> str | None:
    base = value.rstrip("/")
    if not value or (base and is_valid(base + "/x")):
        return None
    return _with_hint("[REPLACE] value must be empty, a registry, registry/path or Docker Hub "
                      "namespace", value)


def _with_hint(message: str, text: str) -> str:
    """Say why ``text`` is not a registry or path: a URL scheme, upper case, ..."""
    from imagemapper.hints import why_not_a_name

    hint = why_not_a_name(text)
    return f"{message}; {hint}" if hint else message


def _scheme_hint(text: str) -> str:
    from imagemapper.hints import why_not_a_name

    return why_not_a_name(text) or ""


# ---------------------------------------------------------------------------- compiling


def compile_files(files: list[tuple[str, str]]) -> tuple[MapFileLayer | None, CompiledTargets, list[Diagnostic]]:
    """Read ``[(source, text)]`` as one file and build the lookup layer and its targets.

    The caller passes the files in (ConfigMap name, key) order, so imageswap's "last
    duplicate key wins" extends across ConfigMaps; line numbers stay per source.
    """
    if not files:  # most namespaces have no map file: what the lines below give for none
        return None, {kind: [] for kind in TARGET_KINDS}, []
    chosen, diags = chosen_lines(files)
    if not chosen:
        return None, _targets({}), diags
    layer = _layer(chosen)
    _warn_inactive(layer, chosen, diags)
    _warn_shadowed(chosen, diags)
    return layer, _targets(layer), diags


def chosen_lines(files: list[tuple[str, str]]) -> tuple[list[MapLine], list[Diagnostic]]:
    """The lines that take effect, in first-position order (a repeated key: the last line
    wins), and the problems found reading them."""
    diags: list[Diagnostic] = []
    chosen: dict[tuple[str, str], MapLine] = {}  # insertion order = first position
    for source, text in files:
        entries, found = parse_lines(text, source)
        diags.extend(found)
        for entry in entries:
            slot = (entry.kind, entry.key)
            old = chosen.get(slot)
            if old is not None:
                diags.append(Diagnostic(entry.source, entry.line, "warning",
                                        f"key repeats {old.source} line {old.line}; this line "
                                        "wins and the earlier one is ignored", DUPLICATE_KEY))
            chosen[slot] = entry
    return list(chosen.values()), diags


def _layer(entries: list[MapLine]) -> MapFileLayer:
    layer: MapFileLayer = {}
    for e in entries:
        if e.kind == DEFAULT:
            layer[DEFAULT] = [e.value, e.rule]
        elif e.kind == "noswap":
            layer["noswap"] = [[p for p in e.value.split(",") if p], e.rule]
        elif e.kind == "exact":
            layer.setdefault("exact", {})[e.key] = [e.value, e.rule]
        elif e.kind == "replace":
            layer.setdefault("replace", []).append([e.key, e.value, e.rule])
        else:
            layer.setdefault("keys", {})[e.key] = [e.value, e.rule]
    return layer


def _warn_inactive(layer: MapFileLayer, entries: list[MapLine], diags: list[Diagnostic]) -> None:
    """imageswap ignores registry keys and noswap_wildcards without default; say so."""
    if DEFAULT in layer:
        return
    for kind, message in (("registry", NO_DEFAULT), ("noswap", NO_DEFAULT_NOSWAP)):
        first = next((e for e in entries if e.kind == kind), None)
        if first is not None:
            diags.append(Diagnostic(first.source, first.line, "warning", message, INACTIVE_RULES))
            return


def _covers(glob: str, pattern: str) -> bool:
    """True when every string ``pattern`` matches is matched by ``glob`` too.

    Sound, not complete: ``glob`` may use only ``*``, and ``pattern`` no ``?`` or ``[``;
    then ``pattern`` read literally matching ``glob`` proves the inclusion.
    """
    from fnmatch import fnmatchcase

    if "?" in glob or "[" in glob or "?" in pattern or "[" in pattern:
        return False
    return fnmatchcase(pattern, glob)


def _warn_shadowed(entries: list[MapLine], diags: list[Diagnostic]) -> None:
    """[REPLACE] globs are tried in file order before registry keys; say which never win."""
    globs = [e for e in entries if e.kind == "replace"]
    if not globs:
        return
    for position, entry in enumerate(globs):
        earlier = next((g for g in globs[:position] if _covers(g.key, entry.key)), None)
        if earlier is not None:
            diags.append(Diagnostic(entry.source, entry.line, "warning",
                                    f"never used: {earlier.rule} is tried before it and "
                                    "matches every image this glob matches", SHADOWED_RULE))
    for entry in entries:
        if entry.kind != "registry":
            continue
        glob = next((g for g in globs if _covers(g.key, entry.key + "/*")
                     and _covers(g.key, entry.key + ":*")), None)
        if glob is not None:
            diags.append(Diagnostic(entry.source, entry.line, "warning",
                                    f"never used: {glob.rule} is tried first and matches every "
                                    "image under this key", SHADOWED_RULE))


def _targets(layer: MapFileLayer) -> CompiledTargets:
    """Every place a rule of ``layer`` can send an image (for the idempotence guard)."""
    out: dict[str, set[str]] = {kind: set() for kind in TARGET_KINDS}
    for value, _ in layer.get("exact", {}).values():
        if value:
            out["exact"].add(str(parse_reference(value)))
    for _, value, _ in layer.get("replace", []):
        if value:
            out["prefix"].add(_prefix_of(value.rstrip("/")))
    if DEFAULT in layer:
        _value_targets(layer[DEFAULT][0], None, out)
        for key, (value, _) in layer.get("keys", {}).items():
            if not _identity(key, value):
                _value_targets(value, key, out)
    return {kind: sorted(names) for kind, names in out.items()}


def _value_targets(value: str, key: str | None, out: dict[str, set[str]]) -> None:
    """Targets of a registry key (``key``) or of default (``key`` None)."""
    if not value:
        return
    if value.endswith("-"):
        if "/" in value:
            domain, rest = split_domain(value)
            out["strprefix"].add(domain + "/" + rest)
        else:  # value+host is a registry, unless the host makes it a Hub namespace
            out["strprefix"].update((value, DEFAULT_DOMAIN + "/" + value))
        return
    prefix = _prefix_of(value)
    out["prefix"].add(prefix)
    if key is None:
        return
    if not split_port(key.partition("/")[0])[1] and bare_registry(value):
        out["strprefix"].add(value + ":")  # port fallback keeps the image's port
    if "/" in key and "/" in value:
        name = parse_reference(value).name  # an image named exactly like the key
        if name != prefix:  # docker.io/x is docker.io/library/x as a repository
            out["repo"].add(name)


def _identity(key: str, value: str) -> bool:
    """A line that sends images where they are (``index.docker.io::docker.io``): its
    target guards nothing, since such a rule cannot move an image."""
    try:
        return bool(value) and not value.endswith("-") and _prefix_of(key) == _prefix_of(value)
    except ValueError:
        return False


def _prefix_of(value: str) -> str:
    """Normalized name prefix of everything ``value + "/" + path`` can spell."""
    domain, rest = split_prefix(value)
    return domain + "/" + rest if rest else domain
