"""fastjson against json: the same values, the same failures (always ValueError)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from imagemapper import fastjson

LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib")

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30)


@given(values)
@settings(max_examples=300, deadline=None)
def test_dumps_writes_what_json_writes_and_loads_reads_it_back(value):
    text = fastjson.dumps(value)
    assert text == json.dumps(value, separators=(",", ":"), allow_nan=False) == fastjson._py_dumps(value)
    assert fastjson.loads(text) == json.loads(text)


def _json_outcome(text):
    try:
        return "ok", json.loads(text)
    except (ValueError, RecursionError):
        return "error", None


@given(st.text(alphabet='[]{}",:.0123456789eE+-truefalsn \\\'\t\nxNaIiy', max_size=40))
@settings(max_examples=1500, deadline=None)
def test_loads_accepts_and_refuses_what_json_does(text):
    kind, want = _json_outcome(text)
    if kind == "ok":
        got = fastjson.loads(text)
        assert got == want or (isinstance(want, float) and math.isnan(want) and math.isnan(got))
    else:
        with pytest.raises(ValueError):
            fastjson.loads(text)


@pytest.mark.parametrize("text", ["[1,]", '{"a":1,}', "{'a':1}", "[1", '{"a"', '{"a":}', '"\\x"',
                                  "[" * 1000 + "]" * 1000 + ",", '{"a":' * 5000 + "1" + "}" * 4999,
                                  "[1] x", "", "  "])
def test_syntax_errors_and_deep_nesting_are_value_errors_in_a_bare_interpreter(text):
    """As the mutate hook runs: ``-S``, ``json`` never imported (3.10/3.11 gave SystemError)."""
    code = (f"import sys; sys.path.insert(0, {LIB!r})\nfrom imagemapper import fastjson\n"
            "try:\n    fastjson.loads(sys.stdin.read())\nexcept ValueError as e:\n    print('ValueError')\n"
            "print('json' in sys.modules, 're' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-S", "-c", code], check=False, input=text, capture_output=True,
                         text=True, timeout=30)
    assert out.stdout.split("\n")[:2] == ["ValueError", "False False"], out


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), [1, {"x": float("nan")}]])
def test_dumps_refuses_what_is_not_json(value):
    with pytest.raises(ValueError):
        fastjson.dumps(value)
    with pytest.raises(ValueError):
        fastjson._py_dumps(value)
    with pytest.raises(ValueError):
        json.dumps(value, allow_nan=False)


def test_dict_keys_are_written_like_json():
    value = {1: "a", 2.5: "b", None: "c", False: "d", "s": "e"}
    assert fastjson.dumps(value) == json.dumps(value, separators=(",", ":")) == fastjson._py_dumps(value)
    for dumps in (fastjson.dumps, fastjson._py_dumps):
        with pytest.raises(TypeError):
            dumps({(1,): 1})
        with pytest.raises(TypeError):
            dumps({1, 2})


def test_the_lent_decoder_module_never_stays_behind():
    fastjson.loads("[1]")
    try:
        fastjson.loads("[1,]")
    except ValueError:
        pass
    assert sys.modules.get("json.decoder") is None or sys.modules["json.decoder"].__name__ == "json.decoder"


def interpreters() -> list[str]:
    """Every CPython of the declared range (pyproject: >=3.10) found here: PATH and pyenv."""
    import glob

    def version(path: str) -> tuple[int, ...]:
        out = subprocess.run([path, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True,
                             text=True, check=False, timeout=30)
        return tuple(int(x) for x in out.stdout.split()) if out.returncode == 0 else ()

    candidates = ["/usr/bin/python3", sys.executable,
                  *glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3"))]
    found = {os.path.realpath(p) for p in candidates if os.path.exists(p)}
    return sorted(p for p in found if version(p) >= (3, 10))


@pytest.mark.parametrize("python", interpreters())
def test_selftest_passes_on_every_interpreter_here(python):
    """The same check the image build runs on the runtime image's Python (imagemapper.selftest)."""
    out = subprocess.run([python, "-m", "imagemapper.selftest"], env={**os.environ, "PYTHONPATH": LIB},
                         capture_output=True, text=True, check=False, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("python", interpreters())
def test_mutate_hook_answers_alike_on_every_interpreter_here(python, tmp_path):
    """The whole hot path as shell-operator runs it (``-S``), on each Python: the same answer."""
    from imagemapper import builder
    from imagemapper.imagemap import MapInput
    from imagemapper.mapfile import MapFileInput

    state = str(tmp_path / "state")
    builder.build(state, [MapInput("shop", "m", "2024-01-01T00:00:00Z", 1, [{"from": "nginx", "to": "r.corp/nginx"}])],
                   [MapFileInput("image-mapper-system", "c", "u", {"maps": "default::mirror.corp\n"})],
                   "image-mapper-system")
    pod = {"metadata": {"name": "p", "namespace": "shop",
                        "annotations": {"imagemapper.io/original-images": "{'hand': 'edited',}"}},
           "spec": {"containers": [{"name": "a", "image": "nginx:1"}, {"name": "b", "image": "redis"}]}}
    context = [{"binding": "pods.mutate.imagemapper.io", "type": "Mutating", "review": {"request": {
        "uid": "u", "namespace": "shop", "operation": "CREATE", "object": pod}}}]
    (tmp_path / "ctx.json").write_text(json.dumps(context))
    answers = []
    for interpreter in (sys.executable, python):
        response = tmp_path / "response.json"
        response.write_text("")
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": LIB, "IMAGE_MAPPER_STATE_DIR": state,
               "BINDING_CONTEXT_PATH": str(tmp_path / "ctx.json"), "ADMISSION_RESPONSE_PATH": str(response),
               "SHELL_OPERATOR_NAMESPACE": "image-mapper-system"}
        hook = os.path.join(os.path.dirname(LIB), "hooks", "mutate.py")
        subprocess.run([interpreter, "-S", hook], env=env, check=True, capture_output=True, timeout=60)
        answers.append(json.loads(response.read_text()))
    assert answers[0] == answers[1] and "patch" in answers[0], answers
