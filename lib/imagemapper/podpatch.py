"""Image fields of a Pod spec, and the JSON Patch that relocates them.

The patch has one ``replace`` op per changed image, plus the
``imagemapper.io/original-images`` annotation. The annotation is a JSON object keyed
``containers/<name>``, ``initContainers/<name>``, ``ephemeralContainers/<name>`` and
``volumes/<name>``, each holding the original reference. It is merged with any value
already present, and the first original of a key is kept.
"""

from __future__ import annotations

from imagemapper import fastjson

TYPE_CHECKING = False
if TYPE_CHECKING:
    from imagemapper.shapes import PatchOp, Payload

ANNOTATION = "imagemapper.io/original-images"
_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


class ImageField:
    """One place in a Pod spec that holds an image reference."""

    __slots__ = ("image", "key", "pointer")

    def __init__(self, key: str, pointer: str, image: object):
        self.key = key          # "containers/web": the annotation key and log label
        self.pointer = pointer  # JSON pointer relative to the pod spec: "/containers/0/image"
        self.image = image      # what the field holds (normally a str)


def image_fields(spec: object, lists: tuple[str, ...] = _CONTAINER_LISTS,
                 volumes: bool = True) -> list[ImageField]:
    """Every image field of a Pod spec, in a stable order. Tolerates any shape."""
    fields: list[ImageField] = []
    if not isinstance(spec, dict):
        return fields
    for list_name in lists:
        items = spec.get(list_name)
        if not isinstance(items, list):
            continue
        for i, item in enumerate(items):
            if isinstance(item, dict) and "image" in item:
                name = item.get("name") if isinstance(item.get("name"), str) else str(i)
                fields.append(ImageField(f"{list_name}/{name}", f"/{list_name}/{i}/image", item["image"]))
    items = spec.get("volumes") if volumes else None
    if isinstance(items, list):
        for i, item in enumerate(items):
            image = item.get("image") if isinstance(item, dict) else None
            if isinstance(image, dict) and "reference" in image:
                name = item.get("name") if isinstance(item.get("name"), str) else str(i)
                fields.append(ImageField(f"volumes/{name}", f"/volumes/{i}/image/reference",
                                         image["reference"]))
    return fields


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def annotation_ops(metadata: object, originals: dict[str, str], prefix: str = "") -> list[PatchOp]:
    """Ops that record ``originals``, keeping the first original already recorded.

    ``prefix`` is the pointer of the object that owns ``metadata`` ("" for a Pod,
    "/spec/template" for a Pod template).
    """
    if not isinstance(metadata, dict):
        return [{"op": "add", "path": f"{prefix}/metadata",
                 "value": {"annotations": {ANNOTATION: _encode(originals)}}}]
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict):
        return [{"op": "add", "path": f"{prefix}/metadata/annotations",
                 "value": {ANNOTATION: _encode(originals)}}]
    merged = _recorded(annotations.get(ANNOTATION))
    added = {k: v for k, v in originals.items() if k not in merged}
    if not added:
        return []
    merged.update(added)
    return [{"op": "add", "path": f"{prefix}/metadata/annotations/{_escape(ANNOTATION)}",
             "value": _encode(merged)}]


def _recorded(value: object) -> dict[str, str]:
    """The originals already in the annotation; a garbled value counts as none."""
    try:
        old = fastjson.loads(value) if isinstance(value, str) else {}
    except ValueError:
        return {}
    return {k: v for k, v in old.items() if isinstance(v, str)} if isinstance(old, dict) else {}


def _encode(originals: dict[str, str]) -> str:
    return fastjson.dumps(dict(sorted(originals.items())))


def build_patch(obj: Payload, changes: list[tuple[ImageField, str]], spec_pointer: str = "/spec",
                owner_pointer: str = "", annotate: bool = True) -> list[PatchOp]:
    """JSON Patch for ``changes`` [(field, new image)].

    ``spec_pointer`` locates the Pod spec and ``owner_pointer`` the object whose
    metadata gets the annotation ("" and "/spec" for a Pod).
    """
    ops: list[PatchOp] = [{"op": "replace", "path": spec_pointer + field.pointer, "value": new}
                          for field, new in changes]
    if ops and annotate:
        originals = {field.key: field.image for field, _ in changes if isinstance(field.image, str)}
        ops.extend(annotation_ops(at_pointer(obj, owner_pointer).get("metadata"), originals, owner_pointer))
    return ops


def at_pointer(obj: object, pointer: str) -> Payload:
    """The dict at a simple JSON pointer ("" is the object itself), or {} if absent."""
    node = obj
    for token in [t for t in pointer.split("/") if t]:
        node = node.get(token) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}
