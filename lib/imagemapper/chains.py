"""Chains across layers: namespace rules that a cluster target keeps from firing.

A namespace rule whose ``from`` lies under a cluster rule's target cannot fire for the
images under that target: the idempotence guard keeps them, because the cluster rule
produces them and a second rewrite would break ``f(f(x)) == f(x)`` (docs/design.md).
This module finds such entries so that the ImageMap's status, ``kubectl apply`` and
``check`` can say so: no rule may be silently dead.
"""

from __future__ import annotations

from imagemapper.reference import InvalidReference, parse
from imagemapper.rules import under_targets


def _probe(kind: str, key: str) -> str:
    """An image the entry matches (a prefix entry: one just below its prefix)."""
    return key + "/x" if kind == "prefix" else key


def cross_layer(items: list, cluster_targets: dict | None) -> list[str]:
    """``spec.map[i]: ...`` for each ImageMap entry that a cluster target shadows."""
    from imagemapper.imagemap import EntryError, parse_entry

    if not cluster_targets:
        return []
    out = []
    for index, item in enumerate(items if isinstance(items, list) else []):
        try:
            entry = parse_entry(index, item)
        except EntryError:
            continue
        kind, key, _ = entry.from_range
        try:
            hit = under_targets(parse(_probe(kind, key)), cluster_targets)
        except InvalidReference:
            hit = None
        partial = [] if hit or kind != "prefix" else sorted(
            t for names in (cluster_targets.get("prefix") or {}, cluster_targets.get("repo") or {})
            for t in names if t.startswith(key + "/"))
        if hit:
            out.append(f"{entry.label()} ({entry.raw_from}) never fires: its images lie under "
                       f"cluster target {hit!r}, which keeps them (a chain across layers; "
                       "idempotence wins)")
        elif partial:
            out.append(f"{entry.label()} ({entry.raw_from}) does not fire for images under cluster "
                       f"target{'s' if len(partial) > 1 else ''} {', '.join(map(repr, partial))} "
                       "(a chain across layers; idempotence wins)")
    return out
