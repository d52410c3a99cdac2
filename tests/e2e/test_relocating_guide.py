"""Every command of docs/relocating.md runs and prints exactly what the guide shows.

The commands run in order, in one working directory, inside a network and mount
namespace of their own where registry.corp, docker.io and quay.io are local registries
and the e2e control plane runs with image-mapper installed (tests/e2e/guide_world.py).
Needs root (or user namespaces) for unshare, the tools of tests/registries.py and the
e2e binaries.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from cluster import BUILD_SCRIPT, missing_binaries

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUIDE = os.path.join(ROOT, "docs", "relocating.md")
sys.path.insert(0, os.path.join(ROOT, "tests"))

import registries  # noqa: E402 (tests/ on the path first)

pytestmark = pytest.mark.e2e


def guide_commands() -> list[tuple[str, str]]:
    """(command, expected output) for each ``$`` line of the guide's console blocks."""
    with open(GUIDE, encoding="utf-8") as handle:
        text = handle.read()
    out = []
    for block in re.findall(r"```console\n(.*?)```", text, re.DOTALL):
        for chunk in re.split(r"^\$ ", block, flags=re.MULTILINE)[1:]:
            command, _, output = chunk.partition("\n")
            out.append((command, output.rstrip("\n")))
    return out


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    registries.require_tools()
    if missing_binaries():
        pytest.fail(f"e2e binaries {', '.join(missing_binaries())} missing; build them with {BUILD_SCRIPT}")
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("the guide test needs unshare (util-linux) and ip (iproute2)")
    work = str(tmp_path_factory.mktemp("guide"))
    commands = [command for command, _ in guide_commands()]
    with open(os.path.join(work, "commands.json"), "w") as handle:
        json.dump(commands, handle)
    done = subprocess.run(["unshare", "--net", "--mount", "--fork", sys.executable,
                           os.path.join(ROOT, "tests", "e2e", "guide_world.py"), work],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, (f"the guide's world failed (unshare needs root or user namespaces):\n"
                                  f"{done.stdout}\n{done.stderr}")
    with open(os.path.join(work, "results.json")) as handle:
        return {r["command"]: r for r in json.load(handle)}


def test_guide_has_the_three_steps():
    commands = " ".join(command for command, _ in guide_commands())
    assert "image-mapper plan" in commands and "sh copy.sh" in commands and "--check" in commands
    assert "kubectl apply" in commands


@pytest.mark.parametrize("command,expected", guide_commands(), ids=lambda v: v[:70] if isinstance(v, str) else v)
def test_guide_command(results, command, expected):
    result = results[command]
    assert result["status"] == 0, result["output"]
    assert result["output"].rstrip("\n") == expected
