"""The admission hot path's operating-system calls, made through ``posix``.

The mutate hook is a new process per Pod, started with ``python3 -S``. Two things
matter at that scale, both measured on the hook:

* a text-mode ``open()`` costs far more than ``os.open`` plus ``os.read``/``os.write``;
* ``import os`` costs about 0.7 ms, a tenth of the interpreter's own start-up, while the
  built-in ``posix`` module it wraps is already loaded.

So the hot path uses the functions here, and code that runs once per sync (making
directories, say) imports :mod:`os` where it needs it. This is Linux-only, like
shell-operator.
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


def read_bytes(path: str) -> bytes:
    """The whole content of ``path``."""
    fd = posix.open(path, posix.O_RDONLY)
    try:
        chunks = []
        while chunk := posix.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        posix.close(fd)


def write_bytes(path: str, data: bytes, append: bool = False) -> None:
    """Write ``data`` to ``path``, replacing its content or appending to it."""
    flags = posix.O_WRONLY | posix.O_CREAT | (posix.O_APPEND if append else posix.O_TRUNC)
    fd = posix.open(path, flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[posix.write(fd, view):]
    finally:
        posix.close(fd)
