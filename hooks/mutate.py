#!/usr/bin/python3 -S
"""Mutating admission hook (Pods): relocate images. See imagemapper.entrypoints."""
import gc
import sys

gc.disable()  # one short process per Pod: its few cycles go when it exits

import imagemapper  # noqa: E402

imagemapper.use_bundle()  # the hot path's modules in one read, when the image has the bundle
from imagemapper.entrypoints import mutate_main  # noqa: E402
from imagemapper.protocol import exit_now  # noqa: E402

exit_now(mutate_main(sys.argv[1:]))  # flushes stdout, then exits without the interpreter's teardown
