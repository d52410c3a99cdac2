"""Chains across layers: namespace rules that a cluster target keeps from firing.

A namespace rule whose ``from`` lies under a cluster rule's target cannot fire for the
images under that target: the idempotence guard keeps them, because the cluster rule
produces them and a second rewrite would break ``f(f(x)) == f(x)`` (docs/design.md).
This module finds such ImageMap entries and namespace map-file lines, so that the
ImageMap's status, the ConfigMap's Events, ``kubectl apply`` and ``check`` can say so:
no rule may be silently dead.

A rule is named when every image it matches lies under one cluster target ("never
fires"), or when some cluster targets lie inside what it matches ("does not fire for
images under ..."). A map file's ``default`` and ``noswap_wildcards`` lines, and
``[REPLACE]`` globs that start with a wildcard, match images anywhere: that the guard
keeps images already at a cluster target is what it is for, so they are not named.
"""

from __future__ import annotations

from imagemapper.reference import DEFAULT_DOMAIN, InvalidReference, name_prefixes, parse, split_port, split_prefix
from imagemapper.rules import under_targets

TYPE_CHECKING = False
if TYPE_CHECKING:
    from imagemapper.imagemap import Entry
    from imagemapper.mapfile import Diagnostic, MapFileInput, MapLine

REASON = "ShadowedByClusterRule"  # the Event reason of a map-file line a cluster target stops
SUFFIX = "(a chain across layers; idempotence wins)"
LISTED = 3  # partially covering targets named in one note


class Targets:
    """Cluster targets arranged for "which of them lie inside this rule's range" questions.

    Built once per set of targets (see :func:`index`): ``below`` maps a name prefix to the
    targets strictly under it, ``at`` a name to the repository and exact targets of that
    very name, and both again with ports removed, for map-file keys that match every port.
    """

    def __init__(self, targets: dict) -> None:
        self.targets = targets
        self.prefix = targets.get("prefix") or {}
        self.repo = targets.get("repo") or {}
        self.strprefix = sorted(targets.get("strprefix") or ())
        self.below: dict[str, list[str]] = {}
        self.at: dict[str, list[str]] = {}
        self.below_unported: dict[str, list[str]] = {}
        self.at_unported: dict[str, list[str]] = {}
        for kind in ("prefix", "repo", "exact"):
            for target in sorted(targets.get(kind) or ()):
                self._add(kind, target)

    def _add(self, kind: str, target: str) -> None:
        try:
            name = parse(target).name if kind == "exact" else target
        except InvalidReference:
            return
        if kind != "prefix":
            self.at.setdefault(name, []).append(target)
        for above in name_prefixes(name)[1:]:
            self.below.setdefault(above, []).append(target)
        unported = _unport(name)
        if unported != name:
            self.at_unported.setdefault(unported, []).append(target)
            for above in name_prefixes(unported)[1:]:
                self.below_unported.setdefault(above, []).append(target)

    def covering(self, prefix: str, itself: bool) -> str | None:
        """The target every name below ``prefix`` (and ``prefix`` itself) lies under."""
        hit = next((p for p in name_prefixes(prefix) if p in self.prefix), None)
        if hit:
            return hit
        text = prefix if itself else prefix + "/"
        return next((s for s in self.strprefix if text.startswith(s)), None)

    def inside(self, prefix: str, itself: bool, any_port: bool) -> list[str]:
        """Targets that hold some, not all, of the names below ``prefix``."""
        found = list(self.below.get(prefix, ()))
        found += [s for s in self.strprefix if s.startswith(prefix + "/")]
        if itself:
            found += self.at.get(prefix, [])
        if any_port:
            host = split_port(prefix.partition("/")[0])[0]
            found += self.below_unported.get(prefix, []) + self.at_unported.get(prefix, [])
            found += [s for s in self.strprefix if s.startswith(host + ":")]
        return sorted(set(found))


_MEMO: dict[int, tuple[dict, Targets]] = {}  # the last targets dict seen, by id


def index(targets: dict | Targets | None) -> Targets | None:
    """``targets`` as a :class:`Targets`, built once for the same dict (a sync run asks
    once per ImageMap)."""
    if isinstance(targets, Targets):
        return targets
    if not targets:
        return None
    memo = _MEMO.get(id(targets))
    if memo is None or memo[0] is not targets:
        _MEMO.clear()
        memo = _MEMO[id(targets)] = (targets, Targets(targets))
    return memo[1]


def _unport(name: str) -> str:
    domain, slash, rest = name.partition("/")
    return split_port(domain)[0] + slash + rest


def _note(what: str, hit: str | None, inside: list[str], other_ports: bool = False) -> str | None:
    """The sentence for one rule: never fires (``hit``), fires for fewer images, or None."""
    if hit and other_ports:
        return (f"{what} fires only for images on other ports of its registry: the others lie "
                f"under cluster target {hit!r}, which keeps them {SUFFIX}")
    if hit:
        return (f"{what} never fires: its images lie under cluster target {hit!r}, which keeps "
                f"them {SUFFIX}")
    if not inside:
        return None
    shown = ", ".join(map(repr, inside[:LISTED]))
    more = f" and {len(inside) - LISTED} more" if len(inside) > LISTED else ""
    return (f"{what} does not fire for images under cluster target{'s' if len(inside) > 1 else ''} "
            f"{shown}{more} {SUFFIX}")


# ----------------------------------------------------------------------------- ImageMaps

def _entry_shadow(kind: str, key: str, found: Targets) -> tuple[str | None, list[str]]:
    """(target keeping every image of an ImageMap entry, targets keeping some of them)."""
    if kind == "prefix":  # names strictly below the key
        return found.covering(key, itself=False), found.inside(key, itself=False, any_port=False)
    if kind == "repo":
        hit = key if key in found.repo else found.covering(key, itself=True)
        return hit, [] if hit else [t for t in found.at.get(key, []) if t not in found.repo]
    try:
        return under_targets(parse(key), found.targets), []
    except InvalidReference:
        return None, []


def cross_layer(items: list, cluster_targets: dict | Targets | None,
                memo: dict[tuple[str, str], tuple[str | None, list[str]]] | None = None) -> list[str]:
    """``spec.map[i] (...) ...`` for each ImageMap entry that a cluster target shadows
    (``memo``: see :func:`shadowed`)."""
    from imagemapper.imagemap import EntryError, parse_entry

    if index(cluster_targets) is None:
        return []
    entries = []
    for position, item in enumerate(items if isinstance(items, list) else []):
        try:
            entries.append(parse_entry(position, item))
        except EntryError:
            continue
    return shadowed(entries, cluster_targets, memo)


def shadowed(entries: list[Entry], cluster_targets: dict | Targets | None,
             memo: dict[tuple[str, str], tuple[str | None, list[str]]] | None = None) -> list[str]:
    """:func:`cross_layer` on entries already parsed (the sync hook's compile has them).

    ``memo`` keeps what the targets say about each (kind, key) across calls with the same
    targets: the same ``from`` recurs in many namespaces.
    """
    found = index(cluster_targets)
    if found is None:
        return []
    memo = {} if memo is None else memo
    out = []
    for entry in entries:
        kind, key, _ = entry.from_range
        shadow = memo.get((kind, key))
        if shadow is None:
            shadow = memo[(kind, key)] = _entry_shadow(kind, key, found)
        if shadow[0] or shadow[1]:  # else _note has nothing to say: no words made
            note = _note(f"{entry.label()} ({entry.raw_from})", *shadow)
            if note:
                out.append(note)
    return out


# ----------------------------------------------------------------------------- map files

def _line_shadow(line: MapLine, found: Targets) -> tuple[str | None, list[str], bool]:
    """(target keeping every image a map-file line matches, targets keeping some of them,
    whether the first leaves the images on other ports of the key's registry free)."""
    if line.kind == "exact":
        try:
            return under_targets(parse(line.key), found.targets), [], False
        except InvalidReference:
            return None, [], False
    if line.kind == "registry":  # the key and every name below it; no port: every port too
        host, port = split_port(line.key.partition("/")[0])
        hit = found.covering(line.key, itself=True)
        inside = found.inside(line.key, itself=True, any_port=not port)
        free = bool(hit) and not port and not any((host + ":").startswith(s) for s in found.strprefix)
        return hit, inside, free
    if line.kind == "replace":
        return (*_glob_shadow(line.key, found), False)
    return None, [], False  # default and noswap_wildcards match anywhere


def _glob_shadow(glob: str, found: Targets) -> tuple[str | None, list[str]]:
    """A ``[REPLACE]`` glob is tried on the image as written and normalized: what it
    matches lies below the directory its literal start names, if it names one."""
    cut = min((glob.find(c) for c in "*?[" if c in glob), default=-1)
    if cut < 0:  # no wildcard: one image
        try:
            return under_targets(parse(glob), found.targets), []
        except InvalidReference:
            return None, []
    literal = glob[:cut]
    if "/" not in literal:  # a registry being typed, or a Hub short name: targets it starts
        return None, sorted(t for kind in ("prefix", "repo", "exact", "strprefix")
                            for t in found.targets.get(kind) or () if literal and t.startswith(literal))
    head, _, rest = literal.rpartition("/")
    domain, path = split_prefix(head)  # as written or normalized: the same names
    base = domain + "/" + path if path else domain
    start = base + "/" + rest
    hit = found.covering(base, itself=False) or next((s for s in found.strprefix if start.startswith(s)), None)
    inside = found.inside(base, itself=False, any_port=False)
    if domain != DEFAULT_DOMAIN:  # Hub images have short spellings: keep all of them
        inside = [t for t in inside if t.startswith(start) or start.startswith(t + "/")]
    return hit, inside


def mapfile_lines(configmaps: list[MapFileInput], cluster_targets: dict | Targets | None,
                  ) -> list[Diagnostic]:
    """A warning per namespace map-file line (the ConfigMaps of one namespace, read as one
    file) that a cluster target keeps from firing; lines that take no effect anyway
    (a repeated key, registry keys without ``default``) are left to their own warnings."""
    from imagemapper.mapfile import Diagnostic, chosen_lines
    from imagemapper.maplookup import DEFAULT

    found = index(cluster_targets)
    if found is None:
        return []
    files = [f for cm in sorted(configmaps, key=lambda c: c.name) for f in cm.files()]
    lines = chosen_lines(files)[0]
    active = any(line.kind == DEFAULT for line in lines)
    out = []
    for line in lines:
        if line.kind == "registry" and not active:
            continue
        note = _note(line.text, *_line_shadow(line, found))
        if note:
            out.append(Diagnostic(line.source, line.line, "warning", note, REASON))
    return sorted(out, key=lambda d: (d.source, d.line))
