"""image-mapper: shell-operator hooks and a CLI that relocate Pod images by rules."""

__version__ = "0.1.0"  # the version in pyproject.toml (a test keeps them equal)
