"""Build the admission hot path's bundle: its modules' compiled code in one file.

``python3 -m imagemapper.bundle`` (the image build runs it, and so does ``make bench``)
writes ``_hotpath.bundle`` next to the package. The mutate hook loads it with
:func:`imagemapper.use_bundle` in one read instead of a dozen imports. The bundle holds
the very modules of ``lib/imagemapper``, compiled as ``python3 -OO`` would (no
docstrings) and with postponed annotations, so it behaves as the sources do, and each
module is *trimmed* (below): the hook unmarshals and runs only the definitions it can
reach, and a module completes itself from the rest of the file on the first access to
any other name. It records each source's size and mtime and the interpreter's bytecode
magic; if any differ at run time, the bundle is ignored. A generated file is never
committed (``.gitignore``): a stale one can only cost speed, never change behaviour.
"""

from __future__ import annotations
import __future__

import ast
import copy
import importlib.machinery
import importlib.util
import marshal
import os
import sys
from types import CodeType

from imagemapper import FORMAT, PREFIX

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

PACKAGE = os.path.dirname(os.path.abspath(__file__))
# What the mutate hook runs, and what those modules import lazily on the way.
ROOTS = ("entrypoints", "admission", "imagemap", "maplookup", "counters", "gate")


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


# ----------------------------------------------------------------------------- trimming
#
# Most of what the hot path's modules define never runs in the mutate hook (the ImageMap
# validation in imagemap, the snapshot writer, the validate side of admission, ...), and
# unmarshalling it and building its classes was most of the bundle's cost. So each module
# is split in two code objects: the *hot* part, every top-level statement except the
# definitions that nothing reachable from ROOT_NAMES uses, and the *rest*, those
# definitions in source order. The rest is stored as marshalled bytes and runs, in the
# module's own namespace, on the first access to a name the hot part does not define
# (a module ``__getattr__``, see :func:`imagemapper.use_bundle`). So a bundled module
# always ends up with every name of its source, and a name is missing only from code
# that the analysis below proves does not look it up.

ROOT_NAMES = (("entrypoints", "mutate_main"), ("protocol", "exit_now"))  # what hooks/mutate.py calls

Unit = tuple[ast.stmt, set[str], bool]  # statement, names it binds, may it be deferred


def _bound(node: ast.stmt) -> set[str]:
    """The module-level names a top-level statement binds."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    names: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, (ast.Store, ast.Del)):
            names.add(sub.id)
        elif isinstance(sub, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in sub.names)
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and sub is not node:
            names.add(sub.name)
    return names


def _units(tree: ast.Module) -> list[Unit]:
    """Top-level statements; ``from imagemapper.x import a, b`` split into one unit per name.

    Only definitions (def, class) and imports of names from our modules may be deferred:
    every other statement (constants, ``try: import _json``, ``if TYPE_CHECKING``) runs in
    the hot part, in order. A name bound twice is never deferred.
    """
    units: list[Unit] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue  # the compile flag does its job (see _compile)
        if (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("imagemapper.")
                and node.level == 0 and len(node.names) > 1):
            for alias in node.names:
                one = ast.ImportFrom(module=node.module, names=[alias], level=0)
                units.append((ast.copy_location(one, node), {alias.asname or alias.name}, True))
            continue
        deferrable = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or (
            isinstance(node, ast.ImportFrom) and (node.module or "").startswith("imagemapper.")
            and node.level == 0)
        units.append((node, _bound(node), deferrable))
    seen: dict[str, int] = {}
    for _, names, _ in units:
        for name in names:
            seen[name] = seen.get(name, 0) + 1
    return [(node, names, deferrable and all(seen[n] == 1 and not _dunder(n) for n in names))
            for node, names, deferrable in units]


def _dunder(name: str) -> bool:
    """``__path__``, ``__all__``, ...: names the import system probes; never deferred."""
    return name[:2] == "__" == name[-2:]


def _runtime_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """The nodes of ``node`` that can run: not annotations (postponed, never evaluated
    here) and not ``if TYPE_CHECKING:`` blocks (``TYPE_CHECKING`` is False at run time)."""
    stack = [node]
    while stack:
        sub = stack.pop()
        yield sub
        if isinstance(sub, ast.If) and isinstance(sub.test, ast.Name) and sub.test.id == "TYPE_CHECKING":
            stack.extend(sub.orelse)
            continue
        for field, value in ast.iter_fields(sub):
            if field in ("annotation", "returns") or (isinstance(sub, ast.arg) and field == "type_comment"):
                continue
            for child in value if isinstance(value, list) else [value]:
                if isinstance(child, ast.AST):
                    stack.append(child)


class _Module:
    """One module's top-level units, and what each of them uses when it runs."""

    def __init__(self, name: str, bundled: set[str]):
        self.name = name
        path = os.path.join(PACKAGE, name + ".py")
        self.stat = os.stat(path)  # before the read: an edit in between makes the bundle stale, not wrong
        with open(path, encoding="utf-8") as handle:
            self.tree = ast.parse(handle.read())
        self.units = _units(self.tree)
        self.binder = {n: i for i, (_, names, _) in enumerate(self.units) for n in names}
        self.aliases = self._module_aliases(bundled)

    def _module_aliases(self, bundled: set[str]) -> dict[str, set[str]]:
        """Local names that stand for one of our modules (``from imagemapper import kube``)."""
        aliases: dict[str, set[str]] = {}
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom) and node.module == "imagemapper" and node.level == 0:
                for alias in node.names:
                    if alias.name in bundled:
                        aliases.setdefault(alias.asname or alias.name, set()).add(alias.name)
            elif isinstance(node, ast.Import) and any(a.name.startswith("imagemapper") for a in node.names):
                raise ValueError(f"{self.name}: `import imagemapper...` is not supported by the bundle; "
                                 "use `from imagemapper import x`")
        return aliases

    def uses(self, index: int, bundled: set[str]) -> tuple[set[str], set[tuple[str, str]], set[str]]:
        """(own top-level names, (module, name) pairs, whole modules) that unit ``index`` uses."""
        own: set[str] = set()
        pairs: set[tuple[str, str]] = set()
        whole: set[str] = set()
        consumed: set[int] = set()
        for sub in _runtime_nodes(self.units[index][0]):
            if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id in self.aliases:
                pairs.update((m, sub.attr) for m in self.aliases[sub.value.id])
                consumed.add(id(sub.value))
            elif isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith("imagemapper.") and sub.level == 0:
                module = (sub.module or "").split(".")[1]
                if module in bundled:
                    pairs.update((module, a.name) for a in sub.names)
        for sub in _runtime_nodes(self.units[index][0]):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load) and id(sub) not in consumed:
                if sub.id in self.aliases:
                    whole.update(self.aliases[sub.id])  # a module passed around: keep all of it
                if sub.id in self.binder:
                    own.add(sub.id)
        return own, pairs, whole


def hot_units(names: list[str]) -> tuple[dict[str, _Module], dict[str, set[int]]]:
    """The parsed modules, and for each the indexes of the units its hot part keeps."""
    bundled = set(names)
    parsed = {name: _Module(name, bundled) for name in names}
    hot: dict[str, set[int]] = {name: set() for name in names}
    todo: list[tuple[str, int]] = []

    def need(module: str, index: int) -> None:
        if index not in hot[module]:
            hot[module].add(index)
            todo.append((module, index))

    def need_name(module: str, name: str) -> None:
        index = parsed[module].binder.get(name)
        if index is not None:
            need(module, index)

    for name, parsed_module in parsed.items():
        for index, (_, _, deferrable) in enumerate(parsed_module.units):
            if not deferrable:
                need(name, index)
    for root, name in ROOT_NAMES:
        need_name(root, name)
    while todo:
        current, index = todo.pop()
        own, pairs, whole = parsed[current].uses(index, bundled)
        for name in own:
            need_name(current, name)
        for other, name in pairs:
            need_name(other, name)
        for other in whole:
            for i in range(len(parsed[other].units)):
                need(other, i)
    return parsed, hot


class _WithoutAnnotations(ast.NodeTransformer):
    """Drop annotations: postponed, they are strings that only type checkers read, yet
    each one is unmarshalled and stored with its function (nothing here reads them)."""

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.annotation = None
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        node.returns = None
        self.generic_visit(node)
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.stmt | None:
        if node.value is None:
            return None  # `name: type` binds nothing
        return ast.copy_location(ast.Assign(targets=[node.target], value=node.value), node)

    def visit_Module(self, node: ast.Module) -> ast.Module:
        self.generic_visit(node)
        for sub in ast.walk(node):  # a block left with only `name: type` lines
            body = getattr(sub, "body", None)
            if isinstance(body, list) and not body and not isinstance(sub, ast.Module):
                body.append(ast.copy_location(ast.Pass(), sub))
        return node


def _code(name: str, body: list[ast.stmt]) -> CodeType:
    tree = _WithoutAnnotations().visit(ast.Module(body=copy.deepcopy(body), type_ignores=[]))
    # The flag keeps annotations postponed without the run-time import of __future__.
    code: CodeType = compile(ast.fix_missing_locations(tree), os.path.join(PACKAGE, name + ".py"), "exec",
                             flags=__future__.annotations.compiler_flag, dont_inherit=True, optimize=2)
    return code


def _without_lines(code: CodeType) -> CodeType:
    """``code`` without its line table (a quarter of the hot parts' bytes). A hook logs an
    internal error as its type and message, never a traceback, so the hot path has no
    use for line numbers; the rest parts keep theirs, and so does every module imported
    without the bundle."""
    consts = tuple(_without_lines(c) if isinstance(c, CodeType) else c for c in code.co_consts)
    return code.replace(co_consts=consts, co_linetable=b"")


def _compile(name: str, module: _Module, keep: set[int]) -> tuple[CodeType, bytes]:
    """(hot code, marshalled rest code or b"")."""
    hot = [node for i, (node, _, _) in enumerate(module.units) if i in keep]
    rest = [node for i, (node, _, _) in enumerate(module.units) if i not in keep]
    return _without_lines(_code(name, hot)), (marshal.dumps(_code(name, rest)) if rest else b"")


def _module_level(node: ast.AST) -> Iterator[ast.AST]:
    """The nodes of a top-level statement that run when the module does: not function
    or class bodies."""
    yield node
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            yield from _module_level(child)


def preloads(parsed: dict[str, _Module], keep: dict[str, set[int]]) -> list[tuple[str, str, int, int]]:
    """(name, file, size, mtime) of the modules outside the package that the hot parts
    import when they run, built into the interpreter (file "") or C extensions
    (``_json``), so that the hook loads them without the import system's search."""
    names = []
    for name, module in parsed.items():
        for index in sorted(keep[name]):
            for sub in _module_level(module.units[index][0]):
                if isinstance(sub, ast.Import):
                    names += [alias.name for alias in sub.names if "." not in alias.name]
    found = []
    for name in dict.fromkeys(names):
        if name in sys.builtin_module_names:
            found.append((name, "", 0, 0))
            continue
        spec = importlib.util.find_spec(name)
        if spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader) and spec.origin:
            info = os.stat(spec.origin)
            found.append((name, spec.origin, info.st_size, info.st_mtime_ns))
    return found


def build() -> bytes:
    """The bundle file: a fixed prefix, the boot part, the head, the rest parts.

    The prefix is ``FORMAT``, the interpreter's bytecode magic, the boot part's length
    (4 bytes) and the head's length (8 bytes). The boot part is this package's own
    ``__init__`` compiled; the head is ``marshal`` of (sources: [(module, size, mtime)],
    preloads: see :func:`preloads`, modules: [(module, hot code, rest offset, rest
    length)]); a rest offset counts from the end of the head.
    """
    init = os.path.join(PACKAGE, "__init__.py")
    info = os.stat(init)
    with open(init, encoding="utf-8") as handle:
        boot = marshal.dumps(_without_lines(compile(handle.read(), init, "exec", dont_inherit=True, optimize=2)))
    parsed, keep = hot_units(modules())
    sources, entries, rests, at = [("__init__", info.st_size, info.st_mtime_ns)], [], [], 0
    for name, module in parsed.items():
        hot, rest = _compile(name, module, keep[name])
        sources.append((name, module.stat.st_size, module.stat.st_mtime_ns))
        entries.append((name, hot, at, len(rest)))
        rests.append(rest)
        at += len(rest)
    head = marshal.dumps((sources, preloads(parsed, keep), entries))
    prefix = FORMAT + importlib.util.MAGIC_NUMBER + len(boot).to_bytes(4, "little") + len(head).to_bytes(8, "little")
    assert len(prefix) == PREFIX
    return prefix + boot + head + b"".join(rests)


def main() -> int:
    from imagemapper import BUNDLE, snapshot

    path = os.path.join(PACKAGE, BUNDLE)
    snapshot.write_atomic(path, build())
    sys.stdout.write(f"{path}: {', '.join(modules())}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
