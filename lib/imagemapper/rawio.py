"""The admission hot path's operating-system calls, made through ``posix``.

The mutate hook is a new process per Pod, started with ``python3 -S``. Two things
matter at that scale, both measured on the hook:

* a text-mode ``open()`` costs far more than ``os.open`` plus ``os.read``/``os.write``;
* ``import os`` costs about 0.7 ms, a tenth of the interpreter's own start-up, while the
  built-in ``posix`` module it wraps is already loaded.

So the hot path uses the functions here, and code that runs once per sync (making
directories, say) imports :mod:`os` where it needs it. This is Linux-only, like
shell-operator.

Reads are defensive: :func:`open_regular` opens without blocking and refuses anything
but a regular file (a symlink to ``/dev/zero`` or a FIFO would otherwise hang the hook),
and every read has a size bound.
"""

from __future__ import annotations

import posix

_environ: dict[str, str] | None = None


def environ() -> dict[str, str]:
    """The process environment as text (``os.environ`` without importing ``os``).

    Decoded once per process: a hook reads it for its settings and for each file it
    writes, and nothing changes it in between.
    """
    global _environ
    if _environ is None:
        _environ = {k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
                    for k, v in posix.environ.items()}
    return _environ


def exists(path: str) -> bool:
    try:
        posix.stat(path)
    except OSError:
        return False
    return True


_S_IFMT, _S_IFREG = 0o170000, 0o100000
READ_LIMIT = 256 << 20  # bytes; shell-operator's largest binding contexts are tens of MB


def open_regular(path: str) -> tuple[int, int]:
    """Open a regular file for reading: (fd, size). Raises OSError for anything else.

    ``O_NONBLOCK`` keeps a FIFO from blocking the open; the ``fstat`` check then refuses
    devices, FIFOs and sockets, wherever a symlink points.
    """
    fd = posix.open(path, posix.O_RDONLY | posix.O_NONBLOCK | posix.O_CLOEXEC)
    try:
        info = posix.fstat(fd)
        if info.st_mode & _S_IFMT != _S_IFREG:
            raise OSError(22, "not a regular file", path)  # EINVAL
    except BaseException:
        posix.close(fd)
        raise
    return fd, info.st_size


def read_bytes(path: str, limit: int = READ_LIMIT) -> bytes:
    """The whole content of the regular file ``path``, at most ``limit`` bytes."""
    fd, size = open_regular(path)
    try:
        if size > limit:
            raise OSError(27, f"file is larger than {limit} bytes", path)  # EFBIG
        chunks = []
        total = 0
        while chunk := posix.read(fd, max(size - total, 0) + 1):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise OSError(27, f"file is larger than {limit} bytes", path)
        return b"".join(chunks)
    finally:
        posix.close(fd)


def pread_exact(fd: int, length: int, offset: int) -> bytes:
    """``length`` bytes at ``offset``; a short read (a truncated file) is an OSError."""
    data = posix.pread(fd, length, offset)
    while len(data) < length:
        more = posix.pread(fd, length - len(data), offset + len(data))
        if not more:
            raise OSError(5, f"short read: {len(data)} of {length} bytes at offset {offset}")  # EIO
        data += more
    return data


def write_bytes(path: str, data: bytes, append: bool = False) -> None:
    """Write ``data`` to ``path``, replacing its content or appending to it.

    No ``O_TRUNC``: truncating costs about a millisecond on ext4 even when little is
    cut, and shell-operator's output files are empty when a hook starts. A longer old
    content is cut after the write.
    """
    flags = posix.O_WRONLY | posix.O_CREAT | (posix.O_APPEND if append else 0)
    fd = posix.open(path, flags | posix.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[posix.write(fd, view):]
        if not append and posix.fstat(fd).st_size > len(data):
            posix.ftruncate(fd, len(data))
    finally:
        posix.close(fd)
