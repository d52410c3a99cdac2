"""Every problem of one ImageMap or map-file ConfigMap, as ``check`` and the webhook see it.

``check`` must say what the cluster would reject (unknown fields under the API server's
strict field validation, a wrong apiVersion, an invalid entry) and what it would
silently ignore (registry keys without ``default``, repeated keys, rules that never
win). The validating webhook returns the same warnings at ``kubectl apply``, cut to
the API server's limits on warnings.
"""

from __future__ import annotations

from imagemapper import imagemap, mapfile
from imagemapper.mapfile import MapFileInput
from imagemapper.settings import MAP_FILE_LABEL

IMAGEMAP_API_VERSION = "imagemapper.io/v1alpha1"

# metav1.ObjectMeta: the API server's strict decoding knows these and nothing else.
OBJECT_META = dict.fromkeys((
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
    "annotations", "ownerReferences", "finalizers", "managedFields"))

# The fields of the ImageMap CRD's schema (deploy/base/crd.yaml; a test keeps them equal).
# A dict is an object with these properties, [dict] an array of such objects, None a leaf.
IMAGEMAP_FIELDS = {
    "apiVersion": None, "kind": None, "metadata": OBJECT_META,
    "spec": {"map": [{"from": None, "to": None}]},
    "status": {"observedGeneration": None, "rules": None, "conditions": [dict.fromkeys((
        "type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"))]},
}
CONFIGMAP_FIELDS = {"apiVersion": None, "kind": None, "metadata": OBJECT_META, "data": None,
                    "binaryData": None, "immutable": None}

# The API server keeps at most 4096 characters of warnings per request, each warning cut
# to 256 once over that (k8s.io/apiserver pkg/endpoints/filters/warning.go), and drops a
# warning that holds a control character.
NO_RULES = "no rules: every line is empty or a comment, so this map file changes nothing"

WARNING_TOTAL = 4096
WARNING_EACH = 256


def unknown_fields(obj: object, schema: object, path: str = "") -> list[str]:
    """Paths in ``obj`` that ``schema`` does not declare, worded like strict decoding."""
    import difflib

    out: list[str] = []
    if isinstance(schema, list) and isinstance(obj, list):
        for index, item in enumerate(obj):
            out += unknown_fields(item, schema[0], f"{path}[{index}]")
    elif isinstance(schema, dict) and isinstance(obj, dict):
        for key, value in obj.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in schema:
                close = difflib.get_close_matches(str(key), list(schema), n=1)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
                out.append(f'unknown field "{where}"{hint}: the API server rejects it under '
                           "strict field validation, or drops it silently without")
            else:
                out += unknown_fields(value, schema[key], where)
    return out


def imagemap_problems(obj: dict) -> tuple[list[str], list[str]]:
    """(errors, warnings) of one ImageMap object; errors are what makes it Invalid or refused."""
    errors = []
    if obj.get("apiVersion") != IMAGEMAP_API_VERSION:
        errors.append(f"apiVersion {obj.get('apiVersion')!r} is not {IMAGEMAP_API_VERSION!r}: "
                      "the API server serves ImageMap only in that version")
    errors += unknown_fields(obj, IMAGEMAP_FIELDS)
    entries, entry_errors = imagemap.parse_entries(imagemap.MapInput.from_object(obj))
    errors += entry_errors
    warnings = [] if entry_errors else imagemap.repeated_entries(entries)
    return errors, warnings


def configmap_problems(obj: dict) -> tuple[list[str], list[mapfile.Diagnostic]]:
    """(object-level errors, diagnostics of its map files) of one map-file ConfigMap."""
    errors = unknown_fields(obj, CONFIGMAP_FIELDS)
    if obj.get("apiVersion") != "v1":
        errors.append(f"apiVersion {obj.get('apiVersion')!r} is not 'v1'")
    data = obj.get("data")
    if data is not None and not isinstance(data, dict):
        errors.append("data must be a mapping of key: map-file text")
    for key, value in (data if isinstance(data, dict) else {}).items():
        if not isinstance(value, str):
            errors.append(f"data.{key} is a {type(value).__name__}, not a string: the API server "
                          "refuses it (write the map file as a block, `{key}: |`)")
    cm = MapFileInput.from_object(obj)
    return errors, mapfile_diagnostics(cm)


def mapfile_diagnostics(cm: MapFileInput) -> list[mapfile.Diagnostic]:
    """The diagnostics the sync hook finds in this ConfigMap's keys, read as one file."""
    files = cm.files()
    layer, _, diags = mapfile.compile_files(files)
    if layer is None and not any(d.severity == "error" for d in diags):
        source = files[0][0] if files else cm.prefix() + "(none)"
        diags.append(mapfile.Diagnostic(source, 1, "warning", NO_RULES, mapfile.INACTIVE_RULES))
    return diags


def has_map_file_label(obj: dict) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return isinstance(labels, dict) and labels.get(MAP_FILE_LABEL) == "true"


def first_of(problems: list[str], shown: int = 5) -> str:
    """The first ``shown`` problems joined with "; ", and how many more there are: one
    line for a denial or an Event, which must stay short."""
    more = f"; and {len(problems) - shown} more" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more


def fit_warnings(warnings: list[str]) -> list[str]:
    """Warnings the API server passes on whole: no control characters, no repeats, at most
    256 characters each and 4096 in all; a last line counts what had to be left out."""
    out: list[str] = []
    total = 0
    reserve = 120
    unique = list(dict.fromkeys("".join(ch for ch in " ".join(w.split()) if ch.isprintable())
                                for w in warnings))
    for position, text in enumerate(unique):
        if len(text) > WARNING_EACH:
            text = text[:WARNING_EACH - 3] + "..."
        if total + len(text) > WARNING_TOTAL - reserve:
            left = len(unique) - position
            out.append(f"and {left} more warning{'s' if left != 1 else ''}: run "
                       "`image-mapper check` on the file, or see this object's Events")
            break
        out.append(text)
        total += len(text)
    return out
