"""Compiled snapshot: layout, incremental rebuilds, atomic writes, defensive reads."""

from __future__ import annotations

import marshal
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imagemapper import builder, compiler, rules, snapshot
from imagemapper.imagemap import MapInput
from imagemapper.mapfile import MapFileInput

OPNS = "image-mapper-system"


def sample(n_namespaces=3):
    maps = [MapInput(f"ns{i}", "m", "2024-01-01T00:00:00Z", 1, [{"from": "nginx", "to": f"r{i}.corp/nginx"}])
            for i in range(n_namespaces)]
    cms = [MapFileInput(OPNS, "cluster", "u", {"maps": "default::cluster.corp\n"}),
           MapFileInput("ns0", "local", "u2", {"maps": "default::\nquay.io::ns0.corp/quay\n"})]
    return maps, cms


def test_build_writes_one_file_and_reads_back(tmp_path):
    maps, cms = sample()
    result = builder.build(str(tmp_path), maps, cms, OPNS)
    assert sorted(os.listdir(tmp_path)) == ["accepted.snap", "index.json", "ready", "rules.snap"]
    assert snapshot.is_ready(str(tmp_path))
    assert result.rules == {"namespace": 3 + 2, "cluster": 1}
    ns_doc, cluster_doc = snapshot.load_for_namespace(str(tmp_path), "ns1")
    assert "accepted" not in ns_doc  # the mutate hook's file carries no validation data
    assert rules.decide("nginx:1", ns_doc, cluster_doc).new == "r1.corp/nginx:1"
    ns_doc, cluster_doc = snapshot.load_for_namespace(str(tmp_path), "empty-ns")
    assert ns_doc is None
    assert rules.decide("nginx:1", ns_doc, cluster_doc).new == "cluster.corp/nginx:1"
    assert snapshot.load_accepted(str(tmp_path), "ns1") == {
        "m": {"created": "2024-01-01T00:00:00Z", "items": [{"from": "nginx", "to": "r1.corp/nginx"}]}}
    assert snapshot.load_accepted(str(tmp_path), "empty-ns") == {}


def regions(state):
    snap = snapshot.open_snapshot(state)
    try:
        return {ns: snap.read(ref[0], ref[1]) for ns, ref in snap.namespaces().items()}
    finally:
        snap.close()


def test_unchanged_namespaces_are_not_recompiled(tmp_path):
    maps, cms = sample(5)
    first = builder.build(str(tmp_path), maps, cms, OPNS)
    assert len(first.recompiled) == 5
    before = regions(str(tmp_path))
    maps[2] = MapInput("ns2", "m", "2024-01-01T00:00:00Z", 2, [{"from": "redis", "to": "x.corp/redis"}])
    second = builder.build(str(tmp_path), maps, cms, OPNS)
    assert second.recompiled == ["ns2"]
    after = regions(str(tmp_path))
    assert {ns for ns in before if before[ns] != after[ns]} == {"ns2"}  # the rest copied as is
    assert second.verdicts[("ns0", "m")]["reason"] == "Accepted"  # verdicts of untouched namespaces kept


def test_index_of_another_format_is_rebuilt(tmp_path):
    """An index written before verdicts were named records (lists) is not reused."""
    import json

    maps, cms = sample(2)
    builder.build(str(tmp_path), maps, cms, OPNS)
    path = tmp_path / builder.INDEX
    index = json.loads(path.read_text())
    del index["format"]
    for entry in index["namespaces"].values():
        entry["verdicts"] = {name: [v["reason"], v["message"], v["rules"]] for name, v in entry["verdicts"].items()}
    path.write_text(json.dumps(index))
    again = builder.build(str(tmp_path), maps, cms, OPNS)
    assert sorted(again.recompiled) == ["ns0", "ns1"]
    assert again.verdicts[("ns1", "m")] == {"reason": "Accepted", "message": "1 rule active", "rules": 1}


def test_deleted_rules_remove_the_namespace(tmp_path):
    maps, cms = sample()
    builder.build(str(tmp_path), maps, cms, OPNS)
    builder.build(str(tmp_path), maps[:1], cms[:1], OPNS)
    assert sorted(regions(str(tmp_path))) == ["ns0"]
    assert snapshot.load_accepted(str(tmp_path), "ns1") == {}


def test_missing_snapshot_is_an_error_the_caller_sees(tmp_path):
    with pytest.raises(snapshot.SnapshotError, match="cannot read"):
        snapshot.load_for_namespace(str(tmp_path), "shop")


@pytest.mark.parametrize("content", [b"", b"{", marshal.dumps({"v": 99}), marshal.dumps([]),
                                     b"\xff\xfe garbage", snapshot.MAGIC + b"\xff" * 24,
                                     snapshot.MAGIC + b"\x00" * 24])
def test_corrupt_snapshot_is_an_error_not_a_crash(tmp_path, content):
    maps, cms = sample()
    builder.build(str(tmp_path), maps, cms, OPNS)
    (tmp_path / snapshot.FILE).write_bytes(content)
    with pytest.raises(snapshot.SnapshotError):
        snapshot.load_for_namespace(str(tmp_path), "ns1")


def big_sample(lines=3000):
    text = "default::mirror.corp/default\n" + "".join(
        f"registry{i}.example.com::mirror{i}.corp\n[EXACT]quay.io/app{i}:v1::pinned.corp/app{i}:v1\n"
        for i in range(lines // 2))
    maps = [MapInput("ns0", "m", "2024-01-01T00:00:00Z", 1,
                     [{"from": f"quay.io/org/app{e}", "to": f"r.corp/org/app{e}"} for e in range(500)])]
    return maps, [MapFileInput(OPNS, "cluster", "u", {"maps": text})]


IMAGES = ["registry7.example.com/team/tool:2", "quay.io/app9:v1", "quay.io/org/app3:1", "nginx",
          "mirror7.corp:5000/x", "pinned.corp/app4:v1", "registry1499.example.com:443/a/b@sha256:" + "a" * 64]


def test_truncated_or_damaged_files_give_snapshot_errors_or_answers(tmp_path):
    """Every prefix of the file, and every damaged byte, either reads or is a SnapshotError."""
    maps, cms = big_sample(400)
    builder.build(str(tmp_path), maps, cms, OPNS)
    good = (tmp_path / snapshot.FILE).read_bytes()
    cuts = list(range(0, len(good), max(1, len(good) // 300)))
    flips = [(at, 0xFF) for at in range(0, len(good), max(1, len(good) // 300))]
    variants = [good[:cut] for cut in cuts] + [good[:at] + bytes([good[at] ^ x]) + good[at + 1:] for at, x in flips]
    for data in variants:
        (tmp_path / snapshot.FILE).write_bytes(data)
        try:
            ns_doc, cluster_doc = snapshot.load_for_namespace(str(tmp_path), "ns0")
            for image in IMAGES:
                rules.decide(image, ns_doc, cluster_doc)
        except snapshot.SnapshotError:
            pass


def test_large_tables_give_the_answers_of_the_compiled_documents(tmp_path):
    maps, cms = big_sample(3000)
    builder.build(str(tmp_path), maps, cms, OPNS)
    ns_doc, cluster_doc = snapshot.load_for_namespace(str(tmp_path), "ns0")
    assert isinstance(cluster_doc["mapfiles"]["keys"], snapshot.Table)  # really read bucket by bucket
    assert isinstance(ns_doc["imagemaps"]["repo"], snapshot.Table)
    want_ns = compiler.compile_namespace("ns0", maps, [])[0]
    want_cluster = compiler.compile_cluster(cms)[0]
    images = IMAGES + [f"registry{i}.example.com/a/b:{i}" for i in range(0, 1500, 7)] + [
        f"quay.io/app{i}:v1" for i in range(0, 1500, 11)] + [f"quay.io/org/app{e}" for e in range(0, 600, 13)]
    for image in images:
        got = rules.decide(image, ns_doc, cluster_doc)
        want = rules.decide(image, want_ns, want_cluster)
        assert (got.new, got.rule, got.source) == (want.new, want.rule, want.source), image
    assert snapshot.materialize(cluster_doc)["mapfiles"] == want_cluster["mapfiles"]


@given(st.dictionaries(st.text(max_size=12), st.lists(st.text(max_size=3), max_size=2), max_size=300),
       st.lists(st.text(max_size=12), max_size=30))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_table_lookups_equal_dict_lookups(tmp_path, table, probes):
    writer = snapshot.Writer(str(tmp_path))
    writer.add_namespace("ns", *snapshot.encode_region({"t": table, "small": {"a": 1}}))
    writer.commit(snapshot.encode_region({}), "g")
    doc = snapshot.load_namespace(str(tmp_path), "ns")
    assert doc["small"] == {"a": 1}
    for key in list(table)[:30] + probes:
        assert doc["t"].get(key) == table.get(key)
        assert (key in doc["t"]) == (key in table)
    assert bool(doc["t"]) == bool(table) and len(doc["t"]) == len(table)
    assert snapshot.materialize(doc["t"]) == table


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "directory"])
def test_only_regular_files_are_read(tmp_path, kind):
    """A symlink to /dev/zero (or a FIFO) must not hang the hook: it is refused at once."""
    maps, cms = sample()
    builder.build(str(tmp_path), maps, cms, OPNS)
    path = tmp_path / snapshot.FILE
    path.unlink()
    if kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    lib = os.path.join(os.path.dirname(__file__), "..", "lib")
    code = (f"import sys; sys.path.insert(0, {lib!r})\nfrom imagemapper import snapshot\n"
            f"try:\n    snapshot.load_for_namespace({str(tmp_path)!r}, 'ns1')\nexcept snapshot.SnapshotError as e:\n"
            "    print('refused', e)\n")
    out = subprocess.run([sys.executable, "-S", "-c", code], check=False, capture_output=True, text=True, timeout=20)
    assert out.stdout.startswith("refused"), out


def test_next_build_repairs_a_deleted_or_corrupt_snapshot(tmp_path):
    maps, cms = sample()
    builder.build(str(tmp_path), maps, cms, OPNS)
    os.unlink(tmp_path / snapshot.FILE)
    builder.build(str(tmp_path), maps, cms, OPNS)
    ns_doc, cluster_doc = snapshot.load_for_namespace(str(tmp_path), "ns1")
    assert ns_doc is not None and cluster_doc["mapfiles"]


def test_next_build_repairs_files_overwritten_behind_its_back(tmp_path):
    maps, cms = sample()
    builder.build(str(tmp_path), maps, cms, OPNS)
    (tmp_path / snapshot.FILE).write_bytes(b"garbage")
    result = builder.build(str(tmp_path), maps, cms, OPNS)
    assert result.recompiled == ["ns0", "ns1", "ns2"]
    ns_doc, cluster_doc = snapshot.load_for_namespace(str(tmp_path), "ns1")
    assert ns_doc["imagemaps"] and cluster_doc["mapfiles"]


def test_invalid_namespace_names_never_touch_other_paths(tmp_path):
    for bad in ["../etc", "a/b", "", "UPPER", "x" * 64]:
        with pytest.raises(snapshot.SnapshotError):
            snapshot.load_namespace(str(tmp_path), bad)
        with pytest.raises(snapshot.SnapshotError):
            snapshot.load_accepted(str(tmp_path), bad)


def generation(n):
    """Namespace and cluster rules that change together: generation n sends both to g<n>."""
    maps = [MapInput("shop", "m", "2024-01-01T00:00:00Z", n, [{"from": "nginx", "to": f"g{n}.corp/nginx"}])]
    return maps, [MapFileInput(OPNS, "cluster", "u", {"maps": f"default::g{n}.corp\n"})]


def test_an_admission_sees_one_generation(tmp_path):
    """A reader polling while the builder changes namespace and cluster rules together never
    sees a namespace document of one generation next to a cluster document of another."""
    builder.build(str(tmp_path), *generation(0), OPNS)
    reader = subprocess.Popen([sys.executable, "-c", f"""
import sys; sys.path.insert(0, {os.path.join(os.path.dirname(__file__), '..', 'lib')!r})
from imagemapper import rules, snapshot
mixed = seen = 0
for _ in range(3000):
    ns_doc, cluster_doc = snapshot.load_for_namespace({str(tmp_path)!r}, "shop")
    a = rules.decide("nginx", ns_doc, cluster_doc).new.split(".")[0]
    b = rules.decide("redis", ns_doc, cluster_doc).new.split(".")[0]
    mixed += a != b
    seen += 1
print(mixed, seen)
"""], stdout=subprocess.PIPE, text=True)
    n = 0
    while reader.poll() is None and n < 3000:
        n += 1
        builder.build(str(tmp_path), *generation(n), OPNS)
    out, _ = reader.communicate(timeout=120)
    mixed, seen = map(int, out.split())
    assert seen == 3000 and mixed == 0 and n > 10
    assert not [p for p in os.listdir(tmp_path) if ".tmp." in p]


def test_carried_cluster_targets_are_the_compiled_ones_for_the_same_files_only(tmp_path):
    """A sync run that changes no cluster map file reads their targets back (no compile)."""
    state = str(tmp_path)
    maps, cms = big_sample(3000)
    cluster = [cm for cm in cms if cm.namespace == OPNS]
    assert builder.carried_cluster_targets(state, cluster) is None, "no snapshot yet"
    builder.build(state, maps, cms, OPNS)
    got = builder.carried_cluster_targets(state, cluster)
    want = compiler.compile_cluster(cluster)[0]["targets"]
    assert got == want and sum(len(v) for v in want.values()) > snapshot.INLINE_MAX
    changed = [MapFileInput(OPNS, cm.name, cm.uid, {"maps": cm.data["maps"] + "gcr.io::x.corp\n"})
               for cm in cluster]
    assert builder.carried_cluster_targets(state, changed) is None, "other files: compile them"
    (tmp_path / snapshot.FILE).write_bytes(b"garbage")
    assert builder.carried_cluster_targets(state, cluster) is None
