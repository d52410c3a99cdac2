"""Why a string is not an image name, in the user's terms.

The reference grammar only says "invalid"; the usual causes are a URL pasted from a
browser (``https://registry.corp``) and upper-case letters in a repository path. Only
error paths import this module, never the admission hot path.
"""

from __future__ import annotations


def why_not_a_name(text: str) -> str | None:
    """A one-clause reason for the most likely mistake in ``text``, or None."""
    scheme, sep, rest = text.partition("://")
    if sep:
        return (f"it starts with the URL scheme {scheme + sep!r}; image names have none, "
                f"write {rest.rstrip('/')!r}")
    if any(ch.isspace() for ch in text):
        return "it contains whitespace"
    first, _, path = text.partition("/")
    registry = "." in first or ":" in first or first == "localhost"
    upper = [part for part in (path.split("/") if registry else text.split("/"))
             if part != part.lower()]
    if upper:
        return (f"{upper[0]!r} has upper-case letters; repository paths must be lower case "
                "(only the registry host may use upper case)")
    return None
