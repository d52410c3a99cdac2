#!/usr/bin/python3 -S
"""Validating admission hook (ImageMaps, map files). See imagemapper.entrypoints."""
import sys

from imagemapper.entrypoints import validate_main

sys.exit(validate_main(sys.argv[1:]))
