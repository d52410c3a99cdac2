"""Build the admission hot path's bundle: its modules' compiled code in one file.

``python3 -m imagemapper.bundle`` (the image build runs it, and so does ``make bench``)
writes ``_hotpath.bundle`` next to the package. The mutate hook loads it with
:func:`imagemapper.use_bundle` in one read instead of a dozen imports, which saves about
a millisecond per Pod. The bundle holds the very modules of ``lib/imagemapper``, compiled
as ``python3 -OO`` would (no docstrings) and with postponed annotations, so it behaves as
the sources do. It records each source's size and mtime and the interpreter's bytecode
magic; if any differ at run time, the bundle is ignored. A generated file is never
committed (``.gitignore``): a stale one can only cost speed, never change behaviour.
"""

from __future__ import annotations
import __future__

import ast
import importlib.util
import marshal
import os
import sys
from types import CodeType

PACKAGE = os.path.dirname(os.path.abspath(__file__))
# What the mutate hook runs, and what those modules import lazily on the way.
ROOTS = ("entrypoints", "admission", "imagemap", "maplookup", "counters", "gate")
FUTURE = "from __future__ import annotations"


def _top_level_imports(name: str) -> list[str]:
    """The imagemapper modules that ``name`` imports at module level."""
    with open(os.path.join(PACKAGE, name + ".py"), encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    found = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "imagemapper":
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("imagemapper."):
            found.append((node.module or "").split(".")[1])
        elif isinstance(node, ast.Import):
            found += [a.name.split(".")[1] for a in node.names if a.name.startswith("imagemapper.")]
    return [m for m in found if os.path.exists(os.path.join(PACKAGE, m + ".py"))]


def modules() -> list[str]:
    """The roots and everything they import at module level, dependencies first."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order or name in path:
            return
        for dep in _top_level_imports(name):
            visit(dep, (*path, name))
        order.append(name)

    for root in ROOTS:
        visit(root, ())
    return order


def _compile(name: str) -> tuple[str, int, int, CodeType]:
    path = os.path.join(PACKAGE, name + ".py")
    with open(path, encoding="utf-8") as handle:
        source = handle.read()
    # The flag keeps annotations postponed without the run-time import of __future__.
    source = source.replace(FUTURE, "", 1)
    code = compile(source, path, "exec", flags=__future__.annotations.compiler_flag,
                   dont_inherit=True, optimize=2)
    info = os.stat(path)
    return name, info.st_size, info.st_mtime_ns, code


def build() -> bytes:
    return marshal.dumps((importlib.util.MAGIC_NUMBER, [_compile(name) for name in modules()]))


def main() -> int:
    from imagemapper import BUNDLE, snapshot

    path = os.path.join(PACKAGE, BUNDLE)
    snapshot.write_atomic(path, build())
    sys.stdout.write(f"{path}: {', '.join(modules())}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
