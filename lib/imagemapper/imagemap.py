"""ImageMap rules: entry validation, conflict and chain resolution, layer lookup.

An entry's ``from`` takes one of three forms, each matched on the normalized
reference:

* exact: a reference with a tag and/or digest; ``to`` is a full reference, used as
  written;
* repository: a reference with neither; ``to`` is a repository, and the image's tag and
  digest are carried over;
* prefix: ``<registry>[/<path>]/*``; ``to`` ends in ``/*`` and receives the rest of the
  normalized path plus the tag and digest.

An entry without ``to`` is an exclusion at its own specificity.

The compiled *layer* is plain dicts, lists and strings, so it goes into the
(``marshal``) snapshot file without conversion:
``{"exact": {ref: [to|None, rule]}, "repo": {name: [...]}, "prefix": {prefix: [...]}}``.
:func:`lookup` is on the admission hot path and imports nothing but
:mod:`imagemapper.reference`.
"""

from __future__ import annotations

from imagemapper import kube
from imagemapper.reference import (
    InvalidReference,
    name_prefixes,
    parse,
    split_prefix,
    valid_domain,
    valid_path,
)
from imagemapper.rules import empty_targets

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from imagemapper.reference import Reference
    from imagemapper.shapes import Found, Hit, ImageMapLayer, Targets

EXACT, REPO, PREFIX = "exact", "repo", "prefix"
MESSAGE_LIMIT = 32768  # maxLength of status.conditions[].message in the CRD


class Entry:
    """One validated ``spec.map`` entry."""

    __slots__ = ("from_range", "index", "key", "kind", "name", "raw_from", "raw_to", "to", "to_range")

    def __init__(self, index: int, kind: str, key: str, to: str | None,
                 to_range: tuple[str, str, str] | None, raw_from: str, raw_to: str | None,
                 name: str = ""):
        self.index = index
        self.kind = kind          # EXACT, REPO or PREFIX
        self.key = key            # normalized from: full ref, name, or name prefix
        self.name = name or key   # the repository an exact key belongs to (else the key)
        self.to = to              # what the layer stores: full ref, repo, or prefix base
        self.to_range = to_range  # (kind, key, name) of everything this entry can produce
        self.raw_from = raw_from
        self.raw_to = raw_to
        # (kind, key, name): name is the repository an exact key belongs to. Made once:
        # the conflict checks ask for it several times per entry.
        self.from_range: tuple[str, str, str] = (kind, self.key, self.name)

    def label(self) -> str:
        return f"spec.map[{self.index}]"


# Why an entry cannot be used (EntryError.code).
NOT_AN_OBJECT = "NotAnObject"          # the item is not a mapping
FROM_MISSING = "FromMissing"           # no non-empty string 'from'
TO_NOT_A_STRING = "ToNotAString"
INVALID_REFERENCE = "InvalidReference"  # 'from' or 'to' does not parse (reference_code says how)
PREFIX_EMPTY = "PrefixEmpty"           # '/*' with nothing before it
PREFIX_INVALID = "PrefixInvalid"       # bad registry or path before '/*'
MISPLACED_WILDCARD = "MisplacedWildcard"  # '*' anywhere but a final '/*'
KIND_MISMATCH = "KindMismatch"         # 'to' is not the same kind as 'from' (prefix, repository, exact)


class EntryError(ValueError):
    """An entry that cannot be used; ``code`` says why, the message names the entry.

    ``reference_code`` is the :class:`~imagemapper.reference.InvalidReference` code when a
    reference does not parse, else "".
    """

    def __init__(self, message: str, code: str, reference_code: str = ""):
        super().__init__(message)
        self.code = code
        self.reference_code = reference_code


def _prefix_key(text: str, what: str) -> str:
    """Normalize ``<registry>[/<path>]``, the part of a prefix before ``/*``.

    The registry rule is the reference grammar's (``quay.io`` is a registry,
    ``bitnami`` a Docker Hub namespace), and no ``library/`` is inserted: a prefix
    names a path, not an image.
    """
    if not text:
        raise EntryError(f"{what} prefix needs a registry or path before '/*'", PREFIX_EMPTY)
    domain, rest = split_prefix(text)
    if not valid_domain(domain):
        raise EntryError(f"{what} {text!r}: invalid registry {domain!r}", PREFIX_INVALID)
    if rest and not valid_path(rest):
        raise EntryError(f"{what} {text!r}: invalid repository path {rest!r}", PREFIX_INVALID)
    return f"{domain}/{rest}" if rest else domain


def parse_entry(index: int, item: object) -> Entry:
    """Validate one ``spec.map`` item; raise EntryError naming what is wrong."""
    if not isinstance(item, dict):
        raise EntryError(f"spec.map[{index}]: must be an object with 'from' and optional 'to'",
                         NOT_AN_OBJECT)
    raw_from, raw_to = item.get("from"), item.get("to")
    if not isinstance(raw_from, str) or not raw_from:
        raise EntryError(f"spec.map[{index}]: 'from' must be a non-empty string", FROM_MISSING)
    if raw_to is not None and not isinstance(raw_to, str):
        raise EntryError(f"spec.map[{index}]: 'to' must be a string", TO_NOT_A_STRING)
    raw_to = raw_to or None
    try:
        return _build_entry(index, raw_from, raw_to)
    except InvalidReference as exc:
        raise EntryError(f"spec.map[{index}] (from {raw_from!r}): {exc}{_hint(raw_from, raw_to)}",
                         INVALID_REFERENCE, exc.code) from None
    except EntryError as exc:
        raise EntryError(f"spec.map[{index}] (from {raw_from!r}): {exc}", exc.code) from None


def _hint(raw_from: str, raw_to: str | None) -> str:
    """Why the failing reference is wrong, in the user's terms (see hints)."""
    from imagemapper.hints import why_not_a_name

    for what, text in (("from", raw_from), ("to", raw_to)):
        hint = why_not_a_name(text.removesuffix("/*")) if text else None
        if hint:
            return f" ('{what}': {hint})"
    return ""


def _build_entry(index: int, raw_from: str, raw_to: str | None) -> Entry:
    if raw_from.endswith("/*"):
        key = _prefix_key(raw_from[:-2], "'from'")
        if raw_to is None:
            return Entry(index, PREFIX, key, None, None, raw_from, None)
        if not raw_to.endswith("/*"):
            raise EntryError(f"'to' {raw_to!r} must end in '/*' like 'from'", KIND_MISMATCH)
        to_key = _prefix_key(raw_to[:-2], "'to'")
        return Entry(index, PREFIX, key, raw_to[:-2], (PREFIX, to_key, to_key), raw_from, raw_to)
    if "*" in raw_from:
        raise EntryError("'*' is only allowed as a final '/*' path prefix", MISPLACED_WILDCARD)
    ref = parse(raw_from)
    if ref.tag is None and ref.digest is None:
        return _repo_entry(index, ref.name, raw_from, raw_to)
    if raw_to is None:
        return Entry(index, EXACT, str(ref), None, None, raw_from, None, ref.name)
    if raw_to.endswith("/*"):
        raise EntryError(f"'to' {raw_to!r} is a prefix, but 'from' is an exact reference", KIND_MISMATCH)
    to_ref = parse(raw_to)
    return Entry(index, EXACT, str(ref), raw_to, (EXACT, str(to_ref), to_ref.name), raw_from, raw_to,
                 ref.name)


def _repo_entry(index: int, name: str, raw_from: str, raw_to: str | None) -> Entry:
    if raw_to is None:
        return Entry(index, REPO, name, None, None, raw_from, None)
    if raw_to.endswith("/*"):
        raise EntryError(f"'to' {raw_to!r} is a prefix, but 'from' is a repository", KIND_MISMATCH)
    to_ref = parse(raw_to)
    if to_ref.tag is not None or to_ref.digest is not None:
        raise EntryError(
            f"'to' {raw_to!r} has a tag or digest, but 'from' is a repository "
            "(its tag and digest are carried over)", KIND_MISMATCH)
    to_name = to_ref.name
    return Entry(index, REPO, name, raw_to, (REPO, to_name, to_name), raw_from, raw_to)


# ----------------------------------------------------------------------------- ranges

class RangeIndex:
    """Finds an owner whose range of images intersects a given range.

    Ranges are exact references, repositories and name prefixes; two ranges
    intersect when some image lies in both. Each lookup costs a few dict probes per
    path component, so checking 100k entries stays linear.
    """

    def __init__(self) -> None:
        self.exact: dict[str, object] = {}
        self.exact_names: dict[str, object] = {}
        self.repos: dict[str, object] = {}
        self.prefixes: dict[str, object] = {}
        self.below: dict[str, object] = {}

    def add(self, rng: tuple[str, str, str], owner: object) -> None:
        kind, key, name = rng
        if kind == EXACT:
            self.exact.setdefault(key, owner)
            self.exact_names.setdefault(name, owner)
        elif kind == REPO:
            self.repos.setdefault(key, owner)
        else:
            self.prefixes.setdefault(key, owner)
        # Something lies strictly below every proper ancestor; a prefix also covers itself.
        # Walked up from the name (name_prefixes' order), and it stops at the first
        # ancestor already there: that one's own ancestors were entered with it.
        below = self.below
        cut = len(name) if kind == PREFIX else name.rfind("/")
        while cut > 0:
            name = name[:cut]
            if name in below:
                break
            below[name] = owner
            cut = name.rfind("/")

    def find(self, rng: tuple[str, str, str]) -> Any:
        """Return an owner whose range intersects ``rng``, or None."""
        kind, key, name = rng
        if kind == EXACT:
            hit = self.exact.get(key) or self.repos.get(name)
        elif kind == REPO:
            hit = self.repos.get(key) or self.exact_names.get(name)
        else:
            hit = self.below.get(key)
        if hit is not None or not self.prefixes:
            return hit
        # Prefixes cover names strictly below them; equal prefixes overlap too.
        ancestors = name_prefixes(name)
        for anc in ancestors if kind == PREFIX else ancestors[1:]:
            hit = self.prefixes.get(anc)
            if hit is not None:
                return hit
        return None


# ----------------------------------------------------------------------------- resolution

class MapInput:
    """One ImageMap as the resolver needs it."""

    __slots__ = ("created", "generation", "items", "name", "namespace")

    def __init__(self, namespace: str, name: str, created: str, generation: int, items: list[Any]):
        self.namespace = namespace
        self.name = name
        self.created = created or ""
        self.generation = generation
        self.items = items

    @classmethod
    def from_object(cls, obj: object) -> MapInput:
        """Build from an ImageMap object (or a jqFilter result of the same shape)."""
        return cls(kube.text(obj, "metadata", "namespace"), kube.text(obj, "metadata", "name"),
                   kube.text(obj, "metadata", "creationTimestamp"),
                   kube.whole(obj, "metadata", "generation"), kube.items(obj, "spec", "map"))

    def order_key(self) -> tuple[str, str]:
        """Older maps win; the name breaks ties, so every replica agrees."""
        return (self.created, self.name)


class Verdict:
    """The Ready condition an ImageMap should carry."""

    __slots__ = ("entries", "message", "reason")

    def __init__(self, reason: str, message: str, entries: list[Entry]):
        self.reason = reason      # "Accepted" | "Invalid" | "Conflict"
        self.message = message
        self.entries = entries    # active entries (empty unless Accepted)

    @property
    def ready(self) -> bool:
        return self.reason == "Accepted"

    @property
    def rules(self) -> int:
        return len(self.entries)


def parse_entries(imap: MapInput) -> tuple[list[Entry], list[str]]:
    """Parse every entry; return (the valid entries, one message per invalid entry)."""
    if not imap.items:
        return [], ["spec.map is empty or missing: an ImageMap needs at least one entry"]
    entries, errors = [], []
    for index, item in enumerate(imap.items):
        try:
            entries.append(parse_entry(index, item))
        except EntryError as exc:
            errors.append(str(exc))
    return entries, errors


def validate_entries(imap: MapInput) -> tuple[list[Entry], str | None]:
    """Parse every entry; return (entries, None) or ([], a message naming every bad entry)."""
    entries, errors = parse_entries(imap)
    if not errors:
        return entries, None
    message = "; ".join(errors)
    if len(message) > MESSAGE_LIMIT:  # the CRD's limit on a condition message
        kept = message[:MESSAGE_LIMIT - 200].rpartition("; ")[0]
        left = len(errors) - kept.count("; ") - 1
        message = f"{kept}; and {left} more invalid entries (run `image-mapper check` on the file)"
    return [], message


def repeated_entries(entries: list[Entry]) -> list[str]:
    """Entries that say again what an earlier entry says: harmless, but a sign of a typo."""
    seen: dict[tuple, Entry] = {}
    out = []
    for entry in entries:
        first = seen.setdefault((entry.from_range, entry.to_range), entry)
        if first is not entry:
            out.append(f"{entry.label()} (from {entry.raw_from!r}) repeats {first.label()}; "
                       "remove one of them")
    return out


def _describe_to(entry: Entry) -> str:
    return repr(entry.raw_to) if entry.raw_to is not None else "nothing (an exclusion)"


class _Accepted:
    """The accepted entries of one namespace, indexed for conflict and chain checks."""

    def __init__(self) -> None:
        self.by_from: dict[tuple[str, str, str], tuple[Entry, str]] = {}
        self.froms = RangeIndex()
        self.tos = RangeIndex()

    def add(self, entries: list[Entry], owner: str) -> None:
        for entry in entries:
            self.by_from.setdefault(entry.from_range, (entry, owner))
            tag = (entry, owner)
            if entry.to_range is not None:  # set exactly when ``to`` is
                self.froms.add(entry.from_range, tag)
                self.tos.add(entry.to_range, tag)

    def problem(self, entries: list[Entry], self_name: str) -> str | None:
        """Explain why ``entries`` cannot join, or return None."""
        for entry in entries:
            found = self.by_from.get(entry.from_range)
            if found and found[0].to_range != entry.to_range:  # spellings of one target agree
                other, owner = found
                return (f"{entry.label()} maps {entry.key!r} to {_describe_to(entry)} but "
                        f"{_owner_text(owner, self_name)} {other.label()} maps it to "
                        f"{_describe_to(other)}")
        for entry in entries:
            if entry.to_range is None:  # an exclusion sends nothing anywhere
                continue
            hit = self.tos.find(entry.from_range)
            if hit:
                other, owner = hit
                return (f"chain: {entry.label()} (from {entry.raw_from!r}) matches the target "
                        f"{other.raw_to!r} of {_owner_text(owner, self_name)} {other.label()}")
            hit = self.froms.find(entry.to_range)
            if hit:
                other, owner = hit
                return (f"chain: the target {entry.raw_to!r} of {entry.label()} is matched by "
                        f"{_owner_text(owner, self_name)} {other.label()} (from {other.raw_from!r})")
        return None


def _owner_text(owner: str, self_name: str) -> str:
    return "this ImageMap's" if owner == self_name else f'ImageMap "{owner}"'


def _absorb(entries: list[Entry], name: str) -> tuple[_Accepted, str | None]:
    """Index one map's entries, checking each against those before it.

    Returns the index and the first internal conflict or chain, if any.
    """
    own = _Accepted()
    for entry in entries:
        problem = own.problem([entry], name)
        if problem:
            return own, problem
        own.add([entry], name)
    return own, None


def resolve_namespace(maps: list[MapInput]) -> dict[str, Verdict]:
    """Decide Accepted/Invalid/Conflict for every ImageMap of one namespace.

    Maps are taken oldest first (then by name). A map that conflicts or chains with
    one accepted before it is rejected whole, and its message names the other map.
    """
    accepted: _Accepted | None = None
    verdicts: dict[str, Verdict] = {}
    for imap in sorted(maps, key=MapInput.order_key):
        entries, error = validate_entries(imap)
        if error:
            verdicts[imap.name] = Verdict("Invalid", error, [])
            continue
        own, problem = _absorb(entries, imap.name)
        if not problem and accepted is not None:
            problem = accepted.problem(entries, imap.name)
        if problem:
            verdicts[imap.name] = Verdict("Conflict", problem, [])
            continue
        if accepted is None:
            accepted = own  # the first accepted map: its own index is the namespace's
        else:
            accepted.add(entries, imap.name)
        count = len(entries)
        verdicts[imap.name] = Verdict(
            "Accepted", f"{count} rule{'s' if count != 1 else ''} active", entries)
    return verdicts


def check_candidate(candidate: MapInput, others: list[MapInput]) -> str | None:
    """Admission check: why ``candidate`` would be rejected next to ``others``.

    ``others`` are the maps already accepted in the namespace (the candidate's own
    previous version excluded). Unlike :func:`resolve_namespace`, age does not matter
    here: a new or updated map that clashes with an accepted one is refused, so the
    accepted map never silently loses its place.
    """
    entries, error = validate_entries(candidate)
    if error:
        return error
    _, problem = _absorb(entries, candidate.name)
    if problem:
        return problem
    accepted = _Accepted()
    for other in others:
        other_entries, other_error = validate_entries(other)
        if not other_error:
            accepted.add(other_entries, other.name)
    return accepted.problem(entries, candidate.name)


# ----------------------------------------------------------------------------- layer

def compile_accepted(verdicts: dict[str, Verdict]) -> tuple[ImageMapLayer | None, Targets]:
    """Turn accepted entries into a lookup layer and its targets."""
    exact: dict[str, Hit] = {}
    repo: dict[str, Hit] = {}
    prefix: dict[str, Hit] = {}
    targets = empty_targets()
    tables = {EXACT: exact, REPO: repo, PREFIX: prefix}
    for name in sorted(verdicts):
        for entry in verdicts[name].entries:
            rule = f"imagemap {name} {entry.label()}: {entry.raw_from} -> {entry.raw_to or '(excluded)'}"
            tables[entry.kind].setdefault(entry.key, [entry.to, rule])
            if entry.to_range is not None and entry.to_range != entry.from_range:
                kind, key, _ = entry.to_range  # an identity guards nothing: f(x) = x already
                targets[kind][key] = 1
    if not (exact or repo or prefix):
        return None, targets
    return {"exact": exact, "repo": repo, "prefix": prefix}, targets


def lookup(layer: ImageMapLayer, ref: Reference) -> Found:
    """Most specific entry wins: exact, then repository, then the longest prefix."""
    hit = layer["exact"].get(str(ref))
    if hit is not None:
        return hit[0], hit[1]
    hit = layer["repo"].get(ref.name)
    if hit is not None:
        return (None if hit[0] is None else hit[0] + ref.suffix), hit[1]
    prefixes = layer["prefix"]
    if not prefixes:
        return None
    name = ref.name
    for anc in name_prefixes(name)[1:]:
        hit = prefixes.get(anc)
        if hit is not None:
            if hit[0] is None:
                return None, hit[1]
            return f"{hit[0]}/{name[len(anc) + 1:]}{ref.suffix}", hit[1]
    return None
