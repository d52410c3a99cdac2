"""Go-runtime behaviours that shell-operator's parsers inherit, re-done in Python.

shell-operator reads hook output with goccy/go-json (``encoding/json`` semantics),
gopkg.in/yaml.v3 and strconv; the corner cases of those libraries decide whether a
hook "failed".  Each helper here reproduces one of them, checked against the real
Go code (see tests/harness/README.md, "Oracle").
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import re
from decimal import Decimal

import yaml

# --------------------------------------------------------------------------- JSON


class GoJSONError(ValueError):
    """A document that Go's json decoder rejects."""


class _Obj(dict):
    """A decoded JSON object that also remembers its key/value pairs in order.

    Go matches struct fields case-insensitively and lets the last duplicate win, so
    struct decoding needs the pairs, while generic values behave like a dict.
    """

    pairs: list


def _pairs_hook(pairs: list) -> _Obj:
    obj = _Obj(pairs)
    obj.pairs = pairs
    return obj


def _reject_constant(name: str):
    raise GoJSONError(f"invalid character {name[0]!r} looking for beginning of value")


_DECODER = json.JSONDecoder(object_pairs_hook=_pairs_hook, parse_constant=_reject_constant)
_GO_SPACE = " \t\r\n"


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _GO_SPACE:
        pos += 1
    return pos


def _raw_decode(text: str, pos: int):
    try:
        return _DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        raise GoJSONError(str(exc)) from None


def decode_first(text: str):
    """One ``json.Decoder.Decode`` call: the first value; whatever follows is ignored.

    Whitespace-only input is an error (``EOF``), as in Go.
    """
    pos = _skip_space(text, 0)
    if pos == len(text):
        raise GoJSONError("EOF")
    return _raw_decode(text, pos)[0]


def decode_stream(text: str) -> list:
    """``Decode`` in a loop until ``io.EOF``: concatenated values; garbage is an error."""
    values = []
    pos = _skip_space(text, 0)
    while pos < len(text):
        value, pos = _raw_decode(text, pos)
        values.append(value)
        pos = _skip_space(text, pos)
    return values


# Field kinds for struct decoding.  "str"/"bool" ignore JSON null (Go leaves a
# non-pointer field unchanged); the nilable kinds are set to None by null.
STR, BOOL, FLOAT_PTR, ANY, STR_LIST, FLOAT_LIST, STR_MAP, BYTES = (
    "str", "bool", "float*", "any", "[]str", "[]float", "map[str]str", "[]byte")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _go_std_b64(value: str) -> bytes:
    """Go's ``base64.StdEncoding``: padding required, CR/LF ignored, nothing else."""
    cleaned = value.replace("\r", "").replace("\n", "")
    if len(cleaned) % 4 or not re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", cleaned):
        raise GoJSONError("illegal base64 data")
    try:
        return base64.b64decode(cleaned, validate=True)
    except binascii.Error as exc:
        raise GoJSONError(f"illegal base64 data: {exc}") from None


def _convert(kind: str, value, field: str):
    """Convert one JSON value for a Go field of ``kind``; raise like ``Unmarshal``."""
    def bad():
        return GoJSONError(f"json: cannot unmarshal {type(value).__name__} into field {field} ({kind})")

    if kind == ANY:
        return value
    if kind == STR:
        if not isinstance(value, str):
            raise bad()
        return value
    if kind == BOOL:
        if not isinstance(value, bool):
            raise bad()
        return value
    if kind == FLOAT_PTR:
        if not _is_number(value):
            raise bad()
        return float(value)
    if kind in (STR_LIST, FLOAT_LIST):
        if not isinstance(value, list):
            raise bad()
        want = STR if kind == STR_LIST else FLOAT_PTR
        zero = "" if kind == STR_LIST else 0.0
        return [zero if item is None else _convert(want, item, field) for item in value]
    if kind == STR_MAP:
        if not isinstance(value, dict):
            raise bad()
        return {k: "" if v is None else _convert(STR, v, field) for k, v in value.items()}
    if kind == BYTES:
        # []byte takes a base64 string, or (Go quirk) an array of numbers 0..255.
        if isinstance(value, str):
            return _go_std_b64(value)
        if isinstance(value, list) and all(
                isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in value):
            return bytes(value)
        raise bad()
    raise AssertionError(kind)


def struct_decode(value, fields: dict[str, str]) -> dict:
    """Decode a JSON value into a Go struct described by ``{json name: kind}``.

    Returns ``{name: value}`` for the fields the input set (null resets nilable
    fields to None).  Unknown keys are dropped; key matching prefers the exact name and
    falls back to a case-insensitive match; the last duplicate wins.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GoJSONError(f"json: cannot unmarshal {type(value).__name__} into a struct")
    lower = {name.lower(): name for name in fields}
    out: dict = {}
    for key, item in getattr(value, "pairs", value.items()):
        name = key if key in fields else lower.get(key.lower())
        if name is None:
            continue
        kind = fields[name]
        if item is None:
            if kind not in (STR, BOOL):
                out[name] = None
            continue
        out[name] = _convert(kind, item, name)
    return out


def _escape_html(text: str) -> str:
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _shortest(value: float) -> tuple[str, str, int]:
    """Sign, shortest round-trip digits and decimal-point position (Go's ``digs``)."""
    sign, digits, exponent = Decimal(repr(float(value))).normalize().as_tuple()
    text = "".join(map(str, digits))
    return ("-" if sign else ""), text, len(text) + exponent


def _fmt_e(neg: str, digits: str, exp: int) -> str:
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{neg}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"


def _fmt_f(neg: str, digits: str, point: int) -> str:
    if point <= 0:
        return f"{neg}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{neg}{digits}{'0' * (point - len(digits))}"
    return f"{neg}{digits[:point]}.{digits[point:]}"


def go_json_float(value: float) -> str:
    """goccy/go-json float64 formatting: 1 not 1.0, 'e' outside [1e-6, 1e21) (1e-07)."""
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"json: unsupported value: {value}")
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    neg, digits, point = _shortest(value)
    if 1e-6 <= abs(value) < 1e21:
        return _fmt_f(neg, digits, point)
    return _fmt_e(neg, digits, point - 1)


def go_json_dumps(value) -> str:
    """Serialize like Go's json encoder: sorted map keys, no spaces, HTML escaping."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_json_float(value)
    if isinstance(value, str):
        return _escape_html(json.dumps(value, ensure_ascii=False))
    if isinstance(value, dict):
        parts = (f"{go_json_dumps(str(k))}:{go_json_dumps(value[k])}" for k in sorted(value))
        return "{" + ",".join(parts) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(go_json_dumps(v) for v in value) + "]"
    raise TypeError(f"cannot serialize {type(value).__name__}")


# --------------------------------------------------------------------------- YAML (yaml.v3)


class GoYAMLError(ValueError):
    """A document that gopkg.in/yaml.v3 refuses to decode into the target struct."""


# Strings that yaml.v3 still accepts for a typed bool field (YAML 1.1 compatibility).
_V3_TRUE = {"y", "Y", "yes", "Yes", "YES", "on", "On", "ON"}
_V3_FALSE = {"n", "N", "no", "No", "NO", "off", "Off", "OFF"}
_V3_NULL = {"", "~", "null", "Null", "NULL"}
_V3_INT = re.compile(r"[-+]?(0|[1-9][0-9_]*|0[0-7_]+|0o[0-7_]+|0x[0-9a-fA-F_]+|0b[01_]+)")
_V3_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?")
_STR_TAG = "tag:yaml.org,2002:str"
_PLAIN = "!harness-plain"


class _V3Loader(yaml.SafeLoader):
    """Composes nodes without PyYAML's YAML 1.1 guesses: plain scalars keep a marker
    tag, so that yaml.v3's own (YAML 1.2 core) resolution can be applied."""

    def resolve(self, kind, value, implicit):
        if kind is yaml.ScalarNode and implicit[0]:
            return _PLAIN
        return super().resolve(kind, value, implicit)


def _v3_resolve(value: str):
    """yaml.v3 resolution of a plain scalar: null, bool, int, float, else string."""
    if value in _V3_NULL:
        return None
    if value in ("true", "True", "TRUE"):
        return True
    if value in ("false", "False", "FALSE"):
        return False
    if _V3_INT.fullmatch(value):
        digits = value.replace("_", "")
        sign = -1 if digits.startswith("-") else 1
        digits = digits.lstrip("+-")
        if digits.startswith(("0o", "0x", "0b")):
            return sign * int(digits, 0)
        if len(digits) > 1 and digits.startswith("0"):
            return sign * int(digits, 8)
        return sign * int(digits)
    if _V3_FLOAT.fullmatch(value):
        return float(value.replace("_", ""))
    special = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}
    return special.get(value.lower(), value)


def _v3_scalar(node: yaml.ScalarNode):
    """Value of a scalar node for an untyped (``any``) target."""
    if node.tag == _PLAIN:
        return _v3_resolve(node.value)
    if node.tag == _STR_TAG or not node.tag.startswith("tag:yaml.org,2002:"):
        return node.value
    return _v3_resolve(node.value)  # explicit !!int, !!bool, ...


def yaml_node_value(node):
    """Generic (``any``) value of a composed node; duplicate keys are errors."""
    if isinstance(node, yaml.ScalarNode):
        return _v3_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return [yaml_node_value(n) for n in node.value]
    out: dict = {}
    for key_node, value_node in node.value:
        key = yaml_node_value(key_node)
        if key in out:
            raise GoYAMLError(f"line {key_node.start_mark.line + 1}: mapping key {key!r} already defined")
        out[key] = yaml_node_value(value_node)
    return out


def yaml_struct_decode(node, fields: dict[str, str]) -> dict:
    """Decode a composed YAML document into a struct of ``{yaml name: kind}``.

    yaml.v3 rules: exact (case-sensitive) keys, unknown keys dropped, duplicate keys
    rejected, any scalar fits a string field (its source text), YAML 1.1 words
    (yes/no/on/off) fit a bool field, a collection never fits a scalar field.
    """
    if node is None or (isinstance(node, yaml.ScalarNode) and _v3_scalar(node) is None):
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise GoYAMLError(f"line {node.start_mark.line + 1}: cannot unmarshal {node.id} into a struct")
    out: dict = {}
    seen: set = set()
    for key_node, value_node in node.value:
        key = yaml_node_value(key_node)
        if key in seen:
            raise GoYAMLError(f"line {key_node.start_mark.line + 1}: mapping key {key!r} already defined")
        seen.add(key)
        kind = fields.get(key) if isinstance(key, str) else None
        if kind is None:
            continue
        line = value_node.start_mark.line + 1
        if kind == ANY:
            out[key] = yaml_node_value(value_node)
            continue
        if not isinstance(value_node, yaml.ScalarNode):
            raise GoYAMLError(f"line {line}: cannot unmarshal !!{value_node.id} into {kind}")
        resolved = _v3_scalar(value_node)
        if resolved is None:
            continue
        if kind == STR:
            out[key] = value_node.value
        elif resolved is True or resolved in _V3_TRUE:
            out[key] = True
        elif resolved is False or resolved in _V3_FALSE:
            out[key] = False
        else:
            raise GoYAMLError(f"line {line}: cannot unmarshal {value_node.value!r} into bool")
    return out


def yaml_documents(text: str) -> list:
    """Composed documents of a YAML stream (``yaml.v3`` Decoder loop)."""
    try:
        return list(yaml.compose_all(text, Loader=_V3Loader))
    except yaml.YAMLError as exc:
        raise GoYAMLError(str(exc)) from None


# --------------------------------------------------------------------------- strconv / time


def go_format_float(value: float) -> str:
    """``strconv.FormatFloat(v, 'g', -1, 64)``, the number format of Prometheus text."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    neg, digits, point = _shortest(value)
    exp = point - 1
    if exp < -4 or exp >= 6:  # shortest formatting decides with precision 6
        return _fmt_e(neg, digits, exp)
    return _fmt_f(neg, digits, point)


_DURATION_UNITS = {"ns": 1, "us": 1e3, "\u00b5s": 1e3, "\u03bcs": 1e3, "ms": 1e6,
                   "s": 1e9, "m": 60e9, "h": 3600e9}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """``time.ParseDuration``; returns nanoseconds, raises ValueError."""
    rest = text
    sign = 1
    if rest[:1] in "+-" and rest:
        sign = -1 if rest[0] == "-" else 1
        rest = rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise ValueError(f"time: invalid duration {text!r}")
    total = 0.0
    while rest:
        match = _DURATION_PART.match(rest)
        if not match or match.group(1) in ("", "."):
            raise ValueError(f"time: invalid duration {text!r}")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        rest = rest[match.end():]
    if total > 2**63 - 1:
        raise ValueError(f"time: invalid duration {text!r}")
    return sign * total


def _atoi(text: str) -> int:
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ValueError(f"Failed to parse int from {text}")
    value = int(text)
    if value < 0:
        raise ValueError(f"Negative number ({value}) not allowed: {text}")
    return value


_CRON_BOUNDS = [(0, 59, None), (0, 59, None), (0, 23, None), (1, 31, None),
                (1, 12, {m: i + 1 for i, m in enumerate(
                    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])}),
                (0, 6, {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])})]
_CRON_DESCRIPTORS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


def _cron_range(expr: str, bounds: tuple) -> None:
    low, high, names = bounds
    range_and_step = expr.split("/")
    low_high = range_and_step[0].split("-")

    def value(text: str) -> int:
        if names and text.lower() in names:
            return names[text.lower()]
        return _atoi(text)

    if low_high[0] in ("*", "?"):
        start, end = low, high
    else:
        start = value(low_high[0])
        if len(low_high) > 2:
            raise ValueError(f"Too many hyphens: {expr}")
        end = value(low_high[1]) if len(low_high) == 2 else start
    if len(range_and_step) > 2:
        raise ValueError(f"Too many slashes: {expr}")
    if len(range_and_step) == 2:
        if _atoi(range_and_step[1]) == 0:
            raise ValueError(f"step 0 in {expr}: cron.v2 loops forever on it")
        if len(low_high) == 1:
            end = high
    if start < low:
        raise ValueError(f"Beginning of range ({start}) below minimum ({low}): {expr}")
    if end > high:
        raise ValueError(f"End of range ({end}) above maximum ({high}): {expr}")
    if start > end:
        raise ValueError(f"Beginning of range ({start}) beyond end of range ({end}): {expr}")


def check_crontab(spec: str) -> None:
    """``gopkg.in/robfig/cron.v2`` ``Parse``: 5 fields (seconds = 0) or 6, or a descriptor."""
    if spec.startswith("TZ="):
        if " " not in spec:
            raise ValueError(f"bad TZ prefix: {spec}")
        zone, spec = spec[3:spec.index(" ")], spec[spec.index(" "):].strip()
        import zoneinfo
        try:
            zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"Provided bad location {zone}") from None
    if spec.startswith("@"):
        if spec in _CRON_DESCRIPTORS:
            return
        if spec.startswith("@every "):
            parse_go_duration(spec[len("@every "):])
            return
        raise ValueError(f"Unrecognized descriptor: {spec}")
    fields = spec.split()
    if len(fields) not in (5, 6):
        raise ValueError(f"Expected 5 or 6 fields, found {len(fields)}: {spec}")
    if len(fields) == 5:
        fields = ["0", *fields]
    for field, bounds in zip(fields, _CRON_BOUNDS):
        for expr in filter(None, field.split(",")):
            _cron_range(expr, bounds)
