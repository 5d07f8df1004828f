"""bench/erasure_scale.py at a tiny volume: every check it reports holds, and its checks can fail.

    .venv/bin/python -m pytest -q bench/test_erasure_scale.py

A real embedded Postgres (scratch_database), the Ingest, Logs and Export services in this process.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses

import pytest

import erasure_scale
from scratch import scratch_database


@pytest.fixture(scope="module")
def outcome():
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("DATABASE_URL", raising=False)  # the embedded scratch database, always
        with scratch_database(prefix="aos-bench-test-erasure-") as (url, work):
            args = argparse.Namespace(tenant=None, subjects=4, entries=40, runs=6, steps=2, system=8, subject=1)
            captured: dict = {}
            real = erasure_scale.offline_checks

            def keep(copy):  # the copies the run held, for the tampering test below
                captured.setdefault(copy.export_id, copy)
                return real(copy)

            patch.setattr(erasure_scale, "offline_checks", keep)
            result = asyncio.run(erasure_scale.run(url, work, args))
            yield result, captured


def test_every_claim_holds_and_the_subject_is_gone(outcome):
    result, _ = outcome
    assert result["verdict"] and all(result["verdict"].values()), result["verdict"]
    touched = result["rows_touched"]
    # subject 1 of 4: 10 audit entries × (reason, after state), runs 1 and 5 × 2 steps × (input,
    # output), system records 1 and 5 × (summary, details)
    assert touched["payloads_deleted_by_record_type"] == {"audit_entry": 20, "trace_step": 8, "system_record": 4}
    assert touched["payloads_deleted"] == touched["payload_tombstones_written"] == 32
    assert result["erase"]["payloads_erased"] == 32 and len(result["erase"]["exports_erased"]) == 2
    assert result["before"]["found"]["search_evidence_total"] > 0 and not any(result["after"]["found"].values())


def test_the_offline_checks_catch_an_altered_copy(outcome):
    _, captured = outcome
    copy = next(c for c in captured.values() if b"Quennell00001" in c.data)
    forged = dataclasses.replace(copy, data=copy.data.replace(b"Quennell00001", b"Quennell00002"))
    assert erasure_scale.offline_checks(copy)["ok"]
    assert not erasure_scale.offline_checks(forged)["ok"]
