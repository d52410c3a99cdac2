"""shell-operator's hook protocol (v1.20.3). The only module that knows about it.

* Binding contexts are a JSON array in ``$BINDING_CONTEXT_PATH``.
* The admission answer goes to ``$ADMISSION_RESPONSE_PATH`` (the same file as
  ``$VALIDATING_RESPONSE_PATH``). ``patch`` is the base64 of a JSON Patch array, and
  ``patchType`` is added by shell-operator. An empty file, a malformed file or a
  non-zero exit all become a denial ("Hook failed"), whatever the failurePolicy says,
  so :func:`admission_main` always writes one answer and always exits 0.
* Kubernetes operations go to ``$KUBERNETES_PATCH_PATH`` as a stream of JSON objects
  (never a top-level array).
* Metrics go to ``$METRICS_PATH`` as a stream of JSON objects. shell-operator puts
  every operation in a group (the hook name by default) and expires that group on
  each run, so :func:`counter_metrics` gives each series a group of its own and sets
  its running total.
"""

from __future__ import annotations

import binascii
import posix
import sys

from imagemapper import fastjson, rawio

# An AdmissionReview from the API server is at most a 3 MiB request object plus the
# stored oldObject (etcd keeps at most 1.5 MiB): anything larger did not come from it.
ADMISSION_LIMIT = 8 << 20

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, NoReturn

    from imagemapper.shapes import AdmissionResponse, PatchOp, Payload

    Env = Mapping[str, str]


def read_contexts(env: Env | None = None, limit: int = rawio.READ_LIMIT) -> list[Any]:
    """The binding-context array of this run (a regular file, size-bounded)."""
    env = rawio.environ() if env is None else env
    contexts = fastjson.load_file(env["BINDING_CONTEXT_PATH"], limit)
    if not isinstance(contexts, list):
        raise TypeError("binding context is not a JSON array")
    return contexts


def encode_patch(ops: list[PatchOp]) -> str:
    """The ``patch`` field: standard base64 of the JSON Patch text."""
    return binascii.b2a_base64(fastjson.dumps(ops).encode(), newline=False).decode("ascii")


def allow(warnings: list[str] | None = None, ops: list[PatchOp] | None = None) -> AdmissionResponse:
    response: AdmissionResponse = {"allowed": True}
    if ops:
        response["patch"] = encode_patch(ops)
    if warnings:
        response["warnings"] = warnings
    return response


def deny(message: str, warnings: list[str] | None = None) -> AdmissionResponse:
    response: AdmissionResponse = {"allowed": False, "message": message}
    if warnings:
        response["warnings"] = warnings
    return response


def _response_path(env: Env) -> str:
    return env.get("ADMISSION_RESPONSE_PATH") or env["VALIDATING_RESPONSE_PATH"]


def write_response(response: AdmissionResponse, env: Env | None = None) -> None:
    """Write the one admission answer of this run (replacing anything there)."""
    env = rawio.environ() if env is None else env
    rawio.write_bytes(_response_path(env), (fastjson.dumps(response) + "\n").encode())


def _append_stream(path_var: str, docs: list[dict], env: dict | None) -> None:
    path = (rawio.environ() if env is None else env).get(path_var)
    if not docs or not path:
        return
    rawio.write_bytes(path, "".join(fastjson.dumps(doc) + "\n" for doc in docs).encode(), append=True)


def write_kube_operations(ops: list[dict], env: dict | None = None) -> None:
    _append_stream("KUBERNETES_PATCH_PATH", ops, env)


def write_metrics(ops: list[dict], env: dict | None = None) -> None:
    _append_stream("METRICS_PATH", ops, env)


def gauge(name: str, value: float, labels: dict[str, str], group: str) -> dict:
    return {"name": name, "group": group, "action": "set", "value": value, "labels": labels}


def counter_metrics(totals: list[tuple[str, dict[str, str], int]]) -> list[dict]:
    """Metric operations for running totals, one group per series.

    shell-operator expires a group before it applies a run's operations to it, so a
    shared group would forget every series the run did not touch.
    """
    ops = []
    for name, labels, total in totals:
        group = name + "{" + ",".join(f"{k}={labels[k]}" for k in sorted(labels)) + "}"
        ops.append(gauge(name, total, labels, group))
    return ops


def log(msg: str, level: str = "info", **fields: Any) -> None:
    """One JSON log line; shell-operator turns its keys into structured fields."""
    sys.stdout.write(fastjson.dumps({"level": level, "msg": msg, **fields}) + "\n")


def print_config(config: Payload) -> None:
    sys.stdout.write(fastjson.dumps(config) + "\n")


def admission_main(handle: Callable[[Payload], AdmissionResponse],
                   failure_response: Callable[[str], AdmissionResponse],
                   after: Callable[[], None] | None = None,
                   gate: Callable[[], str | None] | None = None) -> int:
    """Run one admission and always leave exactly one well-formed answer.

    ``handle(context) -> response``. If it raises, ``failure_response(message)``
    decides the answer (the configured failure policy), and so it does when
    ``gate()``, called before the request is even read, returns a problem (the
    replica's bound on concurrent admissions), or when the request is larger than
    :data:`ADMISSION_LIMIT`. ``after()`` runs once the answer is written
    (bookkeeping: logs, counters); whatever it does or raises cannot change the answer.
    The process exit code is always 0: a non-zero exit would make shell-operator deny
    the request.
    """
    response = None
    try:
        problem = gate() if gate is not None else None
        if problem:
            after = None
            response = failure_response(problem)
        else:
            contexts = read_contexts(limit=ADMISSION_LIMIT)
            if len(contexts) != 1:
                raise ValueError(f"expected one admission binding context, got {len(contexts)}")
            response = handle(contexts[0])
    except BaseException as exc:  # noqa: BLE001 - the answer must be written whatever happened
        after = None
        try:
            log("internal error", level="error", error=f"{type(exc).__name__}: {exc}")
            response = failure_response(f"internal error: {type(exc).__name__}: {exc}")
        except BaseException:  # noqa: BLE001
            response = deny("image-mapper: internal error")
    try:
        write_response(response)
    except BaseException as exc:  # noqa: BLE001 - nothing else can be done; say so
        sys.stderr.write(f"image-mapper: cannot write the admission response: {exc}\n")
    if after is not None:
        try:
            after()
        except Exception as exc:  # noqa: BLE001 - bookkeeping never changes the answer
            sys.stderr.write(f"image-mapper: bookkeeping failed: {type(exc).__name__}: {exc}\n")
    return 0


def exit_now(code: int) -> NoReturn:
    """End a hook process at once: flush its log lines, skip the interpreter's teardown.

    Everything a hook hands shell-operator is in its files (written with ``posix.write``)
    and on stdout, so tearing down the modules and objects of a process that is about to
    exit only costs time: about a millisecond per Pod in the mutate hook. A stdout that
    cannot take the log lines would otherwise make the interpreter exit 120 at teardown,
    which shell-operator takes as a failed hook; here it is reported on stderr instead.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None: the process was started with that fd closed
                stream.flush()
        except Exception as exc:  # noqa: BLE001 - bookkeeping never changes the exit code
            try:
                sys.stderr.write(f"image-mapper: cannot flush the log lines: {type(exc).__name__}: {exc}\n")
                sys.stderr.flush()
            except Exception:  # noqa: BLE001 - nowhere left to report it
                pass
    posix._exit(code)
