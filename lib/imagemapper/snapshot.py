"""The compiled snapshot on disk: its layout, atomic writes, and defensive reads.

Layout under the state directory (format version ``VERSION``)::

    cluster.snap         {"v", "generation", "mapfiles", "targets"}: the cluster-wide layer;
                         its presence means "a snapshot exists"
    ns/<namespace>.snap  {"v", "imagemaps", "mapfiles", "targets", "accepted"}: one per namespace
                         with rules; "accepted" holds the accepted ImageMaps for the validating hook
    index.json           the sync hook's bookkeeping (content hash per namespace)
    ready                written once the first full snapshot is complete

A Pod's admission reads ``cluster.snap`` and its own namespace's file, nothing else,
so its cost does not depend on the rules of other namespaces. Every file is replaced
with write-to-temp plus ``os.replace``, so a reader sees the old file or the new one,
never a partial one.

Documents are stored with :mod:`marshal`: it is built into the interpreter (nothing to
import) and loads three times faster than JSON, which matters for a process started
per Pod. The sync hook and the mutate hook run the same interpreter, and a document
that does not load (another marshal format, truncation, garbage) is reported as
corrupt, never used. ``python3 -m imagemapper`` can print any of them as JSON
(``snapshot-dump``).
"""

from __future__ import annotations

import marshal

from imagemapper import rawio

VERSION = 1
CLUSTER = "cluster.snap"
SUFFIX = ".snap"
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
    return f"{state_dir}/ns/{namespace}{SUFFIX}"


def _read_doc(path: str) -> dict:
    try:
        data = rawio.read_bytes(path)
    except OSError as exc:
        raise SnapshotError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        doc = marshal.loads(data)
    except (ValueError, EOFError, TypeError) as exc:
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
        if not rawio.exists(path):
            return None
        raise


def load_for_namespace(state_dir: str, namespace: str) -> tuple[dict | None, dict]:
    """What a Pod in ``namespace`` needs: (namespace doc or None, cluster doc)."""
    cluster = load_cluster(state_dir)
    return load_namespace(state_dir, namespace), cluster


def is_ready(state_dir: str) -> bool:
    return rawio.exists(f"{state_dir}/{READY}")


# ----------------------------------------------------------------------------- writing

def write_atomic(path: str, text: str | bytes) -> None:
    """Replace ``path`` with ``text`` so that readers never see a partial file.

    Plain ``os`` calls (:mod:`imagemapper.rawio`): a full rebuild writes one file per
    namespace.
    """
    import os  # the writer side runs once per sync; the hot path never gets here

    tmp = f"{path}.tmp.{os.getpid()}"
    data = text.encode("utf-8") if isinstance(text, str) else text
    try:
        try:
            rawio.write_bytes(tmp, data)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            rawio.write_bytes(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise


def write_doc(path: str, doc: dict) -> None:
    """Write one snapshot document."""
    write_atomic(path, marshal.dumps({"v": VERSION, **doc}))


def remove(path: str) -> None:
    import os

    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def mark_ready(state_dir: str) -> None:
    if not is_ready(state_dir):
        write_atomic(f"{state_dir}/{READY}", "ok\n")
