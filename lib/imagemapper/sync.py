"""The sync hook's work: cluster state in; snapshot, status, Events and metrics out.

ImageMaps arrive one event at a time and the hook keeps its own copy of them
(:mod:`imagemapper.syncstate`); map files and the webhook configuration share a group,
so those runs see all of them. Each run recompiles only the namespaces that changed
(see hookconfig.sync_config). The work is kept idempotent across replicas and restarts:

* status is patched only when the desired status differs from the object's current
  one, which the jqFilter carries (our own status write wakes the hook once more, and
  that run finds nothing to do);
* Events get a name derived from their content and are created with
  ``CreateIfNotExists``, so two replicas, or a rerun, never duplicate one. A map
  file's diagnostics are logged and sent as an Event only when they change
  (``reported.json``), and nothing is reported about objects being deleted: the API
  server forbids creating Events in a Terminating namespace;
* every binding has ``allowFailure``: a status or Event write that the API server
  refuses is logged by shell-operator and never fails (and retries with backoff) the
  run that wrote the snapshot. The next run recomputes every write from the state;
* ``reinvocationPolicy: IfNeeded`` is patched into the mutating webhook
  configuration whenever shell-operator (re)registers it without the field.
"""

from __future__ import annotations

import hashlib
import json
import time

from imagemapper import builder, compiler, kube, lint, mapfile, protocol, snapshot, syncstate
from imagemapper.hookconfig import MUTATE_WEBHOOK
from imagemapper.imagemap import MapInput
from imagemapper.settings import Settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from imagemapper.compiler import ClusterCompiled
    from imagemapper.imagemap import Verdict
    from imagemapper.shapes import VerdictRecord

API_VERSION = "imagemapper.io/v1alpha1"
SYNC_METRICS_GROUP = "image_mapper_sync"
REASONS = ("Accepted", "Invalid", "Conflict")
REPORTED = "reported.json"  # the map-file diagnostics already logged and sent as Events
LOGGED_PER_CHANGE = 100     # diagnostic log lines per ConfigMap and change, then a summary


class Output:
    """Everything one sync run wants written back through shell-operator."""

    def __init__(self) -> None:
        self.operations: list[dict] = []
        self.metrics: list[dict] = []
        self.logs: list[dict] = []
        self.result: builder.Result | None = None


def _items(contexts: list, binding: str) -> list[dict]:
    """The newest view of one binding: its snapshot, else its Synchronization objects."""
    for context in reversed(contexts):
        snaps = context.get("snapshots")
        if isinstance(snaps, dict) and binding in snaps:
            return [i for i in snaps[binding] or [] if isinstance(i, dict)]
        if context.get("binding") == binding and context.get("type") == "Synchronization":
            return [i for i in context.get("objects") or [] if isinstance(i, dict)]
    return []


def _imagemap_of(item: dict) -> tuple[MapInput, dict, str, bool] | None:
    """(resolver input, current status, uid, being deleted) from a snapshot item."""
    found = item.get("filterResult")
    obj = kube.mapping(item, "object")
    if not isinstance(found, dict):
        if not obj:
            return None
        meta = kube.mapping(obj, "metadata")
        found = {"name": meta.get("name"), "namespace": meta.get("namespace"),
                 "uid": meta.get("uid"), "generation": meta.get("generation"),
                 "created": meta.get("creationTimestamp"), "spec": obj.get("spec"),
                 "deleting": bool(meta.get("deletionTimestamp"))}
    imap = MapInput(kube.text(found, "namespace"), kube.text(found, "name"), kube.text(found, "created"),
                    kube.whole(found, "generation"), kube.items(found, "spec", "map"))
    status = kube.mapping(obj, "status") or kube.mapping(found, "status")  # the jqFilter carries it
    return imap, status, kube.text(found, "uid"), found.get("deleting") is True


def _imagemaps(state: syncstate.State, namespaces: list[str]) -> list:
    """The ImageMaps of these namespaces after this run's events, as ``_imagemap_of`` gives them."""
    return [m for ns in namespaces for found in state.namespace_items(ns).values()
            if (m := _imagemap_of({"filterResult": found}))]


def _mapfile_of(item: dict) -> mapfile.MapFileInput | None:
    found = item.get("filterResult")
    if isinstance(found, dict):
        return mapfile.MapFileInput(kube.text(found, "namespace"), kube.text(found, "name"),
                                     kube.text(found, "uid"), kube.mapping(found, "data"))
    if isinstance(item.get("object"), dict):
        return mapfile.MapFileInput.from_object(item["object"])
    return None


def _deleting(item: dict) -> bool:
    """Whether a snapshot item is being deleted (jqFilter ``deleting`` or the object)."""
    found = item.get("filterResult")
    if isinstance(found, dict) and "deleting" in found:
        return found.get("deleting") is True
    return bool(kube.resolve(item, "object", "metadata", "deletionTimestamp"))


def run(contexts: list, settings: Settings, now: str | None = None) -> Output:
    """One sync run. ``now`` is an RFC 3339 timestamp (injected by tests)."""
    now = now or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = Output()
    state = syncstate.State(settings.state_dir)
    state.apply(contexts)
    _reinvocation(out, _items(contexts, "webhook"), settings.webhook_configuration)
    if not state.ready(settings.namespace_map_files == "opt-in"):  # compile after the others' Synchronization
        state.save()
        out.logs.append({"msg": "waiting for the first synchronization of ImageMaps and map files"})
        return out
    changed = state.changed()
    maps = _imagemaps(state, state.all_namespaces() if changed is None else sorted(changed))
    cm_items = [(m, _deleting(i)) for i in state.mapfiles if (m := _mapfile_of(i))
                and (settings.namespace_map_files != "disabled" or m.namespace == settings.map_namespace)]
    gate, labels = _TargetGate(settings), _LabelGate(settings, state.labeled)
    mapfiles = [m for m, _ in cm_items if labels.counts(m) and gate.mapfile(m)]
    chains = _ChainNotes(mapfiles, settings.map_namespace, settings.state_dir)
    result = builder.build(settings.state_dir, [m[0] for m in maps if gate.imagemap(m[0])], mapfiles,
                            settings.map_namespace, changed=changed,
                            inputs_of=lambda ns: [m[0] for m in _imagemaps(state, [ns]) if gate.imagemap(m[0])],
                            observe=chains.observe, cluster=chains.cluster)
    if result.cluster_changed and changed is not None:  # its targets may shadow any ImageMap entry
        maps = _imagemaps(state, state.all_namespaces())
    state.save(built=True)
    gate.report(result)
    labels.report(result)
    out.result = result
    for imap, status, uid, deleting in maps:
        verdict = result.verdicts.get((imap.namespace, imap.name))
        if verdict and not deleting:  # no status or Events for what is going away
            _status_and_event(out, imap, status, uid, chains.noted(imap, verdict), now)
    before = _load_reported(settings.state_dir)
    reported: dict = {}
    for cm, deleting in cm_items:
        _mapfile_events(out, cm, result.diagnostics.get((cm.namespace, cm.name), []), now,
                        before, reported, deleting)
    if reported != before:
        snapshot.write_atomic(f"{settings.state_dir}/{REPORTED}", json.dumps(reported, sort_keys=True))
    out.metrics = _metrics(result)
    out.logs.append({"msg": "snapshot compiled", "namespaces": result.namespaces,
                     "recompiled": len(result.recompiled),
                     "namespace_rules": result.rules["namespace"],
                     "cluster_rules": result.rules["cluster"]})
    return out


class _ChainNotes:
    """Accepted ImageMap entries that a cluster target keeps from firing (imagemapper.chains)
    are named in the Ready message, so that no rule is silently dead."""

    LIMIT = 4000  # characters of notes in one message

    def __init__(self, mapfiles: list, map_namespace: str, state_dir: str) -> None:
        self.cms = [cm for cm in mapfiles if cm.namespace == map_namespace]
        self.state_dir = state_dir
        self.compiled: ClusterCompiled | None = None
        self.carried: dict | None = None  # the same targets, read from the last snapshot
        self.found: dict[tuple[str, str], list[str]] = {}  # from the compile's own entries
        self.memo: dict = {}  # chains.shadowed's, for these targets

    def cluster(self) -> ClusterCompiled:
        """``compiler.compile_cluster`` of the cluster map files, once per run (the builder
        asks for it too)."""
        if self.compiled is None:
            self.compiled = compiler.compile_cluster(self.cms)
        return self.compiled

    @property
    def targets(self) -> dict | None:
        if not self.cms:
            return None
        if self.compiled is None and self.carried is None:  # unchanged files: no compile
            self.carried = builder.carried_cluster_targets(self.state_dir, self.cms)
        if self.compiled is None and self.carried is not None:
            return self.carried
        return self.cluster()[0]["targets"]

    def observe(self, namespace: str, verdicts: dict[str, Verdict]) -> None:
        """Note the accepted maps of a namespace being compiled, from its parsed entries."""
        targets = self.targets
        if not targets:
            return
        from imagemapper.chains import shadowed

        for name, verdict in verdicts.items():
            if verdict.ready:
                self.found[(namespace, name)] = shadowed(verdict.entries, targets, self.memo)

    def noted(self, imap: MapInput, verdict: VerdictRecord) -> VerdictRecord:
        if verdict["reason"] != "Accepted" or not self.targets:
            return verdict
        notes = self.found.get((imap.namespace, imap.name))
        if notes is None:  # carried over from the last build: parse its entries here
            from imagemapper.chains import cross_layer

            notes = cross_layer(imap.items, self.targets, self.memo)
        if not notes:
            return verdict
        text = "; ".join(notes)
        text = text if len(text) <= self.LIMIT else text[:self.LIMIT] + "..."
        return {**verdict, "message": f"{verdict['message']}. Shadowed by the cluster map files: {text}"}


class _TargetGate:
    """IMAGE_MAPPER_ALLOWED_TARGETS in the sync hook: a namespace rule outside it keeps its
    whole ImageMap or ConfigMap out of the snapshot, and the reason goes to its status
    (``Invalid``) or to its diagnostics (Event, log, metric)."""

    def __init__(self, settings: Settings) -> None:
        self.allowed = settings.allowed_targets
        self.map_namespace = settings.map_namespace
        self.maps: dict[tuple[str, str], str] = {}
        self.files: dict[tuple[str, str], list[str]] = {}

    def imagemap(self, imap: MapInput) -> bool:
        if not self.allowed:
            return True
        from imagemapper import allowlist

        bad = allowlist.imagemap_violations(imap.items, self.allowed)
        if bad:
            self.maps[(imap.namespace, imap.name)] = "; ".join(bad)
        return not bad

    def mapfile(self, cm: mapfile.MapFileInput) -> bool:
        if not self.allowed or cm.namespace == self.map_namespace:
            return True
        from imagemapper import allowlist, mapfile

        bad = allowlist.mapfile_violations(mapfile.compile_files(cm.files())[1], self.allowed)
        if bad:
            self.files[(cm.namespace, cm.name)] = [f"configmap {cm.namespace}/{cm.name}: {b}; "
                                                   "the whole ConfigMap is ignored" for b in bad]
        return not bad

    def report(self, result: builder.Result) -> None:
        for key, message in self.maps.items():
            result.verdicts[key] = {"reason": "Invalid", "message": message, "rules": 0}
        for key, texts in self.files.items():
            result.diagnostics[key] = [*result.diagnostics.get(key, []), *(
                {"source": key[1], "line": 0, "severity": "error", "message": t, "text": t,
                 "reason": "TargetNotAllowed"} for t in texts)]


class _LabelGate:
    """IMAGE_MAPPER_NAMESPACE_MAP_FILES=opt-in: the map files of a namespace without the
    label are no rules. Each such ConfigMap gets one error diagnostic, so it is reported
    (log, Event, metric) when that starts, like any other diagnostic."""

    REASON = "MapFilesNotEnabled"

    def __init__(self, settings: Settings, labeled: frozenset[str]) -> None:
        self.settings, self.labeled = settings, labeled
        self.ignored: list[tuple[str, str]] = []

    def counts(self, cm: mapfile.MapFileInput) -> bool:
        if self.settings.map_files_count(cm.namespace, self.labeled):
            return True
        self.ignored.append((cm.namespace, cm.name))
        return False

    def report(self, result: builder.Result) -> None:
        from imagemapper.settings import MAP_FILES_ENABLED, MAP_FILES_LABEL

        for namespace, name in self.ignored:
            text = (f"configmap {namespace}/{name}: namespace {namespace} is not labeled "
                    f"{MAP_FILES_LABEL}={MAP_FILES_ENABLED} (IMAGE_MAPPER_NAMESPACE_MAP_FILES=opt-in); "
                    "the whole ConfigMap is ignored until a cluster admin labels the namespace")
            result.diagnostics[(namespace, name)] = [{
                "source": name, "line": 0, "severity": "error", "message": text, "text": text,
                "reason": self.REASON}]


# ----------------------------------------------------------------------------- status

def desired_status(imap: MapInput, verdict: VerdictRecord, current: dict, now: str) -> dict:
    """The status the ImageMap should have; lastTransitionTime kept while unchanged."""
    reason, message, rules = verdict["reason"], verdict["message"], verdict["rules"]
    state = "True" if reason == "Accepted" else "False"
    old = _ready(current)
    since = old.get("lastTransitionTime") if old.get("status") == state else None
    return {"observedGeneration": imap.generation, "rules": rules, "conditions": [{
        "type": "Ready", "status": state, "reason": reason, "message": message,
        "lastTransitionTime": since or now, "observedGeneration": imap.generation}]}


def _status_and_event(out: Output, imap: MapInput, current: dict, uid: str,
                      verdict: VerdictRecord, now: str) -> None:
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
    for condition in status.get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == "Ready":
            return condition
    return {}


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


def _load_reported(state_dir: str) -> dict:
    """{"ns/name": {"digest": ..., "lines": [...]}} as last written; {} when unreadable."""
    try:
        with open(f"{state_dir}/{REPORTED}", encoding="utf-8") as handle:
            found = json.load(handle)
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _mapfile_events(out: Output, cm: mapfile.MapFileInput, diags: list[dict], now: str,
                    before: dict, reported: dict, deleting: bool) -> None:
    """Log new diagnostics and send one Event, only when the ConfigMap's diagnostics change."""
    if not diags:
        return
    key = f"{cm.namespace}/{cm.name}"
    digest = _short(repr([cm.uid, [(d["severity"], d["text"]) for d in diags]]))
    seen = kube.mapping(before, key)
    known = set(kube.items(seen, "lines"))
    reported[key] = {"digest": digest, "lines": sorted(_short(d["text"]) for d in diags)}
    if seen.get("digest") == digest:
        return
    fresh = [d for d in diags if _short(d["text"]) not in known]
    for diag in fresh[:LOGGED_PER_CHANGE]:
        out.logs.append({"msg": "map file line", "level": "warn" if diag["severity"] == "warning"
                         else "error", "problem": diag["text"]})
    if len(fresh) > LOGGED_PER_CHANGE:
        out.logs.append({"msg": "map file lines", "level": "warn", "namespace": cm.namespace,
                         "configmap": cm.name, "problem": f"{len(fresh) - LOGGED_PER_CHANGE} more "
                         "diagnostics not logged; run `image-mapper check` on the file"})
    if deleting:
        return  # no Events about objects being deleted (the namespace may be Terminating)
    involved = {"apiVersion": "v1", "kind": "ConfigMap", "name": cm.name,
                "namespace": cm.namespace, "uid": cm.uid}
    for reason, group in _by_reason(diags).items():  # one Event per cause, named for it
        text = lint.first_of([d["text"] for d in group])
        out.operations.append(_event(cm.namespace, involved, reason, text,
                                     "Warning", now, [cm.uid, cm.data, reason, text]))


def _by_reason(diags: list[dict]) -> dict[str, list[dict]]:
    """Diagnostics grouped by Event reason (mapfile's constants), in order of first use."""
    out: dict[str, list[dict]] = {}
    for diag in diags:
        reason = diag.get("reason") or ("InvalidMapLines" if diag["severity"] == "error"
                                        else "DeprecatedMapSyntax")
        out.setdefault(reason, []).append(diag)
    return out


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

def _metrics(result: builder.Result) -> list[dict]:
    group = SYNC_METRICS_GROUP
    ops = [protocol.gauge("image_mapper_rules", result.rules[scope], {"scope": scope}, group)
           for scope in ("namespace", "cluster")]
    counts = {reason: 0 for reason in REASONS}
    for verdict in result.verdicts.values():  # every namespace, compiled now or carried over
        counts[verdict["reason"]] = counts.get(verdict["reason"], 0) + 1
    ops += [protocol.gauge("image_mapper_imagemaps", n, {"reason": r}, group)
            for r, n in counts.items()]
    for (namespace, name), diags in sorted(result.diagnostics.items()):
        errors = sum(1 for d in diags if d["severity"] == "error")
        ops.append(protocol.gauge("image_mapper_mapfile_line_errors", errors,
                                  {"namespace": namespace, "configmap": name}, group))
    ops.append(protocol.gauge("image_mapper_snapshot_namespaces", result.namespaces, {}, group))
    return ops

