"""image-mapper: shell-operator hooks and a CLI that relocate Pod images by rules."""

__version__ = "0.1.0"  # the version in pyproject.toml (a test keeps them equal)

BUNDLE = "_hotpath.bundle"
# The bundle's first bytes; another layout is ignored. hooks/mutate.py checks them too.
FORMAT = b"IMHOTP\x00\x03"
PREFIX = 24  # FORMAT, bytecode magic (4), boot length (4), head length (8)


def use_bundle(fd: int | None = None, prefix: bytes = b"") -> bool:
    """Load the admission hot path from one prebuilt file; False when there is none.

    The mutate hook is a new process per Pod, and importing a dozen modules one by one
    costs more than running them. ``python3 -m imagemapper.bundle`` (run when the image
    is built) stores their compiled code in one file next to this one: this package's
    own code (the *boot* part, which hooks/mutate.py runs without the import system),
    then for each module the part the hook runs, read and unmarshalled here, and the
    rest of its definitions, read only if something asks for one of them. A bundle made
    by another interpreter, or older than any of its sources, is ignored, and the
    modules are then imported as usual. ``fd`` and ``prefix``: the bundle already open
    and read up to its head (by hooks/mutate.py). See :mod:`imagemapper.bundle`.
    """
    import marshal
    import posix
    import sys

    here = __path__[0]
    try:
        if fd is None:
            fd = posix.open(f"{here}/{BUNDLE}", posix.O_RDONLY | posix.O_CLOEXEC)
            prefix = posix.read(fd, PREFIX)
            posix.lseek(fd, PREFIX + int.from_bytes(prefix[12:16], "little"), 0)  # SEEK_SET
    except OSError:
        return False
    try:
        magic = sys.modules["_frozen_importlib_external"].MAGIC_NUMBER
        boot, size = int.from_bytes(prefix[12:16], "little"), int.from_bytes(prefix[16:PREFIX], "little")
        if prefix[:12] != FORMAT + magic or not 0 < size <= posix.fstat(fd).st_size:
            raise ValueError("not a bundle of this layout and interpreter")
        data = posix.read(fd, size)
        if len(data) != size:
            raise ValueError("cut short")
        sources, preloads, modules = marshal.loads(data)
        start = PREFIX + boot + size
        if posix.fstat(fd).st_size != start + sum(entry[3] for entry in modules):
            raise ValueError("the rest parts are cut short")
        for name, source_size, mtime in sources:
            info = posix.stat(f"{here}/{name}.py")
            if (info.st_size, info.st_mtime_ns) != (source_size, mtime):
                raise ValueError("a source changed after the bundle was built")
    except (OSError, ValueError, EOFError, TypeError, KeyError):
        posix.close(fd)
        return False
    for name, origin, size, mtime in preloads:
        if name not in sys.modules:
            _preload(name, origin, size, mtime)
    module_type = type(sys)
    loaded = []
    try:
        for name, code, offset, length in modules:
            full = f"{__name__}.{name}"
            if full in sys.modules:
                continue
            module = module_type(full)
            module.__file__ = f"{here}/{name}.py"
            module.__package__ = __name__
            sys.modules[full] = module
            loaded.append(full)
            exec(code, module.__dict__)
            if length:
                module.__dict__["__getattr__"] = _completion(module, fd, start + offset, length)
            globals()[name] = module
    except BaseException:
        for full in loaded:  # none of them half-made; the plain imports can start over
            del sys.modules[full]
            globals().pop(full.rpartition(".")[2], None)
        raise
    return True  # fd stays open for the completions: the very file whose hot parts ran


def _preload(name: str, origin: str, size: int, mtime: int) -> None:
    """Load a module the hot parts import, built in (``origin`` "") or a C extension
    (``_json``) in the file the bundle's build found it in, as importlib's loaders do
    but without its search of ``sys.path`` (listing the standard library's
    directories), which costs more than the loading. Nothing is loaded unless the file
    is still the same and in this interpreter's own path (the bundle may have been built
    by another one of the same bytecode); the hot part's ``import`` then finds it."""
    import posix
    import sys

    imp = sys.modules["_imp"]
    spec = type(sys)("spec")  # create_builtin and create_dynamic read .name and .origin
    spec.name, spec.origin = name, origin  # type: ignore[attr-defined]
    try:
        if not origin:
            if name in sys.builtin_module_names:
                sys.modules[name] = module = imp.create_builtin(spec)
                imp.exec_builtin(module)
            return
        info = posix.stat(origin)
        if origin.rpartition("/")[0] not in sys.path or (info.st_size, info.st_mtime_ns) != (size, mtime):
            return
        module = imp.create_dynamic(spec)
        module.__file__ = origin
        sys.modules[name] = module
        imp.exec_dynamic(module)
    except Exception:  # noqa: BLE001 - the import finds it as usual
        sys.modules.pop(name, None)


def _completion(module: object, fd: int, offset: int, length: int) -> object:
    """A bundled module's ``__getattr__``: on the first name its hot part lacks, run the
    rest of its definitions in its namespace (see :mod:`imagemapper.bundle`)."""
    namespace = module.__dict__

    def __getattr__(name: str) -> object:
        if name[:2] == "__" == name[-2:]:
            pass  # the import system probes ``__path__`` and others: the rest never defines them
        elif namespace.get("__getattr__") is __getattr__:
            import marshal
            import posix

            rest = posix.pread(fd, length, offset)
            if len(rest) != length:
                raise ImportError(f"{namespace['__name__']}: the bundle was cut short")
            del namespace["__getattr__"]
            exec(marshal.loads(rest), namespace)
        try:
            return namespace[name]
        except KeyError:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}") from None

    return __getattr__
