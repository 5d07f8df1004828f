"""The harness's own checks (bench/suite_bench.py): can they fail?

    .venv/bin/python -m pytest -q bench/test_suite_bench.py

A real bare server on a free port, real h2load and curl; no database. The point is
the hazard issue #9 names: h2load counts a gRPC error (HTTP 200, grpc-status in the
trailers) as a success, so the harness must catch it by other means.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from argparse import Namespace
from collections import Counter
from pathlib import Path

import pytest

import suite_bench
from suite_bench import BenchError, check_answers, checked_h2load, curl_status, grpc_call, h2load

METHOD = "/aos.logs.v1.AuditLedgerService/ListAuditEntries"
REPLY = b"\x12\x03abc" * 100  # any bytes: the bare server never parses them
BODY = b"\x00\x00\x00\x00\x02\x08\x32"  # a gRPC frame holding page_size=50

pytestmark = pytest.mark.skipif(not (shutil.which("h2load") and shutil.which("curl")),
                                reason="needs h2load (apt-get install -y nghttp2-client) and curl")


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    work = tmp_path_factory.mktemp("bare")
    (work / "reply.bin").write_bytes(REPLY)
    (work / "body.bin").write_bytes(BODY)
    server = subprocess.Popen([sys.executable, str(Path(suite_bench.__file__).with_name("bare_server.py")),
                               "--method", METHOD, "--response", str(work / "reply.bin")],
                              stdout=subprocess.PIPE, text=True)
    try:
        ready = server.stdout.readline().split()
        assert ready[0] == "READY"
        yield f"127.0.0.1:{ready[1]}", work
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_bare_server_answers_the_reply_bytes_exactly(bare):
    address, work = bare
    assert grpc_call(address, METHOD, BODY, None) == REPLY
    assert curl_status(address, METHOD, work / "body.bin", None) == "0"
    result = checked_h2load(None, address, METHOD, work / "body.bin", None, len(REPLY),
                            Namespace(seconds=1, warmup=0, clients=2), work)
    assert result["requests"] > 0
    assert result["bytes_per_answer"] == len(REPLY) + 5
    assert result["p50_ms"] <= result["p99_ms"]


def test_a_grpc_error_counted_as_success_by_h2load_is_refused(bare):
    address, work = bare
    unknown = "/aos.logs.v1.AuditLedgerService/NoSuchMethod"
    assert curl_status(address, unknown, work / "body.bin", None) == "12"  # UNIMPLEMENTED
    result = h2load(address, unknown, work / "body.bin", None, 1, 2, work, 0)
    assert result["requests"] > 0  # the hazard: every error counted as a success
    with pytest.raises(BenchError, match="calls failed"):
        check_answers(unknown, result, len(REPLY), None)
    with pytest.raises(BenchError, match="not answered with grpc-status 0"):
        checked_h2load(None, address, unknown, work / "body.bin", None, len(REPLY),
                       Namespace(seconds=1, warmup=0, clients=2), work)


def test_the_service_log_must_show_every_call_ok():
    answered = {"requests": 100, "data_bytes": 100 * (len(REPLY) + 5)}
    check_answers(METHOD, dict(answered), len(REPLY), Counter(OK=103))
    with pytest.raises(BenchError, match="logged"):
        check_answers(METHOD, dict(answered), len(REPLY), Counter(OK=103, UNAUTHENTICATED=1))
    with pytest.raises(BenchError, match="logged"):
        check_answers(METHOD, dict(answered), len(REPLY), Counter(OK=99))
