"""The end-to-end benchmark's pure parts (tests/e2e/latency.py): merging runs, the phase
order, the report, and the fixed-answer hook's answer. The run itself is `make bench-long`."""

from __future__ import annotations

import ast
import base64
import json
import sys
from pathlib import Path

import pytest
import yaml
from imagemapper import admission, builder
from imagemapper.imagemap import MapInput
from imagemapper.settings import Settings

E2E = Path(__file__).resolve().parent / "e2e"
sys.path.insert(0, str(E2E))
import latency  # noqa: E402


def run(phase: str, level: int, pods: int, wall: float, timings: list[float], hooks: float = 10.0) -> dict:
    entry = {"phase": phase, "concurrency": level, "webhook": latency.PHASES[phase][1], "pods": pods,
             "wall_s": wall, "pods_per_s": pods / wall, "timings": timings, "stale_connections": 0,
             "client_p50_ms": latency.exact(timings, 0.5) * 1e3, "client_p99_ms": latency.exact(timings, 0.99) * 1e3,
             "cpu_ms_per_pod": {"hooks": hooks, "shell-operator": 2.0, "webhook server": 0.0,
                                "kube-apiserver": 4.0, "etcd": 1.0}, "log_bytes_per_pod": 1000.0}
    if entry["webhook"]:
        entry["buckets"] = [(0.1, float(pods)), (float("inf"), float(pods))]
    return entry


def test_merge_sums_pods_and_time_and_takes_quantiles_of_all_samples():
    a = run("ours", 50, 2, 1.0, [0.1, 0.2], hooks=10.0)
    b = run("ours", 50, 2, 3.0, [0.3, 0.4], hooks=20.0)
    merged = latency.merge([a, b])
    assert merged["pods"] == 4 and merged["wall_s"] == 4.0 and merged["pods_per_s"] == 1.0
    assert merged["client_p99_ms"] == pytest.approx(400.0)
    assert merged["cpu_ms_per_pod"]["hooks"] == pytest.approx(15.0)
    assert merged["webhook_calls"] == 4.0 and merged["runs"] == 2


def test_goal_phases_alternate_in_rounds_around_the_others_and_fixed_allow_only_at_the_top():
    assert latency.phase_order(1, 50) == ["ours", "fixed", "excluded", "baseline", "in-process"]
    top = latency.phase_order(50, 50)
    assert top[0] == "ours" and top[-2:] == ["fixed", "ours"] and "fixed-allow" in top
    mid = latency.phase_order(10, 50)
    assert "fixed-allow" not in mid and mid.count("ours") == mid.count("fixed") == latency.GOAL_ROUNDS >= 4
    goal = [p for p in mid if p in ("ours", "fixed")]
    assert goal == ["ours", "fixed", "fixed", "ours", "ours", "fixed", "fixed", "ours"]


def synthetic() -> dict:
    machine = {"cores": 2, "kube-apiserver": "k", "shell-operator": "s"}
    result = {"pods": 2, "concurrency": [1, 10, 50], "machine": machine,
              "phases": [], "settings": [], "idle_cpu_ms_per_s": {"kube-apiserver": 1.0, "etcd": 1.0},
              "buckets": [0.1], "wall_s": 1.0, "shipped_env": {"LOG_LEVEL": "info"}}
    for level in result["concurrency"]:
        for phase in latency.phase_order(level, 50):
            wall = 2.0 if phase == "ours" else 1.0  # ours at half the fixed hook's rate
            result["phases"].append(run(phase, level, 2, wall, [0.3, 0.6] if phase == "ours" else [0.1, 0.2]))
    for name in latency.settings_variants({"LOG_LEVEL": "info", "LOG_PROXY_HOOK_JSON": "true"}):
        result["settings"].append({"settings": name, "ours": run("ours", 50, 2, 2.0, [0.3]),
                                   "fixed": run("fixed", 50, 2, 1.0, [0.1])})
    return json.loads(json.dumps(result))  # as saved and read back by run.py --e2e-json


def test_report_gives_the_goal_ratios_from_the_merged_runs():
    text = latency.latency_table(synthetic())
    assert "**50%** (goal >= 90%;\nround by round 50%, 50%, 50%, 50%:" in text
    assert "**3.00x** the fixed hook's (goal <= 1.2x)" in text
    assert "<!-- goal3: mutate.py admits **50%**" in text and "<!-- goal5: " in text
    assert "| 50 | ours (4 runs) |" in text and "| 50 | fixed-allow |" in text
    assert "| LOG_LEVEL=error |" in text and "temp dir on the node's disk" in text


def test_fixed_hook_answers_what_mutate_answers_for_the_latency_pod(tmp_path):
    """fixed.py's constant patch is mutate.py's for latency.py's Pod under examples/imagemap.yaml."""
    rules = yaml.safe_load((E2E.parent.parent / "examples" / "imagemap.yaml").read_text())["spec"]["map"]
    builder.build(str(tmp_path), [MapInput("latency-ours", "team-mirror", "2024-01-01T00:00:00Z", 1, rules)], [],
                  "image-mapper-system")
    settings = Settings(operator_namespace="image-mapper-system", state_dir=str(tmp_path))
    request = {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "namespace": "latency-ours",
               "operation": "CREATE", "object": latency.pod_manifest("latency-ours", "p"), "oldObject": None}
    ours = admission.mutate(request, settings)
    tree = ast.parse((E2E / "latencyhooks" / "fixed.py").read_text())
    fixed = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                 and getattr(node.targets[0], "id", "") == "PATCH")
    assert json.loads(base64.b64decode(fixed)) == json.loads(base64.b64decode(ours["patch"]))
    assert fixed.decode() == ours["patch"]
