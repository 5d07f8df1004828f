"""``export create`` while CreateExport builds: a spinner with the elapsed time on a terminal's
stderr, then the time it took; stdout (--json included) stays the result alone."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.db


async def test_create_shows_the_wait_on_a_terminal_and_the_time_it_took(cli, writer_tenant, monkeypatch):
    # What rich reads to treat stderr as an interactive terminal (a captured stream is not one).
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("TTY_INTERACTIVE", "1")
    result = await cli("export", "create", "--run", f"{writer_tenant}.run-support-103", "--bundle", "EVIDENCE",
                       "--format", "JSON", "--idempotency-key", "cli-progress-terminal", tenant=writer_tenant)
    assert result.code == 0, result.err
    assert "building the export (render, sign, record)" in result.err
    assert "0:00:0" in result.err  # the elapsed-time column
    assert "export built in" in result.err and "building the export" not in result.out
    assert "Export" in result.out


async def test_piped_output_gets_no_spinner_and_json_stays_clean(cli, writer_tenant):
    result = await cli("--json", "export", "create", "--run", f"{writer_tenant}.run-support-103", "--bundle",
                       "EVIDENCE", "--format", "JSON", "--idempotency-key", "cli-progress-piped", tenant=writer_tenant)
    assert result.code == 0, result.err
    assert json.loads(result.out)["export"]["export_id"]
    assert "building the export" not in result.err  # no spinner frames in a log file
    assert "export built in" in result.err
