"""A shell-operator v1.20.3 emulator for testing hooks without a cluster.

It follows shell-operator's documentation and its Go source at the pinned version:
where the docs and the code differ, this module does what the code does.
Public API (also re-exported by ``tests/harness/__init__.py``)::

    hooks = discover(hooks_dir)                 # [Hook(path, name, root)], sorted by path
    config = load_config(hook, env)             # run `<path> --config`, validate -> HookConfig
    result = run_hook(hook, contexts, env)      # one execution -> RunResult
    result.ok / result.error                    # shell-operator's verdict and reason
    result.admission                            # AdmissionResponse the API server gets
    result.metric_ops / result.patch_operations # parsed output files
    new_obj = apply_admission(result.admission, obj)
    store = MetricsStore(); store.apply(ops, hook_name); store.render()

    op = Operator(hook, cluster=Cluster([...]), env=env)   # queues, monitors, snapshots
    op.start(); op.drain()                      # onStartup, Synchronization, ...
    op.cluster.apply(obj); op.step()            # Event -> one (combined) run
    op.admit("binding.name", request)           # a Validating/Mutating run -> RunResult

Context builders (exact shell-operator JSON): ``BindingContext(...).to_dict(snapshots)``
(``MapV1``), ``make_item``/``sort_items`` for snapshot items, ``normalize_request`` for
``review.request``, ``compact(contexts)`` (group compaction) and ``combine(task, queue)``
(queue combining); ``Operator`` uses them all.
"""
from __future__ import annotations

import copy
import os
import re
import stat
import subprocess
import tempfile
import uuid
from collections import deque
from dataclasses import dataclass, field

from . import _go
from .admission import (
    AdmissionDenied,
    AdmissionResponseError,
    api_response,
    apply_admission,
    parse_response_file,
)
from .cluster import Cluster, Item, Monitor, make_item, sort_items
from .config import (
    AdmissionBinding,
    HookConfig,
    HookConfigError,
    KubernetesBinding,
    ScheduleBinding,
    parse_config,
)
from .metrics import MetricsError, MetricsStore, parse_metrics, validate_operations
from .objectpatch import PatchError, parse_operations

__all__ = [
    "PER_RUN_VARS",
    "AdmissionBinding",
    "AdmissionDenied",
    "BindingContext",
    "Cluster",
    "Hook",
    "HookConfig",
    "HookConfigError",
    "HookTimeout",
    "Item",
    "KubernetesBinding",
    "MetricsError",
    "MetricsStore",
    "Operator",
    "PatchError",
    "RunResult",
    "ScheduleBinding",
    "apply_admission",
    "combine",
    "compact",
    "discover",
    "load_config",
    "make_item",
    "normalize_request",
    "parse_config",
    "parse_metrics",
    "parse_operations",
    "run_hook",
    "safe_name",
    "sort_items",
]

PER_RUN_VARS = ("BINDING_CONTEXT_PATH", "METRICS_PATH", "VALIDATING_RESPONSE_PATH",
                "ADMISSION_RESPONSE_PATH", "CONVERSION_RESPONSE_PATH", "KUBERNETES_PATCH_PATH")
SKIPPED_EXTENSIONS = (".yaml", ".json", ".md", ".txt")
DEFAULT_TIMEOUT = 60.0


class HookTimeout(RuntimeError):
    """The harness' safety timeout hit (shell-operator itself would wait forever)."""


# --------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class Hook:
    """An executable hook: absolute ``path``, ``name`` relative to the hooks ``root``."""

    path: str
    name: str
    root: str

    @classmethod
    def from_path(cls, path: str | os.PathLike, root: str | os.PathLike | None = None) -> Hook:
        path = os.path.abspath(path)
        root = os.path.abspath(root) if root is not None else os.path.dirname(path)
        return cls(path=path, name=os.path.relpath(path, root), root=root)


def _walk(directory: str, found: list[str]) -> None:
    """``filepath.Walk`` (lexical order, symlinks not followed) with the hook filters."""
    for entry in sorted(os.listdir(directory)):
        path = os.path.join(directory, entry)
        info = os.lstat(path)
        if stat.S_ISDIR(info.st_mode):
            if not entry.startswith(".") and entry != "lib":
                _walk(path, found)
            continue
        if entry.startswith(".") or os.path.splitext(entry)[1] in SKIPPED_EXTENSIONS:
            continue
        if info.st_mode & 0o111:
            found.append(path)


def discover(hooks_dir: str | os.PathLike) -> list[Hook]:
    """Hooks as ``RecursiveGetExecutablePaths`` finds them, sorted by path."""
    root = os.path.abspath(hooks_dir)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"hooks dir {root} does not exist")
    found: list[str] = []
    _walk(root, found)
    return [Hook(path=p, name=os.path.relpath(p, root), root=root) for p in sorted(found)]


def _as_hook(hook) -> Hook:
    return hook if isinstance(hook, Hook) else Hook.from_path(hook)


def _base_env(env: dict | None) -> dict:
    """The operator's own environment, without the per-run file variables."""
    base = dict(os.environ if env is None else env)
    for name in PER_RUN_VARS:
        base.pop(name, None)
    return base


def load_config(hook, env: dict | None = None, *, timeout: float = DEFAULT_TIMEOUT,
                registration: bool = True) -> HookConfig:
    """Run ``<abs path> --config`` (cwd = hooks root) and validate its stdout."""
    hook = _as_hook(hook)
    try:
        proc = subprocess.run([hook.path, "--config"], check=False, cwd=hook.root, env=_base_env(env),
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise HookTimeout(f"{hook.name} --config did not finish in {timeout}s") from None
    except OSError as exc:
        raise HookConfigError(f"cannot get config for hook {hook.path!r}: {exc}") from None
    if proc.returncode != 0:
        raise HookConfigError(f"cannot get config for hook {hook.path!r}: exit status "
                              f"{proc.returncode}: {proc.stderr.decode(errors='replace')}")
    try:
        return parse_config(proc.stdout.decode(), registration=registration)
    except HookConfigError as exc:
        raise HookConfigError(f"creating hook {hook.name!r}: {exc}") from None


def safe_name(name: str) -> str:
    """``sanitize.BaseName(hook name)``, used in the temporary file names."""
    name = re.sub(r"[./]", "-", name).strip(" ")
    name = re.sub(r"[ &_=+:]", "-", name)
    name = re.sub(r"[^A-Za-z0-9.-]", "", name)
    return re.sub(r"-+", "-", name)


# --------------------------------------------------------------------------- running


@dataclass
class RunResult:
    """One hook execution and what shell-operator made of it."""

    hook: Hook
    contexts: list
    exit_code: int | None
    stdout: str
    stderr: str
    ok: bool = True
    error: str | None = None
    metric_ops: list = field(default_factory=list)
    metric_warnings: list = field(default_factory=list)
    admission_response: dict | None = None   # the parsed response file
    admission: dict | None = None            # AdmissionResponse sent to the API server
    conversion_response: dict | None = None
    patch_operations: list = field(default_factory=list)
    patch_errors: list = field(default_factory=list)
    files: dict = field(default_factory=dict)  # raw output files, by variable name

    def fail(self, message: str) -> None:
        if self.ok:
            self.ok, self.error = False, message

    def __str__(self) -> str:
        verdict = "ok" if self.ok else f"FAILED: {self.error}"
        return (f"{self.hook.name} exit={self.exit_code} {verdict}\n--- stderr\n{self.stderr[-2000:]}"
                f"\n--- files\n{self.files}")


def _write_files(hook: Hook, contexts: list, directory: str) -> dict[str, str]:
    """The binding context file and the four pre-created empty output files."""
    safe = safe_name(hook.name)

    def path(template: str) -> str:
        return os.path.join(directory, template.format(safe, uuid.uuid4()))

    paths = {
        "BINDING_CONTEXT_PATH": path("hook-{}-binding-context-{}.json"),
        "METRICS_PATH": path("hook-{}-metrics-{}.json"),
        "ADMISSION_RESPONSE_PATH": path("hook-{}-admission-response-{}.json"),
        "CONVERSION_RESPONSE_PATH": path("hook-{}-conversion-response-{}.json"),
        "KUBERNETES_PATCH_PATH": path("{}-object-patch-{}"),
    }
    paths["VALIDATING_RESPONSE_PATH"] = paths["ADMISSION_RESPONSE_PATH"]
    with open(paths["BINDING_CONTEXT_PATH"], "w", encoding="utf-8") as out:
        out.write(_go.go_json_dumps(contexts) + "\n")
    for name in ("METRICS_PATH", "ADMISSION_RESPONSE_PATH", "CONVERSION_RESPONSE_PATH",
                 "KUBERNETES_PATCH_PATH"):
        with open(paths[name], "w"):
            pass
        os.chmod(paths[name], 0o644)
    return paths


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="surrogateescape") as source:
        return source.read()


def _parse_conversion(text: str) -> dict | None:
    if text == "":
        return None
    fields = {"failedMessage": _go.STR, "convertedObjects": _go.ANY}
    try:
        parsed = _go.struct_decode(_go.decode_first(text), fields)
    except _go.GoJSONError as exc:
        raise ValueError(f"got bad conversion response: {exc}") from None
    objects = parsed.get("convertedObjects")
    if objects is not None and not isinstance(objects, list):
        raise ValueError("got bad conversion response: convertedObjects is not an array")
    return {"failedMessage": parsed.get("failedMessage", ""), "convertedObjects": objects or []}


def _interpret(result: RunResult, hook: Hook, metrics: MetricsStore | None,
               cluster: Cluster | None) -> None:
    """``hookResponseParser.ParseResult`` then ``handleRunHook``, in their order."""
    files = result.files
    if result.exit_code != 0:
        result.fail(f"{hook.name} FAILED: " + (result.stderr.strip()
                                               or f"exit status {result.exit_code}"))
        return
    try:
        result.metric_ops, result.metric_warnings = parse_metrics(files["METRICS_PATH"], hook.name)
        result.admission_response = parse_response_file(files["ADMISSION_RESPONSE_PATH"])
        result.conversion_response = _parse_conversion(files["CONVERSION_RESPONSE_PATH"])
        if files["KUBERNETES_PATCH_PATH"]:
            result.patch_operations = parse_operations(files["KUBERNETES_PATCH_PATH"])
    except (MetricsError, AdmissionResponseError, PatchError, ValueError) as exc:
        result.fail(str(exc))
        return
    if cluster is not None:
        result.patch_errors = cluster.execute(result.patch_operations)
        if result.patch_errors:
            result.fail("kubernetes patch operations failed: " + "; ".join(result.patch_errors))
            return
    try:
        if metrics is not None:
            metrics.apply(result.metric_ops, hook.name)
        else:
            validate_operations(result.metric_ops)
    except MetricsError as exc:
        result.fail(str(exc))


def run_hook(hook, contexts: list, env: dict | None = None, *, timeout: float = DEFAULT_TIMEOUT,
             metrics: MetricsStore | None = None, cluster: Cluster | None = None,
             tmp_dir: str | None = None) -> RunResult:
    """Execute ``hook`` once with ``contexts`` (the binding-context array).

    argv = [path], cwd = the hook's directory, stdin = /dev/null, env = ``env`` (default:
    this process' environment) plus the six file variables.  Output files are parsed
    only after exit 0.  ``metrics``: a MetricsStore to apply the metrics to (else they
    are only validated).  ``cluster``: a Cluster to run the patch operations against
    (else they are only parsed).  Raises HookTimeout after ``timeout`` seconds.
    """
    hook = _as_hook(hook)
    if not isinstance(contexts, list) or not contexts:
        raise ValueError("contexts must be a non-empty list of binding contexts")
    admission_run = contexts[0].get("type") in ("Validating", "Mutating")
    if admission_run and len(contexts) != 1:
        raise ValueError("an admission run always has exactly one binding context")
    with tempfile.TemporaryDirectory(prefix="shellop-", dir=tmp_dir) as directory:
        paths = _write_files(hook, contexts, directory)
        run_env = {**_base_env(env), **paths}
        try:
            proc = subprocess.run([hook.path], check=False, cwd=os.path.dirname(hook.path), env=run_env,
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired:
            raise HookTimeout(f"{hook.name} did not finish in {timeout}s") from None
        except OSError as exc:
            code, out, err = None, b"", str(exc).encode()
        result = RunResult(hook=hook, contexts=contexts, exit_code=code,
                           stdout=out.decode(errors="replace"), stderr=err.decode(errors="replace"))
        result.files = {name: _read(p) for name, p in paths.items() if name != "BINDING_CONTEXT_PATH"}
    _interpret(result, hook, metrics, cluster)
    if admission_run:
        uid = ((contexts[0].get("review") or {}).get("request") or {}).get("uid", "")
        result.admission = api_response(result.admission_response, not result.ok, uid)
    return result


# --------------------------------------------------------------------------- binding contexts


@dataclass
class BindingContext:
    """One binding context before serialization (``bindingcontext.BindingContext``)."""

    binding: str
    binding_type: str                 # onStartup | schedule | kubernetes | Validating | Mutating
    type: str = ""                    # Synchronization | Event, for kubernetes
    watch_event: str = ""
    objects: list = field(default_factory=list)   # Items: Event's object, or Synchronization's
    group: str = ""
    include_snapshots: list = field(default_factory=list)
    review: dict | None = None

    def to_dict(self, snapshots: dict | None = None) -> dict:
        """``MapV1``: the JSON object the hook reads (``snapshots``: name -> [Item])."""
        out: dict = {"binding": self.binding}
        if self.binding_type == "onStartup":
            return out
        if self.include_snapshots:
            out["snapshots"] = {name: [i.to_dict() for i in items]
                                for name, items in (snapshots or {}).items()}
        if self.binding_type in ("Validating", "Mutating"):
            out["type"], out["review"] = self.binding_type, copy.deepcopy(self.review)
            return out
        if self.group:
            out["type"], out["groupName"] = "Group", self.group
            return out
        if self.binding_type == "schedule":
            out["type"] = "Schedule"
            return out
        out["type"] = self.type
        if self.watch_event:
            out["watchEvent"] = self.watch_event
        if self.type == "Synchronization":
            out["objects"] = [i.to_dict() for i in self.objects]
        elif self.objects:
            out.update(self.objects[0].to_dict())
        else:
            out["object"] = None
        return out


def compact(contexts: list[BindingContext]) -> list[BindingContext]:
    """Group compaction: drop a context when the next one has the same (non-empty) group."""
    return [c for i, c in enumerate(contexts)
            if not (c.group and i + 1 < len(contexts) and contexts[i + 1].group == c.group)]


@dataclass
class Task:
    """A queued ``HookRun`` (or ``Enable*Bindings``) task."""

    kind: str
    contexts: list = field(default_factory=list)
    queue: str = "main"
    allow_failure: bool = False
    execute_on_sync: bool = True
    monitors: list = field(default_factory=list)
    failures: int = 0

    @property
    def is_synchronization(self) -> bool:
        first = self.contexts[0] if self.contexts else None
        return bool(first and first.binding_type == "kubernetes" and first.type == "Synchronization")


def combine(head: Task, queue: deque) -> None:
    """``combineBindingContextForHook``: absorb the following HookRun tasks, then compact.

    ``queue`` holds the tasks behind ``head`` (one hook per Operator, so "same hook"
    always holds); absorbed tasks are removed from it.
    """
    absorbed = []
    while queue and queue[0].kind == head.kind:
        absorbed.append(queue.popleft())
    if not absorbed:
        return
    contexts = list(head.contexts)
    for task in absorbed:
        contexts += task.contexts
        head.monitors += task.monitors
    head.contexts = compact(contexts)


# --------------------------------------------------------------------------- operator


def normalize_request(request: dict) -> dict:
    """An AdmissionRequest as it comes out of Go's ``v1.AdmissionRequest`` struct.

    Missing non-omitempty fields get their zero value (``object``/``oldObject``/
    ``options`` become null), unknown keys are dropped.
    """
    gvk = {"group": "", "version": "", "kind": ""}
    gvr = {"group": "", "version": "", "resource": ""}
    out = {"uid": request.get("uid", ""), "kind": {**gvk, **(request.get("kind") or {})},
           "resource": {**gvr, **(request.get("resource") or {})}}
    for key in ("subResource", "requestKind", "requestResource", "requestSubResource", "name",
                "namespace"):
        if request.get(key):
            out[key] = copy.deepcopy(request[key])
    out["operation"] = request.get("operation", "")
    user = request.get("userInfo") or {}
    out["userInfo"] = {k: copy.deepcopy(v) for k, v in user.items()
                       if k in ("username", "uid", "groups", "extra") and v}
    for key in ("object", "oldObject"):
        out[key] = copy.deepcopy(request.get(key))
    if request.get("dryRun") is not None:
        out["dryRun"] = request["dryRun"]
    out["options"] = copy.deepcopy(request.get("options"))
    return out


class Operator:
    """shell-operator with one hook: monitors, queues, combining, snapshots, admission.

    Deterministic: nothing runs until ``step``/``drain``/``admit`` is called.  Cluster
    changes become queued tasks right away (or are buffered until the binding's
    Synchronization succeeded).
    """

    def __init__(self, hook, *, cluster: Cluster | None = None, env: dict | None = None,
                 metrics: MetricsStore | None = None, config: HookConfig | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.hook = _as_hook(hook)
        self.env = env
        self.timeout = timeout
        self.config = config or load_config(self.hook, env, timeout=timeout)
        self.cluster = cluster if cluster is not None else Cluster()
        self.metrics = metrics if metrics is not None else MetricsStore()
        self.monitors: dict[str, Monitor] = {}
        self.queues: dict[str, deque] = {"main": deque()}
        self.runs: list[RunResult] = []

    # ---------------------------------------------------------------- queue plumbing

    def _queue(self, name: str) -> deque:
        return self.queues.setdefault(name, deque())

    def start(self) -> None:
        """Fill "main" like ``bootstrapMainQueue``: onStartup, then Enable* tasks."""
        main = self._queue("main")
        if self.config.on_startup is not None:
            main.append(Task("HookRun", [BindingContext("onStartup", "onStartup")]))
        if self.config.kubernetes:
            main.append(Task("EnableKubernetesBindings"))
        if self.config.schedules:
            main.append(Task("EnableScheduleBindings"))

    def _enable_kubernetes(self) -> None:
        """Start every monitor (initial list) and put the Synchronization tasks at the head."""
        tasks = []
        for binding in self.config.kubernetes:
            monitor = Monitor(binding, self.cluster,
                              lambda event, item, b=binding: self._on_event(b, event, item))
            monitor.start()
            self.monitors[binding.name] = monitor
            context = BindingContext(binding.name, "kubernetes", type="Synchronization",
                                     group=binding.group, include_snapshots=binding.include_snapshots)
            tasks.append(Task("HookRun", [context], queue="main", allow_failure=binding.allow_failure,
                              execute_on_sync=binding.execute_on_sync, monitors=[binding.name]))
        self._queue("main").extendleft(reversed(tasks))

    def _on_event(self, binding: KubernetesBinding, event: str, item: Item) -> None:
        context = BindingContext(binding.name, "kubernetes", type="Event", watch_event=event,
                                 objects=[item], group=binding.group,
                                 include_snapshots=binding.include_snapshots)
        self._queue(binding.queue).append(
            Task("HookRun", [context], queue=binding.queue, allow_failure=binding.allow_failure))

    def fire_schedule(self, name: str) -> None:
        """The crontab of schedule binding ``name`` fired: queue its task."""
        binding = self.config.schedule(name)
        context = BindingContext(binding.name, "schedule", group=binding.group,
                                 include_snapshots=binding.include_snapshots)
        self._queue(binding.queue).append(
            Task("HookRun", [context], queue=binding.queue, allow_failure=binding.allow_failure))

    def pending(self, queue: str = "main") -> list[Task]:
        return list(self._queue(queue))

    # ---------------------------------------------------------------- snapshots

    def _snapshot(self, name: str, cache: dict) -> list[Item]:
        if name not in cache:
            monitor = self.monitors.get(name)
            cache[name] = monitor.snapshot() if monitor else []
        return cache[name]

    def render(self, contexts: list[BindingContext]) -> list[dict]:
        """``UpdateSnapshots`` + ``MapV1``: fresh snapshots, read once per execution."""
        cache: dict = {}
        out = []
        for context in contexts:
            snapshots = {name: self._snapshot(name, cache) for name in context.include_snapshots}
            if context.binding_type == "kubernetes" and context.type == "Synchronization":
                context = copy.copy(context)
                context.objects = self._snapshot(context.binding, cache)
            out.append(context.to_dict(snapshots))
        return out

    # ---------------------------------------------------------------- execution

    def _execute(self, contexts: list[BindingContext]) -> RunResult:
        result = run_hook(self.hook, self.render(contexts), self.env, timeout=self.timeout,
                          metrics=self.metrics, cluster=self.cluster)
        self.runs.append(result)
        return result

    def step(self, queue: str = "main") -> RunResult | None:
        """Handle the head task of ``queue``; returns the run, or None if nothing ran.

        A failed run stays at the head with its combined contexts (shell-operator
        retries it after a backoff), unless the binding has ``allowFailure``.
        """
        tasks = self._queue(queue)
        if not tasks:
            return None
        head = tasks[0]
        if head.kind == "EnableKubernetesBindings":
            tasks.popleft()
            self._enable_kubernetes()
            return None
        if head.kind == "EnableScheduleBindings":
            tasks.popleft()
            return None
        if head.is_synchronization and not head.execute_on_sync:
            tasks.popleft()
            self._unlock(head)
            return None
        first = head.contexts[0]
        if not (first.binding_type == "kubernetes" and first.type == "Synchronization"
                and not first.group):
            tasks.popleft()
            combine(head, tasks)
            tasks.appendleft(head)
        result = self._execute(head.contexts)
        if not result.ok and not head.allow_failure:
            head.failures += 1
            return result
        tasks.popleft()
        if head.is_synchronization:
            self._unlock(head)
        return result

    def _unlock(self, task: Task) -> None:
        for name in task.monitors:
            self.monitors[name].enable_events()

    def drain(self, max_steps: int = 200) -> list[RunResult]:
        """Step the queues ("main" first, then by name) until all are empty.

        Stops at the first failed run that stays queued (shell-operator would retry it
        after a backoff, blocking that queue).
        """
        runs = []
        for _ in range(max_steps):
            order = sorted(self.queues, key=lambda n: (n != "main", n))
            name = next((n for n in order if self.queues[n]), None)
            if name is None:
                return runs
            head = self.queues[name][0]
            result = self.step(name)
            if result is None:
                continue
            runs.append(result)
            if not result.ok and self.queues[name] and self.queues[name][0] is head:
                return runs
        raise RuntimeError(f"queues still busy after {max_steps} steps")

    def admission_context(self, binding: str, request: dict) -> dict:
        """The one binding context of an admission run, with its snapshots read now."""
        config = self.config.admission(binding)
        context = BindingContext(config.name, config.type, group=config.group,
                                 include_snapshots=config.include_snapshots,
                                 review={"request": normalize_request(request)})
        return self.render([context])[0]

    def admit(self, binding: str, request: dict) -> RunResult:
        """An AdmissionReview for ``binding``: runs at once, not queued."""
        result = run_hook(self.hook, [self.admission_context(binding, request)], self.env,
                          timeout=self.timeout, metrics=self.metrics, cluster=self.cluster)
        self.runs.append(result)
        return result
