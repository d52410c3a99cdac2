"""The compiled snapshot on disk: its layout, atomic writes, and defensive reads.

Layout under the state directory (format version ``VERSION``)::

    cluster.json         {"v", "generation", "mapfiles", "targets"}: the cluster-wide layer,
                         written on every sync; its presence means "a snapshot exists"
    ns/<namespace>.json  {"v", "imagemaps", "mapfiles", "targets", "accepted"}: one per namespace
                         with rules; "accepted" holds the accepted ImageMaps for the validating hook
    index.json           the sync hook's bookkeeping (content hash per namespace)
    ready                written once the first full snapshot is complete

A Pod's admission reads ``cluster.json`` and its own namespace's file, nothing else,
so its cost does not depend on the rules of other namespaces. Every file is replaced
with write-to-temp plus ``os.replace``, so a reader sees the old file or the new one,
never a partial one.
"""

from __future__ import annotations

import os

from imagemapper import fastjson

VERSION = 1
CLUSTER = "cluster.json"
READY = "ready"


class SnapshotError(Exception):
    """The snapshot is missing, unreadable or of another format version."""


def valid_namespace(name: str) -> bool:
    """A DNS label, which is also a safe file name."""
    if not name or len(name) > 63 or name[0] == "-" or name[-1] == "-":
        return False
    return all(c.isdigit() or ("a" <= c <= "z") or c == "-" for c in name)


def namespace_path(state_dir: str, namespace: str) -> str:
    if not valid_namespace(namespace):
        raise SnapshotError(f"invalid namespace name {namespace!r}")
    return f"{state_dir}/ns/{namespace}.json"


def _read_doc(path: str) -> dict:
    try:
        doc = fastjson.load_file(path)
    except OSError as exc:
        raise SnapshotError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"corrupt snapshot file {path}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        raise SnapshotError(f"snapshot file {path} has format version "
                            f"{doc.get('v') if isinstance(doc, dict) else '?'}, expected {VERSION}")
    return doc


def load_cluster(state_dir: str) -> dict:
    """The cluster-wide document; raises SnapshotError when there is no snapshot yet."""
    return _read_doc(f"{state_dir}/{CLUSTER}")


def load_namespace(state_dir: str, namespace: str) -> dict | None:
    """One namespace's document, or None when the namespace has no rules."""
    path = namespace_path(state_dir, namespace)
    try:
        return _read_doc(path)
    except SnapshotError:
        if not os.path.exists(path):
            return None
        raise


def load_for_namespace(state_dir: str, namespace: str) -> tuple[dict | None, dict]:
    """What a Pod in ``namespace`` needs: (namespace doc or None, cluster doc)."""
    cluster = load_cluster(state_dir)
    return load_namespace(state_dir, namespace), cluster


def is_ready(state_dir: str) -> bool:
    return os.path.exists(f"{state_dir}/{READY}")


# ----------------------------------------------------------------------------- writing

def write_atomic(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers never see a partial file.

    Plain ``os`` calls: a text-mode ``open()`` costs ten times more, and a full
    rebuild writes one file per namespace.
    """
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        data = memoryview(text.encode("utf-8"))
        while data:
            data = data[os.write(fd, data):]
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        remove(tmp)
        raise


def write_doc(path: str, doc: dict) -> None:
    """Write one snapshot document (the writer side may use the C JSON encoder)."""
    import json

    write_atomic(path, json.dumps({"v": VERSION, **doc}, separators=(",", ":")))


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def mark_ready(state_dir: str) -> None:
    if not is_ready(state_dir):
        write_atomic(f"{state_dir}/{READY}", "ok\n")
