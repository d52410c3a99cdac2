#!/usr/bin/python3 -S
"""Sync hook: compile ImageMaps and map files into the snapshot. See imagemapper.entrypoints."""
import sys

from imagemapper.entrypoints import sync_main

sys.exit(sync_main(sys.argv[1:]))
