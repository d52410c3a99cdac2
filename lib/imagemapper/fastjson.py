"""JSON for the admission hot path without importing :mod:`json`.

``import json`` pulls in ``re`` and ``enum`` and costs about 4 ms, which is half the
start-up of a bare interpreter. The mutate hook runs as a fresh process for every Pod,
so this module drives the C accelerator ``_json`` directly. When ``_json`` is missing,
it falls back to :mod:`json`, which behaves the same.
"""

from __future__ import annotations

try:
    import _json
except ImportError:  # pragma: no cover - CPython always ships _json
    _json = None


class _Context:
    """The attributes that ``_json.make_scanner`` reads from a JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        return float(name)


_scan = _json.make_scanner(_Context()) if _json else None
_WS = " \t\n\r"


def loads(text: str):
    """Parse one JSON document; raise ValueError on anything else."""
    if _scan is None:  # pragma: no cover
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(_WS))
    try:
        value, end = _scan(text, start)
    except StopIteration as exc:
        raise ValueError(f"invalid JSON at offset {exc.value}") from None
    if text[end:].strip(_WS):
        raise ValueError(f"extra data after JSON value at offset {end}")
    return value


def load_file(path: str):
    """Read and parse a JSON file (UTF-8)."""
    from imagemapper.rawio import read_bytes

    return loads(read_bytes(path).decode("utf-8"))


def _encode_str(value: str) -> str:
    return _json.encode_basestring_ascii(value) if _json else _slow_dumps(value)


def _slow_dumps(value) -> str:  # pragma: no cover
    import json

    return json.dumps(value)


def dumps(value) -> str:
    """Serialize dicts, lists, strings, numbers, booleans and None compactly."""
    if isinstance(value, str):
        return _encode_str(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        items = (f"{_encode_str(str(k))}:{dumps(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    raise TypeError(f"cannot serialize {type(value).__name__}")
