"""Running totals for counters that must survive from one hook process to the next.

Each admission is a new process, so the totals live in the state directory, one small
file per series (``counters/<name>,<label>=<value>,...``) holding a fixed-width decimal
total. An admission touches only the files of its own series, under a POSIX record lock
(``posix.lockf``, so no ``fcntl`` import), so its cost does not depend on how many
namespaces the replica has ever seen, and concurrent admissions never lose an increment.

The totals reach Prometheus through one writer only: :func:`export`, run by the sync
hook's ``counters`` schedule binding. If every admission reported its own new total,
shell-operator would apply the reports of overlapping processes in whatever order they
finish, and a counter could step backwards. The totals belong to one replica, like any
process-local Prometheus counter, and restart from zero with the Pod.
"""

from __future__ import annotations

import posix

DIR = "counters"
BINDING = "counters"  # the sync hook's schedule binding that exports the totals
EXPORT_EVERY = "@every 10s"
WIDTH = 20  # digits; the file is rewritten in place and never changes length
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")  # no ".": never "." or ".."


def _escape(value: str) -> str:
    if _SAFE.issuperset(value):
        return value  # the usual case: a namespace, a source, a result
    return "".join(c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode()) for c in value)


def _unescape(value: str) -> str:
    if "%" not in value:
        return value
    out, i, raw = bytearray(), 0, value.encode()
    while i < len(raw):
        if raw[i:i + 1] == b"%" and i + 3 <= len(raw):
            out.append(int(raw[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "replace")


def series_file(name: str, labels: dict[str, str]) -> str:
    """The file name of one series: metric name and sorted labels, escaped."""
    return ",".join([_escape(name)] + [f"{_escape(k)}={_escape(str(labels[k]))}" for k in sorted(labels)])


def parse_series_file(file_name: str) -> tuple[str, dict[str, str]] | None:
    name, *pairs = file_name.split(",")
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            return None
        labels[_unescape(key)] = _unescape(value)
    return (_unescape(name), labels) if name else None


def _read_total(data: bytes) -> int:
    text = data.strip()
    return int(text) if text.isdigit() else 0  # a damaged file restarts that one series


def _add(path: str, delta: int) -> None:
    fd = posix.open(path, posix.O_RDWR | posix.O_CREAT | posix.O_CLOEXEC, 0o644)
    try:
        posix.lockf(fd, posix.F_LOCK, 0)
        total = _read_total(posix.pread(fd, WIDTH + 1, 0)) + delta
        posix.pwrite(fd, b"%0*d\n" % (WIDTH, total), 0)
    finally:
        posix.close(fd)  # releases the lock


def bump(state_dir: str, increments: list[tuple[str, dict[str, str], int]]) -> None:
    """Add each increment to its series. Costs one small file per series touched."""
    directory = f"{state_dir}/{DIR}"
    for name, labels, delta in increments:
        path = f"{directory}/{series_file(name, labels)}"
        try:
            _add(path, delta)
        except FileNotFoundError:
            try:
                posix.mkdir(directory, 0o755)
            except FileExistsError:
                pass
            _add(path, delta)


def totals(state_dir: str) -> list[tuple[str, dict[str, str], int]]:
    """Every series and its total, sorted by file name (for :func:`export`)."""
    directory = f"{state_dir}/{DIR}"
    try:
        names = sorted(posix.listdir(directory))
    except FileNotFoundError:
        return []
    out = []
    for file_name in names:
        series = parse_series_file(file_name)
        if series is None:
            continue
        try:
            fd = posix.open(f"{directory}/{file_name}", posix.O_RDWR | posix.O_NONBLOCK | posix.O_CLOEXEC)
        except OSError:
            continue
        try:
            posix.lockf(fd, posix.F_LOCK, 0)  # never read half of a concurrent update
            total = _read_total(posix.pread(fd, WIDTH + 1, 0))
        finally:
            posix.close(fd)
        out.append((series[0], series[1], total))
    return out
