"""The sync hook's own copy of the cluster's rule objects, kept up to date from events.

shell-operator hands the sync hook one changed ImageMap per event, not the whole
cluster: the ``imagemaps`` binding has no group and keeps no full objects, so a run
after one change reads a few kilobytes instead of every ImageMap (17.8 MB at 10k
ImageMaps x 10 entries). This module folds the binding contexts of a run into the
state it stores:

* ``inputs.snap`` (the snapshot file format, one region per namespace): the
  ``filterResult`` of every ImageMap, by namespace and name;
* ``mapfiles.snap``: the ``filterResult`` of every map-file ConfigMap, which arrive as
  the group snapshot of the ``mapfiles`` binding (there are few of them);
* ``mapfiles.snap`` also keeps the names of the namespaces labeled
  ``imagemapper.io/map-files=enabled`` (the ``namespaces`` binding, opt-in mode only);
* the flags that say whether each kind has been synchronized since the state was
  made. Nothing is compiled before both have been, so a replica never serves a
  snapshot with ImageMaps and without the cluster map files.

A Synchronization context (and the periodic ``resync`` schedule, which includes the
full snapshots, as a safety net for any event a failed run dropped) replaces the
ImageMaps wholesale; an Event changes one. Only the namespaces that changed are read,
compiled and written again; the rest is copied from the previous generation.
"""

from __future__ import annotations

import marshal

from imagemapper import snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

IMAGEMAPS, MAPFILES, NAMESPACES = "imagemaps", "mapfiles", "namespaces"
BUILT = "built"  # flag: a snapshot was compiled from this state (before it, every run is full)
MAPFILE_STATE = "mapfiles.snap"


class State:
    """Stored inputs plus the changes of this run; :meth:`save` writes them."""

    def __init__(self, state_dir: str):
        self.state_dir = state_dir
        self.old = self._open_inputs()
        self.flags, self.mapfiles, self.labeled = self._load_mapfiles()
        self.updates: dict[str, dict[str, dict]] = {}  # namespace -> its whole new set
        self.full: dict[str, dict[str, dict]] | None = None  # every namespace, when resynced
        self.mapfiles_changed = False

    def _open_inputs(self) -> snapshot.Snapshot | None:
        try:
            return snapshot.open_snapshot(self.state_dir, snapshot.INPUTS)
        except snapshot.SnapshotError:
            return None

    def _load_mapfiles(self) -> tuple[dict[str, bool], list[dict[str, Any]], frozenset[str]]:
        try:
            with open(f"{self.state_dir}/{MAPFILE_STATE}", "rb") as handle:
                doc = marshal.loads(handle.read())
            if isinstance(doc, dict) and doc.get("v") == snapshot.VERSION:
                return dict(doc["flags"]), list(doc["items"]), frozenset(doc.get("labeled") or ())
        except (OSError, ValueError, EOFError, TypeError, KeyError):
            pass
        return {}, [], frozenset()

    # ------------------------------------------------------------------ reading

    def namespace_items(self, namespace: str) -> dict[str, dict]:
        """The ImageMaps of one namespace after this run's changes: {name: filterResult}."""
        if self.full is not None:
            return self.full.get(namespace, {})
        if namespace in self.updates:
            return self.updates[namespace]
        if self.old is None:
            return {}
        try:
            doc = self.old.namespace(namespace) or {}
            found = snapshot.materialize(doc.get("maps") or {})
        except snapshot.SnapshotError:
            return {}
        return found if isinstance(found, dict) else {}

    def changed(self) -> set[str] | None:
        """Namespaces whose ImageMaps changed, or None when everything must be reconsidered."""
        if self.full is not None or self.old is None or not self.flags.get(BUILT):
            return None
        return set(self.updates)

    def ready(self, namespaces: bool = False) -> bool:
        """Both kinds synchronized (and, with ``namespaces``, the labeled namespaces)."""
        return bool(self.flags.get(IMAGEMAPS) and self.flags.get(MAPFILES)
                    and (not namespaces or self.flags.get(NAMESPACES)))

    def all_namespaces(self) -> list[str]:
        if self.full is not None:
            return sorted(self.full)
        names = set(self.old.namespaces()) if self.old is not None else set()
        return sorted(names | set(self.updates))

    # ------------------------------------------------------------------ folding in

    def apply(self, contexts: list) -> None:
        """Fold this run's binding contexts in, oldest first."""
        for context in contexts:
            if not isinstance(context, dict):
                continue
            snaps = context.get("snapshots")
            if isinstance(snaps, dict) and isinstance(snaps.get(MAPFILES), list):
                self._set_mapfiles(snaps[MAPFILES])
            if isinstance(snaps, dict) and isinstance(snaps.get(NAMESPACES), list):
                self._set_labeled(snaps[NAMESPACES])
            if isinstance(snaps, dict) and isinstance(snaps.get(IMAGEMAPS), list):
                self._replace_imagemaps(snaps[IMAGEMAPS])
            if context.get("binding") != IMAGEMAPS:
                continue
            if context.get("type") == "Synchronization":
                self._replace_imagemaps(context.get("objects") or [])
            elif context.get("type") == "Event":
                self._event(context)

    def _set_mapfiles(self, items: list) -> None:
        items = [i for i in items if isinstance(i, dict)]
        if items != self.mapfiles or not self.flags.get(MAPFILES):
            self.mapfiles, self.mapfiles_changed = items, True
        self.flags[MAPFILES] = True

    def _set_labeled(self, items: list) -> None:
        """Names of the labeled namespaces (jqFilter ``.metadata.name``)."""
        found = (i.get("filterResult") if isinstance(i, dict) else None for i in items)
        self.labeled = frozenset(n for n in found if isinstance(n, str) and snapshot.valid_namespace(n))
        self.flags[NAMESPACES] = True

    def _replace_imagemaps(self, items: list) -> None:
        full: dict[str, dict[str, dict]] = {}
        for item in items:
            key = _key(item)
            if key:
                full.setdefault(key[0], {})[key[1]] = _found(item)
        self.full, self.updates = full, {}
        self.flags[IMAGEMAPS] = True

    def _event(self, context: dict) -> None:
        key = _key(context)
        if not key:
            return
        namespace, name = key
        items = dict(self.namespace_items(namespace))
        if context.get("watchEvent") == "Deleted":
            items.pop(name, None)
        else:
            items[name] = _found(context)
        if self.full is not None:
            self.full[namespace] = items
        else:
            self.updates[namespace] = items

    # ------------------------------------------------------------------ writing

    def save(self, built: bool = False) -> None:
        """Write the inputs and map files of this run (each file atomically)."""
        if built:
            self.flags[BUILT] = True
        writer = snapshot.Writer(self.state_dir, snapshot.INPUTS)
        try:
            carry = self.old.namespaces() if self.old is not None and self.full is None else {}
            for namespace in self.all_namespaces():
                if self.old is not None and self.full is None and namespace not in self.updates \
                        and namespace in carry:
                    writer.add_namespace(namespace, *snapshot.copy_region(self.old, carry[namespace]))
                    continue
                items = self.namespace_items(namespace)
                if items:
                    writer.add_namespace(namespace, *snapshot.encode_region({"maps": items}))
            writer.commit(None, "")
        except BaseException:
            writer.abort()
            raise
        finally:
            if self.old is not None:
                self.old.close()
        snapshot.write_atomic(f"{self.state_dir}/{MAPFILE_STATE}", marshal.dumps(
            {"v": snapshot.VERSION, "flags": self.flags, "items": self.mapfiles,
             "labeled": sorted(self.labeled)}))


def _found(item: dict[str, Any]) -> dict[str, Any]:
    """The filterResult of an item, or one made from its object (keepFullObjectsInMemory)."""
    found = item.get("filterResult")
    raw = item.get("object")
    obj: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if isinstance(found, dict):
        if "status" not in found and isinstance(obj.get("status"), dict):
            return {**found, "status": obj["status"]}  # the full object carries the status
        return found
    raw_meta = obj.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    return {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "generation": meta.get("generation"), "created": meta.get("creationTimestamp"),
            "spec": obj.get("spec"), "status": obj.get("status"),
            "deleting": bool(meta.get("deletionTimestamp"))}


def _key(item: dict[str, Any]) -> tuple[str, str] | None:
    found = _found(item)
    namespace, name = found.get("namespace"), found.get("name")
    if isinstance(namespace, str) and isinstance(name, str) and snapshot.valid_namespace(namespace) and name:
        return namespace, name
    return None
