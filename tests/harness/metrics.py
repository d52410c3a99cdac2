"""``$METRICS_PATH``: parsing (shell-operator) and storage (deckhouse metrics-storage v0.3.0).

What a hook's metric file turns into is decided by two pieces of Go code:
shell-operator's ``MetricOperationsFromFile`` + ``remapOperationsToOperations``
(parse, shortcuts, default group, unknown actions dropped), and metrics-storage's
``ApplyBatchOperations`` (validation, per-group expiry, collectors).  ``MetricsStore``
keeps the collectors across runs so a test can see which series survive.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import _go

_OPERATION_FIELDS = {
    "name": _go.STR, "add": _go.FLOAT_PTR, "set": _go.FLOAT_PTR, "value": _go.FLOAT_PTR,
    "buckets": _go.FLOAT_LIST, "labels": _go.STR_MAP, "group": _go.STR, "action": _go.STR,
}
ACTIONS = ("add", "set", "observe", "expire")
# prometheus.DefBuckets, used when the first observe of a histogram has no buckets.
DEFAULT_BUCKETS = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)


class MetricsError(ValueError):
    """The metrics file or its operations make shell-operator fail the hook."""


def parse_metrics(text: str, hook_name: str) -> tuple[list[dict], list[str]]:
    """Parse a metrics file into operations, as shell-operator does before applying.

    Returns ``(operations, warnings)``; each operation is a dict with ``name``,
    ``action`` (add|set|observe|expire), ``value``, ``buckets``, ``labels``,
    ``group`` (defaults to the hook name).  Raises MetricsError for bad JSON ("got bad
    metrics").  Operations with an unknown or missing action are dropped with a
    warning, as shell-operator does.
    """
    try:
        documents = _go.decode_stream(text)
        raw = [_go.struct_decode(doc, _OPERATION_FIELDS) for doc in documents]
    except _go.GoJSONError as exc:
        raise MetricsError(f"got bad metrics: {exc}") from None
    operations, warnings = [], []
    for op in raw:
        action, value = op.get("action", ""), op.get("value")
        if op.get("set") is not None and op.get("add") is None:
            action, value = "set", op["set"]
        if op.get("add") is not None and op.get("set") is None:
            action, value = "add", op["add"]
        if action not in ACTIONS:
            warnings.append(f"unknown action in metric operation: {action!r} (dropped): {op}")
            continue
        operations.append({
            "name": op.get("name", ""), "action": action, "value": value,
            "buckets": op.get("buckets"), "labels": op.get("labels") or {},
            "group": op.get("group") or hook_name,
        })
    return operations, warnings


def validate_operations(operations: list[dict]) -> None:
    """metrics-storage ``ValidateOperations``: any error fails the whole batch."""
    errors = []
    for op in operations:
        action, name = op["action"], op["name"]
        if not op["group"] and action == "expire":
            errors.append(f"unsupported action 'expire' without group: {op}")
        if not name and action != "expire":
            errors.append(f"'name' is required when action is not 'expire': {op}")
        if action in ("add", "set", "observe") and op["value"] is None:
            errors.append(f"'value' is required for action {action!r}: {op}")
        if action == "observe" and op["buckets"] is None:
            errors.append(f"'buckets' is required for action 'observe': {op}")
    if errors:
        raise MetricsError("; ".join(errors))


@dataclass
class _Collector:
    """One metric name: a fixed type and a label-name set that only ever grows."""

    kind: str  # counter | gauge | histogram
    label_names: list[str]
    buckets: tuple = ()
    series: dict = field(default_factory=dict)  # (group, label values) -> value

    def widen(self, names: list[str]) -> None:
        """``UpdateLabels``: add new names (sorted); old series get "" for them."""
        new = [n for n in names if n not in self.label_names]
        if not new:
            return
        old = self.label_names
        self.label_names = sorted(old + new)
        index = {n: i for i, n in enumerate(old)}
        self.series = {
            (group, tuple(values[index[n]] if n in index else "" for n in self.label_names)): v
            for (group, values), v in self.series.items()}


_KIND = {"add": "counter", "set": "gauge", "observe": "histogram"}


class MetricsStore:
    """The hook metric storage of one shell-operator process (``/metrics/hooks``)."""

    def __init__(self) -> None:
        self.collectors: dict[str, _Collector] = {}
        self.warnings: list[str] = []

    def apply(self, operations: list[dict], hook_name: str) -> None:
        """``ApplyBatchOperations(ops, {"hook": hook_name})``.

        Validates everything first (MetricsError = hook failed, nothing applied), then
        for each group present: expire the group, apply its operations in order.
        """
        validate_operations(operations)
        groups: dict[str, list[dict]] = {}
        for op in operations:
            groups.setdefault(op["group"], []).append(op)
        for group, ops in groups.items():
            self.expire(group)
            for op in ops:
                self._apply_one(op, {**op["labels"], "hook": hook_name})

    def expire(self, group: str) -> None:
        """Drop every series of ``group`` from every collector."""
        for collector in self.collectors.values():
            collector.series = {k: v for k, v in collector.series.items() if k[0] != group}

    def _apply_one(self, op: dict, labels: dict) -> None:
        if op["action"] == "expire":
            self.expire(op["group"])
            return
        kind, name = _KIND[op["action"]], op["name"]
        collector = self.collectors.get(name)
        if collector is None:
            buckets = tuple(sorted(op["buckets"] or DEFAULT_BUCKETS)) if kind == "histogram" else ()
            collector = self.collectors[name] = _Collector(kind, sorted(labels), buckets)
        else:
            collector.widen(sorted(labels))
        if collector.kind != kind:
            self.warnings.append(f"{kind} {name!r} requested, but a {collector.kind} exists: dropped")
            return
        key = (op["group"], tuple(labels.get(n, "") for n in collector.label_names))
        value = op["value"]
        if kind == "counter":
            # The collector stores uint64(value): fractions are cut, negatives wrap.
            collector.series[key] = (collector.series.get(key, 0) + int(value)) % 2**64
        elif kind == "gauge":
            collector.series[key] = float(value)
        else:
            total, count, hits = collector.series.get(key, (0.0, 0, [0] * len(collector.buckets)))
            if value >= 0:
                hits = [h + (value <= b) for h, b in zip(hits, collector.buckets)]
            collector.series[key] = (total + value, count + 1, hits)

    def series(self) -> list[dict]:
        """Every live series: ``{"name", "type", "group", "labels", "value"}``.

        For histograms ``value`` is ``{"sum", "count", "buckets": {bound: count}}``.
        """
        out = []
        for name, col in sorted(self.collectors.items()):
            for (group, values), value in col.series.items():
                if col.kind == "histogram":
                    total, count, hits = value
                    value = {"sum": total, "count": count, "buckets": dict(zip(col.buckets, hits))}
                out.append({"name": name, "type": col.kind, "group": group,
                            "labels": dict(zip(col.label_names, values)), "value": value})
        return out

    def value(self, name: str, **labels: str):
        """The value of the one series of ``name`` whose labels include ``labels``."""
        found = [s for s in self.series() if s["name"] == name
                 and all(s["labels"].get(k) == v for k, v in labels.items())]
        if len(found) != 1:
            raise KeyError(f"{len(found)} series of {name!r} match {labels}")
        return found[0]["value"]

    def render(self) -> str:
        """Prometheus text exposition, as ``/metrics/hooks`` serves it.

        Raises MetricsError when two groups hold the same series (the Go registry
        refuses to gather and the endpoint answers 500).
        """
        lines = []
        for name, col in sorted(self.collectors.items()):
            samples = sorted(((values, value) for (_g, values), value in col.series.items()),
                             key=lambda s: s[0])
            if not samples:
                continue
            if len({v for v, _ in samples}) != len(samples):
                raise MetricsError(f"collected metric {name!r} was collected before with the "
                                   "same name and label values")
            lines += [f"# HELP {name} {name}", f"# TYPE {name} {col.kind}"]
            for values, value in samples:
                pairs = list(zip(col.label_names, values))
                if col.kind != "histogram":
                    lines.append(f"{name}{_labels(pairs)} {_go.go_format_float(float(value))}")
                    continue
                total, count, hits = value
                for bound, hit in zip(col.buckets, hits):
                    le = _go.go_format_float(float(bound))
                    lines.append(f"{name}_bucket{_labels([*pairs, ('le', le)])} {hit}")
                lines.append(f"{name}_bucket{_labels([*pairs, ('le', '+Inf')])} {count}")
                lines.append(f"{name}_sum{_labels(pairs)} {_go.go_format_float(total)}")
                lines.append(f"{name}_count{_labels(pairs)} {count}")
        return "".join(line + "\n" for line in lines)


def _labels(pairs: list[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    escaped = (v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') for _, v in pairs)
    return "{" + ",".join(f'{k}="{v}"' for (k, _), v in zip(pairs, escaped)) + "}"
