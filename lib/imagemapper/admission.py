"""Admission decisions: mutate Pods, validate ImageMaps and map-file ConfigMaps.

Both functions take the AdmissionRequest as a dict and return the response dict of
:mod:`imagemapper.protocol`. Neither touches shell-operator's files. The mutate side
is on the hot path, so the validate side imports its extra modules lazily.
"""

from __future__ import annotations

from imagemapper import podpatch, protocol, rules, snapshot
from imagemapper.settings import Settings

EPHEMERAL = "ephemeralcontainers"


class Rewrite:
    """One changed image, for the log line and the metrics."""

    __slots__ = ("decision", "field")

    def __init__(self, field: podpatch.ImageField, decision: rules.Decision):
        self.field = field
        self.decision = decision

    @property
    def source(self) -> str:
        """The layer that decided (``cluster-mapfile``, ...), for the metric label."""
        return self.decision.source


def failure(settings: Settings, problem: str) -> dict:
    """Apply the failure policy to a problem that keeps us from deciding."""
    if settings.failure_policy == "Ignore":
        return protocol.allow([(f"image-mapper: {problem}; the Pod was admitted unchanged "
                               "(IMAGE_MAPPER_FAILURE_POLICY=Ignore)")])
    return protocol.deny(f"image-mapper: {problem}. The Pod was refused because "
                         "IMAGE_MAPPER_FAILURE_POLICY=Fail; retry in a few seconds, check the "
                         "image-mapper Pods in the operator namespace, or see the break-glass "
                         "steps in docs/operations.md")


def _object_name(request: dict, obj: dict) -> str:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    return request.get("name") or meta.get("name") or meta.get("generateName") or "<unnamed>"


def mutate(request: dict, settings: Settings, rewrites: list[Rewrite] | None = None) -> dict:
    """Relocate the images of one Pod; ``rewrites`` collects what changed."""
    obj = request.get("object")
    if request.get("operation") not in ("CREATE", "UPDATE") or not isinstance(obj, dict):
        return protocol.allow()
    namespace = request.get("namespace") or ""
    try:
        ns_doc, cluster_doc = snapshot.load_for_namespace(settings.state_dir, namespace)
    except snapshot.SnapshotError as exc:
        return failure(settings, f"the mapping snapshot is not available ({exc})")
    ephemeral = request.get("subResource") == EPHEMERAL
    fields = podpatch.image_fields(obj.get("spec"), ("ephemeralContainers",) if ephemeral
                                   else ("containers", "initContainers", "ephemeralContainers"),
                                   volumes=not ephemeral)
    changes, warnings, seen = [], [], {}
    for field in fields:
        if not isinstance(field.image, str):
            warnings.append(f"{field.key}: image is not a string; left unchanged")
            continue
        decision = seen.get(field.image) or rules.decide(field.image, ns_doc, cluster_doc)
        seen[field.image] = decision
        if decision.error:
            warnings.append(f"{field.key}: image {field.image!r} is not a valid reference "
                            f"({decision.error}); left unchanged")
        elif decision.changed:
            changes.append((field, decision.new))
            if rewrites is not None:
                rewrites.append(Rewrite(field, decision))
    # The ephemeralcontainers subresource only accepts changes to ephemeral containers,
    # so no annotation there.
    ops = podpatch.build_patch(obj, changes, annotate=not ephemeral)
    return protocol.allow(warnings, ops)


# ----------------------------------------------------------------------------- validate

def validate(request: dict, settings: Settings) -> dict:
    """Refuse invalid or conflicting ImageMaps and map files at apply time."""
    obj = request.get("object")
    if request.get("operation") not in ("CREATE", "UPDATE") or not isinstance(obj, dict):
        return protocol.allow()
    kind = (request.get("kind") or {}).get("kind") or obj.get("kind")
    if kind == "ImageMap":
        return _validate_imagemap(request, obj, settings)
    if kind == "ConfigMap":
        return _validate_mapfile(obj)
    return protocol.allow()


def _validate_imagemap(request: dict, obj: dict, settings: Settings) -> dict:
    from imagemapper.imagemap import MapInput, check_candidate, validate_entries

    candidate = MapInput.from_object(obj)
    where = f'ImageMap "{candidate.namespace}/{candidate.name or _object_name(request, obj)}"'
    old = request.get("oldObject")
    if isinstance(old, dict) and old.get("spec") == obj.get("spec"):
        return protocol.allow()  # metadata-only update: never block it
    _, error = validate_entries(candidate)
    if error:
        return protocol.deny(f"{where} is invalid: {error}")
    try:
        doc = snapshot.load_namespace(settings.state_dir, candidate.namespace)
        snapshot.load_cluster(settings.state_dir)
    except snapshot.SnapshotError as exc:
        return protocol.allow([(f"image-mapper could not check {where} against other ImageMaps "
                               f"({exc}); the sync hook will report a conflict in its status")])
    others = [MapInput(candidate.namespace, name, spec.get("created", ""), 0, spec.get("items", []))
              for name, spec in ((doc or {}).get("accepted") or {}).items() if name != candidate.name]
    issue = check_candidate(candidate, others)
    if issue:
        return protocol.deny(f"{where} conflicts with accepted ImageMaps: {issue}")
    return protocol.allow()


def _validate_mapfile(obj: dict) -> dict:
    from imagemapper.compiler import MapFileInput
    from imagemapper.mapfile import parse

    cm = MapFileInput.from_object(obj)
    errors, warnings = [], []
    for source, text in cm.files():
        for diag in parse(text, source)[1]:
            (errors if diag.severity == "error" else warnings).append(str(diag))
    if errors:
        shown = "; ".join(errors[:5]) + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")
        return protocol.deny(f"map file has {len(errors)} invalid line"
                             f"{'s' if len(errors) != 1 else ''}: {shown}", warnings[:20])
    return protocol.allow(warnings[:20])
