"""Helpers shared by the end-to-end tests: tokens, settings, the services' modules."""
from __future__ import annotations

import dataclasses
import hashlib
import random
import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from aos.evidence.v1 import records_pb2
from aos.ingest.v1 import ingest_service_pb2 as ingest_pb
from aos_recording import note
from aos_runtime.auth import SCOPES, mint_token
from aos_runtime.config import Settings

SECRET = "e2e-secret-" + "x" * 40

# Three witnesses (name, Ed25519 key, from fixed seeds): the suite's export service is
# configured with the first two (AOS_WITNESS_KEYS); the third is one it does not know.
WITNESSES = [(f"witness-{i}.aos-test.example", Ed25519PrivateKey.from_private_bytes(
    hashlib.sha256(f"aos-test-witness-{i}".encode()).digest())) for i in range(3)]
WITNESS_KEYS = tuple(note.cosigner_key(name, key.public_key()) for name, key in WITNESSES[:2])


def token(tenant: str = "tenant-a", scopes=SCOPES, **kw) -> str:
    return mint_token(secret=SECRET, tenant_id=tenant, subject="user-e2e", scopes=tuple(scopes), **kw)


def settings(tmp_path, **changes) -> Settings:
    # No periodic checkpoint publisher in the shared suite (tests that need one start their own):
    # it would keep checkpoints of every tenant behind the back of tests that count them. No
    # access evidence either, for the same reason: every view would append to the demo tenants'
    # ledgers that the tests count entry by entry; tests/e2e/test_access_evidence.py starts a
    # suite of its own with it on (the default everywhere else).
    return dataclasses.replace(Settings.from_env({}), jwt_secret=SECRET, data_dir=tmp_path,
                               witness_keys=WITNESS_KEYS, checkpoint_interval_s=0,
                               **{"access_recording": False, **changes})


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, for a child process that must be told its port.

    Chosen at random below the kernel's ephemeral range rather than by binding port 0: the
    kernel hands the ephemeral ports to every outgoing connection on the machine (the tests'
    own database connections included) and to every other bind to 0, so one of them could take
    the port between this choice and the child's bind (seen once: the launcher's "port N is
    answered by another process")."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(100):
        port = random.randrange(10_000, max(low, 10_001))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # the range below is crowded: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_modules():
    from services.export import server as export
    from services.ingest import server as ingest
    from services.logs import server as logs
    from services.overview import server as overview

    return {"overview": overview, "logs": logs, "export": export, "ingest": ingest}


# The demo scenarios' fixed base time and tenants (the demo fixture in tests/conftest.py loads them).
BASE = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
DEMO, ACME = "tenant-demo", "tenant-acme"


def auth(tenant=DEMO):
    """Call metadata carrying a token for ``tenant``."""
    return (("authorization", f"Bearer {token(tenant)}"),)


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(value)
    return t


def violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    found = {}
    for detail in rpc_status.from_call(err).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.update({v.field: v.description for v in bad.field_violations})
    return found


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo of a failed call's rich status (AssertionError when it has none)."""
    status = rpc_status.from_call(err)
    assert status is not None, f"{err.code()} without rich details: {err.details()}"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError(f"{err.code()} without an ErrorInfo")


def value(plain) -> struct_pb2.Value:
    return json_format.ParseDict(plain, struct_pb2.Value())


def a_run(run_id: str, started: datetime | None = None, **kw) -> ingest_pb.RunInput:
    """A finished run of three steps (input, a model call, output) for the Ingest tests."""
    started = started or datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=2)
    step = ingest_pb.StepInput
    steps = [step(step_type=records_pb2.STEP_TYPE_INPUT, timestamp=ts(started),
                  input_data=value({"prompt": "refund order 7?"})),
             step(step_type=records_pb2.STEP_TYPE_LLM_CALL, timestamp=ts(started + timedelta(seconds=1)),
                  input_data=value({"model": "gpt-4o"}), output_data=value({"text": "yes", "n": 2}),
                  tokens=1500, cost_cents=37, duration_ms=900),
             step(step_type=records_pb2.STEP_TYPE_OUTPUT, timestamp=ts(started + timedelta(seconds=2)),
                  output_data=value("refunded"))]
    fields = dict(run_id=run_id, agent_id="agent-refunds", provider="openai", model="gpt-4o",
                  status=records_pb2.LLM_RUN_STATUS_SUCCEEDED, outcome=records_pb2.RUN_OUTCOME_SUCCESS,
                  input_tokens=1200, output_tokens=300, cost_cents=37, started_at=ts(started),
                  completed_at=ts(started + timedelta(seconds=3)), steps=steps)
    fields.update(kw)
    return ingest_pb.RunInput(**fields)


def register_tenants(producer, *tenants: str) -> None:
    """Each tenant's row (the producer's login), once: the tests that write their own tenants' evidence."""
    from sqlalchemy import text

    for tenant in tenants:
        with producer.transaction(tenant) as conn:
            conn.execute(text("INSERT INTO tenants (id, name) VALUES (:t, :t) ON CONFLICT DO NOTHING"), {"t": tenant})
