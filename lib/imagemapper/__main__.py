"""``python3 -m imagemapper``: see :mod:`imagemapper.cli`."""
import sys

from imagemapper.cli import main

sys.exit(main())
