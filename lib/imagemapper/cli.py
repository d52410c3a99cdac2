"""The image-mapper command: preview rewrites, lint rule files, explain the live cluster.

    rewrite [RULE OPTIONS] [-n NS] [--explain] IMAGE...
    rewrite [RULE OPTIONS] [-f MANIFESTS]
    check FILE...
    explain [-n NS] [--context CTX] (IMAGE | pod/NAME)...
    plan [RULE OPTIONS] [-f MANIFESTS]... [--from-cluster] [IMAGE...] [--format F] [--check]
    snapshot-dump DIR [NAMESPACE]

Rule files are raw map files (imageswap grammar) or YAML as `kubectl get -o yaml` prints
it: ImageMaps, map-file ConfigMaps, Lists, several documents. The rules are compiled
exactly as the sync hook compiles them and applied exactly as the mutating hook applies
them, within the webhook's scope (kube-system, the operator namespace and excluded
namespaces are never rewritten; nor are Pods labeled imagemapper.io/mode=disabled).
"""

from __future__ import annotations

import argparse
import os
import sys

from imagemapper import __version__, compiler, inputs, kube, plancmd, podpatch, rules
from imagemapper.imagemap import MapInput
from imagemapper.scope import Scope
from imagemapper.settings import EXCLUDE_NAMESPACES, Settings, SettingsError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from imagemapper.shapes import NamespaceDoc

DEFAULT_OPERATOR_NAMESPACE = "image-mapper-system"
DESCRIPTION = ("Preview what image-mapper does to container images, lint rule files before "
               "you apply them, and explain decisions against the live cluster.")

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


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _read(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text ({exc.reason})") from None


def _yaml_docs(path: str, text: str) -> list:
    """The objects of a YAML stream, Lists flattened (UsageError on bad YAML)."""
    try:
        docs, _ = inputs.yaml_documents(path, text)
    except inputs.InputError as exc:
        raise UsageError(str(exc)) from None
    return [d.obj for d in docs]


def _file_imagemap(doc: dict, position: int, namespace: str, name: str) -> MapInput:
    """An ImageMap read from a file; missing metadata gets defaults.

    Maps without a creationTimestamp are ordered by their position in the files, so the
    first of two conflicting new maps wins, as the older one would in a cluster.
    """
    imap = MapInput.from_object(doc)
    imap.namespace = imap.namespace or namespace
    imap.name = imap.name or name
    imap.created = imap.created or f"{position:08d}"
    return imap


def settings_of(args: argparse.Namespace) -> Settings:
    """The webhook settings the preview applies (options, else IMAGE_MAPPER_* variables)."""
    operator_ns = getattr(args, "operator_namespace", None) or DEFAULT_OPERATOR_NAMESPACE
    excluded = getattr(args, "exclude_namespaces", None)
    if excluded is None:
        excluded = os.environ.get(EXCLUDE_NAMESPACES, "")
    from imagemapper import settings as settings_mod

    try:
        return settings_mod.from_env({
            "SHELL_OPERATOR_NAMESPACE": operator_ns,
            "IMAGE_MAPPER_MAP_NAMESPACE": getattr(args, "map_namespace", None) or "",
            "IMAGE_MAPPER_NAMESPACE_MODE": getattr(args, "namespace_mode", None) or "",
            EXCLUDE_NAMESPACES: excluded})
    except SettingsError as exc:
        raise UsageError(str(exc)) from None


class Rules:
    """Compiled rules per namespace, as the sync hook would compile them."""

    def __init__(self, args: argparse.Namespace):
        self.namespace = args.namespace
        self.settings = settings_of(args)
        self.scope = Scope.from_settings(self.settings)
        found = inputs.RuleSet()
        try:
            for path in args.map_file:
                found.add_file(path, _read(path), self.settings.map_namespace, raw_ok=True)
            for path in args.ns_map_file:
                found.add_file(path, _read(path), args.namespace, raw_ok=True)
            for path in args.imagemap:
                found.add_file(path, _read(path), args.namespace, raw_ok=False)
        except inputs.InputError as exc:
            raise UsageError(str(exc)) from None
        self.maps = [_file_imagemap(obj, position, args.namespace, where)
                     for position, (obj, where) in enumerate(found.imagemaps)]
        self.problems = [f"note: {note}" for note in found.notes]
        self.groups, cluster = compiler.group_by_namespace(self.maps, found.mapfiles,
                                                           self.settings.map_namespace)
        self.cluster_doc, cluster_diags, _ = compiler.compile_cluster(cluster)
        self.problems += [f"{d['severity']}: {d['text']}" for ds in cluster_diags.values() for d in ds]
        self._docs: dict[str, NamespaceDoc | None] = {}

    def namespace_doc(self, namespace: str) -> NamespaceDoc | None:
        if namespace not in self._docs:
            maps, files = self.groups.get(namespace, ([], []))
            doc, verdicts, diags, _ = compiler.compile_namespace(namespace, maps, files)
            self._docs[namespace] = doc
            self.problems += [f'ImageMap "{namespace}/{name}" rejected ({v["reason"]}): {v["message"]}'
                              for name, v in sorted(verdicts.items()) if v["reason"] != "Accepted"]
            self.problems += [f"{d['severity']}: {d['text']}" for ds in diags.values() for d in ds]
        return self._docs[namespace]

    def decide(self, image: str, namespace: str | None = None) -> rules.Decision:
        return rules.decide(image, self.namespace_doc(namespace or self.namespace), self.cluster_doc)

    def skipped(self, namespace: str, pod_labels: dict | None = None) -> str | None:
        """Why the webhook never sees such a Pod (its scope), or None."""
        return self.scope.skipped(namespace, None, pod_labels)

    def report(self) -> None:
        """Print rejected ImageMaps, bad map-file lines, and maps that applied nowhere."""
        unused = sorted({m.namespace for m in self.maps} - set(self._docs))
        for line in self.problems:
            print(line, file=sys.stderr)
        if unused:
            print(f"note: no image was looked up in {'namespace' if len(unused) == 1 else 'namespaces'} "
                  f"{', '.join(unused)}, so {'its' if len(unused) == 1 else 'their'} ImageMaps did "
                  "not apply (use -n or set metadata.namespace)", file=sys.stderr)


def _rewrite_images(rules_: Rules, images: list[str], explain: bool) -> None:
    skipped = rules_.skipped(rules_.namespace)
    if skipped:
        print(f"note: not rewritten: {skipped}", file=sys.stderr)
    for image in images:
        if skipped:
            print(f"{image}\t# not rewritten: {skipped}" if explain else image)
            continue
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
    pod_meta = podpatch.at_pointer(obj, owner_pointer + "/metadata")
    labels = pod_meta.get("labels") if isinstance(pod_meta, dict) else None
    skipped = rules_.skipped(namespace, labels if isinstance(labels, dict) else None)
    if skipped:
        print(f"note: {name} in namespace {namespace} is not rewritten: {skipped}", file=sys.stderr)
        return
    changes: list[tuple[podpatch.ImageField, str]] = []
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
        if decision.changed and decision.new is not None:
            changes.append((field, decision.new))
    ops = podpatch.build_patch(obj, changes, spec_pointer, owner_pointer)
    if ops:
        obj.update(jsonpatch.apply_patch(obj, ops))


def _rewrite_manifests(args: argparse.Namespace, rules_: Rules) -> None:
    import yaml

    text = _read(args.filename)
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise UsageError(f"{args.filename}: {inputs.yaml_error(exc)}") from None
    for doc in docs:
        items = inputs.list_items(doc)
        for obj in [doc] if items is None else items:
            rewrite_object(obj, rules_, args.explain)
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))


# ----------------------------------------------------------------------------- main

def add_rule_options(parser: argparse.ArgumentParser) -> None:
    """The options that say which rules and which webhook settings to apply."""
    parser.add_argument(
        "--map-file", action="append", default=[], metavar="FILE",
        help="cluster-wide rules: a raw map file, or ConfigMaps/ImageMaps as YAML (objects in "
             "other namespaces keep their own namespace); repeatable")
    parser.add_argument(
        "--ns-map-file", action="append", default=[], metavar="FILE",
        help="rules of namespace NS: a raw map file, or YAML objects (objects without a "
             "namespace take NS); repeatable")
    parser.add_argument(
        "--imagemap", action="append", default=[], metavar="FILE",
        help="ImageMaps as YAML: several documents, a List, or `kubectl get imagemaps -o yaml` "
             "output; an ImageMap without a namespace takes NS; repeatable")
    parser.add_argument("-n", "--namespace", default="default",
                        help="namespace of the Pod whose images are given (default: default)")
    parser.add_argument(
        "--operator-namespace", default=DEFAULT_OPERATOR_NAMESPACE, metavar="NS",
        help="where image-mapper runs; it is never rewritten and holds the cluster-wide map "
             f"files (default: {DEFAULT_OPERATOR_NAMESPACE})")
    parser.add_argument("--map-namespace", metavar="NS",
                        help="IMAGE_MAPPER_MAP_NAMESPACE, if set (default: the operator namespace)")
    parser.add_argument(
        "--exclude-namespaces", metavar="NS,NS", default=None,
        help=f"{EXCLUDE_NAMESPACES}: namespaces never rewritten (default: that variable)")
    parser.add_argument("--namespace-mode", choices=("opt-out", "opt-in"), default=None,
                        help="IMAGE_MAPPER_NAMESPACE_MODE (default: opt-out)")


def parser(prog: str = "image-mapper") -> argparse.ArgumentParser:
    from imagemapper import checkcmd, explaincmd

    top = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    rw = sub.add_parser("rewrite", help="print what images, or the Pods of a manifest, become",
                        description="Print what images become (one line each, in order), or "
                        "rewrite the Pods and Pod templates of a manifest stream with -f.")
    add_rule_options(rw)
    rw.add_argument("--explain", action="store_true",
                    help="show the rule that decided each image (with -f: on stderr)")
    rw.add_argument("-f", "--filename", metavar="MANIFESTS",
                    help="rewrite Pods, PodTemplates and the templates of Deployments, "
                         "StatefulSets, DaemonSets, ReplicaSets, ReplicationControllers, Jobs "
                         "and CronJobs in this YAML stream ('-' for stdin)")
    rw.add_argument("images", nargs="*", metavar="IMAGE",
                    help="image references, as a Pod in namespace NS would use them")
    plancmd.add_parser(sub, rw)
    checkcmd.add_parser(sub)
    explaincmd.add_parser(sub)
    dump = sub.add_parser("snapshot-dump", help="print a compiled snapshot document as JSON",
                          description="Print a compiled snapshot document as JSON (debugging).")
    dump.add_argument("state_dir", metavar="DIR", help="the IMAGE_MAPPER_STATE_DIR of a replica")
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


def _rewrite(args: argparse.Namespace) -> int:
    if args.filename and args.images:
        raise UsageError("rewrite takes IMAGE arguments or -f MANIFESTS, not both "
                         f"(got -f {args.filename} and {plural(len(args.images), 'image')})")
    if not args.images and not args.filename:
        raise UsageError("rewrite needs IMAGE arguments or -f MANIFESTS")
    rules_ = Rules(args)
    if args.filename:
        _rewrite_manifests(args, rules_)
    else:
        _rewrite_images(rules_, args.images, args.explain)
    rules_.report()
    return 0


def _run(args: argparse.Namespace) -> int:
    from imagemapper import checkcmd, explaincmd

    if args.command == "check":
        return checkcmd.run(args.files, args.strict, args.cluster_map_file)
    if args.command == "explain":
        return explaincmd.run(args)
    if args.command == "snapshot-dump":
        return _dump(args.state_dir, args.namespace)
    if args.command == "plan":
        return plancmd.run(args)
    return _rewrite(args)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    if prog is None:  # `kubectl image-mapper` runs the executable kubectl-image_mapper
        base = os.path.basename(sys.argv[0] or "")
        prog = "kubectl image-mapper" if base.startswith("kubectl-") else "image-mapper"
    try:
        args = parser(prog).parse_args(argv)
        return _run(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `| head` closed the pipe: nothing left to say, and no
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # flush error at exit
        return 141


def plugin_main() -> int:
    """Entry point of the kubectl plugin executable ``kubectl-image_mapper``."""
    return main(prog="kubectl image-mapper")
