"""Tolerant reads of Kubernetes payloads (admission requests, snapshot items, objects).

What reaches a hook is JSON that the API server, a jqFilter or a user wrote, and a hook
must never fail on its shape. ``(obj.get("a") or {}).get("b")`` still raises when a
value is there with another type (``metadata: 1``), so every such read goes through
these helpers: a missing step, ``None`` or a value of the wrong type gives the empty
value of the asked-for type (like kopf's ``dicts.resolve``). They import nothing, so the
admission hot path can use them.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def resolve(obj: object, *path: str) -> object:
    """The value at ``path`` in nested dicts, or None where a step is missing or not a dict."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def mapping(obj: object, *path: str) -> dict[str, Any]:
    """The dict at ``path``, or a new empty dict."""
    found = resolve(obj, *path)
    return found if isinstance(found, dict) else {}


def items(obj: object, *path: str) -> list[Any]:
    """The list at ``path``, or a new empty list."""
    found = resolve(obj, *path)
    return found if isinstance(found, list) else []


def text(obj: object, *path: str) -> str:
    """The string at ``path``, or ``""``."""
    found = resolve(obj, *path)
    return found if isinstance(found, str) else ""


def whole(obj: object, *path: str) -> int:
    """The integer at ``path`` (``metadata.generation``, say), or 0; booleans are not integers."""
    found = resolve(obj, *path)
    return found if isinstance(found, int) and not isinstance(found, bool) else 0


def object_name(request: object, obj: object = None) -> str:
    """The name an admission is about: the request's name, else the object's name or
    generateName (a Pod created by a controller has only the latter), else ``""``."""
    return (text(request, "name") or text(obj, "metadata", "name")
            or text(obj, "metadata", "generateName"))
