"""Hook ``--config`` output: parse and validate as shell-operator v1.20.3 does at startup.

Pipeline (pkg/hook/config): YAML/JSON -> ``configVersion`` -> OpenAPI schema
(the real v1 schema, read from the pinned shell-operator module's Go source by
:mod:`.goschema`) -> typed unmarshal -> extra checks (settings, crontab, selectors, jqFilter,
admission webhook validation, includeSnapshotsFrom) -> group snapshot merging.
Any failure is fatal for shell-operator, so it raises HookConfigError here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import jq
import jsonschema
import yaml

from . import _go, _k8s, goschema


class HookConfigError(ValueError):
    """shell-operator would refuse to start with this hook."""


_validator_cache: list = []


def _validator() -> jsonschema.Draft4Validator:
    """Draft 4 validator; "integer" also accepts 3.0, as go-openapi does."""
    if not _validator_cache:
        schema = yaml.safe_load(goschema.schema_text())
        checker = jsonschema.Draft4Validator.TYPE_CHECKER.redefine(
            "integer", lambda _c, v: (isinstance(v, int) and not isinstance(v, bool))
            or (isinstance(v, float) and v.is_integer()))
        cls = jsonschema.validators.extend(jsonschema.Draft4Validator, type_checker=checker)
        _validator_cache.append(cls(schema))
    return _validator_cache[0]


@dataclass
class KubernetesBinding:
    """Effective ``kubernetes`` binding (defaults applied, group snapshots merged)."""

    name: str
    kind: str
    api_version: str = ""
    jq_filter: str = ""
    keep_full_objects: bool = True
    execute_on_sync: bool = True
    event_types: list = field(default_factory=lambda: ["Added", "Modified", "Deleted"])
    include_snapshots: list = field(default_factory=list)
    group: str = ""
    queue: str = "main"
    allow_failure: bool = False
    name_selector: list | None = None
    label_selector: dict | None = None
    field_selector: list | None = None
    namespace: dict | None = None
    binding_type: str = "kubernetes"


@dataclass
class ScheduleBinding:
    name: str
    crontab: str
    include_snapshots: list = field(default_factory=list)
    group: str = ""
    queue: str = "main"
    allow_failure: bool = False
    binding_type: str = "schedule"


@dataclass
class AdmissionBinding:
    """``kubernetesValidating`` / ``kubernetesMutating`` item; ``type`` is the context type."""

    type: str  # "Validating" | "Mutating"
    name: str
    include_snapshots: list = field(default_factory=list)
    group: str = ""
    raw: dict = field(default_factory=dict)

    @property
    def binding_type(self) -> str:
        return self.type


@dataclass
class HookConfig:
    raw: dict
    on_startup: float | None = None
    schedules: list = field(default_factory=list)
    kubernetes: list = field(default_factory=list)
    validating: list = field(default_factory=list)
    mutating: list = field(default_factory=list)
    conversion: list = field(default_factory=list)
    settings: dict | None = None

    def admission(self, name: str) -> AdmissionBinding:
        """The validating or mutating binding called ``name``."""
        for binding in self.validating + self.mutating:
            if binding.name == name:
                return binding
        raise KeyError(f"no kubernetesValidating/kubernetesMutating binding {name!r}")

    def kube(self, name: str) -> KubernetesBinding:
        for binding in self.kubernetes:
            if binding.name == name:
                return binding
        raise KeyError(f"no kubernetes binding {name!r}")

    def schedule(self, name: str) -> ScheduleBinding:
        for binding in self.schedules:
            if binding.name == name:
                return binding
        raise KeyError(f"no schedule binding {name!r}")


def _merge(first: list, second: list) -> list:
    """``MergeArrays``: first's order, then second's new names, no duplicates."""
    out = list(first)
    for name in second:
        if name not in out:
            out.append(name)
    return out


def _check_includes(kube_names: list[str], includes: list[str], where: str) -> None:
    """``CheckIncludeSnapshots``: every name is exactly one kubernetes binding."""
    for name in includes:
        count = kube_names.count(name)
        if count != 1:
            problem = "binding name not found" if count == 0 else f"there are {count} binding names"
            raise HookConfigError(f"{where}: includeSnapshotsFrom {name!r}: {problem}")


def _load_document(text: str) -> dict:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise HookConfigError(f"config unmarshal: {exc}") from None
    if not isinstance(document, dict):
        raise HookConfigError(f"config must be a mapping, got {type(document).__name__}")
    if "configVersion" not in document:
        raise HookConfigError("no configVersion: a legacy v0 config (not supported by the harness)")
    if document["configVersion"] != "v1":
        raise HookConfigError(f"configVersion {document['configVersion']!r} is unsupported")
    return document


def _schema_check(document: dict) -> None:
    errors = sorted(_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        raise HookConfigError("schema: " + "; ".join(
            f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors))


def _settings(raw: dict | None) -> dict | None:
    if raw is None:
        return None
    errors = []
    try:
        interval = _go.parse_go_duration(str(raw.get("executionMinInterval", "")))
    except ValueError as exc:
        errors.append(f"executionMinInterval is invalid: {exc}")
    burst = raw.get("executionBurst")
    if burst is None or not -2**31 <= int(burst) < 2**31:
        errors.append("executionBurst is invalid: both settings keys are required")
    if errors:
        raise HookConfigError("settings: " + "; ".join(errors))
    return {"executionMinInterval": interval / 1e9, "executionBurst": int(burst)}


def _kube_binding(item: dict, index: int) -> KubernetesBinding:
    where = f"kubernetes[{index}]"
    errors = []
    if item.get("apiVersion"):
        errors += _k8s.group_version(item["apiVersion"])
    errors += [f"labelSelector: {e}" for e in _k8s.label_selector(item.get("labelSelector"))]
    namespace = item.get("namespace") or {}
    # Not checked at load by shell-operator, but the monitor then never starts.
    errors += [f"namespace.labelSelector (fails at monitor start): {e}"
               for e in _k8s.label_selector(namespace.get("labelSelector"))]
    names = (item.get("nameSelector") or {}).get("matchNames") or []
    fields = (item.get("fieldSelector") or {}).get("matchExpressions") or []
    if names and any(f.get("field") == "metadata.name" for f in fields):
        errors.append("fieldSelector 'metadata.name' and nameSelector.matchNames are mutually exclusive")
    if errors:
        raise HookConfigError(f"{where}: " + "; ".join(errors))
    jq_filter = item.get("jqFilter", "")
    if jq_filter:
        try:
            jq.compile(jq_filter)
        except ValueError as exc:
            raise HookConfigError(f"{where} jqFilter: {exc}") from None
    events = item.get("executeHookOnEvent", item.get("watchEvent"))
    return KubernetesBinding(
        name=item.get("name") or "kubernetes", kind=item["kind"],
        api_version=item.get("apiVersion", ""), jq_filter=jq_filter,
        keep_full_objects=item.get("keepFullObjectsInMemory", True) is not False,
        execute_on_sync=item.get("executeHookOnSynchronization", True) is not False,
        event_types=["Added", "Modified", "Deleted"] if events is None else list(events),
        include_snapshots=list(item.get("includeSnapshotsFrom") or []),
        group=item.get("group", ""), queue=item.get("queue") or "main",
        allow_failure=bool(item.get("allowFailure", False)),
        name_selector=names or None, label_selector=item.get("labelSelector"),
        field_selector=fields or None, namespace=item.get("namespace"))


def _admission_binding(kind: str, item: dict, kube_names: list[str], index: int) -> AdmissionBinding:
    where = f"kubernetes{kind}[{index}]"
    _check_includes(kube_names, item.get("includeSnapshotsFrom") or [], where)
    errors = [f"labelSelector: {e}" for e in _k8s.label_selector(item.get("labelSelector"))]
    namespace = (item.get("namespace") or {}).get("labelSelector")
    errors += [f"namespace.labelSelector: {e}" for e in _k8s.label_selector(namespace)]
    if errors:
        raise HookConfigError(f"{where}: " + "; ".join(errors))
    return AdmissionBinding(type=kind, name=item["name"],
                            include_snapshots=list(item.get("includeSnapshotsFrom") or []),
                            group=item.get("group", ""), raw=item)


def _webhook_checks(kind: str, items: list[dict]) -> None:
    """``ValidateValidatingWebhooks``: names (>= 3 segments), rules, timeout, selectors."""
    errors, seen = [], set()
    for item in items:
        errors += _k8s.admission_webhook(item)
        if item["name"] in seen:
            errors.append(f"webhook {item['name']!r}: Duplicate value")
        seen.add(item["name"])
    if errors:
        raise HookConfigError(f"kubernetes{kind}: " + "; ".join(errors))


def parse_config(text: str, *, registration: bool = True) -> HookConfig:
    """Validate ``--config`` output; HookConfigError if shell-operator would not start.

    ``registration=True`` also applies to ``kubernetesMutating`` the webhook checks
    that shell-operator itself runs only for validating webhooks: the API server makes
    the same checks when shell-operator registers the MutatingWebhookConfiguration, and
    a rejected registration stops shell-operator too.
    """
    raw = _load_document(text)
    _schema_check(raw)
    config = HookConfig(raw=raw, settings=_settings(raw.get("settings")))
    if raw.get("onStartup") is not None:
        config.on_startup = float(raw["onStartup"])
    config.kubernetes = [_kube_binding(item, i) for i, item in enumerate(raw.get("kubernetes") or [])]
    kube_names = [b.name for b in config.kubernetes]
    for i, binding in enumerate(config.kubernetes):
        _check_includes(kube_names, binding.include_snapshots, f"kubernetes[{i}]")
    for i, item in enumerate(raw.get("schedule") or []):
        try:
            _go.check_crontab(item["crontab"])
        except ValueError as exc:
            raise HookConfigError(f"schedule[{i}]: crontab is invalid: {exc}") from None
        _check_includes(kube_names, item.get("includeSnapshotsFrom") or [], f"schedule[{i}]")
        config.schedules.append(ScheduleBinding(
            name=item.get("name") or "schedule", crontab=item["crontab"],
            include_snapshots=list(item.get("includeSnapshotsFrom") or []),
            group=item.get("group", ""), queue=item.get("queue") or "main",
            allow_failure=bool(item.get("allowFailure", False))))
    validating = raw.get("kubernetesValidating") or []
    mutating = raw.get("kubernetesMutating") or []
    config.validating = [_admission_binding("Validating", item, kube_names, i)
                         for i, item in enumerate(validating)]
    _webhook_checks("Validating", validating)
    config.mutating = [_admission_binding("Mutating", item, kube_names, i)
                       for i, item in enumerate(mutating)]
    if registration:
        _webhook_checks("Mutating", mutating)
    for i, item in enumerate(raw.get("kubernetesCustomResourceConversion") or []):
        _check_includes(kube_names, item.get("includeSnapshotsFrom") or [],
                        f"kubernetesCustomResourceConversion[{i}]")
        config.conversion.append(item)
    _merge_groups(config)
    return config


def _merge_groups(config: HookConfig) -> None:
    """Every binding with ``group: G`` also includes the snapshots of G's kubernetes bindings."""
    groups: dict[str, list[str]] = {}
    for binding in config.kubernetes:
        if binding.group:
            groups.setdefault(binding.group, []).append(binding.name)
    for binding in config.kubernetes + config.schedules + config.validating + config.mutating:
        if binding.group in groups:
            binding.include_snapshots = _merge(binding.include_snapshots, groups[binding.group])
