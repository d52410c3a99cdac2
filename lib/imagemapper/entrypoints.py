"""What the three executables in ``hooks/`` do, so that they stay three lines long.

Each ``*_main(argv)`` returns the process exit code. ``--config`` prints the binding
configuration generated from the environment, and a bad setting exits 1 with the
variable's name, so that shell-operator refuses to start. Admission runs always exit 0
(see :func:`imagemapper.protocol.admission_main`).
"""

from __future__ import annotations

import sys

from imagemapper import kube, protocol
from imagemapper.settings import Settings, SettingsError, from_env

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from imagemapper.admission import Rewrite
    from imagemapper.shapes import AdmissionResponse, Payload


def _print_config(builder_name: str) -> int:
    from imagemapper import hookconfig

    try:
        settings = from_env()
    except SettingsError as exc:
        sys.stderr.write(f"image-mapper: {exc}\n")
        return 1
    protocol.print_config(getattr(hookconfig, builder_name)(settings))
    return 0


def _settings() -> Settings:
    return from_env(require_namespace=False)


def _safe_settings(read: Callable[[], Settings] = _settings) -> Settings:
    try:
        return read()
    except SettingsError:
        return Settings()  # defaults: Fail, the safe side


def _once(read: Callable[[], Settings]) -> Callable[[], Settings]:
    """``read`` memoized for one admission: the gate, the answer and the bookkeeping of a
    process share one reading of the environment (an error is raised again each time)."""
    done: list[Settings] = []

    def once() -> Settings:
        if not done:
            done.append(read())
        return done[0]

    return once


def _gate(read: Callable[[], Settings] = _settings) -> str | None:
    """Take one of the replica's admission slots (imagemapper.gate), before any parsing."""
    from imagemapper import gate

    settings = _safe_settings(read)
    try:
        return gate.enter(settings.state_dir, settings.max_admissions, settings.timeout_seconds / 2,
                          gate.request_size())
    except OSError:
        return None  # no state dir yet: the snapshot check answers by the failure policy


def mutate_main(argv: list[str]) -> int:
    if argv[:1] == ["--config"]:
        return _print_config("mutate_config")
    from imagemapper import admission

    done: list[tuple[Payload, AdmissionResponse, list[Rewrite], Settings]] = []
    read = _once(_settings)

    def handle(context: Payload) -> AdmissionResponse:
        settings = read()
        request = kube.mapping(context, "review", "request")
        rewrites: list[Rewrite] = []
        response = admission.mutate(request, settings, rewrites)
        done.append((request, response, rewrites, settings))
        return response

    def after() -> None:
        if done:
            _report_mutation(*done[0])

    return protocol.admission_main(
        handle, lambda problem: admission.failure(_safe_settings(read), problem), after, lambda: _gate(read))


def _report_mutation(request: Payload, response: AdmissionResponse, rewrites: list[Rewrite],
                     settings: Settings) -> None:
    """Log one line per rewrite and bump the counters, after the answer is written.

    A dry-run admission changes nothing, so it is logged as such and not counted. The
    totals are exported by the sync hook's schedule binding (see counters).
    """
    namespace = kube.text(request, "namespace")
    pod = kube.object_name(request, request.get("object"))
    dry_run = request.get("dryRun") is True
    extra: dict[str, Any] = {"dryRun": True} if dry_run else {}
    for item in rewrites:
        protocol.log("rewrite", namespace=namespace, pod=pod, container=item.field.key,
                     image=item.decision.image, to=item.decision.new, rule=item.decision.rule, **extra)
    if dry_run:
        return
    result = "patched" if "patch" in response else (
        "unchanged" if response.get("allowed") else "refused")
    per_source: dict[str, int] = {}
    for item in rewrites:
        per_source[item.source] = per_source.get(item.source, 0) + 1
    increments = [("image_mapper_admissions_total", {"result": result}, 1)]
    increments += [("image_mapper_rewrites_total", {"namespace": namespace, "source": source}, n)
                   for source, n in sorted(per_source.items())]
    from imagemapper import counters

    counters.bump(settings.state_dir, increments)


def validate_main(argv: list[str]) -> int:
    if argv[:1] == ["--config"]:
        return _print_config("validate_config")
    from imagemapper import admission
    from imagemapper.hookconfig import VALIDATE_UNLABELED

    def handle(context: Payload) -> AdmissionResponse:
        request = kube.mapping(context, "review", "request")
        if context.get("binding") == VALIDATE_UNLABELED:
            return admission.validate_unlabeled_mapfile(request, _settings())
        return admission.validate(request, _settings())

    return protocol.admission_main(handle, lambda problem: protocol.allow(
        [(f"image-mapper could not validate this object ({problem}); "
         "the sync hook will report problems in status and Events")]), gate=_gate)


def sync_main(argv: list[str]) -> int:
    if argv[:1] == ["--config"]:
        return _print_config("sync_config")
    import gc
    import os

    # One short run that builds millions of objects (the binding context, 100k rules) and
    # makes no cycles worth collecting: the collector's passes over them cost ~15 %.
    gc.disable()

    from imagemapper import sync
    from imagemapper.counters import BINDING as COUNTERS_BINDING

    settings = _settings()
    os.makedirs(settings.state_dir, exist_ok=True)
    contexts = protocol.read_contexts()
    if contexts and all(isinstance(c, dict) and c.get("binding") == COUNTERS_BINDING for c in contexts):
        return _export_counters(settings)
    out = sync.run(contexts, settings)
    protocol.write_kube_operations(out.operations)
    protocol.write_metrics(out.metrics)
    for line in out.logs:
        line = dict(line)
        protocol.log(line.pop("msg"), level=line.pop("level", "info"), **line)
    return 0


def _export_counters(settings: Settings) -> int:
    """The one writer of the admission counters (see imagemapper.counters)."""
    from imagemapper import counters

    protocol.write_metrics(protocol.counter_metrics(counters.totals(settings.state_dir)))
    return 0
