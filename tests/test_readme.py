"""Every CLI example in the README runs as printed and prints exactly what the README shows.

The examples call ``image-mapper``, the command ``pip install .`` installs. So the test
installs the clone the documented way, into a throwaway virtualenv, and runs each example
line through the shell from the repository root, with no ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        return handle.read()


def examples() -> list[tuple[str, str]]:
    out = []
    for block in re.findall(r"```console\n(.*?)```", readme(), re.DOTALL):
        lines = block.splitlines()
        if lines and lines[0].startswith("$ image-mapper"):
            out.append((lines[0][2:], "\n".join(lines[1:])))
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> str:
    """A virtualenv with ``pip install .`` of the tracked files; returns its bin dir."""
    base = tmp_path_factory.mktemp("pip-install")
    src = base / "src"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                            "lib", "pyproject.toml", "README.md"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:  # a copy, so that the build leaves no build/ or egg-info in the clone
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(ROOT, name), src / name)
    venv = base / "venv"
    # No pip or setuptools of its own: the venv sees the pinned ones of requirements-dev.txt.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                    str(venv)], check=True)
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                          "install", "--quiet",
                          "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
                          str(src)], capture_output=True, text=True, check=False)
    assert pip.returncode == 0, ("`pip install .` failed (run `make dev` for the pinned "
                                 f"setuptools):\n{pip.stderr}")
    return str(venv / "bin")


def test_readme_has_cli_examples():
    assert len(examples()) >= 4


def test_readme_documents_pip_install_before_the_first_example():
    text = readme()
    assert "pip install ." in text
    assert text.index("pip install .") < text.index("$ image-mapper")


@pytest.mark.parametrize("command,expected", examples(), ids=lambda v: v[:60] if isinstance(v, str) else v)
def test_readme_example(command, expected, installed):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = installed + os.pathsep + env.get("PATH", "")
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip("\n") == expected
