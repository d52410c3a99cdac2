"""Compile one namespace's (or the cluster's) ImageMaps and map files into snapshot documents.

Pure functions: inputs in, documents, verdicts and diagnostics out; nothing is read or
written. :mod:`imagemapper.builder` decides what to compile and writes the files, and
the CLI compiles files the same way.
"""

from __future__ import annotations

from imagemapper import imagemap, mapfile
from imagemapper.imagemap import MapInput
from imagemapper.mapfile import MapFileInput
from imagemapper.rules import merge_targets

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from imagemapper.imagemap import Verdict
    from imagemapper.mapfile import Diagnostic
    from imagemapper.shapes import (
        ClusterDoc,
        DiagnosticRecord,
        ImageMapLayer,
        MapFileLayer,
        NamespaceDoc,
        VerdictRecord,
    )

    Diagnostics = dict[tuple[str, str], list[DiagnosticRecord]]  # (namespace, ConfigMap) -> records
    Observer = Callable[[str, dict[str, Verdict]], None]
    ClusterCompiled = tuple[ClusterDoc, Diagnostics, int]  # what compile_cluster returns


def _files_of(configmaps: list[MapFileInput]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for cm in sorted(configmaps, key=lambda c: c.name):
        out.extend(cm.files())
    return out


def layer_size(layer: ImageMapLayer | MapFileLayer | None) -> int:
    """Number of rules in a compiled layer (ImageMap or map-file tables)."""
    if not layer:
        return 0
    found: dict[str, Any] = dict(layer)  # the top level only: a few keys
    get = found.get
    return (len(get("exact") or ()) + len(get("repo") or ()) + len(get("prefix") or ())
            + len(get("replace") or ()) + len(get("keys") or ())
            + ("default" in found) + ("noswap" in found))


def diag_dict(diag: Diagnostic) -> DiagnosticRecord:
    return {"source": diag.source, "line": diag.line, "severity": diag.severity,
            "message": diag.message, "text": str(diag), "reason": diag.reason}


def _split_diagnostics(diags: list[Diagnostic], configmaps: list[MapFileInput]) -> Diagnostics:
    out: Diagnostics = {}
    for cm in configmaps:
        prefix = cm.prefix()
        out[(cm.namespace, cm.name)] = [
            diag_dict(d) for d in diags
            if d.source == cm.label or (not cm.label and d.source.startswith(prefix))]
    return out


def compile_namespace(namespace: str, maps: list[MapInput], configmaps: list[MapFileInput],
                      observe: Observer | None = None,
                      ) -> tuple[NamespaceDoc | None, dict[str, VerdictRecord], Diagnostics, int]:
    """Compile one namespace: (doc or None, verdicts, diagnostics per ConfigMap, rule count).

    ``observe(namespace, verdicts)`` sees the verdicts with their parsed entries, so that a
    caller with more to check on them (the sync hook's chain notes) does not parse again.
    """
    verdicts = imagemap.resolve_namespace(maps)
    if observe is not None:
        observe(namespace, verdicts)
    im_layer, im_targets = imagemap.compile_accepted(verdicts)
    mf_layer, mf_targets, diags = mapfile.compile_files(_files_of(configmaps))
    accepted = {m.name: {"created": m.created, "items": m.items}
                for m in maps if verdicts[m.name].ready}
    doc: NamespaceDoc | None = None
    if im_layer or mf_layer:
        # "accepted" is for the validating hook: the builder moves it to a file of its own.
        doc = {"imagemaps": im_layer, "mapfiles": mf_layer,
               "targets": merge_targets(im_targets, mf_targets), "accepted": accepted}
    flat: dict[str, VerdictRecord] = {name: {"reason": v.reason, "message": v.message, "rules": v.rules}
                                      for name, v in verdicts.items()}
    return doc, flat, _split_diagnostics(diags, configmaps), layer_size(im_layer) + layer_size(mf_layer)


def compile_cluster(configmaps: list[MapFileInput]) -> ClusterCompiled:
    """Compile the cluster-wide map files: (doc, diagnostics, rule count)."""
    layer, targets, diags = mapfile.compile_files(_files_of(configmaps))
    doc: ClusterDoc = {"mapfiles": layer, "targets": merge_targets(targets)}
    return doc, _split_diagnostics(diags, configmaps), layer_size(layer)


def group_by_namespace(maps: list[MapInput], configmaps: list[MapFileInput], map_namespace: str,
                       ) -> tuple[dict[str, tuple[list[MapInput], list[MapFileInput]]], list[MapFileInput]]:
    """Split inputs into per-namespace groups and the cluster-wide map files."""
    groups: dict[str, tuple[list[MapInput], list[MapFileInput]]] = {}
    cluster: list[MapFileInput] = []
    for imap in maps:
        groups.setdefault(imap.namespace, ([], []))[0].append(imap)
    for cm in configmaps:
        if cm.namespace == map_namespace:
            cluster.append(cm)
        else:
            groups.setdefault(cm.namespace, ([], []))[1].append(cm)
    return groups, cluster


