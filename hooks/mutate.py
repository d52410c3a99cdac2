#!/usr/bin/python3 -S
"""Mutating admission hook (Pods): relocate images. See imagemapper.entrypoints."""
import sys

import imagemapper

imagemapper.use_bundle()  # the hot path's modules in one read, when the image has the bundle
from imagemapper.entrypoints import mutate_main  # noqa: E402

sys.exit(mutate_main(sys.argv[1:]))
