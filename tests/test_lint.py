"""lint: the fields check accepts are the CRD's, and warnings fit the API server's limits."""

from __future__ import annotations

import os

import yaml
from imagemapper import lint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fields(schema: dict):
    """The lint.IMAGEMAP_FIELDS shape of an OpenAPI schema."""
    if schema.get("type") == "array":
        return [_fields(schema["items"])]
    props = schema.get("properties")
    if props is None:
        return None
    return {name: _fields(sub) for name, sub in props.items()}


def test_imagemap_fields_are_the_crd_schema():
    with open(os.path.join(ROOT, "deploy/base/crd.yaml"), encoding="utf-8") as handle:
        crd = yaml.safe_load(handle)
    [version] = crd["spec"]["versions"]
    fields = _fields(version["schema"]["openAPIV3Schema"])
    fields["metadata"] = lint.OBJECT_META  # the API server's ObjectMeta, not the CRD's
    assert fields == lint.IMAGEMAP_FIELDS


def test_unknown_fields_name_the_path_and_the_likely_field():
    obj = {"apiVersion": "imagemapper.io/v1alpha1", "kind": "ImageMap", "metadata": {"name": "x"},
           "spec": {"map": [{"from": "a"}, {"form": "b"}], "extra": 1}, "stauts": {}}
    found = lint.unknown_fields(obj, lint.IMAGEMAP_FIELDS)
    assert [f.split(":")[0] for f in found] == [
        'unknown field "spec.map[1].form" (did you mean "from"?)', 'unknown field "spec.extra"',
        'unknown field "stauts" (did you mean "status"?)']


def test_fit_warnings_keeps_short_lists_whole():
    assert lint.fit_warnings(["a", "b\tc", "a"]) == ["a", "b c"]
    assert lint.fit_warnings([]) == []


def test_first_of_counts_what_it_leaves_out():
    assert lint.first_of([]) == ""
    assert lint.first_of(["a", "b"]) == "a; b"
    assert lint.first_of([str(i) for i in range(7)]) == "0; 1; 2; 3; 4; and 2 more"
    assert lint.first_of(["a", "b", "c"], shown=1) == "a; and 2 more"


def test_ready_message_names_every_bad_entry_within_the_crd_limit():
    from imagemapper import imagemap

    few = imagemap.MapInput("s", "x", "", 1, [{"from": "Bad 1"}, {"from": "ok"}, {"from": "Bad 2"}])
    _, message = imagemap.validate_entries(few)
    assert "spec.map[0]" in message and "spec.map[2]" in message and "more" not in message
    many = imagemap.MapInput("s", "x", "", 1, [{"from": f"Bad {i}"} for i in range(3000)])
    _, message = imagemap.validate_entries(many)
    assert len(message) <= imagemap.MESSAGE_LIMIT
    assert message.endswith("more invalid entries (run `image-mapper check` on the file)")
    with open(os.path.join(ROOT, "deploy/base/crd.yaml"), encoding="utf-8") as handle:
        crd = yaml.safe_load(handle)
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["properties"]["conditions"]["items"]["properties"]["message"]["maxLength"] == \
        imagemap.MESSAGE_LIMIT
