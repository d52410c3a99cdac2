"""The repository stands alone: a fresh clone tests itself, and its docs cite only itself."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import yaml
from harness import goschema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTSIDE = ("/work/" + "shared", "../" + "shared", "shared/" + "research")
WORD = "SP" + "EC"  # spelled in two parts, so that this file does not match itself
EXTERNAL_SPEC = re.compile(rf"\b{WORD}\b|the {WORD}|{WORD} §")


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [p for p in out.stdout.splitlines() if os.path.isfile(os.path.join(ROOT, p))]


def _text(path: str) -> str:
    try:
        with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
            return handle.read()
    except UnicodeDecodeError:
        return ""


def test_no_file_refers_to_paths_outside_the_repository():
    hits = [f"{path}:{n}" for path in tracked_files()
            for n, line in enumerate(_text(path).splitlines(), 1)
            if any(o in line for o in OUTSIDE)]
    assert hits == []


def test_docs_cite_no_missing_files_or_external_spec():
    bad = []
    for path in tracked_files():
        if not path.endswith((".md", ".py", ".yaml")):
            continue
        text = _text(path)
        for n, line in enumerate(text.splitlines(), 1):
            if EXTERNAL_SPEC.search(line):
                bad.append(f"{path}:{n}: {line.strip()}")
        if path.endswith(".md"):
            for target in re.findall(r"\]\(([^)#\s]+)", text) + re.findall(r"`(docs/[\w./-]+)`", text):
                if "://" in target:
                    continue
                base = ROOT if target.startswith("docs/") else os.path.dirname(os.path.join(ROOT, path))
                if not os.path.exists(os.path.join(base, target)):
                    bad.append(f"{path}: link to missing {target}")
    assert bad == []


def test_schema_comes_from_the_pinned_module_source():
    schema = yaml.safe_load(goschema.schema_text())
    assert {"kubernetes", "kubernetesValidating", "kubernetesMutating", "schedule"} <= set(
        schema["properties"])
    assert "labelSelector" in schema["definitions"]
    assert goschema.cache_path().is_file()


def test_schema_pin_is_the_e2e_build_pin():
    with open(os.path.join(ROOT, "tests/e2e/build-binaries.sh"), encoding="utf-8") as handle:
        script = handle.read()
    assert f"E2E_SHELL_OPERATOR_VERSION:-{goschema.VERSION}" in script


def test_extract_schema_reads_the_go_raw_string():
    source = 'var Schemas = map[string]string{\n\t"v1": `\ntype: object\n`,\n\t"v0": `\nx: 1\n`,\n}'
    assert yaml.safe_load(goschema.extract_schema(source)) == {"type": "object"}
    with pytest.raises(goschema.SchemaUnavailable, match="no raw string"):
        goschema.extract_schema("package config")


def test_missing_go_fails_with_install_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv(goschema.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(goschema.SchemaUnavailable, match=r"go not found: install Go .*go\.dev/dl"):
        goschema.schema_text()


def test_cached_schema_needs_no_go(tmp_path, monkeypatch):
    text = goschema.schema_text()
    monkeypatch.setenv(goschema.CACHE_ENV, str(tmp_path))
    goschema.cache_path().write_text(text, encoding="utf-8")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert goschema.schema_text() == text
