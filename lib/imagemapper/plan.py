"""The relocation plan: which image goes where, once each, and how copy tools are told.

A plan is built from *uses*: an image seen somewhere (an argument, a container of a
manifest, a Pod in the cluster) in a namespace. Each use is decided exactly as the
mutating hook would decide it; every use that the rules relocate becomes a pair
(source -> destination). Uses that lead to the same copy are one pair.

Digests are kept: a source with a digest is copied *by digest* (its tag may have moved
since the manifest was written), and the destination keeps the tag when the rule keeps
it. The copy tools are told to copy a multi-architecture index whole (every platform),
which is the only way its digest survives the copy.

This module is pure: it neither reads files nor talks to a registry.
"""

from __future__ import annotations

import json

from imagemapper import kube
from imagemapper.podpatch import ANNOTATION, at_pointer, image_fields
from imagemapper.reference import InvalidReference, Reference, is_valid, parse
from imagemapper.rules import Decision

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    Decide = Callable[[str, str], Decision]  # (image, namespace) -> what it becomes
    Skipped = Callable[[str, "dict | None"], "str | None"]  # (namespace, Pod labels) -> why not seen

FORMATS = ("plain", "json", "skopeo", "skopeo-copy", "crane")


class Use:
    """One place an image was seen: its text, the Pod's namespace and labels, and where."""

    __slots__ = ("image", "labels", "namespace", "where")

    def __init__(self, image: object, namespace: str, where: str, labels: dict | None = None):
        self.image = image
        self.namespace = namespace
        self.where = where  # "argument 2", "shop/Deployment/web containers/web", ...
        self.labels = labels  # the Pod's (or Pod template's) labels, for the webhook's scope


class Pair:
    """One copy: ``copy_from`` -> ``copy_to``, and what the Pods will reference."""

    def __init__(self, source: Reference, destination: Reference):
        self.source = source            # normalized, as the Pod referenced it
        self.destination = destination  # normalized, as the rule rewrites it
        self.copy_from, self.copy_to = copy_refs(source, destination)
        self.rules: list[str] = []
        self.layers: list[str] = []
        self.namespaces: list[str] = []
        self.seen: list[str] = []

    @property
    def key(self) -> tuple[str, str]:
        return self.copy_from, self.copy_to

    def add(self, use: Use, rule: str, layer: str) -> None:
        for values, value in ((self.rules, rule), (self.layers, layer),
                              (self.namespaces, use.namespace), (self.seen, use.where)):
            if value not in values:
                values.append(value)

    def as_dict(self) -> dict:
        return {"source": str(self.source), "destination": str(self.destination),
                "copy": {"from": self.copy_from, "to": self.copy_to},
                "rule": self.rules[0], "rules": self.rules, "layers": self.layers,
                "namespaces": self.namespaces, "seen": self.seen}


class Plan:
    """Pairs in a stable order, plus everything that is not a pair and why."""

    def __init__(self) -> None:
        self.pairs: dict[tuple[str, str], Pair] = {}
        self.unchanged: dict[tuple[str, str], dict] = {}  # (image, reason) -> entry
        self.errors: list[str] = []

    def sorted_pairs(self) -> list[Pair]:
        return [self.pairs[k] for k in sorted(self.pairs)]

    def conflicts(self) -> list[str]:
        """One destination reached from different sources: a copy would overwrite another."""
        by_dest: dict[str, list[str]] = {}
        for pair in self.sorted_pairs():
            by_dest.setdefault(pair.copy_to, []).append(pair.copy_from)
        return [f"destination {dest} is the copy of several sources: {', '.join(srcs)}"
                for dest, srcs in sorted(by_dest.items()) if len(srcs) > 1]


def copy_refs(source: Reference, destination: Reference) -> tuple[str, str]:
    """The references to hand a copy tool.

    Pull by digest when the source has one; push by tag when the destination has a tag
    (the digest follows, since the copy is byte for byte), by digest when it has only a
    digest, and as ``:latest`` when it has neither, which is what a kubelet pulls.
    """
    src = Reference(source.domain, source.path, None if source.digest else source.tag or "latest",
                    source.digest)
    if destination.tag:
        dst = Reference(destination.domain, destination.path, destination.tag)
    elif destination.digest:
        dst = Reference(destination.domain, destination.path, None, destination.digest)
    else:
        dst = Reference(destination.domain, destination.path, "latest")
    return str(src), str(dst)


def build(uses: Iterable[Use], decide: Decide, skipped: Skipped | None = None) -> Plan:
    """Decide every use with ``decide(image, namespace) -> rules.Decision``; dedup the pairs.

    ``skipped(namespace, pod_labels) -> reason | None`` is the webhook's scope: a Pod it
    never sees keeps its images, so they are not copies to make.
    """
    plan = Plan()
    for use in uses:
        _add(plan, use, decide, skipped)
    plan.errors.extend(plan.conflicts())
    return plan


def _add(plan: Plan, use: Use, decide: Decide, skipped: Skipped | None = None) -> None:
    if not isinstance(use.image, str):
        plan.errors.append(f"{use.where}: image is not a string: {use.image!r}")
        return
    why = skipped(use.namespace, use.labels) if skipped else None
    if why:
        decision = Decision(use.image, rule=f"not rewritten: {why}")
    else:
        decision = decide(use.image, use.namespace)
    if decision.error:
        plan.errors.append(f"{use.where}: {decision.error}")
        return
    new = decision.new or decision.rejected
    if decision.rejected:
        try:
            parse(decision.rejected)
        except InvalidReference as exc:
            plan.errors.append(f"{use.where}: {use.image} -> {new}: destination is {exc} "
                               f"(registry {new.partition('/')[0]}; rule {decision.rule})")
        return
    if not decision.changed or decision.new is None:
        key = (str(parse(use.image)) if is_valid(use.image) else use.image, decision.rule)
        entry = plan.unchanged.setdefault(key, {"image": key[0], "reason": decision.rule,
                                                "namespaces": [], "seen": []})
        _append_new(entry["namespaces"], use.namespace)
        _append_new(entry["seen"], use.where)
        return
    try:
        destination = parse(decision.new)
    except InvalidReference as exc:
        plan.errors.append(f"{use.where}: {use.image} -> {decision.new}: destination is {exc} "
                           f"(registry {decision.new.partition('/')[0]}; rule {decision.rule})")
        return
    pair = Pair(parse(use.image), destination)
    pair = plan.pairs.setdefault(pair.key, pair)
    pair.add(use, decision.rule, decision.source)


def _append_new(values: list[str], value: str) -> None:
    if value not in values:
        values.append(value)


# ----------------------------------------------------------------------------- uses

def object_uses(obj: object, pod_specs: dict, default_namespace: str) -> list[Use]:
    """The images of one Pod or Pod-template object.

    A Pod that image-mapper already rewrote carries its original images in the
    ``imagemapper.io/original-images`` annotation; the original is planned, not the
    rewritten image, so planning a live cluster yields the pairs its Pods rely on.
    """
    if not isinstance(obj, dict) or obj.get("kind") not in pod_specs:
        return []
    spec_pointer, owner_pointer = pod_specs[obj["kind"]]
    namespace = kube.text(obj, "metadata", "namespace") or default_namespace
    pod_meta = at_pointer(obj, owner_pointer).get("metadata")
    originals = _originals(pod_meta)
    labels = pod_meta.get("labels") if isinstance(pod_meta, dict) else None
    label = f"{namespace}/{obj['kind']}/{kube.text(obj, 'metadata', 'name') or '?'}"
    return [Use(originals.get(field.key, field.image), namespace, f"{label} {field.key}",
                labels if isinstance(labels, dict) else None)
            for field in image_fields(at_pointer(obj, spec_pointer))]


def _originals(metadata: object) -> dict:
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    value = annotations.get(ANNOTATION) if isinstance(annotations, dict) else None
    try:
        found = json.loads(value) if isinstance(value, str) else {}
    except ValueError:
        return {}
    return {k: v for k, v in found.items() if isinstance(v, str)} if isinstance(found, dict) else {}


# ----------------------------------------------------------------------------- formats

def render(plan: Plan, fmt: str, explain: bool = False, insecure: tuple[str, ...] = ()) -> str:
    """The plan in one of FORMATS; ``insecure`` source registries get ``tls-verify: false`` in a sync file."""
    pairs = plan.sorted_pairs()
    if fmt == "json":
        return json.dumps(as_json(plan), indent=2) + "\n"
    if fmt == "crane":
        return _script(pairs, "crane copy", "crane")
    if fmt == "skopeo-copy" or (fmt == "skopeo" and sync_layout(pairs) is None):
        return _script(pairs, "skopeo copy --all --preserve-digests", "skopeo", "docker://")
    if fmt == "skopeo":
        return skopeo_sync(pairs, insecure)
    if explain:
        return "".join(f"{p.copy_from} {p.copy_to}\t# {_one_line(p.rules[0])}\n" for p in pairs)
    return "".join(f"{p.copy_from} {p.copy_to}\n" for p in pairs)


def as_json(plan: Plan) -> dict:
    return {"pairs": [p.as_dict() for p in plan.sorted_pairs()],
            "unchanged": [plan.unchanged[k] for k in sorted(plan.unchanged)],
            "errors": plan.errors}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _script(pairs: list[Pair], command: str, tool: str, transport: str = "") -> str:
    """A POSIX sh script, one copy per pair; the script's arguments go to every copy."""
    lines = ["#!/bin/sh",
             f"# {len(pairs)} image(s) to copy, planned by image-mapper. Arguments to this",
             f"# script are passed to every {tool} command (credentials, TLS options).",
             "set -eu"]
    for pair in pairs:
        lines.append(f"# {_one_line(pair.rules[0])}")
        lines.append(f'{command} "$@" {transport}{pair.copy_from} {transport}{pair.copy_to}')
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- skopeo sync

def _sync_entry(pair: Pair) -> str | None:
    """The tag or digest a sync YAML lists for this pair, or None if sync cannot keep it."""
    src, dst = pair.source, pair.destination
    if src.digest:
        # sync copies a digest to a digest-only destination: a kept tag would be lost
        return src.digest if dst.digest == src.digest and not dst.tag else None
    tag = src.tag or "latest"
    return tag if dst.digest is None and (dst.tag or "latest") == tag else None


def sync_layout(pairs: list[Pair]) -> tuple[str, bool] | None:
    """(destination prefix, scoped) if one ``skopeo sync`` run copies every pair as planned.

    skopeo sync writes ``DEST/<last path component>`` (or ``DEST/<registry>/<path>`` with
    ``--scoped``), keeping the tag or digest; the plan fits when every destination is that.
    """
    if not pairs or any(_sync_entry(p) is None for p in pairs):
        return None
    for scoped in (False, True):
        prefixes = set()
        for pair in pairs:
            tail = pair.source.name if scoped else pair.source.path.rpartition("/")[2]
            name = pair.destination.name
            if not name.endswith("/" + tail):
                break
            prefixes.add(name[: -len(tail) - 1])
        else:
            if len(prefixes) == 1:
                return prefixes.pop(), scoped
    return None


def skopeo_sync(pairs: list[Pair], insecure: tuple[str, ...] = ()) -> str:
    """A ``skopeo sync --src yaml`` source file, with the command that runs it on top.

    skopeo reads source TLS settings from this file, not from ``--src-tls-verify``.
    """
    import yaml

    layout = sync_layout(pairs)
    if layout is None:
        raise ValueError("these pairs do not fit one skopeo sync run; use skopeo copy lines")
    prefix, scoped = layout
    registries: dict[str, dict] = {}
    for pair in pairs:
        images = registries.setdefault(pair.source.domain, {"images": {}})["images"]
        entries = images.setdefault(pair.source.path, [])
        entry = _sync_entry(pair)
        if entry is not None:  # always, since the layout fits
            _append_new(entries, entry)
    for domain in set(registries) & set(insecure):
        registries[domain]["tls-verify"] = False
    head = (f"# {len(pairs)} image(s) to copy, planned by image-mapper. Run:\n"
            f"#   skopeo sync --all --preserve-digests --src yaml --dest docker{' --scoped' if scoped else ''}"
            f" THIS-FILE {prefix}\n")
    comments = "".join(f"# {p.copy_from} -> {p.copy_to}: {_one_line(p.rules[0])}\n" for p in pairs)
    return head + comments + yaml.safe_dump(registries, sort_keys=True, default_flow_style=False)
