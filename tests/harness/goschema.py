"""The hook-config schema of the pinned shell-operator, read from its own Go source.

shell-operator validates every hook's ``--config`` output against an OpenAPI schema that
is a Go raw string in ``pkg/hook/config/schemas.go`` (``Schemas["v1"]``). Rather than
keep a copy that could drift, the harness fetches that module version through the Go
module proxy (``go mod download``), cuts the schema text out of the Go file, and caches
it under ``~/.cache/image-mapper-test`` so later runs need neither Go nor the network.

The pin is the version the e2e build compiles (tests/e2e/build-binaries.sh): v1.20.2,
whose Go source is that of v1.20.3, the contract (v1.20.3 changed only go.mod/go.sum).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

MODULE = "github.com/flant/shell-operator"
VERSION = "v1.20.2"
SOURCE_FILE = "pkg/hook/config/schemas.go"
CACHE_ENV = "IMAGE_MAPPER_TEST_CACHE"
INSTALL_GO = ("install Go 1.26 or newer (https://go.dev/dl/) and put "
              "`go` on PATH; it is needed once, to fetch shell-operator's hook-config schema "
              "through the Go module proxy (GOPROXY), then the schema is cached in {cache}")


class SchemaUnavailable(RuntimeError):
    """The schema could not be derived; the message says what to install or fix."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "image-mapper-test")


def cache_path(version: str = VERSION) -> Path:
    return cache_dir() / f"shell-operator-{version}-hook-config-v1.schema.yaml"


def extract_schema(go_source: str, version_key: str = "v1") -> str:
    """The raw-string value of ``Schemas[version_key]`` in schemas.go."""
    found = re.search(r'"' + re.escape(version_key) + r'":\s*`([^`]*)`', go_source)
    if not found:
        raise SchemaUnavailable(f"{SOURCE_FILE}: no raw string for Schemas[{version_key!r}]; "
                                "did the module layout change?")
    return found.group(1)


def module_dir(version: str = VERSION) -> Path:
    """``go mod download -json`` the module; return its extracted directory."""
    go = shutil.which("go")
    if not go:
        raise SchemaUnavailable("go not found: " + INSTALL_GO.format(cache=cache_dir()))
    with tempfile.TemporaryDirectory() as scratch:  # outside any module: no go.mod needed
        env = dict(os.environ, GOFLAGS=os.environ.get("GOFLAGS", ""), GO111MODULE="on")
        try:
            proc = subprocess.run([go, "mod", "download", "-json", f"{MODULE}@{version}"],
                                  cwd=scratch, env=env, capture_output=True, text=True,
                                  timeout=300, check=False)
        except subprocess.TimeoutExpired:
            raise SchemaUnavailable(f"`go mod download {MODULE}@{version}` took over 300 s; "
                                    "check GOPROXY and the network") from None
    try:
        info = json.loads(proc.stdout or "{}")
    except ValueError:
        info = {}
    if proc.returncode != 0 or not info.get("Dir"):
        detail = info.get("Error") or proc.stderr.strip() or proc.stdout.strip()
        raise SchemaUnavailable(f"`go mod download {MODULE}@{version}` failed: {detail} "
                                "(check GOPROXY; the module proxy must serve this version)")
    return Path(info["Dir"])


def schema_text(version: str = VERSION) -> str:
    """The v1 schema YAML of ``version``: from the cache, else fetched and cached."""
    cached = cache_path(version)
    if cached.is_file():
        return cached.read_text(encoding="utf-8")
    source = module_dir(version) / SOURCE_FILE
    try:
        text = extract_schema(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SchemaUnavailable(f"{source}: {exc}") from None
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, cached)  # atomic: parallel test runs never read half a file
    return text
