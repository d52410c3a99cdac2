"""protocol: shell-operator's files, written and read directly (the hooks' tests run them end to end)."""

from __future__ import annotations

import base64
import json

import pytest
from imagemapper import protocol, rawio


@pytest.fixture
def env(tmp_path, monkeypatch):
    """shell-operator's file variables, as protocol reads them from the process environment."""
    paths = {name: str(tmp_path / name.lower()) for name in
             ("BINDING_CONTEXT_PATH", "ADMISSION_RESPONSE_PATH", "KUBERNETES_PATCH_PATH", "METRICS_PATH")}
    monkeypatch.setattr(rawio, "_environ", {**paths, "VALIDATING_RESPONSE_PATH": paths["ADMISSION_RESPONSE_PATH"]})
    return paths


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _contexts(env, contexts) -> None:
    with open(env["BINDING_CONTEXT_PATH"], "w", encoding="utf-8") as handle:
        json.dump(contexts, handle)


def test_patch_is_standard_base64_of_the_json_patch():
    ops = [{"op": "replace", "path": "/spec/containers/0/image", "value": "mirror.io/nginx:1"}]
    response = protocol.allow(["w"], ops)
    assert response["allowed"] is True and response["warnings"] == ["w"]
    assert json.loads(base64.b64decode(response["patch"], validate=True)) == ops


def test_allow_and_deny_leave_out_empty_fields():
    assert protocol.allow() == {"allowed": True}
    assert protocol.allow([], []) == {"allowed": True}
    assert protocol.deny("no") == {"allowed": False, "message": "no"}
    assert protocol.deny("no", ["careful"]) == {"allowed": False, "message": "no", "warnings": ["careful"]}


def test_read_contexts_wants_a_json_array(env):
    _contexts(env, [{"binding": "x"}])
    assert protocol.read_contexts() == [{"binding": "x"}]
    _contexts(env, {"binding": "x"})
    with pytest.raises(TypeError, match="not a JSON array"):
        protocol.read_contexts()


def test_streams_are_appended_one_json_object_per_line(env):
    protocol.write_kube_operations([{"operation": "Create", "object": {"kind": "Event"}}])
    protocol.write_kube_operations([{"operation": "Delete"}, {"operation": "Create"}])
    protocol.write_metrics([])  # nothing to say: no file at all
    lines = _read(env["KUBERNETES_PATCH_PATH"]).splitlines()
    assert [json.loads(line)["operation"] for line in lines] == ["Create", "Delete", "Create"]
    with pytest.raises(FileNotFoundError):
        _read(env["METRICS_PATH"])


def test_streams_without_a_path_are_dropped(monkeypatch):
    monkeypatch.setattr(rawio, "_environ", {})
    protocol.write_metrics([{"name": "x"}])  # no METRICS_PATH: nothing to write, no error


def test_response_path_falls_back_to_the_validating_variable(tmp_path):
    path = str(tmp_path / "answer")
    protocol.write_response({"allowed": True}, {"VALIDATING_RESPONSE_PATH": path})
    assert json.loads(_read(path)) == {"allowed": True}


def test_counter_metrics_give_each_series_its_own_group():
    ops = protocol.counter_metrics([("requests_total", {"b": "2", "a": "1"}, 7), ("requests_total", {}, 1)])
    assert ops == [
        {"name": "requests_total", "group": "requests_total{a=1,b=2}", "action": "set", "value": 7,
         "labels": {"b": "2", "a": "1"}},
        {"name": "requests_total", "group": "requests_total{}", "action": "set", "value": 1, "labels": {}}]


def test_log_writes_one_json_line(capsys):
    protocol.log("rewrite", pod="web", to=None)
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert json.loads(out) == {"level": "info", "msg": "rewrite", "pod": "web", "to": None}


def test_admission_main_writes_the_handlers_answer_then_runs_after(env):
    _contexts(env, [{"binding": "m", "review": {"request": {"uid": "1"}}}])
    seen = []
    code = protocol.admission_main(lambda ctx: protocol.deny(ctx["review"]["request"]["uid"]),
                                   lambda problem: protocol.allow(), lambda: seen.append("after"))
    assert code == 0 and seen == ["after"]
    assert json.loads(_read(env["ADMISSION_RESPONSE_PATH"])) == {"allowed": False, "message": "1"}


@pytest.mark.parametrize("contexts", [[], [{}, {}], "not a list"])
def test_admission_main_answers_with_the_failure_response_on_bad_contexts(env, contexts, capsys):
    _contexts(env, contexts)
    code = protocol.admission_main(lambda ctx: protocol.allow(), lambda problem: protocol.deny(problem))
    answer = json.loads(_read(env["ADMISSION_RESPONSE_PATH"]))
    assert code == 0 and answer["allowed"] is False and answer["message"].startswith("internal error: ")
    assert json.loads(capsys.readouterr().out)["level"] == "error"


def test_admission_main_survives_a_failing_failure_response(env, capsys):
    _contexts(env, [{}])

    def boom(_):
        raise RuntimeError("handler")

    def worse(_):
        raise RuntimeError("policy")

    ran = []
    assert protocol.admission_main(boom, worse, lambda: ran.append(1)) == 0
    assert json.loads(_read(env["ADMISSION_RESPONSE_PATH"])) == {"allowed": False,
                                                                  "message": "image-mapper: internal error"}
    assert ran == []  # no bookkeeping for an admission that failed


def test_bookkeeping_failure_never_changes_the_answer(env, capsys):
    _contexts(env, [{}])

    def broken_after():
        raise OSError("disk full")

    assert protocol.admission_main(lambda ctx: protocol.allow(), protocol.deny, broken_after) == 0
    assert json.loads(_read(env["ADMISSION_RESPONSE_PATH"])) == {"allowed": True}
    assert "bookkeeping failed: OSError: disk full" in capsys.readouterr().err


def test_unwritable_response_is_reported_and_exit_stays_zero(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(rawio, "_environ", {"BINDING_CONTEXT_PATH": str(tmp_path / "missing"),
                                            "ADMISSION_RESPONSE_PATH": str(tmp_path / "no" / "dir")})
    assert protocol.admission_main(lambda ctx: protocol.allow(), protocol.deny) == 0
    assert "cannot write the admission response" in capsys.readouterr().err
