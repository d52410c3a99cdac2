"""``IMAGE_MAPPER_ALLOWED_TARGETS``: where namespace rules may send images.

Anyone who can edit ConfigMaps in a namespace decides the images of its Pods, so a
cluster admin can name the registries or path prefixes that namespace rules
(ImageMaps and namespace map files) may point to. A rule outside them is refused at
apply time, and one that got in anyway contributes nothing and is reported (sync).
Cluster-wide map files are the admin's own and are not limited.
"""

from __future__ import annotations

from imagemapper.reference import name_prefixes, split_prefix


def normalize(prefix: str) -> str:
    """``quay.io/org`` -> ``quay.io/org``; ``bitnami`` -> ``docker.io/bitnami``."""
    domain, path = split_prefix(prefix.strip().rstrip("/"))
    return f"{domain}/{path}" if path else domain


def _under(name: str, allowed: frozenset[str]) -> bool:
    return any(p in allowed for p in name_prefixes(name))


def target_allowed(target: str, allowed: frozenset[str], kind: str = "prefix") -> bool:
    """Whether a normalized target lies under an allowed prefix. ``kind`` ``strprefix``
    is a string prefix (``mirror.corp:`` keeps a port, ``m.corp/x-`` joins a name)."""
    if not allowed:
        return True
    if kind == "strprefix":
        if target.endswith(":"):
            return _under(target[:-1], allowed)
        parent = target.rpartition("/")[0]  # "m.corp/x-" makes names below m.corp
        return bool(parent) and _under(parent, allowed)
    if kind == "exact":
        target = target.split("@", 1)[0]
        last = target.rfind("/")
        colon = target.rfind(":")
        target = target[:colon] if colon > last else target
    return _under(target, allowed)


def imagemap_violations(items: list, allowed: frozenset[str]) -> list[str]:
    """``spec.map[i]: ...`` for every entry whose ``to`` is outside ``allowed``."""
    from imagemapper.imagemap import EntryError, parse_entry

    out = []
    for index, item in enumerate(items if isinstance(items, list) else []):
        try:
            entry = parse_entry(index, item)
        except EntryError:
            continue  # reported as invalid anyway
        if entry.to_range is not None and not target_allowed(entry.to_range[1], allowed, entry.to_range[0]):
            out.append(f"{entry.label()}: target {entry.raw_to!r} is not under "
                       f"IMAGE_MAPPER_ALLOWED_TARGETS ({', '.join(sorted(allowed))})")
    return out


def mapfile_violations(targets: dict, allowed: frozenset[str]) -> list[str]:
    """Every target of a compiled namespace map file that is outside ``allowed``."""
    bad = sorted({t for kind, names in targets.items() for t in names
                  if not target_allowed(t, allowed, kind)})
    return [f"target {t!r} is not under IMAGE_MAPPER_ALLOWED_TARGETS ({', '.join(sorted(allowed))})"
            for t in bad]
