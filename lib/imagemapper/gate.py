"""A per-replica bound on the admission hooks that do work at the same time.

shell-operator starts one hook process per AdmissionReview and bounds nothing, so a
flood of requests sent straight to the webhook port would otherwise run as many
parsers at once as it has connections, and starve the Pods the API server sends.
Each process takes one of ``slots`` lock files (a POSIX record lock, ``lockf``, which
the kernel releases when the process exits, however it exits). If none is free it
waits, without spinning, up to ``wait`` seconds for one, and otherwise answers at once
by the failure policy.

Requests larger than :data:`LARGE` (a Pod manifest is a few KiB; the API server
allows 3 MiB) share a separate, smaller pool, so a flood of huge bodies cannot hold
the slots that ordinary Pods need: measured on the e2e chain, one shared pool let 48
clients posting 2000-container Pods push every Pod admission past its timeout.

On the hot path: ``posix`` and ``_signal`` are built in (``signal`` itself would import
``enum``), and ``posix.lockf`` saves importing ``fcntl`` for ``flock``.
"""

from __future__ import annotations

import _signal as signal  # type: ignore[import-not-found]
import posix

SLOTS_DIR = "admission-slots"
LARGE = 64 << 10  # bytes of binding context


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Timeout


def _open_slot(directory: str, index: int) -> int:
    """The slot's lock file; its directories are made on first use (two syscalls saved
    on every admission after the first)."""
    path = f"{directory}/{index}"
    try:
        return posix.open(path, posix.O_RDWR | posix.O_CREAT | posix.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        for parent in (directory.rpartition("/")[0], directory):
            try:
                posix.mkdir(parent, 0o700)
            except FileExistsError:
                pass
        return posix.open(path, posix.O_RDWR | posix.O_CREAT | posix.O_CLOEXEC, 0o600)


def request_size() -> int:
    """Bytes of this run's binding context (0 when unknown), without reading it."""
    path = posix.environ.get(b"BINDING_CONTEXT_PATH")
    return posix.stat(path).st_size if path else 0


def pool(slots: int, size: int) -> tuple[str, int]:
    """(pool name, slots in it) for a request of ``size`` bytes."""
    if size > LARGE:
        return "large", max(1, slots // 4)
    return "small", slots


def enter(state_dir: str, slots: int, wait: float, size: int = 0) -> str | None:
    """Hold a slot for the rest of this process; None, or the problem when none came free."""
    name, slots = pool(slots, size)
    directory = f"{state_dir}/{SLOTS_DIR}/{name}"
    start = posix.getpid() % slots
    for step in range(slots):
        fd = _open_slot(directory, (start + step) % slots)
        try:
            posix.lockf(fd, posix.F_TLOCK, 0)
            return None
        except (BlockingIOError, PermissionError):  # EAGAIN or EACCES: another process has it
            posix.close(fd)
    fd = _open_slot(directory, start)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, max(wait, 0.001))
    try:
        posix.lockf(fd, posix.F_LOCK, 0)
        return None
    except _Timeout:
        posix.close(fd)
        return (f"this replica is already running {slots} {name} admissions "
                f"(IMAGE_MAPPER_MAX_ADMISSIONS) and none finished within {wait:g} s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
