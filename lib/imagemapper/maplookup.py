"""Map-file lookup: what a compiled map-file layer says about one image.

This is the part of the map-file grammar that runs in the admission hook, a fresh
``python3 -S`` process per Pod: it imports only :mod:`imagemapper.reference`, and
:mod:`fnmatch` (with ``re``) only for a layer that has ``[REPLACE]`` rules. The layer is
what :func:`imagemapper.mapfile.compile_files` builds (see ``shapes.MapFileLayer``).
"""

from __future__ import annotations

from imagemapper.reference import InvalidReference, Reference, is_registry, short_path, split_port
from imagemapper.reference import parse as parse_reference

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

    from imagemapper.shapes import Found, Hit, MapFileLayer

DEFAULT: Final = "default"  # the keyword and the layer key; Final: a key the type checker knows
INVALID_RESULT = "; result {!r} is not a valid reference, image left unchanged"
NOT_A_REPO = "; value is not a repository for an image named exactly like the key, image left unchanged"


def bare_registry(value: str) -> bool:
    """A value that is a registry host alone, so a port may be added to it."""
    return "/" not in value and ":" not in value and is_registry(value)


def lookup(layer: MapFileLayer, ref: Reference, raw: str) -> Found:
    """Decide one image: None = no opinion, else (new image or None to leave it, rule text).

    Order: [EXACT] > [REPLACE] > (nothing more without default) > longest registry/path
    key (then the same without the image's port) > noswap_wildcards > default.
    """
    exact = layer.get("exact")
    if exact:
        hit = exact.get(str(ref))
        if hit is not None:
            return (hit[0] or None), hit[1]
    replace = layer.get("replace")
    if replace:
        found = _lookup_replace(replace, ref, raw)
        if found is not None:
            return found
    default = layer.get(DEFAULT)
    if default is None:
        return None
    keys = layer.get("keys")
    if keys:
        found = _lookup_keys(keys, ref)
        if found is not None:
            return found
    noswap = layer.get("noswap")
    if noswap and noswap[0]:
        full = str(ref)
        for pattern in noswap[0]:
            if pattern in raw or pattern in full:
                return None, noswap[1]
    return _lookup_default(default, ref)


def _lookup_default(default: Hit, ref: Reference) -> Found:
    """``default::value``: the image moved under ``value``; a dash value goes before the host."""
    value, rule = default
    if not value:
        return None, rule
    host = split_port(ref.domain)[0]
    path = short_path(ref.domain, ref.path)
    if value.endswith("-"):
        return _checked(value + host.lower() + "/" + path + ref.suffix, rule)
    return _checked(value + "/" + path + ref.suffix, rule)


def _lookup_replace(replace: list[list[str]], ref: Reference, raw: str) -> Found:
    from fnmatch import fnmatchcase  # imports re: only layers with [REPLACE] pay for it

    full = str(ref)
    for glob, value, rule in replace:
        if fnmatchcase(raw, glob) or fnmatchcase(full, glob):
            if not value:
                return None, rule
            last = ref.path.rpartition("/")[2]
            return _checked(value.rstrip("/") + "/" + last + ref.suffix, rule)
    return None


def _lookup_keys(keys: dict[str, Hit], ref: Reference) -> Found:
    host, port = split_port(ref.domain)
    domain = ref.domain
    hit = _longest(keys, domain, ref.path)
    if hit is None and port:
        domain = host
        hit = _longest(keys, domain, ref.path)
    if hit is None:
        return None
    key_path, (value, rule) = hit
    if not value:
        return None, rule
    if value.endswith("-"):
        path = short_path(ref.domain, ref.path)
        return _checked(value + host.lower() + "/" + path + ref.suffix, rule)
    if key_path is None:
        rest = short_path(ref.domain, ref.path)
    else:
        rest = ref.path[len(key_path) + 1:]
    if not rest:
        if "/" not in value:
            return None, rule + NOT_A_REPO
        return _checked(value + ref.suffix, rule)
    if domain != ref.domain and bare_registry(value):
        value = value + ":" + port
    return _checked(value + "/" + rest + ref.suffix, rule)


def _longest(keys: dict[str, Hit], domain: str, path: str) -> tuple[str | None, Hit] | None:
    """Longest key among ``domain/path`` cut at component boundaries; (key path, entry)."""
    cut = len(path)
    while cut > 0:
        hit = keys.get(domain + "/" + path[:cut])
        if hit is not None:
            return path[:cut], hit
        cut = path.rfind("/", 0, cut)
    hit = keys.get(domain)
    if hit is not None:
        return None, hit
    return None


def _checked(new: str, rule: str) -> tuple[str | None, str]:
    """Never hand out an invalid reference (too long, IPv6 host after a dash, ...)."""
    try:
        parse_reference(new)
    except InvalidReference:
        return None, rule + INVALID_RESULT.format(new)
    return new, rule
