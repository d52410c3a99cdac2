"""image-mapper: shell-operator hooks and a CLI that relocate Pod images by rules."""

__version__ = "0.1.0"  # the version in pyproject.toml (a test keeps them equal)

BUNDLE = "_hotpath.bundle"
FORMAT = b"IMHOTP\x00\x02"  # the bundle's first bytes; another layout is ignored


def use_bundle() -> bool:
    """Load the admission hot path from one prebuilt file; False when there is none.

    The mutate hook is a new process per Pod, and importing a dozen modules one by one
    costs more than running them. ``python3 -m imagemapper.bundle`` (run when the image
    is built) stores their compiled code in one file next to this one: for each module
    the part the hook runs, read and unmarshalled here, and the rest of its definitions,
    read only if something asks for one of them. A bundle made by another interpreter,
    or older than any of its sources, is ignored, and the modules are then imported as
    usual. See :mod:`imagemapper.bundle`.
    """
    import marshal
    import posix
    import sys

    here = __path__[0]
    try:
        fd = posix.open(f"{here}/{BUNDLE}", posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return False
    try:
        head = posix.read(fd, 16)
        size, total = int.from_bytes(head[8:], "little"), posix.fstat(fd).st_size
        if head[:8] != FORMAT or not 0 < size <= total - 16:
            raise ValueError("not a bundle of this format")  # an older layout, or cut short
        data = posix.read(fd, size)
        magic, modules = marshal.loads(data)
        external = sys.modules.get("_frozen_importlib_external")
        if len(data) != size or magic != getattr(external, "MAGIC_NUMBER", None):
            raise ValueError("another interpreter's bundle")
        if total != 16 + size + sum(entry[5] for entry in modules):
            raise ValueError("the rest parts are cut short")
        for name, source_size, mtime, _, _, _ in modules:
            info = posix.stat(f"{here}/{name}.py")
            if (info.st_size, info.st_mtime_ns) != (source_size, mtime):
                raise ValueError("a source changed after the bundle was built")
    except (OSError, ValueError, EOFError, TypeError):
        posix.close(fd)
        return False
    module_type = type(sys)
    for name, _, _, code, offset, length in modules:
        full = f"{__name__}.{name}"
        if full in sys.modules:
            continue
        module = module_type(full)
        module.__file__ = f"{here}/{name}.py"
        module.__package__ = __name__
        sys.modules[full] = module
        try:
            exec(code, module.__dict__)
            if length:
                module.__dict__["__getattr__"] = _completion(module, fd, 16 + size + offset, length)
        except BaseException:
            del sys.modules[full]
            raise
        globals()[name] = module
    return True  # fd stays open for the completions: the very file whose hot parts ran


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
