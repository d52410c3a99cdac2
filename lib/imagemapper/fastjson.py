"""JSON for the admission hot path without importing :mod:`json`.

``import json`` pulls in ``re`` and ``enum`` and costs about 4 ms, which is half the
start-up of a bare interpreter. The mutate hook runs as a fresh process for every Pod,
so this module drives the C accelerator ``_json`` directly, and must fail exactly where
:mod:`json` fails, always with :class:`ValueError`:

* ``_json`` reports an error inside an array or object through
  ``json.decoder.JSONDecodeError``. On 3.10 and 3.11 it only looks that class up in
  ``sys.modules`` and, when ``json`` was never imported, returns NULL with no exception
  set: a ``SystemError``. On 3.12+ it imports ``json.decoder`` (and ``re``). So for the
  duration of a parse we lend it stand-in modules whose error class is a ValueError;
* deep nesting raises ``RecursionError`` in ``_json`` and in :mod:`json` alike up to 3.11
  (a ValueError here); 3.12+ parse it, as :mod:`json` there does;
* :func:`dumps` refuses NaN and infinities (``json`` writes ``NaN``, which no JSON
  parser in Kubernetes accepts). It runs ``_json``'s C encoder, set up as ``json.dumps``
  does, with a pure-Python twin for interpreters whose ``_json`` differs.

``tests/test_fastjson.py`` checks all of this against :mod:`json` as a property test.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

try:
    import _json
except ImportError:  # pragma: no cover - CPython always ships _json
    _json = None  # type: ignore[assignment]  # the fallback below uses json

DECODER = "json.decoder"


class JSONDecodeError(ValueError):
    """The same constructor as ``json.JSONDecodeError``, which ``_json`` calls."""

    def __init__(self, msg: str, doc: str = "", pos: int = 0):
        super().__init__(f"{msg} at offset {pos}")
        self.msg, self.doc, self.pos = msg, doc, pos


def _stand_ins() -> dict[str, Any]:
    """Stand-ins for ``json`` and ``json.decoder`` while the scanner runs (module docstring).

    3.12+ imports ``json.decoder`` on an error, and with it the ``json`` package, which
    would import the real decoder (and ``re``): so the package is lent too.
    """
    package, decoder = type(sys)("json"), type(sys)(DECODER)
    decoder.JSONDecodeError = JSONDecodeError  # type: ignore[attr-defined]
    package.decoder = decoder  # type: ignore[attr-defined]
    package.__path__ = []  # a package, with nothing to find in it
    return {"json": package, DECODER: decoder}


_LENT = _stand_ins()


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


_scan = _json.make_scanner(_Context()) if _json else None  # type: ignore[arg-type]  # duck-typed decoder
_WS = " \t\n\r"
_INF = float("inf")


def loads(text: str) -> Any:
    """Parse one JSON document; raise ValueError on anything else."""
    if _scan is None:  # pragma: no cover
        import json

        return json.loads(text)
    if not isinstance(text, str):
        raise TypeError(f"JSON text must be str, not {type(text).__name__}")
    start = len(text) - len(text.lstrip(_WS))
    lent = [name for name in _LENT if name not in sys.modules]
    for name in lent:
        sys.modules[name] = _LENT[name]
    try:
        value, end = _scan(text, start)
    except StopIteration as exc:
        raise JSONDecodeError("Expecting value", text, exc.value) from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - any other scanner failure is bad input too
        raise ValueError(f"invalid JSON ({type(exc).__name__})") from None
    finally:
        for name in lent:
            if sys.modules.get(name) is _LENT[name]:
                del sys.modules[name]
    if text[end:].strip(_WS):
        raise JSONDecodeError("Extra data", text, end)
    return value


def load_file(path: str, limit: int | None = None) -> Any:
    """Read and parse a JSON file (UTF-8), refusing files over ``limit`` bytes."""
    from imagemapper.rawio import read_bytes

    data = read_bytes(path) if limit is None else read_bytes(path, limit)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"JSON file {path} is not UTF-8: {exc}") from None
    return loads(text)


def _encode_str(value: str) -> str:
    return _json.encode_basestring_ascii(value) if _json else _slow_dumps(value)


def _slow_dumps(value: object) -> str:  # pragma: no cover
    import json

    return json.dumps(value)


def _float(value: float) -> str:
    if not -_INF < value < _INF:  # NaN compares false both ways
        raise ValueError(f"out of range float value {value!r} is not JSON")
    return float.__repr__(value)


def _key(key: object) -> str:
    """Object keys as :mod:`json` writes them."""
    if isinstance(key, str):
        return _encode_str(key)
    if key is True:
        return '"true"'
    if key is False:
        return '"false"'
    if key is None:
        return '"null"'
    if isinstance(key, int):
        return '"' + int.__repr__(key) + '"'
    if isinstance(key, float):
        return '"' + _float(key) + '"'
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _c_encoder() -> Any:
    """``_json``'s C encoder as ``json.dumps`` sets it up, or None (then :func:`_py_dumps`)."""
    try:
        return _json.make_encoder(None, _unserializable, _json.encode_basestring_ascii, None,
                                  ":", ",", False, False, False)
    except (AttributeError, TypeError):  # pragma: no cover - another _json signature
        return None


def _unserializable(value: object) -> NoReturn:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_encode = _c_encoder() if _json else None


def dumps(value: object) -> str:
    """Serialize like ``json.dumps(v, separators=(",", ":"), allow_nan=False)``."""
    if _encode is not None:
        return "".join(_encode(value, 0))
    return _py_dumps(value)


def _py_dumps(value: object) -> str:
    if isinstance(value, str):
        return _encode_str(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, dict):
        items = (f"{_key(k)}:{_py_dumps(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_py_dumps(v) for v in value) + "]"
    _unserializable(value)
