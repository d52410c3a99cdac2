"""Event-driven sync: after any sequence of changes, the snapshot is what a full build gives."""

from __future__ import annotations

import os
import random

import pytest
from harness.shellop import Cluster, Operator
from imagemapper import builder, rules, snapshot
from imagemapper.imagemap import MapInput
from imagemapper.mapfile import MapFileInput
from test_hooks import OPNS, hook, imagemap, make_env, mapfile, webhook_configuration

NAMESPACES = ["a", "b", "c"]
IMAGES = ["nginx:1", "redis:7", "quay.io/x/y:1", "gcr.io/z/w", "registry.corp/hub/nginx:1"]


def full_build(cluster, state_dir):
    maps = [MapInput(o["metadata"]["namespace"], o["metadata"]["name"], o["metadata"]["creationTimestamp"],
                     o["metadata"]["generation"], o["spec"]["map"]) for o in cluster.list("ImageMap")]
    cms = [MapFileInput.from_object(o) for o in cluster.list("ConfigMap")
           if (o["metadata"].get("labels") or {}).get("imagemapper.io/map-file") == "true"]
    builder.build(state_dir, maps, cms, OPNS)


def answers(state_dir):
    out = {}
    for ns in [*NAMESPACES, "none"]:
        ns_doc, cluster_doc = snapshot.load_for_namespace(state_dir, ns)
        out[ns] = [(d.new, d.rule) for d in (rules.decide(i, ns_doc, cluster_doc) for i in IMAGES)]
    return out


def random_change(rng, cluster, step):
    ns = rng.choice(NAMESPACES)
    kind = rng.random()
    name = f"m{rng.randrange(3)}"
    target = rng.choice(["r1.corp", "r2.corp", "r3.corp"])
    if kind < 0.5:
        existing = cluster.find("ImageMap", name, ns)
        generation = (existing["metadata"]["generation"] + 1) if existing else 1
        items = [{"from": rng.choice(["nginx", "redis", "quay.io/x/*"]),
                  "to": f"{target}/{rng.choice(['p', 'q'])}" + ("/*" if rng.random() < 0.3 else "")}]
        if items[0]["from"].endswith("*") and not items[0]["to"].endswith("*"):
            items[0]["to"] += "/*"
        cluster.apply(imagemap(name, items, ns=ns, generation=generation,
                               created=f"2024-01-0{rng.randrange(1, 9)}T00:00:00Z"))
    elif kind < 0.7:
        if cluster.find("ImageMap", name, ns):
            cluster.delete("ImageMap", name, ns)
    elif kind < 0.9:
        where = rng.choice([*NAMESPACES, OPNS])
        cluster.apply(mapfile(f"cm{rng.randrange(2)}", f"default::{target}\ngcr.io::{target}/g{step}\n", ns=where))
    elif cluster.find("ConfigMap", "cm0", OPNS):
        cluster.delete("ConfigMap", "cm0", OPNS)


@pytest.mark.parametrize("seed", range(4))
def test_event_driven_snapshot_equals_a_full_build(tmp_path, seed):
    rng = random.Random(seed)
    state = str(tmp_path / "state")
    cluster = Cluster([imagemap("m0", [{"from": "nginx", "to": "r0.corp/nginx"}], ns="a"),
                       mapfile("cm0", "default::\nquay.io::q.corp\n"), webhook_configuration()])
    operator = Operator(hook("sync.py"), cluster=cluster, env=make_env(state))
    operator.start()
    assert all(r.ok for r in operator.drain())
    for step in range(12):
        for _ in range(rng.randrange(1, 4)):
            random_change(rng, cluster, step)
        runs = operator.drain()
        assert all(r.ok for r in runs), [str(r) for r in runs]
        full = str(tmp_path / f"full{step}")
        full_build(cluster, full)
        assert answers(state) == answers(full), step
        for obj in cluster.list("ImageMap"):  # every status is current
            assert obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"], obj


def test_a_run_after_one_change_reads_one_imagemap(tmp_path):
    state = str(tmp_path / "state")
    cluster = Cluster([*(imagemap(f"m{i}", [{"from": "nginx", "to": f"r{i}.corp/nginx"}], ns=f"n{i}")
                         for i in range(50)), mapfile("cm0", "default::\n"), webhook_configuration()])
    operator = Operator(hook("sync.py"), cluster=cluster, env=make_env(state))
    operator.start()
    assert all(r.ok for r in operator.drain())
    cluster.apply(imagemap("m7", [{"from": "nginx", "to": "s.corp/nginx"}], ns="n7", generation=2))
    runs = operator.drain()
    contexts = [c for r in runs for c in r.contexts]
    assert next(c["type"] for c in contexts if c["binding"] == "imagemaps") == "Event"
    assert all("snapshots" not in c for c in contexts if c["binding"] == "imagemaps")
    ns_doc, cluster_doc = snapshot.load_for_namespace(state, "n7")
    assert rules.decide("nginx", ns_doc, cluster_doc).new == "s.corp/nginx"
    assert os.path.exists(os.path.join(state, snapshot.INPUTS))
