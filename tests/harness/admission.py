"""Admission response file -> the AdmissionResponse the API server receives.

``$ADMISSION_RESPONSE_PATH`` (== ``$VALIDATING_RESPONSE_PATH``) is read with one
``json.Decoder.Decode`` into ``admission.Response{allowed, message, warnings, patch
[]byte}``; the webhook handler then maps it (pkg/webhook/admission/handler.go,
pkg/shell-operator/webhook_handlers.go).
"""
from __future__ import annotations

import base64
import copy
import json

import jsonpatch

from . import _go

_RESPONSE_FIELDS = {"allowed": _go.BOOL, "message": _go.STR, "warnings": _go.STR_LIST,
                    "patch": _go.BYTES}
HOOK_FAILED = {"allowed": False, "status": {"code": 403, "message": "Hook failed"}}
NO_RESPONSE = {"allowed": False,
               "status": {"code": 500, "message": "handle AdmissionReview: hook task prop error"}}


class AdmissionResponseError(ValueError):
    """"got bad validating response": the hook counts as failed."""


class AdmissionDenied(Exception):
    """The API server rejects the object; ``status`` is the response status."""

    def __init__(self, response: dict) -> None:
        self.response = response
        self.status = response.get("status", {})
        super().__init__(f"denied: {self.status}")


def parse_response_file(text: str) -> dict | None:
    """``admission.ResponseFromFile``: None for an empty file, else the decoded struct.

    Only the first JSON value counts; whatever follows it is ignored.  ``patch`` is
    bytes (from standard, padded base64).
    """
    if text == "":
        return None
    try:
        fields = _go.struct_decode(_go.decode_first(text), _RESPONSE_FIELDS)
    except _go.GoJSONError as exc:
        raise AdmissionResponseError(f"got bad validating response: {exc}") from None
    return {"allowed": fields.get("allowed", False), "message": fields.get("message", ""),
            "warnings": fields.get("warnings") or [], "patch": fields.get("patch") or b""}


def api_response(parsed: dict | None, hook_failed: bool, uid: str = "") -> dict:
    """The ``response`` of the AdmissionReview sent back to the API server."""
    if hook_failed:
        out = copy.deepcopy(HOOK_FAILED)
    elif parsed is None:
        out = copy.deepcopy(NO_RESPONSE)
    else:
        out = {"allowed": parsed["allowed"]}
        if not parsed["allowed"]:
            # metav1.Status: message is omitempty, so a quiet deny carries only the code.
            out["status"] = {"code": 403}
            if parsed["message"]:
                out["status"]["message"] = parsed["message"]
        if parsed["warnings"]:
            out["warnings"] = list(parsed["warnings"])
        if parsed["patch"]:
            out["patch"] = base64.b64encode(parsed["patch"]).decode()
            out["patchType"] = "JSONPatch"
    out["uid"] = uid
    return out


def apply_admission(response: dict, obj: dict) -> dict:
    """What the API server stores: ``obj`` with the response's JSON Patch applied.

    Raises AdmissionDenied when not allowed, ValueError/TypeError when the patch is
    not a valid JSON Patch for ``obj`` (the API server rejects the request then).
    """
    if not response.get("allowed"):
        raise AdmissionDenied(response)
    if "patch" not in response:
        return copy.deepcopy(obj)
    try:
        operations = json.loads(base64.b64decode(response["patch"]))
    except ValueError as exc:
        raise ValueError(f"patch is not base64 JSON: {exc}") from None
    if not isinstance(operations, list):
        raise TypeError(f"JSON Patch must be an array, got {type(operations).__name__}")
    try:
        return jsonpatch.apply_patch(obj, operations, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise ValueError(f"JSON Patch does not apply: {exc}") from None
