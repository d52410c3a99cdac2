"""``$KUBERNETES_PATCH_PATH``: what shell-operator accepts (``object_patch.ParseOperations``).

The file is a stream of JSON objects; if that does not decode, it is read again as a
multi-document YAML stream (yaml.v3).  Each document is decoded into the Go
``OperationSpec`` struct (unknown keys vanish, JSON keys match case-insensitively),
turned back into JSON (empty strings and nil values omitted, both booleans always
present) and validated against the object_patch "v0" schema ported below.  The first
invalid document fails the hook; nothing is applied then.
"""
from __future__ import annotations

import jsonschema

from . import _go

_SPEC_FIELDS = {
    "operation": _go.STR, "apiVersion": _go.STR, "kind": _go.STR, "namespace": _go.STR,
    "name": _go.STR, "subresource": _go.STR, "object": _go.ANY, "jqFilter": _go.STR,
    "mergePatch": _go.ANY, "jsonPatch": _go.ANY, "ignoreMissingObject": _go.BOOL,
    "ignoreHookError": _go.BOOL,
}

_REF = {"patch": {"type": "object", "required": ["kind", "name"], "properties": {
    "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "name": {"type": "string"},
    "ignoreMissingObject": {"type": "boolean"}, "ignoreHookError": {"type": "boolean"}}}}
_COMMON = {"type": "object", "properties": {"subresource": {"type": "string"}}}


def _op(*names: str) -> dict:
    return {"properties": {"operation": {"type": "string", "enum": list(names)}}}


# Port of Schemas["v0"] in pkg/kube/object_patch/validation.go (draft 4 semantics:
# "items" given as a list only constrains the first element).
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {k: {} for k in _SPEC_FIELDS},
    "oneOf": [
        {"allOf": [_op("Create", "CreateOrUpdate", "CreateIfNotExists"), _COMMON,
                   {"required": ["object"], "properties": {"object": {"oneOf": [
                       {"type": "object", "additionalProperties": True, "minProperties": 1},
                       {"type": "string"}]}}}]},
        {"allOf": [_op("Delete", "DeleteInBackground", "DeleteNonCascading"), _COMMON,
                   {"type": "object", "required": ["kind", "name"], "properties": {
                       "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                       "name": {"type": "string"}}}]},
        {"allOf": [
            {"oneOf": [
                {"required": ["operation", "jqFilter"], "properties": {
                    "operation": {"type": "string", "enum": ["JQPatch"]},
                    "jqFilter": {"type": "string"}}},
                {"required": ["operation", "mergePatch"], "properties": {
                    "operation": {"type": "string", "enum": ["MergePatch"]},
                    "mergePatch": {"oneOf": [{"type": "object", "minProperties": 1},
                                             {"type": "string"}]}}},
                {"required": ["operation", "jsonPatch"], "properties": {
                    "operation": {"type": "string", "enum": ["JSONPatch"]},
                    "jsonPatch": {"oneOf": [
                        {"type": "array", "minItems": 1, "items": [{
                            "type": "object", "required": ["op", "path", "value"],
                            "properties": {"op": {"type": "string", "minLength": 1},
                                           "path": {"type": "string", "minLength": 1},
                                           "value": {}}}]},
                        {"type": "string"}]}}},
            ]},
            _COMMON, _REF["patch"]]},
    ],
}
_VALIDATOR = jsonschema.Draft4Validator(SCHEMA)


class PatchError(ValueError):
    """The patch file makes shell-operator fail the hook."""


def _dynamic_json(spec: dict) -> dict:
    """The struct as ``swag.ToDynamicJSON`` hands it to the validator."""
    out = {k: v for k, v in spec.items() if v not in ("", None)
           and k not in ("ignoreMissingObject", "ignoreHookError")}
    out["operation"] = spec.get("operation", "")
    out["ignoreMissingObject"] = bool(spec.get("ignoreMissingObject", False))
    out["ignoreHookError"] = bool(spec.get("ignoreHookError", False))
    return out


def _decode(text: str) -> list[dict]:
    try:
        return [_go.struct_decode(doc, _SPEC_FIELDS) for doc in _go.decode_stream(text)]
    except _go.GoJSONError as json_error:
        try:
            return [_go.yaml_struct_decode(doc, _SPEC_FIELDS) for doc in _go.yaml_documents(text)]
        except _go.GoYAMLError as exc:
            raise PatchError(f"neither a JSON stream ({json_error}) nor YAML: {exc}") from None


def parse_operations(text: str) -> list[dict]:
    """The operations of a patch file, normalized; PatchError if shell-operator refuses it."""
    operations = []
    for index, spec in enumerate(_decode(text)):
        document = _dynamic_json(spec)
        errors = sorted(_VALIDATOR.iter_errors(document), key=lambda e: list(e.path))
        if errors:
            raise PatchError(f"operation #{index} {document}: invalid: "
                             + "; ".join(e.message for e in errors))
        operations.append(document)
    return operations
