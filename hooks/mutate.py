#!/usr/bin/python3 -S
"""Mutating admission hook (Pods): relocate images. See imagemapper.entrypoints.

The package comes from the image's bundle (imagemapper.bundle) without the import
system, whose search of sys.path costs more than this whole file; where there is no
bundle for this interpreter, it is imported as usual.
"""
import gc
import marshal
import posix
import sys

gc.disable()  # one short process per Pod: its few cycles go when it exits
try:
    package = sys.modules["imagemapper"] = type(sys)("imagemapper")
    package.__path__ = [f"{sys.path[1]}/imagemapper"]  # PYTHONPATH's first entry: the image's lib
    fd = posix.open(f"{package.__path__[0]}/_hotpath.bundle", posix.O_RDONLY | posix.O_CLOEXEC)
    prefix = posix.read(fd, 24)  # imagemapper.PREFIX: layout, bytecode magic, lengths
    if prefix[:12] != b"IMHOTP\x00\x03" + sys.modules["_frozen_importlib_external"].MAGIC_NUMBER:
        raise ValueError("another layout, or another interpreter's bytecode")
    exec(marshal.loads(posix.read(fd, int.from_bytes(prefix[12:16], "little"))), vars(package))
    if not package.use_bundle(fd, prefix):
        raise ValueError("a stale bundle")
except Exception:  # noqa: BLE001 - no usable bundle: the plain import
    sys.modules.pop("imagemapper", None)
    import imagemapper  # noqa: F401
from imagemapper.entrypoints import mutate_main  # noqa: E402
from imagemapper.protocol import exit_now  # noqa: E402

exit_now(mutate_main(sys.argv[1:]))  # flushes stdout, then exits without the interpreter's teardown
