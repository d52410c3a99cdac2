"""Admission decisions: mutate Pods, validate ImageMaps and map-file ConfigMaps.

Both functions take the AdmissionRequest as a dict and return the response dict of
:mod:`imagemapper.protocol`. Neither touches shell-operator's files. The mutate side
is on the hot path, so the validate side imports its extra modules lazily.
"""

from __future__ import annotations

from imagemapper import kube, podpatch, protocol, rules, snapshot
from imagemapper.settings import Settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from imagemapper.mapfile import MapFileInput
    from imagemapper.shapes import AdmissionResponse, ClusterDoc, NamespaceDoc, Payload

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


def failure(settings: Settings, problem: str) -> AdmissionResponse:
    """Apply the failure policy to a problem that keeps us from deciding."""
    if settings.failure_policy == "Ignore":
        return protocol.allow([(f"image-mapper: {problem}; the Pod was admitted unchanged "
                               "(IMAGE_MAPPER_FAILURE_POLICY=Ignore)")])
    return protocol.deny(f"image-mapper: {problem}. The Pod was refused because "
                         "IMAGE_MAPPER_FAILURE_POLICY=Fail; retry in a few seconds, check the "
                         "image-mapper Pods in the operator namespace, or see the break-glass "
                         "steps in docs/operations.md")


def mutate(request: Payload, settings: Settings, rewrites: list[Rewrite] | None = None) -> AdmissionResponse:
    """Relocate the images of one Pod; ``rewrites`` collects what changed."""
    obj = request.get("object")
    if request.get("operation") not in ("CREATE", "UPDATE") or not isinstance(obj, dict):
        return protocol.allow()
    namespace = request.get("namespace") or ""
    try:
        return _mutate(request, obj, snapshot.load_for_namespace(settings.state_dir, namespace), rewrites)
    except snapshot.SnapshotError as exc:  # a lookup reads its table when it needs it
        return failure(settings, f"the mapping snapshot is not available ({exc})")


def _mutate(request: Payload, obj: Payload, docs: tuple[NamespaceDoc | None, ClusterDoc],
            rewrites: list[Rewrite] | None) -> AdmissionResponse:
    ns_doc, cluster_doc = docs
    ephemeral = request.get("subResource") == EPHEMERAL
    fields = podpatch.image_fields(obj.get("spec"), ("ephemeralContainers",) if ephemeral
                                   else ("containers", "initContainers", "ephemeralContainers"),
                                   volumes=not ephemeral)
    unchanged = _old_images(request) if request.get("operation") == "UPDATE" else {}
    changes: list[tuple[podpatch.ImageField, str]] = []
    warnings: list[str] = []
    seen: dict[str, rules.Decision] = {}
    for field in fields:
        if field.key in unchanged and unchanged[field.key] == field.image:
            continue  # this UPDATE did not touch the image: rules apply as images enter the API
        if not isinstance(field.image, str):
            warnings.append(f"{field.key}: image is not a string; left unchanged")
            continue
        decision = seen.get(field.image) or rules.decide(field.image, ns_doc, cluster_doc)
        seen[field.image] = decision
        if decision.error:
            warnings.append(f"{field.key}: image {field.image!r} is not a valid reference "
                            f"({decision.error}); left unchanged")
        elif decision.warning:
            warnings.append(f"{field.key}: {decision.warning}")
        elif decision.changed and decision.new is not None:
            changes.append((field, decision.new))
            if rewrites is not None:
                rewrites.append(Rewrite(field, decision))
    # The ephemeralcontainers subresource only accepts changes to ephemeral containers,
    # so no annotation there.
    ops = podpatch.build_patch(obj, changes, annotate=not ephemeral)
    return protocol.allow(warnings, ops)


def _old_images(request: Payload) -> dict[str, object]:
    """Image of each field in ``oldObject``, by annotation key ({} when there is none).

    On UPDATE only images that differ from the stored Pod are decided: a label change
    must never swap the image of a running container (the kubelet would restart it).
    """
    old = request.get("oldObject")
    if not isinstance(old, dict):
        return {}
    return {field.key: field.image for field in podpatch.image_fields(old.get("spec"))}


# ----------------------------------------------------------------------------- validate

def validate(request: Payload, settings: Settings) -> AdmissionResponse:
    """Refuse invalid or conflicting ImageMaps and map files at apply time."""
    obj = request.get("object")
    if request.get("operation") not in ("CREATE", "UPDATE") or not isinstance(obj, dict):
        return protocol.allow()
    kind = kube.text(request, "kind", "kind") or kube.text(obj, "kind")
    if kind == "ImageMap":
        return _validate_imagemap(request, obj, settings)
    if kind == "ConfigMap":
        return _validate_mapfile(request, obj, settings)
    return protocol.allow()


def _validate_imagemap(request: Payload, obj: Payload, settings: Settings) -> AdmissionResponse:
    from imagemapper.imagemap import MapInput, check_candidate, validate_entries

    candidate = MapInput.from_object(obj)
    name = candidate.name or kube.object_name(request, obj) or "<unnamed>"
    where = f'ImageMap "{candidate.namespace}/{name}"'
    old = request.get("oldObject")
    if isinstance(old, dict) and old.get("spec") == obj.get("spec"):
        return protocol.allow()  # metadata-only update: never block it
    _, error = validate_entries(candidate)
    if error:
        return protocol.deny(f"{where} is invalid: {error}")
    if settings.allowed_targets:
        from imagemapper.allowlist import imagemap_violations

        outside = imagemap_violations(candidate.items, settings.allowed_targets)
        if outside:
            return protocol.deny(f"{where} is invalid: {'; '.join(outside)}")
    try:
        snapshot.open_snapshot(settings.state_dir).close()  # no snapshot yet: cannot judge
        accepted = snapshot.load_accepted(settings.state_dir, candidate.namespace)
        cluster_targets = _cluster_targets(settings)
    except snapshot.SnapshotError as exc:
        return protocol.allow([(f"image-mapper could not check {where} against other ImageMaps "
                               f"({exc}); the sync hook will report a conflict in its status")])
    others = [MapInput(candidate.namespace, name, spec.get("created", ""), 0, spec.get("items", []))
              for name, spec in accepted.items() if name != candidate.name and isinstance(spec, dict)]
    problem = check_candidate(candidate, others)
    if problem:
        return protocol.deny(f"{where} conflicts with accepted ImageMaps: {problem}")
    from imagemapper.chains import cross_layer

    return protocol.allow(_imagemap_warnings(obj, where)
                          + [f"{where}: {w}" for w in cross_layer(candidate.items, cluster_targets)])


def _cluster_targets(settings: Settings) -> dict | None:
    """The cluster map files' targets in force, read whole (for imagemapper.chains)."""
    found: dict | None = snapshot.materialize((snapshot.load_cluster(settings.state_dir) or {}).get("targets"))
    return found


def _shadowed_lines(cm: MapFileInput, settings: Settings) -> list[str]:
    """Lines of a namespace map file that a cluster target keeps from firing (a chain
    across layers); nothing when there is no snapshot to judge by yet."""
    if cm.namespace == settings.map_namespace:
        return []
    from imagemapper.chains import mapfile_lines

    try:
        targets = _cluster_targets(settings)
    except snapshot.SnapshotError:
        return []
    return [str(d) for d in mapfile_lines([cm], targets)]


def _imagemap_warnings(obj: Payload, where: str) -> list[str]:
    """What `image-mapper check` would warn about, within the API server's limits."""
    from imagemapper import lint

    return lint.fit_warnings([f"{where}: {w}" for w in lint.imagemap_problems(obj)[1]])


def _error_lines(text: str) -> set:
    """The text of every line of a map file that is an error (to tell old from new)."""
    from imagemapper.mapfile import parse_lines

    lines = text.splitlines()
    return {lines[d.line - 1] for d in parse_lines(text, "")[1]
            if d.severity == "error" and 0 < d.line <= len(lines)}


def _validate_mapfile(request: Payload, obj: Payload, settings: Settings) -> AdmissionResponse:
    """Deny only what the request makes worse: error lines it adds to a map file.

    Removing the label, metadata changes (annotations, finalizers) and keys left as
    they were are never denied, so a ConfigMap that got in with bad lines (while
    validation was down) can still be fixed, unlabeled or deleted.
    """
    from imagemapper.inputs import is_map_file
    from imagemapper.mapfile import MapFileInput, parse_lines

    if not is_map_file(obj):
        return protocol.allow()
    cm = MapFileInput.from_object(obj)
    old = request.get("oldObject")
    if settings.namespace_map_files == "disabled" and cm.namespace != settings.map_namespace:
        return _not_counted(cm, old, "namespace map files are turned off (IMAGE_MAPPER_NAMESPACE_MAP_FILES="
                            "disabled); put rules in an ImageMap, or ask a cluster admin for a map file "
                            f"in {settings.map_namespace}")
    old_data = MapFileInput.from_object(old).data if is_map_file(old) else {}
    if settings.allowed_targets and cm.namespace != settings.map_namespace and cm.data != old_data:
        from imagemapper.allowlist import mapfile_violations
        from imagemapper.mapfile import compile_files

        outside = mapfile_violations(compile_files(cm.files())[1], settings.allowed_targets)
        if outside:
            return protocol.deny(f"ConfigMap {cm.namespace}/{cm.name}: {'; '.join(outside[:5])}")
    errors, warnings = [], []
    for (source, text), key in zip(cm.files(), sorted(cm.data)):
        before = _error_lines(old_data[key]) if key in old_data else set()
        lines = text.splitlines()
        for diag in parse_lines(text, source)[1]:
            line = lines[diag.line - 1] if 0 < diag.line <= len(lines) else None
            if diag.severity == "error" and line not in before:
                errors.append(str(diag))
            elif diag.severity == "error":
                warnings.append(f"{diag} (already there; not changed by this request)")
            else:
                warnings.append(str(diag))
    warnings += _compile_warnings(cm) + _shadowed_lines(cm, settings)
    from imagemapper.lint import first_of, fit_warnings

    if errors:
        return protocol.deny(f"map file has {len(errors)} invalid line"
                             f"{'s' if len(errors) != 1 else ''}: {first_of(errors)}", fit_warnings(warnings))
    return protocol.allow(fit_warnings(warnings))


def _not_counted(cm: MapFileInput, old: object, why: str) -> AdmissionResponse:
    """Refuse a new map file whose namespace's map files do not count; one that was a map
    file before (the setting or the label came later) can still be edited and removed."""
    from imagemapper.inputs import is_map_file

    where = f"ConfigMap {cm.namespace}/{cm.name}"
    if is_map_file(old):
        return protocol.allow([f"{where} is ignored: {why}"])
    return protocol.deny(f"{where}: {why}")


def validate_unlabeled_mapfile(request: Payload, settings: Settings) -> AdmissionResponse:
    """IMAGE_MAPPER_NAMESPACE_MAP_FILES=opt-in: the API server sends here only map files in
    namespaces without the label (hookconfig.VALIDATE_UNLABELED's namespaceSelector)."""
    from imagemapper.inputs import is_map_file
    from imagemapper.mapfile import MapFileInput
    from imagemapper.settings import MAP_FILES_ENABLED, MAP_FILES_LABEL

    obj = request.get("object")
    if request.get("operation") not in ("CREATE", "UPDATE") or not is_map_file(obj) \
            or settings.namespace_map_files != "opt-in":
        return protocol.allow()
    cm = MapFileInput.from_object(obj)
    if cm.namespace == settings.map_namespace:
        return protocol.allow()
    return _not_counted(cm, request.get("oldObject"), (
        f"namespace {cm.namespace} is not labeled {MAP_FILES_LABEL}={MAP_FILES_ENABLED}, so its "
        "map files do not count (IMAGE_MAPPER_NAMESPACE_MAP_FILES=opt-in); put rules in an "
        "ImageMap, or ask a cluster admin to label the namespace"))


def _compile_warnings(cm: MapFileInput) -> list[str]:
    """Warnings only the whole ConfigMap shows: no default, repeated keys, shadowed rules."""
    from imagemapper import lint, mapfile

    return [str(d) for d in lint.mapfile_diagnostics(cm)
            if d.severity != "error" and d.reason != mapfile.DEPRECATED_SYNTAX]
