"""``image-mapper check``: lint rule files before they are applied, and report every problem.

An error is something the cluster would refuse (unknown fields, a wrong apiVersion or
kind, an invalid entry or line, a conflict) or a file that would change nothing (no rules
at all). A warning is something it would accept but silently not do as written (registry
keys without ``default``, a repeated key, a rule that never wins, deprecated syntax, a
ConfigMap without the map-file label). Exit status: 0 when no file has an error, 1
otherwise; with --strict, warnings count as errors (for CI).
"""

from __future__ import annotations

import argparse
import difflib
import sys

from imagemapper import imagemap, inputs, kube, lint
from imagemapper.mapfile import MapFileInput
from imagemapper.settings import MAP_FILE_LABEL

TYPE_CHECKING = False
if TYPE_CHECKING:
    from imagemapper.mapfile import Diagnostic

KINDS = ("ImageMap", "ConfigMap")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    ck = sub.add_parser("check", help="lint map files, ImageMaps and map-file ConfigMaps",
                        description=" ".join(__doc__.split("\n\n")[:2]).replace("``", ""))
    ck.add_argument("files", nargs="+", metavar="FILE",
                    help="a raw map file, or YAML with ImageMaps and map-file ConfigMaps "
                         "(several documents, Lists, `kubectl get -o yaml` output); '-' for stdin")
    ck.add_argument("--cluster-map-file", action="append", default=[], metavar="FILE",
                    help="a cluster-wide map file in force (raw, or its ConfigMaps as YAML): warn "
                         "about the ImageMap entries and namespace map-file lines (ConfigMaps "
                         "outside image-mapper-system, raw files) that its targets keep from "
                         "firing (chains across layers)")
    ck.add_argument("--strict", action="store_true",
                    help="exit 1 when a file has warnings, too (each is something the cluster "
                         "would not do as written)")
    return ck


def check_file(path: str, cluster_targets: dict | None = None) -> tuple[list[str], list[str]]:
    """Lint one file; return (errors, warnings), each naming the place."""
    from imagemapper.cli import _read

    text = _read(path)
    if inputs.is_yaml_objects(path, text):
        return _check_objects(path, text, cluster_targets)
    cm = MapFileInput("", path, "", {"file": text}, label=path)
    return _split(lint.mapfile_diagnostics(cm) + _shadowed(cm, cluster_targets))


def _shadowed(cm: MapFileInput, cluster_targets: dict | None) -> list[Diagnostic]:
    """Lines of a namespace map file that the cluster targets keep from firing."""
    from imagemapper.cli import DEFAULT_OPERATOR_NAMESPACE

    if not cluster_targets or cm.namespace == DEFAULT_OPERATOR_NAMESPACE:
        return []
    from imagemapper.chains import mapfile_lines

    return mapfile_lines([cm], cluster_targets)


def _split(diags: list[Diagnostic]) -> tuple[list[str], list[str]]:
    """Map-file diagnostics as (errors, warnings); a file with no rules is an error here."""
    errors = [str(d) for d in diags if d.severity == "error" or d.message == lint.NO_RULES]
    warnings = [str(d) for d in diags if d.severity != "error" and d.message != lint.NO_RULES]
    return errors, warnings


def _check_objects(path: str, text: str, cluster_targets: dict | None = None) -> tuple[list[str], list[str]]:
    try:
        docs, duplicates = inputs.yaml_documents(path, text)
    except inputs.InputError as exc:
        return [str(exc)], []
    errors, warnings = list(duplicates), []
    if not docs:
        errors.append(f"{path}: no rules: the file holds no objects")
    maps: list[imagemap.MapInput] = []
    for doc in docs:
        if not isinstance(doc.obj, dict):
            errors.append(f"{doc.where}: a {type(doc.obj).__name__}, not an object with a kind")
        elif doc.kind == "ImageMap":
            bad, notes = lint.imagemap_problems(doc.obj)
            errors += [f"{doc.where} (ImageMap {doc.name()}): {e}" for e in bad]
            warnings += [f"{doc.where} (ImageMap {doc.name()}): {w}" for w in notes]
            if cluster_targets:
                from imagemapper.chains import cross_layer

                items = kube.resolve(doc.obj, "spec", "map")
                warnings += [f"{doc.where} (ImageMap {doc.name()}): {w}"
                             for w in cross_layer(items if isinstance(items, list) else [], cluster_targets)]
            if not bad:
                maps.append(_as_input(doc, len(maps)))
        elif doc.kind == "ConfigMap":
            if not inputs.is_map_file(doc.obj):
                warnings.append(f"{doc.where} (ConfigMap {doc.name()}): no label "
                                f"{MAP_FILE_LABEL}: \"true\", so image-mapper ignores it")
                continue
            bad, diags = lint.configmap_problems(doc.obj)
            errors += [f"{doc.where} (ConfigMap {doc.name()}): {e}" for e in bad]
            more_errors, more_warnings = _split(diags + _shadowed(MapFileInput.from_object(doc.obj),
                                                                  cluster_targets))
            errors += [f"{path}: {e}" for e in more_errors]
            warnings += [f"{path}: {w}" for w in more_warnings]
        else:
            errors.append(f"{doc.where}: {_kind_problem(doc.kind)}")
    errors += _conflicts(path, maps)
    return errors, warnings


def _kind_problem(kind: str) -> str:
    if not kind:
        return "no kind: expected ImageMap or ConfigMap"
    close = difflib.get_close_matches(kind, KINDS, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"kind {kind!r} is neither ImageMap nor ConfigMap{hint}"


def _as_input(doc: inputs.Document, position: int) -> imagemap.MapInput:
    imap = imagemap.MapInput.from_object(doc.obj)
    imap.namespace = imap.namespace or "(no namespace)"
    imap.name = imap.name or doc.where
    imap.created = imap.created or f"{position:08d}"
    return imap


def _conflicts(path: str, maps: list[imagemap.MapInput]) -> list[str]:
    """Conflicts and chains between the file's ImageMaps, per namespace, oldest first."""
    by_ns: dict[str, list[imagemap.MapInput]] = {}
    for imap in maps:
        by_ns.setdefault(imap.namespace, []).append(imap)
    out = []
    for namespace, group in sorted(by_ns.items()):
        for name, verdict in sorted(imagemap.resolve_namespace(group).items()):
            if not verdict.ready:
                out.append(f'{path}: ImageMap "{namespace}/{name}" ({verdict.reason}): {verdict.message}')
    return out


def _cluster_targets(paths: list[str]) -> dict | None:
    """The targets of the given cluster-wide map files, as the sync hook compiles them."""
    if not paths:
        return None
    from imagemapper import compiler
    from imagemapper.cli import DEFAULT_OPERATOR_NAMESPACE, UsageError, _read

    found = inputs.RuleSet()  # raw map files, or ConfigMaps as `kubectl get -o yaml` gives them
    try:
        for path in paths:
            found.add_file(path, _read(path), DEFAULT_OPERATOR_NAMESPACE, raw_ok=True)
    except inputs.InputError as exc:
        raise UsageError(f"--cluster-map-file {exc}") from None
    files = [cm for cm in found.mapfiles if cm.namespace == DEFAULT_OPERATOR_NAMESPACE]
    return compiler.compile_cluster(files)[0]["targets"]


def run(paths: list[str], strict: bool = False, cluster_map_files: list[str] | None = None) -> int:
    from imagemapper.cli import plural

    failed = False
    targets = _cluster_targets(cluster_map_files or [])
    for path in paths:
        errors, warnings = check_file(path, None if path in (cluster_map_files or []) else targets)
        for line in warnings:
            print(f"warning: {line}", file=sys.stderr)
        for line in errors:
            print(f"error: {line}", file=sys.stderr)
        failed = failed or bool(errors) or (strict and bool(warnings))
        verdict = "FAILED" if errors else "WARNINGS" if warnings else "ok"
        print(f"{path}: {verdict} "
              f"({plural(len(errors), 'error')}, {plural(len(warnings), 'warning')})")
    return 1 if failed else 0
