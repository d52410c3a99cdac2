"""Every CLI example in the README runs and prints exactly what the README shows."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def examples() -> list[tuple[str, str]]:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    out = []
    for block in re.findall(r"```console\n(.*?)```", text, re.DOTALL):
        lines = block.splitlines()
        if lines and lines[0].startswith("$ python3 -m imagemapper"):
            out.append((lines[0][2:], "\n".join(lines[1:])))
    return out


def test_readme_has_cli_examples():
    assert len(examples()) >= 4


@pytest.mark.parametrize("command,expected", examples(), ids=lambda v: v[:60] if isinstance(v, str) else v)
def test_readme_example(command, expected):
    command, _, grep = command.partition(" | grep ")
    argv = shlex.split(command)
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "lib"))
    result = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, env=env, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    if grep:
        lines = [line for line in lines if grep in line]
    assert "\n".join(lines) == expected
