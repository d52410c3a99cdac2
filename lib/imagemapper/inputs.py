"""Rule files as users have them: raw map files, or the YAML that ``kubectl get -o yaml`` prints.

A file is YAML objects when its name ends in .yaml/.yml/.json or a line starts with
``apiVersion:``/``kind:``; anything else is one raw map file (imageswap grammar, whose
deprecated ``key:value`` lines would otherwise read as YAML). YAML may hold several
documents and ``List`` objects (``ConfigMapList``, ``ImageMapList``, ``v1/List``), and
ConfigMaps and ImageMaps may be mixed. Each object is placed where the cluster places
it: by its own ``metadata.namespace``, with a caller-given default when it has none.
"""

from __future__ import annotations

from imagemapper import kube
from imagemapper.mapfile import MapFileInput
from imagemapper.settings import MAP_FILE_LABEL

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

YAML_SUFFIXES = (".yaml", ".yml", ".json")


class InputError(ValueError):
    """A file that cannot be read as rules; the message names the file and the place."""


class Document:
    """One object of a YAML file, with where it came from."""

    __slots__ = ("obj", "where")

    def __init__(self, obj: object, where: str):
        self.obj = obj
        self.where = where  # "FILE document N" or "FILE document N item M"

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind") or "") if isinstance(self.obj, dict) else ""

    def name(self) -> str:
        namespace = kube.text(self.obj, "metadata", "namespace") or "(no namespace)"
        return f"{namespace}/{kube.text(self.obj, 'metadata', 'name') or '(no name)'}"


def is_yaml_objects(path: str, text: str) -> bool:
    if path.lower().endswith(YAML_SUFFIXES):
        return True
    return any(line.startswith(("apiVersion:", "kind:", '{"apiVersion"', '{"kind"'))
               for line in text.splitlines())


def _loader(duplicates: list[str]) -> type:
    """A SafeLoader that records repeated mapping keys (YAML keeps only the last one)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen: set = set()
            for key_node, _ in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if key is not None and key in seen:
                    duplicates.append(f"line {key_node.start_mark.line + 1}: duplicate field "
                                      f"{key!r}: the API server refuses it, and YAML keeps only "
                                      "the last value")
                seen.add(key)
            return super().construct_mapping(node, deep)

    return Loader


def yaml_documents(path: str, text: str) -> tuple[list[Document], list[str]]:
    """(documents with Lists flattened, repeated-key problems); InputError on bad YAML."""
    import yaml

    duplicates: list[str] = []
    try:
        raw = list(yaml.load_all(text, Loader=_loader(duplicates)))
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: {yaml_error(exc)}") from None
    docs: list[Document] = []
    for number, doc in enumerate(raw, 1):
        if doc is None:
            continue
        where = f"{path} document {number}"
        items = list_items(doc)
        if items is not None:
            docs += [Document(item, f"{where} item {i + 1}") for i, item in enumerate(items)]
        else:
            docs.append(Document(doc, where))
    return docs, [f"{path} {d}" for d in duplicates]


def list_items(doc: object) -> list[Any] | None:
    """The items of a ``List`` kind (``v1/List``, ``ImageMapList``, ...), else None.

    The items are the document's own objects, so that a caller may change them in place.
    """
    if not kube.text(doc, "kind").endswith("List"):
        return None
    items = kube.resolve(doc, "items")
    return items if isinstance(items, list) else None


def yaml_error(exc: BaseException) -> str:
    """A YAML syntax error as YAML: line, column and the parser's own words."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    return f"YAML syntax error: {where}{problem}" + (f" ({context})" if context else "")


def is_map_file(obj: object) -> bool:
    """A ConfigMap that holds map files: labeled ``imagemapper.io/map-file: "true"``."""
    return kube.resolve(obj, "metadata", "labels", MAP_FILE_LABEL) == "true"


class RuleSet:
    """ImageMap objects and map files read from files, each with its namespace."""

    def __init__(self) -> None:
        self.imagemaps: list[tuple[dict, str]] = []     # (object, where)
        self.mapfiles: list[MapFileInput] = []
        self.notes: list[str] = []                      # things the cluster would ignore
        self.ignored: list[str] = []                    # ConfigMaps without the label

    def add_file(self, path: str, text: str, default_namespace: str, raw_ok: bool) -> None:
        """Read one file; a raw map file belongs to ``default_namespace``."""
        if not is_yaml_objects(path, text):
            if not raw_ok:
                raise InputError(f"{path}: not YAML objects (expected ImageMaps, a List or "
                                 "`kubectl get imagemaps -o yaml` output)")
            self.mapfiles.append(MapFileInput(default_namespace, path, "", {"file": text}, label=path))
            return
        docs, duplicates = yaml_documents(path, text)
        self.notes += duplicates
        before = len(self.ignored)
        for doc in docs:
            self._add_object(doc, default_namespace)
        ignored = self.ignored[before:]
        if ignored:
            self.notes.append(f"{path}: {len(ignored)} ConfigMap{'s' if len(ignored) != 1 else ''} "
                              f"without the label {MAP_FILE_LABEL}=\"true\" ignored, as the "
                              f"cluster ignores {'them' if len(ignored) != 1 else 'it'} "
                              f"({', '.join(ignored[:3])}{', ...' if len(ignored) > 3 else ''})")

    def _add_object(self, doc: Document, default_namespace: str) -> None:
        obj = doc.obj
        if doc.kind == "ImageMap":
            self.imagemaps.append((_with_namespace(obj, default_namespace), doc.where))
        elif doc.kind == "ConfigMap":
            if not is_map_file(obj):
                self.ignored.append(doc.name())
                return
            cm = MapFileInput.from_object(obj)
            cm.namespace = cm.namespace or default_namespace
            self.mapfiles.append(cm)
        else:
            raise InputError(f"{doc.where}: a {doc.kind or type(obj).__name__}, not an ImageMap "
                             "or a map-file ConfigMap")


def _with_namespace(obj: object, namespace: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        return {}
    if kube.text(obj, "metadata", "namespace"):
        return obj
    return {**obj, "metadata": {**kube.mapping(obj, "metadata"), "namespace": namespace}}
