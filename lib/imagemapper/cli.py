"""``python3 -m imagemapper``: preview rewrites and lint rules, with no cluster needed.

    rewrite [--map-file F]... [--ns-map-file F]... [--imagemap F]... [-n NS] [--explain] IMAGE...
    rewrite [same options] -f MANIFESTS.yaml
    check FILE...
    snapshot-dump DIR [NAMESPACE]
    plan [rule options] [-f MANIFESTS]... [--from-cluster] [IMAGE...] [--format F] [--check]

``--map-file`` files are cluster-wide map files. ``--ns-map-file`` files belong to
namespace NS. ``--imagemap`` files hold ImageMaps: several YAML documents or a List,
and an ImageMap without a namespace takes NS. The rules are compiled exactly as the
sync hook compiles them and applied exactly as the mutating hook applies them.
"""

from __future__ import annotations

import argparse
import sys

from imagemapper import compiler, kube, plancmd, podpatch, rules
from imagemapper.imagemap import MapInput

# kind -> (pointer of the Pod spec, pointer of the object whose metadata is annotated)
POD_SPECS = {
    "Pod": ("/spec", ""),
    "Deployment": ("/spec/template/spec", "/spec/template"),
    "StatefulSet": ("/spec/template/spec", "/spec/template"),
    "DaemonSet": ("/spec/template/spec", "/spec/template"),
    "ReplicaSet": ("/spec/template/spec", "/spec/template"),
    "ReplicationController": ("/spec/template/spec", "/spec/template"),
    "Job": ("/spec/template/spec", "/spec/template"),
    "PodTemplate": ("/template/spec", "/template"),
    "CronJob": ("/spec/jobTemplate/spec/template/spec", "/spec/jobTemplate/spec/template"),
}


class UsageError(Exception):
    """A file that cannot be read or understood; reported on stderr, exit 2."""


def _read(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None


def _yaml_docs(path: str, text: str) -> list:
    import yaml

    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {exc}") from None
    out = []
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind", "").endswith("List") and isinstance(doc.get("items"), list):
            out.extend(doc["items"])
        else:
            out.append(doc)
    return out


def load_imagemaps(paths: list[str], namespace: str) -> list[MapInput]:
    """ImageMaps from files; a map without a namespace takes ``namespace``."""
    maps = []
    for path in paths:
        for position, doc in enumerate(_yaml_docs(path, _read(path))):
            if not isinstance(doc, dict) or doc.get("kind") != "ImageMap":
                raise UsageError(f"{path}: document {position + 1} is not an ImageMap")
            maps.append(_file_imagemap(doc, position, namespace, f"{path}#{position + 1}"))
    return maps


def _file_imagemap(doc: dict, position: int, namespace: str, name: str) -> MapInput:
    """An ImageMap read from a file; missing metadata gets defaults.

    Maps without a creationTimestamp are ordered by their position in the file, so the
    first of two conflicting new maps wins, as the older one would in a cluster.
    """
    imap = MapInput.from_object(doc)
    imap.namespace = imap.namespace or namespace
    imap.name = imap.name or name
    imap.created = imap.created or f"{position:08d}"
    return imap


def _map_files(paths: list[str], namespace: str) -> list[compiler.MapFileInput]:
    return [compiler.MapFileInput(namespace, path, "", {"file": _read(path)}, label=path)
            for path in paths]


class Rules:
    """Compiled rules per namespace, as the sync hook would compile them."""

    def __init__(self, args: argparse.Namespace):
        self.namespace = args.namespace
        self.maps = load_imagemaps(args.imagemap, args.namespace)
        self.ns_files = [(args.namespace, path) for path in args.ns_map_file]
        self.cluster_doc, cluster_diags, _ = compiler.compile_cluster(
            _map_files(args.map_file, "(cluster)"))
        self.problems = [f"{d['severity']}: {d['text']}" for diags in cluster_diags.values() for d in diags]
        self._docs: dict[str, dict | None] = {}

    def namespace_doc(self, namespace: str) -> dict | None:
        if namespace not in self._docs:
            maps = [m for m in self.maps if m.namespace == namespace]
            files = _map_files([p for ns, p in self.ns_files if ns == namespace], namespace)
            doc, verdicts, diags, _ = compiler.compile_namespace(namespace, maps, files)
            self._docs[namespace] = doc
            self.problems += [f'ImageMap "{namespace}/{name}" rejected ({v[0]}): {v[1]}'
                              for name, v in sorted(verdicts.items()) if v[0] != "Accepted"]
            self.problems += [f"{d['severity']}: {d['text']}" for ds in diags.values() for d in ds]
        return self._docs[namespace]

    def decide(self, image: str, namespace: str | None = None) -> rules.Decision:
        return rules.decide(image, self.namespace_doc(namespace or self.namespace), self.cluster_doc)

    def report(self) -> None:
        """Print rejected ImageMaps, bad map-file lines, and maps that applied nowhere."""
        unused = sorted({m.namespace for m in self.maps} - set(self._docs))
        for line in self.problems:
            print(line, file=sys.stderr)
        if unused:
            print(f"note: no image was looked up in namespace(s) {', '.join(unused)}, so their "
                  "ImageMaps did not apply (use -n or set metadata.namespace)", file=sys.stderr)


def _rewrite_images(rules_: Rules, images: list[str], explain: bool) -> None:
    for image in images:
        decision = rules_.decide(image)
        result = decision.new if decision.changed else image
        if decision.error:
            print(f"warning: {decision.error}; left unchanged", file=sys.stderr)
        print(f"{result}\t# {decision.rule}" if explain else result)


def rewrite_object(obj: object, rules_: Rules, explain: bool) -> None:
    """Rewrite one manifest object in place (Pods and every Pod-template kind)."""
    if not isinstance(obj, dict) or obj.get("kind") not in POD_SPECS:
        return
    import jsonpatch

    spec_pointer, owner_pointer = POD_SPECS[obj["kind"]]
    spec = podpatch.at_pointer(obj, spec_pointer)
    name = f"{obj['kind']}/{kube.text(obj, 'metadata', 'name') or '?'}"
    namespace = kube.text(obj, "metadata", "namespace") or rules_.namespace
    changes = []
    for field in podpatch.image_fields(spec):
        if not isinstance(field.image, str):
            continue
        decision = rules_.decide(field.image, namespace)
        if decision.error:
            print(f"warning: {name} {field.key}: {decision.error}; left unchanged", file=sys.stderr)
        if explain:
            print(f"# {name} {field.key}: {field.image} -> "
                  f"{decision.new if decision.changed else '(unchanged)'}  [{decision.rule}]",
                  file=sys.stderr)
        if decision.changed:
            changes.append((field, decision.new))
    ops = podpatch.build_patch(obj, changes, spec_pointer, owner_pointer)
    if ops:
        obj.update(jsonpatch.apply_patch(obj, ops))


def _rewrite_manifests(args: argparse.Namespace, rules_: Rules) -> None:
    import yaml

    path = args.filename
    docs = [d for d in yaml.safe_load_all(_read(path)) if d is not None] if path else []
    for doc in docs:
        items = doc.get("items") if isinstance(doc, dict) and doc.get("kind", "").endswith("List") else None
        for obj in items if isinstance(items, list) else [doc]:
            rewrite_object(obj, rules_, args.explain)
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))


# ----------------------------------------------------------------------------- check

def check_file(path: str) -> tuple[list[str], list[str]]:
    """Lint one file (ImageMaps or a map file); return (errors, warnings)."""
    from imagemapper import mapfile

    text = _read(path)
    docs = None
    try:
        docs = _yaml_docs(path, text)
    except UsageError:
        pass
    if docs and all(isinstance(d, dict) and "kind" in d for d in docs):
        return _check_objects(path, docs)
    _, diags = mapfile.parse(text, path)
    return ([str(d) for d in diags if d.severity == "error"],
            [str(d) for d in diags if d.severity != "error"])


def _check_objects(path: str, docs: list[dict]) -> tuple[list[str], list[str]]:
    from imagemapper import imagemap, mapfile

    errors, warnings = [], []
    maps = []
    for position, doc in enumerate(docs):
        if doc.get("kind") == "ImageMap":
            maps.append(_file_imagemap(doc, position, "default", f"document {position + 1}"))
        elif doc.get("kind") == "ConfigMap":
            cm = compiler.MapFileInput.from_object(doc)
            for source, text in cm.files():
                for diag in mapfile.parse(text, f"{path}: {source}")[1]:
                    (errors if diag.severity == "error" else warnings).append(str(diag))
    by_ns: dict[str, list[MapInput]] = {}
    for imap in maps:
        by_ns.setdefault(imap.namespace, []).append(imap)
    for namespace, group in sorted(by_ns.items()):
        for name, verdict in sorted(imagemap.resolve_namespace(group).items()):
            if not verdict.ready:
                errors.append(f'{path}: ImageMap "{namespace}/{name}" ({verdict.reason}): {verdict.message}')
    return errors, warnings


def _check(paths: list[str]) -> int:
    failed = False
    for path in paths:
        errors, warnings = check_file(path)
        for line in warnings:
            print(f"warning: {line}", file=sys.stderr)
        for line in errors:
            print(f"error: {line}", file=sys.stderr)
        failed = failed or bool(errors)
        print(f"{path}: {'FAILED' if errors else 'ok'} ({len(errors)} errors, {len(warnings)} warnings)")
    return 1 if failed else 0


# ----------------------------------------------------------------------------- main

def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="image-mapper", description=__doc__.split("\n\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    rw = sub.add_parser("rewrite", help="print what images become")
    rw.add_argument("--map-file", action="append", default=[], metavar="F",
                    help="cluster-wide map file (imageswap grammar); repeatable, read in order")
    rw.add_argument("--ns-map-file", action="append", default=[], metavar="F",
                    help="map file of namespace NS; repeatable")
    rw.add_argument("--imagemap", action="append", default=[], metavar="F",
                    help="YAML file of ImageMaps (several documents or a List); repeatable")
    rw.add_argument("-n", "--namespace", default="default", help="the Pod's namespace (default: default)")
    rw.add_argument("--explain", action="store_true", help="show the rule that decided")
    rw.add_argument("-f", "--filename", metavar="MANIFESTS",
                    help="rewrite Pods and Pod templates in a manifest stream ('-' for stdin)")
    rw.add_argument("images", nargs="*", metavar="IMAGE")
    plancmd.add_parser(sub, rw)
    ck = sub.add_parser("check", help="lint map files and ImageMaps")
    ck.add_argument("files", nargs="+", metavar="FILE")
    dump = sub.add_parser("snapshot-dump", help="print a compiled snapshot document as JSON")
    dump.add_argument("state_dir", metavar="DIR", help="IMAGE_MAPPER_STATE_DIR")
    dump.add_argument("namespace", nargs="?", help="a namespace (default: the cluster document)")
    return top


def _dump(state_dir: str, namespace: str | None) -> int:
    import json

    from imagemapper import snapshot

    try:
        doc = (snapshot.load_namespace(state_dir, namespace) if namespace
               else snapshot.load_cluster(state_dir))
    except snapshot.SnapshotError as exc:
        raise UsageError(str(exc)) from None
    print(json.dumps(snapshot.materialize(doc), indent=1, sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "check":
            return _check(args.files)
        if args.command == "snapshot-dump":
            return _dump(args.state_dir, args.namespace)
        if args.command == "plan":
            return plancmd.run(args)
        if not args.images and not args.filename:
            parser().error("rewrite needs IMAGE arguments or -f MANIFESTS")
        rules_ = Rules(args)
        if args.filename:
            _rewrite_manifests(args, rules_)
        else:
            _rewrite_images(rules_, args.images, args.explain)
        rules_.report()
        return 0
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
