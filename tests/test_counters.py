"""Admission counters: exact under concurrency, never backwards, cost per series touched."""

from __future__ import annotations

import os
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st
from imagemapper import counters

LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib")


@given(st.text(min_size=1, max_size=20),
       st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=20), max_size=3))
def test_series_file_names_round_trip_and_are_safe(name, labels):
    file_name = counters.series_file(name, labels)
    assert "/" not in file_name and "\x00" not in file_name and file_name not in (".", "..")
    assert counters.parse_series_file(file_name) == (name, labels)


def test_bump_adds_and_totals_reads(tmp_path):
    state = str(tmp_path)
    assert counters.totals(state) == []
    counters.bump(state, [("a_total", {"result": "patched"}, 1), ("b_total", {"namespace": "shop", "source": "x"}, 2)])
    counters.bump(state, [("a_total", {"result": "patched"}, 1)])
    assert counters.totals(state) == [("a_total", {"result": "patched"}, 2),
                                      ("b_total", {"namespace": "shop", "source": "x"}, 2)]


def test_concurrent_processes_lose_nothing_and_the_exporter_never_sees_a_step_back(tmp_path):
    state = str(tmp_path)
    code = (f"import sys; sys.path.insert(0, {LIB!r})\nfrom imagemapper import counters\n"
            f"for _ in range(300):\n    counters.bump({state!r}, [('a_total', {{'r': 'x'}}, 1)])\n")
    writers = [subprocess.Popen([sys.executable, "-S", "-c", code]) for _ in range(4)]
    seen = []
    while any(w.poll() is None for w in writers) and len(seen) < 100_000:
        found = counters.totals(state)
        seen.append(found[0][2] if found else 0)
    for w in writers:
        assert w.wait(timeout=60) == 0
    assert seen == sorted(seen)
    assert counters.totals(state) == [("a_total", {"r": "x"}, 1200)]


def test_damaged_series_restarts_alone(tmp_path):
    state = str(tmp_path)
    counters.bump(state, [("a_total", {}, 5), ("b_total", {}, 7)])
    with open(os.path.join(state, counters.DIR, "a_total"), "w") as handle:
        handle.write("garbage")
    counters.bump(state, [("a_total", {}, 1)])
    assert counters.totals(state) == [("a_total", {}, 1), ("b_total", {}, 7)]
