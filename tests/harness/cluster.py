"""A tiny in-memory cluster and the informer-side behaviour of shell-operator monitors.

``Cluster`` stores objects and tells subscribers about Added/Modified/Deleted, like
watches do (a no-op write produces no event; every real change bumps
``metadata.resourceVersion``).  It can also execute the operations of a hook's
``$KUBERNETES_PATCH_PATH`` file.

``Monitor`` is one ``kubernetes`` binding's informer cache
(pkg/kube_events_manager/resource_informer.go): jqFilter + checksum per object, an
Added/Modified whose checksum did not change is not delivered, events are buffered
until the binding's Synchronization succeeded, and reading the snapshot while
buffering drops the buffer (the Synchronization already saw those changes).
"""
from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass

import jq
import jsonpatch
import yaml

from . import _go, _k8s
from .config import KubernetesBinding

# --------------------------------------------------------------------------- jqFilter


def apply_jq(expression: str, obj) -> str:
    """shell-operator's jq result text: no output -> ``null``, one -> it, more -> array.

    Raises ValueError when the program errors (the event is then dropped).
    """
    results = jq.compile(expression).input_value(obj).all()
    if not results:
        return "null"
    return _go.go_json_dumps(results[0] if len(results) == 1 else results)


@dataclass
class Item:
    """``ObjectAndFilterResult``: one object of a snapshot."""

    namespace: str
    name: str
    kind: str
    object: dict | None        # None when keepFullObjectsInMemory: false
    filter_text: str | None    # jq output text; None when the binding has no jqFilter
    checksum: str

    @property
    def resource_id(self) -> str:
        return f"{self.namespace}/{self.kind}/{self.name}"

    def to_dict(self) -> dict:
        """``ObjectAndFilterResult.Map``."""
        out = {}
        if self.object is not None:
            out["object"] = copy.deepcopy(self.object)
        if self.filter_text is not None:
            out["filterResult"] = json.loads(self.filter_text) if self.filter_text else None
        return out


def make_item(obj: dict, binding: KubernetesBinding) -> Item:
    """Filter ``obj`` for ``binding`` (the checksum is what change detection compares)."""
    meta = obj.get("metadata") or {}
    if binding.jq_filter:
        text = apply_jq(binding.jq_filter, obj)
        checksum = text
    else:
        text = None
        checksum = _go.go_json_dumps(obj)
    return Item(namespace=meta.get("namespace", ""), name=meta.get("name", ""),
                kind=obj.get("kind", ""), object=copy.deepcopy(obj) if binding.keep_full_objects else None,
                filter_text=text, checksum=checksum)


def sort_items(items: list[Item]) -> list[Item]:
    """``ByNamespaceAndName``; without full objects shell-operator compares resource ids."""
    if any(i.object is None for i in items):
        return sorted(items, key=lambda i: i.resource_id)
    return sorted(items, key=lambda i: (i.namespace, i.name))


# --------------------------------------------------------------------------- cluster


def _key(obj: dict) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", "")


def _kind_matches(wanted: str, kind: str) -> bool:
    """Kind, plural or lower-case name, case-insensitively (a rough RESTMapper)."""
    wanted, kind = wanted.lower(), kind.lower()
    return wanted in (kind, kind + "s", kind + "es", kind[:-1] + "ies")


def _without_version(obj: dict) -> dict:
    obj = copy.deepcopy(obj)
    (obj.get("metadata") or {}).pop("resourceVersion", None)
    return obj


def _merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _as_object(value):
    """``object``/``mergePatch``/``jsonPatch`` may be given as a YAML or JSON string."""
    return yaml.safe_load(value) if isinstance(value, str) else value


class Cluster:
    """Objects keyed by (kind, namespace, name), with watch-style notifications."""

    def __init__(self, objects: list[dict] | None = None) -> None:
        self.objects: dict[tuple, dict] = {}
        # Namespaces being deleted: the API server forbids creating anything in them.
        self.terminating: set[str] = set()
        self.subscribers: list[Callable[[str, dict], None]] = []
        self._version = 0
        for obj in objects or []:
            self.apply(obj)

    def subscribe(self, callback: Callable[[str, dict], None]) -> None:
        self.subscribers.append(callback)

    def _notify(self, event: str, obj: dict) -> None:
        for callback in list(self.subscribers):
            callback(event, copy.deepcopy(obj))

    def apply(self, obj: dict) -> str | None:
        """Create or replace ``obj``; returns "Added", "Modified" or None (no change)."""
        key = _key(obj)
        old = self.objects.get(key)
        if old is not None and _without_version(old) == _without_version(obj):
            return None
        self._version += 1
        stored = copy.deepcopy(obj)
        stored.setdefault("metadata", {})["resourceVersion"] = str(self._version)
        self.objects[key] = stored
        event = "Added" if old is None else "Modified"
        self._notify(event, stored)
        return event

    def delete(self, kind: str, name: str, namespace: str = "") -> bool:
        obj = self.find(kind, name, namespace)
        if obj is None:
            return False
        del self.objects[_key(obj)]
        self._notify("Deleted", obj)
        return True

    def find(self, kind: str, name: str, namespace: str = "") -> dict | None:
        for (k, ns, n), obj in self.objects.items():
            if _kind_matches(kind, k) and ns == (namespace or "") and n == name:
                return obj
        return None

    def get(self, kind: str, name: str, namespace: str = "") -> dict:
        obj = self.find(kind, name, namespace)
        if obj is None:
            raise KeyError(f"{kind} {namespace}/{name} not found")
        return copy.deepcopy(obj)

    def list(self, kind: str, namespace: str | None = None) -> list[dict]:
        return [copy.deepcopy(o) for (k, ns, _), o in sorted(self.objects.items())
                if _kind_matches(kind, k) and (namespace is None or ns == namespace)]

    # ---------------------------------------------------------------- patch operations

    def execute(self, operations: list[dict]) -> list[str]:
        """Run parsed patch operations in order; returns the errors (all are attempted)."""
        errors = []
        for op in operations:
            try:
                self._execute_one(op)
            except (KeyError, ValueError, TypeError, jsonpatch.JsonPatchException,
                    jsonpatch.JsonPointerException, yaml.YAMLError) as exc:
                errors.append(f"{op['operation']}: {exc}")
        return errors

    def _execute_one(self, op: dict) -> None:
        kind = op["operation"]
        if kind in ("Create", "CreateIfNotExists", "CreateOrUpdate"):
            obj = _as_object(op["object"])
            if not isinstance(obj, dict):
                raise ValueError("object is not a mapping")
            if op.get("namespace"):
                obj.setdefault("metadata", {})["namespace"] = op["namespace"]
            exists = _key(obj) in self.objects
            namespace = (obj.get("metadata") or {}).get("namespace") or ""
            if namespace in self.terminating:
                raise ValueError(f"{_key(obj)} is forbidden: unable to create new content in "
                                 f"namespace {namespace} because it is being terminated")
            if exists and kind == "Create":
                raise ValueError(f"{_key(obj)} already exists")
            if not exists or kind == "CreateOrUpdate":
                self.apply(obj)
            return
        namespace = op.get("namespace", "")
        current = self.find(op["kind"], op["name"], namespace)
        if kind.startswith("Delete"):
            if current is not None:
                self.delete(current["kind"], op["name"], namespace)
            return
        if current is None:
            if op.get("ignoreMissingObject"):
                return
            raise KeyError(f"{op['kind']} {namespace}/{op['name']} not found")
        if kind == "MergePatch":
            patched = _merge_patch(current, _as_object(op["mergePatch"]))
        elif kind == "JSONPatch":
            patched = jsonpatch.apply_patch(current, _as_object(op["jsonPatch"]))
        else:  # JQPatch
            patched = json.loads(apply_jq(op["jqFilter"], current))
        if op.get("subresource") == "status":
            patched = {**copy.deepcopy(current), "status": patched.get("status")}
        elif "status" in current or "status" in patched:
            # The main resource ignores status changes (status subresource semantics).
            patched = {**patched, "status": copy.deepcopy(current.get("status"))}
            if patched["status"] is None:
                del patched["status"]
        self.apply(patched)


# --------------------------------------------------------------------------- monitor


class Monitor:
    """The informer cache of one ``kubernetes`` binding."""

    def __init__(self, binding: KubernetesBinding, cluster: Cluster,
                 deliver: Callable[[str, Item], None]) -> None:
        self.binding = binding
        self.cluster = cluster
        self.deliver = deliver  # called with (watchEvent, item) once events are enabled
        self.cache: dict[str, Item] = {}
        self.events_enabled = False
        self.buffer: list[tuple[str, Item]] = []
        self.dropped: list[str] = []  # jq errors: shell-operator logs and skips the event

    def matches(self, obj: dict) -> bool:
        """Kind, apiVersion, name/namespace/label/field selectors of the binding."""
        b, meta = self.binding, obj.get("metadata") or {}
        if not _kind_matches(b.kind, obj.get("kind", "")):
            return False
        if b.api_version and obj.get("apiVersion") not in (b.api_version, b.api_version.removeprefix("core/")):
            return False
        if b.name_selector and meta.get("name") not in b.name_selector:
            return False
        if not _k8s.label_selector_matches(b.label_selector, meta.get("labels")):
            return False
        for expr in b.field_selector or []:
            actual = _field(obj, expr["field"])
            equal = actual == expr.get("value", "")
            if equal != (expr["operator"] in ("=", "==", "Equals")):
                return False
        return self._namespace_matches(meta.get("namespace", ""))

    def _namespace_matches(self, namespace: str) -> bool:
        selector = self.binding.namespace or {}
        names = (selector.get("nameSelector") or {}).get("matchNames")
        if names and namespace not in names:
            return False
        labels = selector.get("labelSelector")
        if labels:
            ns_obj = self.cluster.find("Namespace", namespace)
            ns_labels = (ns_obj or {}).get("metadata", {}).get("labels")
            return ns_obj is not None and _k8s.label_selector_matches(labels, ns_labels)
        return True

    def start(self) -> None:
        """Initial list: fill the cache (a jq error here fails the whole start)."""
        for obj in self.cluster.objects.values():
            if self.matches(obj):
                item = make_item(obj, self.binding)
                self.cache[item.resource_id] = item
        self.cluster.subscribe(self.on_watch)

    def snapshot(self) -> list[Item]:
        """Sorted cached items; while events are locked, this drops the buffer."""
        if not self.events_enabled:
            self.buffer.clear()
        return sort_items(list(self.cache.values()))

    def enable_events(self) -> None:
        """After Synchronization: replay buffered events, deliver new ones directly."""
        self.events_enabled = True
        buffered, self.buffer = self.buffer, []
        for event, item in buffered:
            self.deliver(event, item)

    def on_watch(self, event: str, obj: dict) -> None:
        """A watch event from the cluster, seen through the binding's selectors."""
        key = "{}/{}/{}".format((obj.get("metadata") or {}).get("namespace", ""), obj.get("kind", ""),
                                (obj.get("metadata") or {}).get("name", ""))
        if event != "Deleted" and not self.matches(obj):
            if key not in self.cache:
                return
            event = "Deleted"  # a selector-based watch reports objects that leave it as deleted
        elif event == "Deleted" and key not in self.cache and not self.matches(obj):
            return
        elif event == "Modified" and key not in self.cache:
            event = "Added"
        try:
            item = make_item(obj, self.binding)
        except ValueError as exc:
            self.dropped.append(f"{event} {key}: jqFilter: {exc}")
            return
        if event == "Deleted":
            self.cache.pop(key, None)
        else:
            cached = self.cache.get(key)
            self.cache[key] = item
            if cached is not None and cached.checksum == item.checksum:
                return
        if event not in self.binding.event_types:
            return
        if self.events_enabled:
            self.deliver(event, item)
        else:
            self.buffer.append((event, item))


def _field(obj: dict, path: str) -> str:
    value = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)
