"""The ``IMAGE_MAPPER_*`` settings, read from the environment and validated.

A bad value raises :class:`SettingsError` with the variable's name. The hooks call
this at ``--config`` time, so a bad Deployment fails when shell-operator starts,
not later on some Pod.
"""

from __future__ import annotations

from imagemapper import rawio
from imagemapper.snapshot import valid_namespace

MODE_LABEL = "imagemapper.io/mode"
MAP_FILE_LABEL = "imagemapper.io/map-file"
# On a namespace, with IMAGE_MAPPER_NAMESPACE_MAP_FILES=opt-in: its map files count.
# Labeling namespaces takes `namespaces` update/patch, which namespace editors lack.
MAP_FILES_LABEL = "imagemapper.io/map-files"
MAP_FILES_ENABLED = "enabled"
NAMESPACE_MAP_FILES = ("enabled", "opt-in", "disabled")
EXCLUDE_NAMESPACES = "IMAGE_MAPPER_EXCLUDE_NAMESPACES"
DEFAULT_STATE_DIR = "/var/run/image-mapper"
DEFAULT_CONFIGURATION_NAME = "shell-operator-hooks"


class SettingsError(ValueError):
    """A configuration variable holds a value we cannot use."""


class Settings:
    """Validated configuration, with the defaults the README's settings table lists."""

    __slots__ = (
        "allowed_targets",
        "configuration_name",
        "excluded_namespaces",
        "failure_policy",
        "map_namespace",
        "max_admissions",
        "namespace_map_files",
        "namespace_mode",
        "operator_namespace",
        "state_dir",
        "timeout_seconds",
    )

    def __init__(self, namespace_mode: str = "opt-out", failure_policy: str = "Fail",
                 timeout_seconds: int = 10, operator_namespace: str = "",
                 map_namespace: str = "", state_dir: str = DEFAULT_STATE_DIR,
                 configuration_name: str = DEFAULT_CONFIGURATION_NAME,
                 excluded_namespaces: tuple[str, ...] = (), max_admissions: int = 8,
                 namespace_map_files: str = "enabled", allowed_targets: frozenset[str] = frozenset()):
        self.namespace_mode = namespace_mode
        self.failure_policy = failure_policy
        self.timeout_seconds = timeout_seconds
        self.operator_namespace = operator_namespace
        self.map_namespace = map_namespace or operator_namespace
        self.state_dir = state_dir
        self.configuration_name = configuration_name
        self.excluded_namespaces = tuple(excluded_namespaces)
        self.max_admissions = max_admissions  # admission hooks a replica runs at once
        # "disabled": only cluster-wide map files; "opt-in": also those of labeled namespaces
        self.namespace_map_files = namespace_map_files
        self.allowed_targets = allowed_targets  # where namespace rules may send images; empty: anywhere

    @property
    def never_mutated(self) -> list[str]:
        """Namespaces whose Pods the webhook never sees: kube-system, our own, the excluded."""
        return sorted({"kube-system", self.operator_namespace, *self.excluded_namespaces} - {""})

    def map_files_count(self, namespace: str, labeled: frozenset[str] | set[str] = frozenset()) -> bool:
        """Whether the map files of ``namespace`` are rules (``labeled``: the namespaces
        carrying MAP_FILES_LABEL, which only matters in opt-in mode)."""
        if namespace == self.map_namespace or self.namespace_map_files == "enabled":
            return True
        return self.namespace_map_files == "opt-in" and namespace in labeled

    @property
    def webhook_configuration(self) -> str:
        """shell-operator names its webhook configurations ``<name>-hooks``."""
        return f"{self.configuration_name}-hooks"


def _choice(env: dict, name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, "") or default
    if value not in allowed:
        raise SettingsError(f"{name}={value!r} is not valid; use one of: {', '.join(allowed)}")
    return value


def _bounded_int(env: dict, name: str, default: str, low: int, high: int,
                 unit: str = "", limit: str = "") -> int:
    """A whole-number setting within [low, high]; ``limit`` says who sets the range."""
    raw = env.get(name, "") or default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number{unit}") from None
    if not low <= value <= high:
        where = f"; {limit} allows {low} to {high}" if limit else f" ({low} to {high})"
        raise SettingsError(f"{name}={value} is out of range{where}")
    return value


def _allowed_targets(env: dict) -> frozenset[str]:
    if not (env.get("IMAGE_MAPPER_ALLOWED_TARGETS", "") or "").strip():
        return frozenset()  # the usual case: nothing more to import on the hot path
    from imagemapper.allowlist import normalize
    from imagemapper.reference import is_valid

    out = set()
    for raw in (env.get("IMAGE_MAPPER_ALLOWED_TARGETS", "") or "").split(","):
        if raw.strip():
            prefix = normalize(raw)
            if not is_valid(prefix + "/x"):
                raise SettingsError(f"IMAGE_MAPPER_ALLOWED_TARGETS: {raw.strip()!r} is not a registry "
                                    "or registry/path prefix")
            out.add(prefix)
    return frozenset(out)


def _namespace(env: dict, name: str, required: bool) -> str:
    value: str = env.get(name, "")
    if not value:
        if required:
            raise SettingsError(f"{name} is not set; it must name the operator's namespace "
                                "(the Deployment sets it from metadata.namespace)")
        return ""
    if not valid_namespace(value):
        raise SettingsError(f"{name}={value!r} is not a valid namespace name")
    return value


def _namespace_list(env: dict, name: str) -> tuple[str, ...]:
    """A comma- or space-separated list of namespace names."""
    values = env.get(name, "").replace(",", " ").split()
    for value in values:
        if not valid_namespace(value):
            raise SettingsError(f"{name}: {value!r} is not a valid namespace name "
                                "(write names separated by commas)")
    return tuple(dict.fromkeys(values))


def from_env(env: dict | None = None, require_namespace: bool = True) -> Settings:
    """Read and validate the settings; raise SettingsError naming the variable."""
    env = rawio.environ() if env is None else env
    state_dir = env.get("IMAGE_MAPPER_STATE_DIR", "") or DEFAULT_STATE_DIR
    if not state_dir.startswith("/"):
        raise SettingsError(f"IMAGE_MAPPER_STATE_DIR={state_dir!r} must be an absolute path")
    return Settings(
        namespace_mode=_choice(env, "IMAGE_MAPPER_NAMESPACE_MODE", "opt-out", ("opt-out", "opt-in")),
        failure_policy=_choice(env, "IMAGE_MAPPER_FAILURE_POLICY", "Fail", ("Fail", "Ignore")),
        timeout_seconds=_bounded_int(env, "IMAGE_MAPPER_TIMEOUT_SECONDS", "10", 1, 30,
                                     " of seconds", "the API server"),
        operator_namespace=_namespace(env, "SHELL_OPERATOR_NAMESPACE", require_namespace),
        map_namespace=_namespace(env, "IMAGE_MAPPER_MAP_NAMESPACE", False),
        state_dir=state_dir.rstrip("/") or "/",
        configuration_name=env.get("VALIDATING_WEBHOOK_CONFIGURATION_NAME", "")
        or DEFAULT_CONFIGURATION_NAME,
        excluded_namespaces=_namespace_list(env, EXCLUDE_NAMESPACES),
        max_admissions=_bounded_int(env, "IMAGE_MAPPER_MAX_ADMISSIONS", "8", 1, 256),
        namespace_map_files=_choice(env, "IMAGE_MAPPER_NAMESPACE_MAP_FILES", "enabled",
                                    NAMESPACE_MAP_FILES),
        allowed_targets=_allowed_targets(env),
    )
