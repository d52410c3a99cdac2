"""The sync hook's incremental build: cluster state in, snapshot files and ``index.json`` out.

Each namespace's inputs are hashed, and a namespace whose hash matches the last build
(recorded in ``index.json``, this module's own bookkeeping) is not recompiled: its bytes
are copied from the previous generation of the snapshot file. A change to one ImageMap
therefore costs compiling its own namespace (:mod:`imagemapper.compiler`), plus hashing
the rest and copying the file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os

from imagemapper import compiler, snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from imagemapper.compiler import ClusterCompiled, Observer
    from imagemapper.imagemap import MapInput
    from imagemapper.mapfile import MapFileInput
    from imagemapper.shapes import VerdictRecord


INDEX = "index.json"
INDEX_FORMAT = 2  # 2: verdicts are {reason, message, rules} records; another format is rebuilt


class Result:
    """What one build decided, for status, Events, metrics and logs."""

    def __init__(self) -> None:
        self.verdicts: dict[tuple[str, str], VerdictRecord] = {}  # (ns, name) -> Ready condition
        self.diagnostics: dict[tuple[str, str], list[dict]] = {}  # (ns, configmap) -> diags
        self.rules = {"namespace": 0, "cluster": 0}
        self.recompiled: list[str] = []                      # namespaces compiled this time
        self.cluster_changed = False                         # the cluster map files compiled anew
        self.namespaces = 0


def _digest(payload: object) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _load_index(state_dir: str) -> dict:
    try:
        with open(os.path.join(state_dir, INDEX), encoding="utf-8") as handle:
            index = json.load(handle)
        if isinstance(index, dict) and index.get("v") == snapshot.VERSION \
                and index.get("format") == INDEX_FORMAT:
            return index
    except (OSError, ValueError):
        pass
    return {"v": snapshot.VERSION, "format": INDEX_FORMAT, "namespaces": {}, "cluster": {}}


def _previous(state_dir: str, index: dict[str, Any], name: str) -> snapshot.Snapshot | None:
    """The generation of file ``name`` that this index describes, or None."""
    stamp = (index.get("stamps") or {}).get(name)
    if not stamp or stamp != _file_stamp(os.path.join(state_dir, name)):
        return None  # missing, or changed behind our back: everything is compiled again
    try:
        return snapshot.open_snapshot(state_dir, name)
    except snapshot.SnapshotError:
        return None


def _namespace_key(maps: list[MapInput], cms: list[MapFileInput]) -> str:
    return _digest([sorted([m.name, m.created, m.items] for m in maps),
                    sorted([c.name, c.data] for c in cms)])


def build(state_dir: str, maps: list[MapInput], configmaps: list[MapFileInput],
          map_namespace: str, changed: set[str] | None = None,
          inputs_of: Callable[[str], list[MapInput]] | None = None,
          observe: Observer | None = None,
          cluster: Callable[[], ClusterCompiled] | None = None) -> Result:
    """Bring the snapshot in ``state_dir`` up to date with the given cluster state.

    With ``changed`` None, ``maps`` and ``configmaps`` are the whole cluster. Otherwise
    ``maps`` holds the ImageMaps of the ``changed`` namespaces only (``configmaps`` is
    always all of them): every other namespace is carried over from the previous
    generation, and ``inputs_of(namespace) -> [MapInput]`` supplies the ImageMaps of one
    that cannot be carried (its region is gone). Unchanged namespaces are copied byte
    for byte; only namespaces whose inputs changed are compiled again, and ``observe``
    sees their verdicts (see compiler.compile_namespace). ``cluster()`` gives
    ``compiler.compile_cluster`` of the cluster-wide map files when the caller compiles
    them too; either way they are compiled at most once.
    """
    result = Result()
    index = _load_index(state_dir)
    old_ns: dict = index.get("namespaces", {})
    rules_old, accepted_old = _previous(state_dir, index, snapshot.FILE), _previous(state_dir, index, snapshot.ACCEPTED)
    carry = _Carry(rules_old, accepted_old)
    groups, cluster_cms = compiler.group_by_namespace(maps, configmaps, map_namespace)
    names = set(groups) if changed is None else set(groups) | set(old_ns)
    new_ns: dict = {}
    writers = snapshot.Writer(state_dir), snapshot.Writer(state_dir, snapshot.ACCEPTED)
    compiled = functools.cache(cluster or (lambda: compiler.compile_cluster(cluster_cms)))  # first use only
    shadows = _Shadows(cluster_cms, compiled)
    try:
        for namespace in sorted(names):
            ns_maps, ns_cms = groups.get(namespace, ([], []))
            loaded: list[MapInput] | None = ns_maps
            if changed is not None and namespace not in changed:
                loaded = None  # not loaded: carried over, or read with inputs_of
            entry = _build_namespace(writers, carry, namespace, loaded, ns_cms,
                                     old_ns.get(namespace), result, inputs_of, observe)
            if entry is not None:
                shadows.attach(namespace, entry, ns_cms, old_ns.get(namespace), result)
                new_ns[namespace] = entry
        cluster_entry, cluster_region = _build_cluster(carry, cluster_cms, index.get("cluster") or {}, result,
                                                       compiled)
        generation = hashlib.sha256("\n".join([cluster_entry["hash"], *(
            f"{ns} {e['hash']}" for ns, e in sorted(new_ns.items()))]).encode()).hexdigest()[:32]
        writers[0].commit(cluster_region, generation)
        writers[1].commit(None, generation)
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    finally:
        carry.close()
    result.namespaces = sum(1 for entry in new_ns.values() if entry["rules"])
    stamps = {name: _file_stamp(os.path.join(state_dir, name)) for name in (snapshot.FILE, snapshot.ACCEPTED)}
    snapshot.write_atomic(os.path.join(state_dir, INDEX), json.dumps(
        {"v": snapshot.VERSION, "format": INDEX_FORMAT, "namespaces": new_ns, "cluster": cluster_entry,
         "stamps": stamps}))
    snapshot.mark_ready(state_dir)
    return result


class _Carry:
    """Regions of the previous generation that an unchanged input can reuse."""

    def __init__(self, rules_old: snapshot.Snapshot | None, accepted_old: snapshot.Snapshot | None) -> None:
        self.old, self.accepted_old = rules_old, accepted_old
        self.refs = rules_old.namespaces() if rules_old is not None else {}
        self.accepted_refs = accepted_old.namespaces() if accepted_old is not None else {}

    def usable(self) -> bool:
        return self.old is not None and self.accepted_old is not None

    def namespace(self, namespace: str) -> tuple[tuple[snapshot._Copy, int] | None, tuple[snapshot._Copy, int] | None]:
        """(rules region or None, accepted region or None) of an unchanged namespace."""
        ref, acc = self.refs.get(namespace), self.accepted_refs.get(namespace)
        return (None if ref is None or self.old is None else snapshot.copy_region(self.old, ref),
                None if acc is None or self.accepted_old is None else snapshot.copy_region(self.accepted_old, acc))

    def cluster(self) -> tuple[snapshot._Copy, int] | None:
        return None if self.old is None else snapshot.copy_region(self.old, self.old.head["cluster"])

    def close(self) -> None:
        for old in (self.old, self.accepted_old):
            if old is not None:
                old.close()


def _file_stamp(path: str) -> list[int] | None:
    """(size, mtime, inode) of the file we wrote, so that a file changed behind our back
    (deleted, truncated, overwritten) makes the next sync recompile everything."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return [info.st_size, info.st_mtime_ns, info.st_ino]


def _build_namespace(writers: tuple[snapshot.Writer, snapshot.Writer], carry: _Carry, namespace: str,
                     maps: list[MapInput] | None, cms: list[MapFileInput], previous: dict[str, Any] | None,
                     result: Result, inputs_of: Callable[[str], list[MapInput]] | None = None,
                     observe: Observer | None = None) -> dict[str, Any] | None:
    """Carry one namespace over or compile it; None when it has no inputs any more.

    ``maps`` None: the caller did not load this namespace's ImageMaps because nothing
    about them changed; ``inputs_of`` loads them if the previous region cannot be reused.
    """
    key = _namespace_key(maps, cms) if maps is not None else None
    reusable = previous is not None and carry.usable() and (
        key == previous.get("hash") or (maps is None and _cms_key(cms) == previous.get("cms")))
    regions: tuple[tuple[bytes | snapshot._Copy, int] | None, ...] = (
        carry.namespace(namespace) if reusable else (None, None))
    if reusable and regions[0] is None and previous is not None and previous.get("rules"):
        reusable = False  # the index says there were rules, the file has none
    if not reusable and maps is None:
        maps = list(inputs_of(namespace)) if inputs_of else []
        key = _namespace_key(maps, cms)
    if reusable and previous is not None:
        entry = previous
    elif not maps and not cms:
        return None
    else:
        doc, verdicts, diags, rules = compiler.compile_namespace(namespace, maps or [], cms, observe)
        accepted = doc.pop("accepted", {}) if doc else {}
        regions = (snapshot.encode_region(dict(doc)) if doc else None,
                   snapshot.encode_region({"maps": accepted}) if accepted else None)
        entry = {"hash": key, "cms": _cms_key(cms), "rules": rules, "verdicts": verdicts,
                 "diagnostics": [[k[1], v] for k, v in diags.items()]}
        result.recompiled.append(namespace)
    for writer, region in zip(writers, regions):
        if region is not None:
            writer.add_namespace(namespace, *region)
    for name, verdict in entry["verdicts"].items():
        result.verdicts[(namespace, name)] = verdict
    for cm_name, diags in entry["diagnostics"]:
        result.diagnostics[(namespace, cm_name)] = diags
    result.rules["namespace"] += entry["rules"]
    return entry


class _Shadows:
    """Namespace map-file lines that a cluster target keeps from firing (imagemapper.chains),
    added to their ConfigMap's diagnostics. A namespace's notes are kept in its index entry
    with the cluster files' hash, and found again only when either changed."""

    def __init__(self, cluster_cms: list[MapFileInput], compiled: Callable[[], ClusterCompiled]) -> None:
        self.cms = cluster_cms
        self.compiled = compiled
        self.key = _digest(sorted([c.name, c.data] for c in cluster_cms))
        self.targets: dict | None = None

    def attach(self, namespace: str, entry: dict[str, Any], cms: list[MapFileInput],
               previous: dict[str, Any] | None, result: Result) -> None:
        if not cms:
            return
        if previous and previous.get("shadowed_by") == self.key and previous.get("cms") == entry["cms"]:
            entry["shadowed"], entry["shadowed_by"] = previous["shadowed"], self.key  # ImageMaps changed
        if entry.get("shadowed_by") != self.key:
            from imagemapper.chains import mapfile_lines

            if self.targets is None:
                self.targets = self.compiled()[0]["targets"] if self.cms else {}
            found: dict[str, list] = {}
            for diag in mapfile_lines(cms, self.targets):
                cm = next(c for c in cms if diag.source.startswith(c.prefix()))
                found.setdefault(cm.name, []).append(compiler.diag_dict(diag))
            entry["shadowed"], entry["shadowed_by"] = sorted(found.items()), self.key
        for cm_name, diags in entry["shadowed"]:
            key = (namespace, cm_name)
            result.diagnostics[key] = [*result.diagnostics.get(key, []), *diags]


def carried_cluster_targets(state_dir: str, cms: list[MapFileInput]) -> dict | None:
    """The targets of the cluster map files as the current snapshot holds them, when it was
    compiled from exactly ``cms`` (its cluster region records their hash); else None.

    A run that changes no cluster map file reads them here instead of compiling the files
    again (the sync hook's chain notes need them).
    """
    try:
        snap = snapshot.open_snapshot(state_dir)
    except snapshot.SnapshotError:
        return None
    try:
        doc = snap.cluster()
        if doc.get("generation") != _digest(sorted([c.name, c.data] for c in cms)):
            return None
        found = snapshot.materialize(doc["targets"])
        return found if isinstance(found, dict) and all(isinstance(v, dict) for v in found.values()) else None
    except (snapshot.SnapshotError, KeyError, TypeError, AttributeError):
        return None
    finally:
        snap.close()




def _cms_key(cms: list[MapFileInput]) -> str:
    return _digest(sorted([c.name, c.data] for c in cms)) if cms else ""


def _build_cluster(carry: _Carry, cms: list[MapFileInput], previous: dict[str, Any], result: Result,
                   compiled: Callable[[], ClusterCompiled],
                   ) -> tuple[dict[str, Any], tuple[bytes | snapshot._Copy, int]]:
    key = _digest(sorted([c.name, c.data] for c in cms))
    copied = carry.cluster() if previous.get("hash") == key else None
    region: tuple[bytes | snapshot._Copy, int]
    if copied is not None:
        entry, region = previous, copied
    else:
        doc, diags, rules = compiled()
        result.cluster_changed = previous.get("hash") != key
        region = snapshot.encode_region({"generation": key, **doc})
        entry = {"hash": key, "rules": rules, "diagnostics": [[k[1], v] for k, v in diags.items()],
                 "namespace": cms[0].namespace if cms else ""}
    for cm_name, diags in entry["diagnostics"]:
        result.diagnostics[(entry.get("namespace", ""), cm_name)] = diags
    result.rules["cluster"] = entry["rules"]
    return entry, region
