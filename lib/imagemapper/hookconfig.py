"""The ``--config`` documents of the three hooks, generated from the settings.

The output follows shell-operator's v1 hook configuration schema. Webhook names must
be DNS subdomains with at least three segments, and they are unique across hooks,
because shell-operator routes admission requests by them.
"""

from __future__ import annotations

from imagemapper import counters
from imagemapper.settings import MAP_FILE_LABEL, MAP_FILES_ENABLED, MAP_FILES_LABEL, MODE_LABEL, Settings

MUTATE_WEBHOOK = "pods.mutate.imagemapper.io"
VALIDATE_IMAGEMAPS = "imagemaps.validate.imagemapper.io"
VALIDATE_MAPFILES = "mapfiles.validate.imagemapper.io"
# opt-in mode: map files in namespaces without MAP_FILES_LABEL (the API server picks them)
VALIDATE_UNLABELED = "unlabeled-mapfiles.validate.imagemapper.io"
SYNC_GROUP = "sync"
NAMESPACES = "namespaces"  # the sync hook's binding for labeled namespaces (opt-in mode)

IMAGEMAP_FILTER = ("{name: .metadata.name, namespace: .metadata.namespace, uid: .metadata.uid,"
                   " generation: .metadata.generation, created: .metadata.creationTimestamp,"
                   " spec: .spec, deleting: (.metadata.deletionTimestamp != null),"
                   " status: (.status // {} | {observedGeneration, rules, conditions})}")
MAPFILE_FILTER = ("{name: .metadata.name, namespace: .metadata.namespace, uid: .metadata.uid,"
                  " data: .data, deleting: (.metadata.deletionTimestamp != null)}")
NAMESPACE_FILTER = ".metadata.name"  # the label selector already says it is labeled
WEBHOOK_FILTER = "[.webhooks[]? | {name: .name, reinvocationPolicy: .reinvocationPolicy}]"


def _images_cel(obj: str) -> str:
    """CEL: every image field of a Pod, as a list of lists (missing fields are empty)."""
    def listed(field: str, item: str) -> str:
        return f"(has({obj}.spec.{field}) ? {obj}.spec.{field}.map(x, {item}) : [])"
    container = "has(x.image) ? x.image : ''"
    volume = "has(x.image) && has(x.image.reference) ? x.image.reference : ''"
    parts = [listed(f, container) for f in ("containers", "initContainers", "ephemeralContainers")]
    parts.append(listed("volumes", volume))
    return f"(has({obj}.spec) ? [{', '.join(parts)}] : [])"


# An UPDATE that changes no image is never sent to the webhook: nothing to decide, and
# metadata updates (labels, finalizer removals, garbage-collection patches) keep working
# while no replica answers, whatever the failure policy.
IMAGES_CHANGED = {"name": "images-changed.imagemapper.io", "expression":
                  "request.operation != 'UPDATE' || "
                  f"{_images_cel('object')} != {_images_cel('oldObject')}"}


def namespace_selector(settings: Settings) -> dict:
    """kube-system, the operator's namespace and IMAGE_MAPPER_EXCLUDE_NAMESPACES are never
    mutated; the mode label opts namespaces in or out."""
    expressions = [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                    "values": settings.never_mutated}]
    if settings.namespace_mode == "opt-in":
        expressions.append({"key": MODE_LABEL, "operator": "In", "values": ["enabled"]})
    else:
        expressions.append({"key": MODE_LABEL, "operator": "NotIn", "values": ["disabled"]})
    return {"labelSelector": {"matchExpressions": expressions}}


def mutate_config(settings: Settings) -> dict:
    pods = {"apiGroups": [""], "apiVersions": ["v1"], "scope": "Namespaced"}
    return {
        "configVersion": "v1",
        "kubernetesMutating": [{
            "name": MUTATE_WEBHOOK,
            "rules": [
                {**pods, "operations": ["CREATE", "UPDATE"], "resources": ["pods"]},
                {**pods, "operations": ["UPDATE"], "resources": ["pods/ephemeralcontainers"]},
            ],
            "namespace": namespace_selector(settings),
            "labelSelector": {"matchExpressions": [
                {"key": MODE_LABEL, "operator": "NotIn", "values": ["disabled"]}]},
            "matchConditions": [IMAGES_CHANGED],
            "failurePolicy": settings.failure_policy,
            "sideEffects": "None",
            "timeoutSeconds": settings.timeout_seconds,
        }],
    }


def validate_config(settings: Settings) -> dict:
    """Apply-time checks. They fail open: the sync hook stays the authority."""
    common = {"failurePolicy": "Ignore", "sideEffects": "None",
              "timeoutSeconds": settings.timeout_seconds}
    mapfiles = {**common, "labelSelector": {"matchLabels": {MAP_FILE_LABEL: "true"}},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"],
                           "operations": ["CREATE", "UPDATE"], "resources": ["configmaps"],
                           "scope": "Namespaced"}]}
    hooks = [
        {"name": VALIDATE_IMAGEMAPS, **common, "rules": [{
            "apiGroups": ["imagemapper.io"], "apiVersions": ["v1alpha1"],
            "operations": ["CREATE", "UPDATE"], "resources": ["imagemaps"],
            "scope": "Namespaced"}]},
        {"name": VALIDATE_MAPFILES, **mapfiles},
    ]
    if settings.namespace_map_files == "opt-in":
        # The request carries no namespace labels; the API server's namespaceSelector
        # sends only map files in unlabeled namespaces (except the map namespace) here.
        hooks.append({"name": VALIDATE_UNLABELED, **mapfiles, "namespace": {"labelSelector": {
            "matchExpressions": [
                {"key": MAP_FILES_LABEL, "operator": "NotIn", "values": [MAP_FILES_ENABLED]},
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                 "values": [settings.map_namespace]}]}}})
    return {"configVersion": "v1", "kubernetesValidating": hooks}


def sync_config(settings: Settings) -> dict:
    """What shell-operator hands the sync hook, kept as small as the work it causes.

    ImageMaps come one event at a time (no group, no full objects in memory): a run after
    one change reads that one ImageMap, not all of them, and the hook keeps its own copy
    of the rest (imagemapper.syncstate). The status the hook compares against travels in
    the jqFilter result. Map files and the webhook configuration share a group, so each
    such run sees all of them (there are few). The ``resync`` schedule hands over the
    full snapshots every 30 minutes, so a run that failed cannot leave the copy wrong
    for longer.

    The grouped bindings come first: shell-operator queues the Synchronization tasks in
    binding order, and a grouped head task absorbs the ones after it, so at start one run
    sees the map files and every ImageMap and compiles once. (With ``imagemaps`` first,
    its Synchronization runs alone and can compile nothing without the map files, and a
    second run reads the ImageMaps back and compiles them.)

    ``allowFailure``: the snapshot is written before the hook exits, so a status or
    Event write the API server refuses must not fail the run and block the queue with
    retries; the next run recomputes every write from the current state.
    """
    bindings: list[dict[str, object]] = [
            {"name": "mapfiles", "apiVersion": "v1", "kind": "ConfigMap",
             "labelSelector": {"matchLabels": {MAP_FILE_LABEL: "true"}},
             "keepFullObjectsInMemory": False, "group": SYNC_GROUP, "jqFilter": MAPFILE_FILTER},
            {"name": "webhook", "apiVersion": "admissionregistration.k8s.io/v1",
             "kind": "MutatingWebhookConfiguration",
             "nameSelector": {"matchNames": [settings.webhook_configuration]},
             "keepFullObjectsInMemory": False, "group": SYNC_GROUP, "jqFilter": WEBHOOK_FILTER},
            {"name": "imagemaps", "apiVersion": "imagemapper.io/v1alpha1", "kind": "ImageMap",
             "keepFullObjectsInMemory": False, "jqFilter": IMAGEMAP_FILTER},
    ]
    if settings.namespace_map_files == "disabled":
        # Only cluster-wide map files count: watch ConfigMaps in that one namespace.
        bindings[0]["namespace"] = {"nameSelector": {"matchNames": [settings.map_namespace]}}
    if settings.namespace_map_files == "opt-in":
        # Which namespaces' map files count. Only labeled namespaces, only their names:
        # a namespace that gains or loses the label comes and goes as an event.
        # Grouped, so before ``imagemaps`` like the others (see above).
        bindings.insert(len(bindings) - 1, {
            "name": NAMESPACES, "apiVersion": "v1", "kind": "Namespace",
            "labelSelector": {"matchLabels": {MAP_FILES_LABEL: MAP_FILES_ENABLED}},
            "keepFullObjectsInMemory": False, "group": SYNC_GROUP, "jqFilter": NAMESPACE_FILTER})
    return {"configVersion": "v1",
            "kubernetes": [{**binding, "allowFailure": True} for binding in bindings],
            # The admission counters' one writer, in its own queue so that it never waits
            # for a sync (see imagemapper.counters).
            "schedule": [{"name": counters.BINDING, "crontab": counters.EXPORT_EVERY,
                          "queue": "counters"},
                         {"name": "resync", "crontab": "*/30 * * * *", "allowFailure": True,
                          "includeSnapshotsFrom": [b["name"] for b in bindings]}]}
