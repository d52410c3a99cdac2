"""Compiled snapshot: layout, incremental rebuilds, atomic writes, defensive reads."""

from __future__ import annotations

import marshal
import os
import subprocess
import sys

import pytest
from imagemapper import compiler, rules, snapshot
from imagemapper.compiler import MapFileInput
from imagemapper.imagemap import MapInput

OPNS = "image-mapper-system"


def sample(n_namespaces=3):
    maps = [MapInput(f"ns{i}", "m", "2024-01-01T00:00:00Z", 1, [{"from": "nginx", "to": f"r{i}.corp/nginx"}])
            for i in range(n_namespaces)]
    cms = [MapFileInput(OPNS, "cluster", "u", {"maps": "default::cluster.corp\n"}),
           MapFileInput("ns0", "local", "u2", {"maps": "default::\nquay.io::ns0.corp/quay\n"})]
    return maps, cms


def test_build_writes_one_file_per_namespace_and_reads_back(tmp_path):
    maps, cms = sample()
    result = compiler.build(str(tmp_path), maps, cms, OPNS)
    assert sorted(os.listdir(tmp_path / "ns")) == ["ns0.snap", "ns1.snap", "ns2.snap"]
    assert snapshot.is_ready(str(tmp_path))
    assert result.rules == {"namespace": 3 + 2, "cluster": 1}
    ns_doc, cluster_doc = snapshot.load_for_namespace(str(tmp_path), "ns1")
    assert rules.decide("nginx:1", ns_doc, cluster_doc).new == "r1.corp/nginx:1"
    ns_doc, cluster_doc = snapshot.load_for_namespace(str(tmp_path), "empty-ns")
    assert ns_doc is None
    assert rules.decide("nginx:1", ns_doc, cluster_doc).new == "cluster.corp/nginx:1"


def test_unchanged_namespaces_are_not_recompiled(tmp_path):
    maps, cms = sample(5)
    first = compiler.build(str(tmp_path), maps, cms, OPNS)
    assert len(first.recompiled) == 5
    mtimes = {p: os.stat(tmp_path / "ns" / p).st_mtime_ns for p in os.listdir(tmp_path / "ns")}
    maps[2] = MapInput("ns2", "m", "2024-01-01T00:00:00Z", 2, [{"from": "redis", "to": "x.corp/redis"}])
    second = compiler.build(str(tmp_path), maps, cms, OPNS)
    assert second.recompiled == ["ns2"]
    for name, mtime in mtimes.items():
        if name != "ns2.snap":
            assert os.stat(tmp_path / "ns" / name).st_mtime_ns == mtime
    assert second.verdicts[("ns0", "m")][0] == "Accepted"  # verdicts of untouched namespaces kept


def test_deleted_rules_remove_the_namespace_file(tmp_path):
    maps, cms = sample()
    compiler.build(str(tmp_path), maps, cms, OPNS)
    compiler.build(str(tmp_path), maps[:1], cms[:1], OPNS)
    assert sorted(os.listdir(tmp_path / "ns")) == ["ns0.snap"]


def test_missing_snapshot_is_an_error_the_caller_sees(tmp_path):
    with pytest.raises(snapshot.SnapshotError, match="cannot read"):
        snapshot.load_for_namespace(str(tmp_path), "shop")


@pytest.mark.parametrize("content", [b"", b"{", marshal.dumps({"v": 99}), marshal.dumps([]),
                                     b"\xff\xfe garbage", marshal.dumps({"v": 1, "x": 1})[:-3]])
def test_corrupt_snapshot_is_an_error_not_a_crash(tmp_path, content):
    maps, cms = sample()
    compiler.build(str(tmp_path), maps, cms, OPNS)
    (tmp_path / snapshot.CLUSTER).write_bytes(content)
    with pytest.raises(snapshot.SnapshotError):
        snapshot.load_for_namespace(str(tmp_path), "ns1")


def test_corrupt_namespace_file_is_an_error(tmp_path):
    maps, cms = sample()
    compiler.build(str(tmp_path), maps, cms, OPNS)
    (tmp_path / "ns" / "ns1.snap").write_bytes(b"{not marshal")
    with pytest.raises(snapshot.SnapshotError, match="corrupt"):
        snapshot.load_for_namespace(str(tmp_path), "ns1")


def test_next_build_repairs_a_deleted_or_corrupt_snapshot(tmp_path):
    maps, cms = sample()
    compiler.build(str(tmp_path), maps, cms, OPNS)
    os.unlink(tmp_path / snapshot.CLUSTER)
    os.unlink(tmp_path / "ns" / "ns1.snap")
    compiler.build(str(tmp_path), maps, cms, OPNS)
    ns_doc, cluster_doc = snapshot.load_for_namespace(str(tmp_path), "ns1")
    assert ns_doc is not None and cluster_doc["mapfiles"]


def test_next_build_repairs_files_overwritten_behind_its_back(tmp_path):
    maps, cms = sample()
    compiler.build(str(tmp_path), maps, cms, OPNS)
    (tmp_path / snapshot.CLUSTER).write_bytes(b"garbage")
    (tmp_path / "ns" / "ns1.snap").write_bytes(b"garbage!")
    result = compiler.build(str(tmp_path), maps, cms, OPNS)
    assert result.recompiled == ["ns1"]
    ns_doc, cluster_doc = snapshot.load_for_namespace(str(tmp_path), "ns1")
    assert ns_doc["imagemaps"] and cluster_doc["mapfiles"]


def test_invalid_namespace_names_never_touch_other_paths(tmp_path):
    for bad in ["../etc", "a/b", "", "UPPER", "x" * 64]:
        with pytest.raises(snapshot.SnapshotError):
            snapshot.load_namespace(str(tmp_path), bad)


def test_atomic_write_never_exposes_a_partial_file(tmp_path):
    """A reader process polling the file while we rewrite it must only ever see whole documents."""
    path = tmp_path / "doc.snap"
    snapshot.write_doc(str(path), {"payload": "x" * 200_000, "n": 0})
    reader = subprocess.Popen([sys.executable, "-c", f"""
import sys; sys.path.insert(0, {os.path.join(os.path.dirname(__file__), '..', 'lib')!r})
from imagemapper import snapshot
bad = 0
for _ in range(3000):
    try:
        doc = snapshot._read_doc({str(path)!r})
        bad += len(doc["payload"]) != 200_000
    except snapshot.SnapshotError:
        bad += 1
print(bad)
"""], stdout=subprocess.PIPE, text=True)
    n = 0
    while reader.poll() is None and n < 3000:
        n += 1
        snapshot.write_doc(str(path), {"payload": "y" * 200_000, "n": n})
    out, _ = reader.communicate(timeout=60)
    assert out.strip() == "0"
    assert not [p for p in os.listdir(tmp_path) if ".tmp." in p]
