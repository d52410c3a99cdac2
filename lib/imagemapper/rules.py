"""Deciding what one image becomes, given the layers that apply to its namespace.

Layers are consulted in order: the namespace's ImageMaps, the namespace's map files,
then the cluster-wide map files. The first layer with an opinion decides, and an
exclusion counts as an opinion. Before any layer is asked, the idempotence guard
leaves alone every image that already lies where some applicable rule sends images,
so rewriting a rewritten image changes nothing (``f(f(x)) == f(x)``).

This module is on the admission hot path: it imports only the reference parser, and
each lookup module only when a layer of its kind applies to the Pod's namespace.
"""

from __future__ import annotations

from imagemapper.reference import InvalidReference, Reference, name_prefixes, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping
    from typing import Any

    from imagemapper.shapes import ClusterDoc, Found, ImageMapLayer, MapFileLayer, NamespaceDoc, Targets

    Lookup = Callable[[Any, Reference, str], Found]


class Decision:
    """What happened to one image, for the patch, the log line and ``--explain``."""

    __slots__ = ("error", "image", "new", "rejected", "rule", "source", "warning")

    def __init__(self, image: str, new: str | None = None, rule: str = "",
                 source: str = "", error: str = "", warning: str = ""):
        self.image = image    # the image as written in the Pod
        self.new = new        # the replacement, or None when the image stays
        self.rule = rule      # the rule that decided, or why nothing did
        self.source = source  # the layer that decided: "namespace-imagemap", "namespace-mapfile",
        #                       "cluster-mapfile"; the guard's "namespace"/"cluster"; or ""
        self.error = error    # set when the image is not a valid reference
        self.warning = warning  # set when the rule that matched would give an invalid reference
        self.rejected = ""      # ... and that reference

    @property
    def changed(self) -> bool:
        return self.new is not None and self.new != self.image

    def __repr__(self) -> str:
        return f"Decision({self.image!r} -> {self.new!r}, {self.rule!r})"


# The kinds of target (see under_targets); every layer's compiler fills these.
TARGET_KINDS = ("exact", "repo", "prefix", "strprefix")


def empty_targets() -> Targets:
    return {kind: {} for kind in TARGET_KINDS}


def merge_targets(*many: Mapping[str, Iterable[str]]) -> Targets:
    """Union of several targets (lists or dicts of keys), as dicts for O(1) lookups."""
    out = empty_targets()
    for targets in many:
        for kind, keys in targets.items():
            if keys:  # most are empty: a namespace without map files has four
                out[kind].update(dict.fromkeys(keys, 1))
    return out


def under_targets(ref: Reference, targets: Targets | None) -> str | None:
    """Return the target an image already lies under, or None.

    Prefix targets match on path-component boundaries and name one endpoint: a port
    is another registry. A map-file rule that keeps the image's port (a registry
    value) has its own ``registry:`` string-prefix target.
    """
    if not targets:
        return None
    if str(ref) in targets["exact"]:
        return str(ref)
    name = ref.name
    if name in targets["repo"]:
        return name
    prefixes = targets["prefix"]
    if prefixes:
        for prefix in name_prefixes(name):
            if prefix in prefixes:
                return prefix
    strprefixes = targets["strprefix"]
    if strprefixes:
        for end in range(len(name), 0, -1):
            if name[:end] in strprefixes:
                return name[:end]
    return None


def _imagemap_lookup(layer: ImageMapLayer, ref: Reference, raw: str) -> Found:
    from imagemapper import imagemap

    return imagemap.lookup(layer, ref)


def _mapfile_lookup(layer: MapFileLayer, ref: Reference, raw: str) -> Found:
    from imagemapper import maplookup

    return maplookup.lookup(layer, ref, raw)


def _layers(ns_doc: NamespaceDoc | None, cluster_doc: ClusterDoc | None) -> Iterator[tuple[str, Lookup, Any]]:
    if ns_doc:
        if ns_doc.get("imagemaps"):
            yield "namespace-imagemap", _imagemap_lookup, ns_doc["imagemaps"]
        if ns_doc.get("mapfiles"):
            yield "namespace-mapfile", _mapfile_lookup, ns_doc["mapfiles"]
    if cluster_doc and cluster_doc.get("mapfiles"):
        yield "cluster-mapfile", _mapfile_lookup, cluster_doc["mapfiles"]


def decide(image: str, ns_doc: NamespaceDoc | None, cluster_doc: ClusterDoc | None) -> Decision:
    """Decide one image. Never raises for any string input."""
    try:
        ref = parse(image)
    except InvalidReference as exc:
        return Decision(image, error=str(exc), rule="not a valid image reference")
    for doc, scope in ((ns_doc, "namespace"), (cluster_doc, "cluster")):
        hit = under_targets(ref, doc.get("targets")) if doc else None
        if hit:
            return Decision(image, rule=f"already under target {hit!r} of a {scope} rule",
                            source=scope)
    for source, lookup, layer in _layers(ns_doc, cluster_doc):
        found = lookup(layer, ref, image)
        if found is not None:
            return _checked(image, ref, found, source)
    return Decision(image, rule="no rule matches")


def _checked(image: str, ref: Reference, found: tuple[str | None, str], source: str) -> Decision:
    """A rewrite is handed out only as a valid reference to another image: a prefix rule
    can make a repository path longer than 255 characters, which the kubelet refuses."""
    new, rule = found
    if new is None or new == image:
        return Decision(image, new=new, rule=rule, source=source)
    try:
        same = str(parse(new)) == str(ref)
    except InvalidReference as exc:
        decision = Decision(image, rule=rule, source=source, warning=(
            f"{rule} would give {new!r}, which is not a valid reference ({exc}); left unchanged"))
        decision.rejected = new
        return decision
    if same:  # another spelling of the same image (an identity rule): nothing to change
        return Decision(image, rule=f"{rule} (the same image)", source=source)
    return Decision(image, new=new, rule=rule, source=source)
