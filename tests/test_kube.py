"""The tolerant payload accessor, and the readers that crashed on wrong-typed values before it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from imagemapper import entrypoints, kube
from imagemapper.imagemap import MapInput
from imagemapper.mapfile import MapFileInput
from imagemapper.settings import Settings

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=10)


def test_resolve_walks_dicts_and_stops_at_anything_else():
    obj = {"metadata": {"name": "web", "labels": {"a": "b"}}, "spec": [1]}
    assert kube.resolve(obj, "metadata", "labels", "a") == "b"
    assert kube.resolve(obj, "metadata", "missing", "a") is None
    assert kube.resolve(obj, "spec", "0") is None  # a list is not walked into
    assert kube.resolve(obj) is obj


@pytest.mark.parametrize("value", [None, 1, "x", [], True])
def test_typed_reads_give_the_empty_value_of_their_type(value):
    obj = {"a": value}
    assert kube.mapping(obj, "a") == {}
    assert kube.text(obj, "a") == ("x" if value == "x" else "")
    assert kube.items(obj, "a") == []
    assert kube.whole(obj, "a") == (1 if value == 1 and value is not True else 0)


def test_whole_refuses_booleans():
    assert kube.whole({"generation": True}, "generation") == 0
    assert kube.whole({"generation": 7}, "generation") == 7


def test_object_name_falls_back_to_generate_name():
    assert kube.object_name({"name": "a"}, {"metadata": {"name": "b"}}) == "a"
    assert kube.object_name({}, {"metadata": {"name": "b", "generateName": "c-"}}) == "b"
    assert kube.object_name({}, {"metadata": {"generateName": "c-"}}) == "c-"
    assert kube.object_name({"name": 5}, {"metadata": "x"}) == ""


@given(json_values, st.lists(st.text(max_size=3), max_size=4))
def test_never_raises(obj, path):
    kube.resolve(obj, *path)
    assert isinstance(kube.mapping(obj, *path), dict)
    assert isinstance(kube.items(obj, *path), list)
    assert isinstance(kube.text(obj, *path), str)
    assert isinstance(kube.whole(obj, *path), int)


# The readers below raised AttributeError on these shapes before they used kube.

@pytest.mark.parametrize("obj", [{"metadata": 1}, {"metadata": "x", "spec": "y"}, {"metadata": [], "spec": {"map": 3}},
                                 {"metadata": {"name": 1, "generation": "2"}}, 1, None])
def test_imagemap_input_tolerates_wrong_types(obj):
    imap = MapInput.from_object(obj)
    assert (imap.namespace, imap.name, imap.created, imap.generation, imap.items) == ("", "", "", 0, [])


@given(json_values)
def test_inputs_from_any_json_never_raise(obj):
    MapInput.from_object(obj)
    MapFileInput.from_object(obj)


@pytest.mark.parametrize("obj", [{"metadata": 1}, {"metadata": {"name": []}, "data": "x"}, "x"])
def test_mapfile_input_tolerates_wrong_types(obj):
    cm = MapFileInput.from_object(obj)
    assert (cm.namespace, cm.name, cm.uid, cm.data) == ("", "", "", {})


@pytest.mark.parametrize("obj", [1, "pod", {"metadata": "x"}, {"metadata": {"name": 3}}])
def test_report_mutation_tolerates_wrong_types(obj, tmp_path, capsys):
    request = {"namespace": "shop", "object": obj}
    entrypoints._report_mutation(request, {"allowed": True}, [], Settings(state_dir=str(tmp_path)))
