"""image-mapper: shell-operator hooks and a CLI that relocate Pod images by rules."""

__version__ = "0.1.0"  # the version in pyproject.toml (a test keeps them equal)

BUNDLE = "_hotpath.bundle"


def use_bundle() -> bool:
    """Load the admission hot path from one prebuilt file; False when there is none.

    The mutate hook is a new process per Pod, and importing a dozen modules one by one
    costs more than running them. ``python3 -m imagemapper.bundle`` (run when the image
    is built) stores their compiled code in one file next to this one. A bundle made by
    another interpreter, or older than any of its sources, is ignored, and the modules
    are then imported as usual. See :mod:`imagemapper.bundle`.
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
        data = posix.read(fd, posix.fstat(fd).st_size)
    finally:
        posix.close(fd)
    try:
        magic, modules = marshal.loads(data)
        external = sys.modules.get("_frozen_importlib_external")
        if magic != getattr(external, "MAGIC_NUMBER", None):
            return False
        for name, size, mtime, _ in modules:
            info = posix.stat(f"{here}/{name}.py")
            if (info.st_size, info.st_mtime_ns) != (size, mtime):
                return False
    except (OSError, ValueError, EOFError, TypeError):
        return False
    module_type = type(sys)
    for name, _, _, code in modules:
        full = f"{__name__}.{name}"
        if full in sys.modules:
            continue
        module = module_type(full)
        module.__file__ = f"{here}/{name}.py"
        module.__package__ = __name__
        sys.modules[full] = module
        try:
            exec(code, module.__dict__)
        except BaseException:
            del sys.modules[full]
            raise
        globals()[name] = module
    return True
