"""The data shapes that cross module boundaries, for the type checker only.

Nothing imports this module at run time: every use is under ``if TYPE_CHECKING:``
(spelled ``TYPE_CHECKING = False`` so that no module has to import :mod:`typing`, which
the admission hot path must not load). The shapes are plain dicts and lists on purpose:
they are what ``marshal`` stores in the snapshot and what shell-operator reads and writes.

Data flows: Kubernetes objects (:data:`Payload`) -> ImageMap entries and map-file lines ->
compiled layers (:class:`ImageMapLayer`, :class:`MapFileLayer`) and :class:`Targets` in a
:class:`NamespaceDoc` or :class:`ClusterDoc` -> a lookup's :data:`Found` -> JSON Patch
(:class:`PatchOp`) in an :class:`AdmissionResponse`.
"""

from __future__ import annotations

from typing import Any, TypedDict

# A Kubernetes payload as it arrives (AdmissionRequest, object, jqFilter result). Untrusted:
# read it through imagemapper.kube, which tolerates any shape.
Payload = dict[str, Any]

# One stored rule of a layer: [what the image becomes (None: left alone), rule text].
Hit = list[Any]
# What a layer's lookup says: None (no opinion) or (new image or None, rule text).
Found = tuple[str | None, str] | None


class ImageMapLayer(TypedDict):
    """Accepted ImageMap entries of one namespace (imagemap.compile_accepted)."""

    exact: dict[str, Hit]   # normalized reference -> [full target, rule]
    repo: dict[str, Hit]    # repository name -> [target repository, rule]
    prefix: dict[str, Hit]  # name prefix -> [target prefix, rule]


class MapFileLayer(TypedDict, total=False):
    """The accepted lines of map files read as one file (mapfile.compile_files)."""

    default: Hit                  # [value, rule]
    noswap: list[Any]             # [[pattern, ...], rule]
    exact: dict[str, Hit]         # normalized reference -> [value, rule]
    replace: list[list[str]]      # [[glob, value, rule], ...] in file order
    keys: dict[str, Hit]          # normalized registry[/path] -> [value, rule]


# Where rules send images, for the idempotence guard (rules.under_targets), by kind
# ("exact", "repo", "prefix", "strprefix"): compiled as sorted lists (CompiledTargets),
# stored merged (rules.merge_targets) as dicts for O(1) membership (Targets).
CompiledTargets = dict[str, list[str]]
Targets = dict[str, dict[str, int]]


class NamespaceDoc(TypedDict, total=False):
    """One namespace's snapshot document."""

    imagemaps: ImageMapLayer | None
    mapfiles: MapFileLayer | None
    targets: Targets
    accepted: dict[str, Any]  # accepted ImageMaps, for the validating hook


class ClusterDoc(TypedDict, total=False):
    """The cluster-wide snapshot document."""

    generation: str
    mapfiles: MapFileLayer | None
    targets: Targets


class PatchOp(TypedDict):
    """One JSON Patch operation (RFC 6902) of a mutation."""

    op: str
    path: str
    value: Any


class _Answer(TypedDict):
    allowed: bool


class AdmissionResponse(_Answer, total=False):
    """What a hook answers (protocol.allow / protocol.deny); shell-operator adds the rest."""

    message: str
    warnings: list[str]
    patch: str  # base64 of the JSON Patch text


class VerdictRecord(TypedDict):
    """An ImageMap's Ready condition as the sync index stores it (compiler -> sync, cli)."""

    reason: str  # "Accepted" | "Invalid" | "Conflict"
    message: str
    rules: int


class DiagnosticRecord(TypedDict):
    """A map-file diagnostic as the sync index stores it (compiler -> sync, cli)."""

    source: str
    line: int
    severity: str  # "error" | "warning"
    message: str
    text: str
    reason: str
