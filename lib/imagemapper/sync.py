"""The sync hook's work: cluster state in; snapshot, status, Events and metrics out.

All three bindings of the sync hook share one group, so every run sees the full current
state (``snapshots``) and recompiles what changed. The work is kept idempotent across
replicas and restarts:

* status is patched only when the desired status differs from the object's current
  one (the jqFilter leaves status out, so our own status writes do not wake the hook);
* Events get a name derived from their content and are created with
  ``CreateIfNotExists``, so two replicas, or a rerun, never duplicate one;
* ``reinvocationPolicy: IfNeeded`` is patched into the mutating webhook
  configuration whenever shell-operator (re)registers it without the field.
"""

from __future__ import annotations

import hashlib
import time

from imagemapper import compiler, protocol
from imagemapper.hookconfig import MUTATE_WEBHOOK
from imagemapper.imagemap import MapInput
from imagemapper.settings import Settings

API_VERSION = "imagemapper.io/v1alpha1"
SYNC_METRICS_GROUP = "image_mapper_sync"
REASONS = ("Accepted", "Invalid", "Conflict")


class Output:
    """Everything one sync run wants written back through shell-operator."""

    def __init__(self) -> None:
        self.operations: list[dict] = []
        self.metrics: list[dict] = []
        self.logs: list[dict] = []
        self.result: compiler.Result | None = None


def _items(contexts: list, binding: str) -> list[dict]:
    """The newest view of one binding: its snapshot, else its Synchronization objects."""
    for context in reversed(contexts):
        snaps = context.get("snapshots")
        if isinstance(snaps, dict) and binding in snaps:
            return [i for i in snaps[binding] or [] if isinstance(i, dict)]
        if context.get("binding") == binding and context.get("type") == "Synchronization":
            return [i for i in context.get("objects") or [] if isinstance(i, dict)]
    return []


def _imagemap_of(item: dict) -> tuple[MapInput, dict, str] | None:
    """(resolver input, current status, uid) from a snapshot item."""
    found = item.get("filterResult")
    obj = item.get("object") if isinstance(item.get("object"), dict) else {}
    if not isinstance(found, dict):
        if not obj:
            return None
        meta = obj.get("metadata") or {}
        found = {"name": meta.get("name"), "namespace": meta.get("namespace"),
                 "uid": meta.get("uid"), "generation": meta.get("generation"),
                 "created": meta.get("creationTimestamp"), "spec": obj.get("spec")}
    spec = found.get("spec") if isinstance(found.get("spec"), dict) else {}
    items = spec.get("map") if isinstance(spec.get("map"), list) else []
    imap = MapInput(found.get("namespace") or "", found.get("name") or "",
                    found.get("created") or "", found.get("generation") or 0, items)
    status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
    return imap, status, found.get("uid") or ""


def _mapfile_of(item: dict) -> compiler.MapFileInput | None:
    found = item.get("filterResult")
    if isinstance(found, dict):
        data = found.get("data") if isinstance(found.get("data"), dict) else {}
        return compiler.MapFileInput(found.get("namespace") or "", found.get("name") or "",
                                     found.get("uid") or "", data)
    if isinstance(item.get("object"), dict):
        return compiler.MapFileInput.from_object(item["object"])
    return None


def run(contexts: list, settings: Settings, now: str | None = None) -> Output:
    """One sync run. ``now`` is an RFC 3339 timestamp (injected by tests)."""
    now = now or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = Output()
    maps = [m for m in (_imagemap_of(i) for i in _items(contexts, "imagemaps")) if m]
    mapfiles = [m for m in (_mapfile_of(i) for i in _items(contexts, "mapfiles")) if m]
    result = compiler.build(settings.state_dir, [m[0] for m in maps], mapfiles,
                            settings.map_namespace)
    out.result = result
    for imap, status, uid in maps:
        verdict = result.verdicts.get((imap.namespace, imap.name))
        if verdict:
            _status_and_event(out, imap, status, uid, verdict, now)
    for cm in mapfiles:
        _mapfile_events(out, cm, result.diagnostics.get((cm.namespace, cm.name), []), now)
    _reinvocation(out, _items(contexts, "webhook"), settings.webhook_configuration)
    out.metrics = _metrics(result, maps)
    out.logs.append({"msg": "snapshot compiled", "namespaces": result.namespaces,
                     "recompiled": len(result.recompiled),
                     "namespace_rules": result.rules["namespace"],
                     "cluster_rules": result.rules["cluster"]})
    return out


# ----------------------------------------------------------------------------- status

def desired_status(imap: MapInput, verdict: list, current: dict, now: str) -> dict:
    """The status the ImageMap should have; lastTransitionTime kept while unchanged."""
    reason, message, rules = verdict
    state = "True" if reason == "Accepted" else "False"
    old = _ready(current)
    since = old.get("lastTransitionTime") if old.get("status") == state else None
    return {"observedGeneration": imap.generation, "rules": rules, "conditions": [{
        "type": "Ready", "status": state, "reason": reason, "message": message,
        "lastTransitionTime": since or now, "observedGeneration": imap.generation}]}


def _status_and_event(out: Output, imap: MapInput, current: dict, uid: str,
                      verdict: list, now: str) -> None:
    want = desired_status(imap, verdict, current, now)
    if _same_status(current, want):
        return
    out.operations.append({
        "operation": "MergePatch", "apiVersion": API_VERSION, "kind": "ImageMap",
        "namespace": imap.namespace, "name": imap.name, "subresource": "status",
        "ignoreMissingObject": True, "mergePatch": {"status": want}})
    old, new = _ready(current), want["conditions"][0]
    if old.get("reason") != new["reason"] or old.get("message") != new["message"]:
        out.operations.append(_event(
            imap.namespace, {"apiVersion": API_VERSION, "kind": "ImageMap", "name": imap.name,
                             "namespace": imap.namespace, "uid": uid},
            new["reason"], new["message"], "Normal" if new["status"] == "True" else "Warning",
            now, [uid, imap.generation, new["reason"], new["message"]]))
        out.logs.append({"msg": "imagemap status", "namespace": imap.namespace,
                         "imagemap": imap.name, "reason": new["reason"],
                         "message": new["message"]})


def _ready(status: dict) -> dict:
    return next((c for c in status.get("conditions") or []
                 if isinstance(c, dict) and c.get("type") == "Ready"), {})


def _same_status(current: dict, want: dict) -> bool:
    keys = ("type", "status", "reason", "message", "lastTransitionTime", "observedGeneration")
    have = _ready(current)
    return (current.get("observedGeneration") == want["observedGeneration"]
            and current.get("rules") == want["rules"]
            and len(current.get("conditions") or []) == 1
            and all(have.get(k) == want["conditions"][0][k] for k in keys))


def _event(namespace: str, involved: dict, reason: str, message: str, kind: str,
           now: str, identity: list) -> dict:
    """A core/v1 Event whose name is derived from what it says (idempotent create)."""
    digest = hashlib.sha256(repr(identity).encode()).hexdigest()[:16]
    return {"operation": "CreateIfNotExists", "object": {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{involved['name']}.{digest}", "namespace": namespace},
        "involvedObject": involved, "reason": reason, "message": message[:1024], "type": kind,
        "source": {"component": "image-mapper"}, "firstTimestamp": now, "lastTimestamp": now,
        "count": 1}}


def _mapfile_events(out: Output, cm: compiler.MapFileInput, diags: list[dict], now: str) -> None:
    if not diags:
        return
    for diag in diags:
        out.logs.append({"msg": "map file line", "level": "warn" if diag["severity"] == "warning"
                         else "error", "problem": diag["text"]})
    errors = [d for d in diags if d["severity"] == "error"]
    shown = errors or diags
    text = "; ".join(d["text"] for d in shown[:5]) + (
        f"; and {len(shown) - 5} more" if len(shown) > 5 else "")
    reason = "InvalidMapLines" if errors else "DeprecatedMapSyntax"
    involved = {"apiVersion": "v1", "kind": "ConfigMap", "name": cm.name,
                "namespace": cm.namespace, "uid": cm.uid}
    out.operations.append(_event(cm.namespace, involved, reason, text,
                                 "Warning", now, [cm.uid, cm.data, reason]))


def _reinvocation(out: Output, items: list[dict], name: str) -> None:
    """Ask for ``reinvocationPolicy: IfNeeded``, which shell-operator cannot set itself."""
    for item in items:
        hooks = item.get("filterResult")
        if not isinstance(hooks, list):
            continue
        for index, hook in enumerate(hooks):
            if isinstance(hook, dict) and hook.get("name") == MUTATE_WEBHOOK \
                    and hook.get("reinvocationPolicy") != "IfNeeded":
                out.operations.append(_reinvocation_patch(name, index))


def _reinvocation_patch(name: str, index: int) -> dict:
    return {"operation": "JSONPatch", "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration", "name": name, "jsonPatch": [
                {"op": "test", "path": f"/webhooks/{index}/name", "value": MUTATE_WEBHOOK},
                {"op": "add", "path": f"/webhooks/{index}/reinvocationPolicy",
                 "value": "IfNeeded"}]}


# ----------------------------------------------------------------------------- metrics

def _metrics(result: compiler.Result, maps: list) -> list[dict]:
    group = SYNC_METRICS_GROUP
    ops = [protocol.gauge("image_mapper_rules", result.rules[scope], {"scope": scope}, group)
           for scope in ("namespace", "cluster")]
    counts = {reason: 0 for reason in REASONS}
    for imap, _, _ in maps:
        verdict = result.verdicts.get((imap.namespace, imap.name))
        if verdict:
            counts[verdict[0]] = counts.get(verdict[0], 0) + 1
    ops += [protocol.gauge("image_mapper_imagemaps", n, {"reason": r}, group)
            for r, n in counts.items()]
    for (namespace, name), diags in sorted(result.diagnostics.items()):
        errors = sum(1 for d in diags if d["severity"] == "error")
        ops.append(protocol.gauge("image_mapper_mapfile_line_errors", errors,
                                  {"namespace": namespace, "configmap": name}, group))
    ops.append(protocol.gauge("image_mapper_snapshot_namespaces", result.namespaces, {}, group))
    return ops

