"""The compiled snapshot on disk: its layout, atomic writes, and defensive reads.

Layout under the state directory (format version ``VERSION``)::

    rules.snap             every rule of the cluster in one file (below); its presence
                           means "a snapshot exists"
    accepted.snap          the accepted ImageMaps per namespace, for the validating hook
                           only (the mutate hook never reads them); same format
    inputs.snap            the sync hook's copy of the ImageMaps per namespace; same format
    index.json             the sync hook's bookkeeping (content hash per namespace)
    ready                  written once the first full snapshot is complete

``rules.snap`` is one generation of the whole rule set, replaced with write-to-temp plus
``os.replace``. A Pod's admission opens it once and reads every part it needs from that
one open file, so it always sees one consistent generation: never a new namespace
document next to an old cluster document.

An admission must cost the same whatever the number of rules, so it never loads the
file whole. The file is a set of *regions* read with ``pread``::

    preamble   magic, then the head region's (offset, length, document offset)
    region     [tables][document]: a ``marshal`` document whose large dicts (more than
               INLINE_MAX string keys) are replaced by hashed tables stored in front of it
    table      (buckets + 1) 8-byte offsets, then one marshal dict per bucket; a key lives
               in bucket ``crc32(key) % buckets``

The head region holds the format version, the generation, the cluster region's
reference and the namespace table (namespace -> region reference). One namespace's
region is position-independent (offsets are relative to it), so an incremental build
copies the bytes of unchanged namespaces from the previous file. A lookup reads one
bucket (two ``pread`` calls) and keeps it for the rest of the process.

Every read is bounded by the file's size and every document is type-checked: a file
that does not parse (truncated, another format, garbage, not a regular file) raises
:class:`SnapshotError`, never anything else. ``python3 -m imagemapper snapshot-dump``
prints any part as JSON.
"""

from __future__ import annotations

import binascii  # already loaded on the hot path (the patch is base64)
import marshal
import posix

from imagemapper import rawio

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    from imagemapper.shapes import ClusterDoc, NamespaceDoc

    T = TypeVar("T")

VERSION = 2
FILE = "rules.snap"
ACCEPTED = "accepted.snap"
INPUTS = "inputs.snap"
READY = "ready"
MAGIC = b"IMSNAP\x00\x02"
PREAMBLE = len(MAGIC) + 24
INLINE_MAX = 64          # dicts up to this size stay inside their document
BUCKET_SIZE = 16         # keys per bucket, on average
MAX_FILE = 4 << 30       # a snapshot is tens of MB; anything this big is not ours
TABLES = "\x00tables"    # document key: where the tables of this document go
WRITE_CHUNK = 1 << 20    # the writer's new regions go to the file in writes of about this size


class SnapshotError(Exception):
    """The snapshot is missing, unreadable or of another format version."""


def valid_namespace(name: str) -> bool:
    """A DNS label, which is also a safe file name."""
    if not name or len(name) > 63 or name[0] == "-" or name[-1] == "-":
        return False
    return all(c.isdigit() or ("a" <= c <= "z") or c == "-" for c in name)


def _u64(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 8], "little")


def _hash(key: str) -> int:
    return binascii.crc32(key.encode("utf-8", "surrogatepass"))


# ----------------------------------------------------------------------------- reading

class Table:
    """A large dict of the snapshot, read bucket by bucket on demand (``get``, ``in``)."""

    __slots__ = ("_buckets", "_cache", "_file", "_lengths", "_n", "_start")

    def __init__(self, file: Snapshot, start: int, ref: list):
        self._file = file
        self._start = start
        self._n: int = ref[2]
        self._buckets: int = ref[3]
        self._lengths: frozenset[int] | None = ref[4]
        self._cache: dict[int, dict] = {}

    def _bucket(self, key: str) -> dict:
        index = _hash(key) % self._buckets
        bucket = self._cache.get(index)
        if bucket is None:
            bounds = self._file.read(self._start + 8 * index, 16)
            begin, end = _u64(bounds, 0), _u64(bounds, 8)
            if end < begin:
                raise SnapshotError(f"corrupt snapshot table at offset {self._start}")
            bucket = self._file.load(self._start + begin, end - begin, dict)
            self._cache[index] = bucket
        return bucket

    def get(self, key: object, default: Any = None) -> Any:
        if not isinstance(key, str) or (self._lengths is not None and len(key) not in self._lengths):
            return default
        return self._bucket(key).get(key, default)

    def __contains__(self, key: object) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def __getitem__(self, key: object) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def to_dict(self) -> dict:
        """Every entry (for ``snapshot-dump`` and tests; never on the hot path)."""
        out: dict = {}
        bounds = self._file.read(self._start, 8 * (self._buckets + 1))
        for i in range(self._buckets):
            begin, end = _u64(bounds, 8 * i), _u64(bounds, 8 * i + 8)
            out.update(self._file.load(self._start + begin, end - begin, dict))
        return out


_MISSING = object()


class Snapshot:
    """One open generation of ``rules.snap``; every read comes from this one file."""

    def __init__(self, state_dir: str, name: str = FILE):
        path = f"{state_dir}/{name}"
        try:
            self._fd, self.size = rawio.open_regular(path)
        except OSError as exc:
            raise SnapshotError(f"cannot read {path}: {exc.strerror or exc}") from None
        self.path = path
        try:
            if self.size > MAX_FILE:
                raise SnapshotError(f"snapshot file {path} is too large ({self.size} bytes)")
            pre = self.read(0, PREAMBLE)
            if pre[:len(MAGIC)] != MAGIC:
                raise SnapshotError(f"snapshot file {path} is not format version {VERSION}")
            self.head = self.region([_u64(pre, 8), _u64(pre, 16), _u64(pre, 24)])
            if self.head.get("v") != VERSION or not isinstance(self.head.get("namespaces"), (dict, Table)):
                raise SnapshotError(f"snapshot file {path} has format version "
                                    f"{self.head.get('v')!r}, expected {VERSION}")
        except BaseException:
            self.close()
            raise

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise SnapshotError(f"corrupt snapshot file {self.path}: read past the end")
        try:
            return rawio.pread_exact(self._fd, length, offset)
        except OSError as exc:
            raise SnapshotError(f"cannot read {self.path}: {exc.strerror or exc}") from None

    def load(self, offset: int, length: int, kind: type) -> Any:
        try:
            value = marshal.loads(self.read(offset, length))
        except (ValueError, EOFError, TypeError) as exc:
            raise SnapshotError(f"corrupt snapshot file {self.path}: {exc}") from None
        if not isinstance(value, kind):
            raise SnapshotError(f"corrupt snapshot file {self.path}: {kind.__name__} expected")
        return value

    def region(self, ref: list) -> dict:
        """The document of the region at ``ref`` = [offset, length, document offset]."""
        if not (isinstance(ref, list) and len(ref) == 3 and all(isinstance(x, int) for x in ref)) \
                or ref[2] > ref[1]:
            raise SnapshotError(f"corrupt snapshot file {self.path}: bad region reference")
        start = ref[0]
        doc: dict[str, Any] = self.load(start + ref[2], ref[1] - ref[2], dict)
        for table in doc.pop(TABLES, None) or ():
            if not (isinstance(table, list) and len(table) == 5 and isinstance(table[0], list)
                    and table[0] and all(isinstance(x, int) and x >= 0 for x in table[1:4]) and table[3]
                    and (table[4] is None or isinstance(table[4], frozenset))):
                raise SnapshotError(f"corrupt snapshot file {self.path}: bad table reference")
            path, rel = table[0], table[1]
            try:
                parent = doc
                for key in path[:-1]:
                    parent = parent[key]
                parent[path[-1]] = Table(self, start + rel, table)
            except (KeyError, TypeError, IndexError):
                raise SnapshotError(f"corrupt snapshot file {self.path}: bad table path") from None
        return doc

    def cluster(self) -> Any:  # a ClusterDoc (tables read on demand)
        return self.region(self.head["cluster"])

    def namespace(self, namespace: str) -> Any:  # a NamespaceDoc or None
        if not isinstance(namespace, str):
            raise TypeError(f"namespace must be a string, not {type(namespace).__name__}")
        ref = self.head["namespaces"].get(namespace)
        return None if ref is None else self.region(ref)

    def namespaces(self) -> dict:
        """namespace -> region reference, for the builder."""
        found = self.head["namespaces"]
        return found.to_dict() if isinstance(found, Table) else found

    def close(self) -> None:
        fd, self._fd = getattr(self, "_fd", -1), -1
        if fd >= 0:
            posix.close(fd)

    def __del__(self) -> None:
        self.close()


def open_snapshot(state_dir: str, name: str = FILE) -> Snapshot:
    """The current generation; raises SnapshotError when there is no snapshot yet."""
    return Snapshot(state_dir, name)


def _guarded(call: Callable[[], T]) -> T:
    try:
        return call()
    except SnapshotError:
        raise
    except (KeyError, IndexError, AttributeError) as exc:
        raise SnapshotError(f"corrupt snapshot: {type(exc).__name__}: {exc}") from None


def load_for_namespace(state_dir: str, namespace: str) -> tuple[NamespaceDoc | None, ClusterDoc]:
    """What a Pod in ``namespace`` needs: (namespace doc or None, cluster doc), one generation."""
    snap = open_snapshot(state_dir)
    return _guarded(lambda: (snap.namespace(namespace), snap.cluster()))


def load_cluster(state_dir: str) -> dict:
    snap = open_snapshot(state_dir)
    return _guarded(snap.cluster)


def load_namespace(state_dir: str, namespace: str) -> dict | None:
    """One namespace's rules, or None when the namespace has none."""
    if not valid_namespace(namespace):
        raise SnapshotError(f"invalid namespace name {namespace!r}")
    snap = open_snapshot(state_dir)
    doc: dict[str, Any] | None = _guarded(lambda: snap.namespace(namespace))
    return doc


def load_accepted(state_dir: str, namespace: str) -> dict:
    """The accepted ImageMaps of one namespace: {name: {"created", "items"}} (validating hook)."""
    if not valid_namespace(namespace):
        raise SnapshotError(f"invalid namespace name {namespace!r}")
    snap = open_snapshot(state_dir, ACCEPTED)
    doc = _guarded(lambda: snap.namespace(namespace)) or {}
    maps = doc.get("maps", {})
    if not isinstance(maps, dict):
        raise SnapshotError(f"corrupt snapshot file {snap.path}: accepted maps are not a dict")
    return maps


def materialize(value: Any) -> Any:
    """``value`` with every :class:`Table` read into a dict (for JSON output and the sync hook).

    Tables only ever stand for dict values, so lists are not searched, and a dict
    without tables below it is returned as it is.
    """
    if isinstance(value, Table):
        value = value.to_dict()
    if isinstance(value, dict):
        done = {k: materialize(v) for k, v in value.items() if isinstance(v, (dict, Table))}
        return {**value, **done} if any(done[k] is not value[k] for k in done) else value
    return value


def is_ready(state_dir: str) -> bool:
    return rawio.exists(f"{state_dir}/{READY}")


# ----------------------------------------------------------------------------- writing

def _table_bytes(table: dict[str, Any]) -> tuple[bytes, int, frozenset[int] | None]:
    buckets = max(1, len(table) // BUCKET_SIZE)
    slots: list[dict] = [{} for _ in range(buckets)]
    for key, value in table.items():
        slots[_hash(key) % buckets][key] = value
    blobs = [marshal.dumps(slot) for slot in slots]
    offsets, at = [], 8 * (buckets + 1)
    for blob in blobs:
        offsets.append(at)
        at += len(blob)
    offsets.append(at)
    lengths = sorted({len(k) for k in table})
    head = b"".join(o.to_bytes(8, "little") for o in offsets)
    return head + b"".join(blobs), buckets, (frozenset(lengths) if len(lengths) <= 64 else None)


def _extract(doc: dict, path: tuple, out: list) -> dict:
    """``doc`` with large string-keyed dicts moved into ``out`` as (path, dict): a copy of
    each dict on the way to one, ``doc`` itself when there is none below it."""
    copy: dict[str, Any] | None = None
    for key, value in doc.items():
        if not value or not isinstance(value, dict):
            continue
        if len(value) > INLINE_MAX and all(isinstance(k, str) for k in value):
            out.append(([*path, key], value))
            new = None
        else:
            new = _extract(value, (*path, key), out)
            if new is value:
                continue
        if copy is None:
            copy = dict(doc)
        copy[key] = new
    return doc if copy is None else copy


def encode_region(doc: dict) -> tuple[bytes, int]:
    """One position-independent region: (bytes, document offset within them)."""
    found: list = []
    top = _extract(doc, (), found)
    parts, at, refs = [], 0, []
    for path, table in found:
        blob, buckets, lengths = _table_bytes(table)
        refs.append([path, at, len(table), buckets, lengths])
        parts.append(blob)
        at += len(blob)
    if refs:
        top = {**top, TABLES: refs}
    parts.append(marshal.dumps(top))
    return b"".join(parts), at


class Writer:
    """Assemble one generation of a snapshot file region by region, then commit it."""

    def __init__(self, state_dir: str, name: str = FILE):
        self.state_dir = state_dir
        self.path = f"{state_dir}/{name}"
        self.tmp = f"{self.path}.tmp.{posix.getpid()}"
        _makedirs(state_dir)
        self._fd = posix.open(self.tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC, 0o644)
        self._at = PREAMBLE
        _write_all(self._fd, b"\x00" * PREAMBLE)
        self.namespaces: dict[str, list] = {}
        self._pending: list = []  # [old snapshot, start, end]: regions copied in one go
        self._buffer: list[bytes] = []  # new regions not written yet: a few large writes
        self._buffered = 0

    def add(self, region: bytes | _Copy, doc_offset: int) -> list[int]:
        """Append a region: bytes, or a :class:`_Copy` of an older generation's region."""
        if isinstance(region, _Copy):
            start, length = region.ref[0], region.ref[1]
            pending = self._pending
            if not (pending and pending[0] is region.snap and pending[2] == start):
                self._flush()
                self._drain()  # in file order: what is buffered goes before the copy
                self._pending = pending = [region.snap, start, start]
            pending[2] = start + length
        else:
            self._flush()
            length = len(region)
            self._buffer.append(region)
            self._buffered += length
            if self._buffered >= WRITE_CHUNK:
                self._drain()
        ref = [self._at, length, doc_offset]
        self._at += length
        return ref

    def _drain(self) -> None:
        """Write the buffered regions (the pending copy is empty whenever they are not)."""
        if self._buffer:
            _write_all(self._fd, b"".join(self._buffer))
            self._buffer, self._buffered = [], 0

    def _flush(self) -> None:
        """Copy the pending run of unchanged regions, in the kernel where it can."""
        if not self._pending:
            return
        snap, start, end = self._pending
        self._pending = []
        snap.read(start, 0)  # bounds check of the start; the end is checked below
        if end > snap.size:
            raise SnapshotError(f"corrupt snapshot file {snap.path}: read past the end")
        import os

        while start < end:
            try:
                done = os.copy_file_range(snap._fd, self._fd, end - start, start)
            except OSError:
                done = 0
            if done <= 0:  # not supported here: through user space
                chunk = snap.read(start, min(end - start, 8 << 20))
                _write_all(self._fd, chunk)
                done = len(chunk)
            start += done

    def add_namespace(self, namespace: str, region: bytes | _Copy, doc_offset: int) -> None:
        self.namespaces[namespace] = self.add(region, doc_offset)

    def commit(self, cluster: tuple[bytes | _Copy, int] | None, generation: str) -> None:
        extra = {"cluster": self.add(*cluster)} if cluster is not None else {}
        head = self.add(*encode_region({"v": VERSION, "generation": generation, **extra,
                                        "namespaces": self.namespaces}))
        preamble = MAGIC + b"".join(x.to_bytes(8, "little") for x in head)
        self._flush()
        self._drain()
        posix.pwrite(self._fd, preamble, 0)
        posix.close(self._fd)
        self._fd = -1
        posix.rename(self.tmp, self.path)

    def abort(self) -> None:
        if self._fd >= 0:
            posix.close(self._fd)
            self._fd = -1
        remove(self.tmp)


class _Copy:
    """A region of an older generation, copied into the new file without being read."""

    __slots__ = ("ref", "snap")

    def __init__(self, snap: Snapshot, ref: list):
        if not (isinstance(ref, list) and len(ref) == 3 and _offset(ref[0]) and _offset(ref[1])
                and _offset(ref[2])):
            raise SnapshotError(f"corrupt snapshot file {snap.path}: bad region reference")
        self.snap, self.ref = snap, ref


def _offset(x: object) -> bool:
    return isinstance(x, int) and x >= 0


def copy_region(snap: Snapshot, ref: list[int]) -> tuple[_Copy, int]:
    """A region of an older generation, to carry it over unchanged: (region, doc offset)."""
    return _Copy(snap, ref), ref[2]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[posix.write(fd, view):]


def _makedirs(path: str) -> None:
    import os  # the writer side runs once per sync; the hot path never gets here

    os.makedirs(path, exist_ok=True)


def write_atomic(path: str, text: str | bytes) -> None:
    """Replace ``path`` with ``text`` so that readers never see a partial file."""
    import os

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


def remove(path: str) -> None:
    try:
        posix.unlink(path)
    except FileNotFoundError:
        pass


def mark_ready(state_dir: str) -> None:
    if not is_ready(state_dir):
        write_atomic(f"{state_dir}/{READY}", "ok\n")
