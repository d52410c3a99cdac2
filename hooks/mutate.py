#!/usr/bin/python3 -S
"""Mutating admission hook (Pods): relocate images. See imagemapper.entrypoints."""
import sys

from imagemapper.entrypoints import mutate_main

sys.exit(mutate_main(sys.argv[1:]))
