"""shell-operator emulating test harness for image-mapper's hooks (see shellop.py)."""
from .shellop import *
from .shellop import __all__  # noqa: F401
