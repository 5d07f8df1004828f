"""The soak's own bookkeeping (bench/soak.py): what it reports per phase must be what happened.

    .venv/bin/python -m pytest -q bench/test_soak.py

Pure functions over made-up call records and table counters: no suite, no database.
"""
from __future__ import annotations

import soak


def test_table_diff_reports_counters_as_differences_and_rows_as_levels():
    start = {"log_exports": {"idx_scan": 10, "n_tup_ins": 5, "n_live_tup": 100, "n_dead_tup": 0},
             "quiet": {"idx_scan": 3, "n_live_tup": 7, "n_dead_tup": 0}}
    end = {"log_exports": {"idx_scan": 25, "n_tup_ins": 9, "n_live_tup": 104, "n_dead_tup": 2},
           "quiet": {"idx_scan": 3, "n_live_tup": 7, "n_dead_tup": 0},
           "new_table": {"idx_scan": 4, "n_live_tup": 1, "n_dead_tup": 0}}
    assert soak.table_diff(start, end) == {
        "log_exports": {"idx_scan": 15, "n_tup_ins": 4, "n_live_tup": 104, "n_dead_tup": 2},
        "new_table": {"idx_scan": 4, "n_live_tup": 1, "n_dead_tup": 0}}


def test_windows_split_a_phase_by_when_each_call_started():
    started = 1000.0
    # (started, seconds, code, name): 3 calls in the first 10 s (one refused), 2 in the third.
    results = [(1000.5, 0.010, "OK", "audit"), (1004.0, 0.020, "OK", "trace"),
               (1009.9, 0.005, "RESOURCE_EXHAUSTED", "integrity"),
               (1021.0, 0.100, "OK", "audit"), (1029.0, 0.300, "OK", "audit")]
    found = soak.windows(results, started)
    assert [(w["from_s"], w["offered"], w["ok"]) for w in found] == [(0, 3, 2), (20, 2, 2)]
    assert found[1]["accepted_p99_ms"] == 100.0  # p99 of two: the lower by the soak's rank rule


def test_by_call_names_other_codes_only_where_there_were_any():
    results = [(0.0, 0.010, "OK", "audit"), (0.1, 0.030, "OK", "audit"),
               (0.2, 0.002, "RESOURCE_EXHAUSTED", "integrity"), (0.3, 0.200, "OK", "integrity")]
    found = soak.by_call(results)
    assert found["audit"] == {"calls": 2, "p50_ms": 20.0, "p99_ms": 10.0, "max_ms": 30.0}
    assert found["integrity"]["calls"] == 1 and found["integrity"]["codes"] == {"RESOURCE_EXHAUSTED": 1, "OK": 1}


def test_loop_during_refusals_tells_the_late_ones_loop_from_the_fast_ones(tmp_path):
    # The Logs service's loop: a 40 ms task step at t=100.00 (4 ms of it CPU: off the CPU) and a
    # 6 ms collection inside it; the late refusal (t=100.01, 30 ms) overlaps both, the fast one
    # (t=101.5, 2 ms) neither.
    (tmp_path / "7.json").write_text('{"seconds": {"100": [300.0, 50.0, 80, 6.0], "101": [50.0, 40.0, 60, 0.0]}}')
    (tmp_path / "7.jsonl").write_text('["slow", 100.0, 40.0, 4.0, "ListAuditEntries"]\n'
                                      '["gc", 100.02, 2, 6.0]\n')
    found = soak.loop_during_refusals({"logs": [(100.01, 30.0), (101.5, 2.0)]}, tmp_path, {"logs": 7})
    late, fast = found["logs"]["late"], found["logs"]["fast"]
    assert (late["calls"], late["with_a_callback_over_5ms_pct"], late["those_callbacks_cpu_of_wall_pct"],
            late["with_a_collection_over_2ms_pct"], late["loop_busy_in_their_second_p50_pct"]) == (1, 100.0, 10.0,
                                                                                                 100.0, 30.0)
    assert late["longest_holders_ms"] == {"ListAuditEntries": 40.0}
    assert (fast["with_a_callback_over_5ms_pct"], fast["with_a_collection_over_2ms_pct"]) == (0.0, 0.0)
