"""The plan's crane script and plain lines drive crane and oras, against real registries.

crane and oras are Go programs: when they are not on PATH, they are built once with
``go install`` (pinned versions) into the e2e cache, like the other e2e binaries.
Both copy a multi-architecture index whole, so its digest survives the copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import cache_dir

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

import registries  # noqa: E402 (tests/ on the path first)

pytestmark = pytest.mark.e2e

TOOLS = {"crane": "github.com/google/go-containerregistry/cmd/crane@v0.20.3",
         "oras": "oras.land/oras/cmd/oras@v1.2.3"}


def tool(name: str) -> str:
    """The tool on PATH, else the one built into the e2e cache (built now if missing)."""
    found = shutil.which(name)
    if found:
        return found
    target = cache_dir() / "tools" / name
    if not target.exists():
        if shutil.which("go") is None:
            pytest.fail(f"{name} is not on PATH and Go is missing to build it ({TOOLS[name]})")
        target.parent.mkdir(parents=True, exist_ok=True)
        built = subprocess.run(["go", "install", TOOLS[name]], env=dict(os.environ, GOBIN=str(target.parent)),
                               capture_output=True, text=True, timeout=1200, check=False)
        assert built.returncode == 0, f"go install {TOOLS[name]} failed:\n{built.stderr}"
    return str(target)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    registries.require_tools()
    work = tmp_path_factory.mktemp("copytools")
    layout = str(work / "oci")
    digests = {"multi": registries.oci_image(layout, "multi", "multi", ("amd64", "arm64")),
               "single": registries.oci_image(layout, "single", "single")}
    up = registries.Registry(str(work), "upstream")
    private = registries.Registry(str(work), "private")
    try:
        registries.push(layout, "multi", f"{up.host}/library/tool:1")
        registries.push(layout, "single", f"{up.host}/team/app:2")
        yield {"work": work, "up": up, "private": private, "digests": digests}
    finally:
        up.stop()
        private.stop()


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "lib"), HOME="/nonexistent")
    return subprocess.run([sys.executable, "-m", "imagemapper", *argv], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)


def rules(world: dict[str, Any], prefix: str) -> list[str]:
    maps = world["work"] / f"{prefix}.conf"
    maps.write_text(f"default::\n{world['up'].host}::{world['private'].host}/{prefix}\n")
    return ["--map-file", str(maps), f"{world['up'].host}/library/tool:1",
            f"{world['up'].host}/team/app:2@{world['digests']['single']}"]


def check(world: dict[str, Any], argv: list[str]) -> None:
    done = cli("plan", *argv, "--check", "--insecure-registry", world["private"].host)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("present  ") == 2, done.stdout


def test_crane_script(world: dict[str, Any]) -> None:
    argv = rules(world, "crane")
    planned = cli("plan", *argv, "--format", "crane")
    assert planned.returncode == 0, planned.stderr
    script = world["work"] / "crane.sh"
    script.write_text(planned.stdout)
    env = dict(os.environ, PATH=f"{Path(tool('crane')).parent}:{os.environ['PATH']}")
    copied = subprocess.run(["sh", str(script), "--insecure"], env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    assert copied.returncode == 0, copied.stderr
    check(world, argv)
    private = world["private"].host
    assert registries.head_digest(private, "crane/library/tool", "1") == world["digests"]["multi"]
    assert registries.head_digest(private, "crane/team/app", "2") == world["digests"]["single"]


def test_oras_from_plain_lines(world: dict[str, Any]) -> None:
    argv = rules(world, "oras")
    planned = cli("plan", *argv)
    assert planned.returncode == 0, planned.stderr
    pairs = world["work"] / "pairs.txt"
    pairs.write_text(planned.stdout)
    oras = tool("oras")
    copied = subprocess.run(["sh", "-c", f'xargs -n2 "{oras}" cp --from-plain-http --to-plain-http < "{pairs}"'],
                            capture_output=True, text=True, timeout=300, check=False)
    assert copied.returncode == 0, copied.stdout + copied.stderr
    check(world, argv)
    assert registries.head_digest(world["private"].host, "oras/library/tool", "1") == world["digests"]["multi"]
