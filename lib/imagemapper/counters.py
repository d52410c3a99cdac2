"""Running totals for counters that must survive from one hook process to the next.

shell-operator forgets a metric group whenever a hook run writes to it, and each
admission is a new process. So the totals live in a small JSON file in the state
directory. The file is updated under an exclusive ``flock``, because concurrent
admissions run as concurrent processes. The totals belong to one replica, like any
process-local Prometheus counter, and restart from zero with the Pod.
"""

from __future__ import annotations

import fcntl
import posix as os  # the hot path avoids importing os (see imagemapper.rawio)

from imagemapper import fastjson

FILE = "counters.json"


def _key(name: str, labels: dict[str, str]) -> str:
    return name + "\x00" + "\x00".join(f"{k}={labels[k]}" for k in sorted(labels))


def bump(state_dir: str, increments: list[tuple[str, dict[str, str], int]]) -> list[tuple[str, dict[str, str], int]]:
    """Add the increments and return (name, labels, new total) for each of them."""
    if not increments:
        return []
    path = f"{state_dir}/{FILE}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = b""
        while chunk := os.read(fd, 65536):
            raw += chunk
        try:
            totals = fastjson.loads(raw.decode()) if raw else {}
        except ValueError:
            totals = {}  # a damaged file restarts the totals rather than failing admission
        if not isinstance(totals, dict):
            totals = {}
        out = []
        for name, labels, delta in increments:
            key = _key(name, labels)
            totals[key] = int(totals.get(key, 0)) + delta
            out.append((name, labels, totals[key]))
        data = fastjson.dumps(totals).encode()
        os.lseek(fd, 0, 0)  # SEEK_SET
        os.write(fd, data)
        if len(data) < len(raw):  # truncating is costly on some file systems; skip when growing
            os.ftruncate(fd, len(data))
        return out
    finally:
        os.close(fd)
