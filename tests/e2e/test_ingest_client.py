"""aos_recording.client, the producers' Ingest client, against real Ingest servers: token auth,
batching, idempotent ids, retries with the server's RetryInfo delay; bad input is not retried."""
from __future__ import annotations

import asyncio
import time

import grpc
import psycopg
import pytest

from aos.evidence.v1 import evidence_pb2
from aos.ingest.v1 import ingest_service_pb2 as pb
from aos_recording.client import IngestClient, IngestError, audit_event
from aos_runtime.service_main import build_server
from services.ingest import server as ingest_server
from tests.e2e.support import settings, token
from tests.logins import login_url

pytestmark = pytest.mark.db
TENANT = "tenant-ingest-client"


@pytest.fixture(scope="module")
def tenant(database_url) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING", (TENANT, TENANT))
    return TENANT


def producer_token(actor_type: str = "SYSTEM") -> str:
    return token(TENANT, scopes=("evidence.write",), actor_type=actor_type)


def events(n: int, entity: str) -> list[pb.AuditEvent]:
    return [audit_event(event_type=evidence_pb2.AUDIT_EVENT_TYPE_LIMIT_UPDATED,
                        entity_type=evidence_pb2.AUDIT_ENTITY_TYPE_LIMIT, entity_id=entity,
                        after_state={"limit_cents": i}) for i in range(n)]


class Counting(IngestClient):
    """The client, with its calls counted (how it batched)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def _call(self, method, request, **kw):
        self.calls += 1
        return super()._call(method, request, **kw)


async def test_batches_idempotent_ids_and_the_token_as_producer(suite, tenant):
    sent = events(401, "lim-client-1")
    sent[5].event_id = ""  # an item without an id gets one, kept for its retries

    def produce():
        with Counting(suite["ingest"], token=producer_token(), batch_size=200) as ingest:
            first = ingest.append_audit_events(sent)
            again = ingest.append_audit_events(first_ids(first))  # the producer's retry of everything
            return ingest.calls, first, again

    def first_ids(results):  # the same events, now each with the id the first send used
        copies = []
        for event, result in zip(sent, results, strict=True):
            copy = pb.AuditEvent()
            copy.CopyFrom(event)
            copy.event_id = result.event_id
            copies.append(copy)
        return copies

    calls, first, again = await asyncio.to_thread(produce)
    assert calls == 6  # 401 events in batches of 200: three calls, twice
    assert [r.status for r in first] == [pb.ITEM_STATUS_CREATED] * 401
    assert first[5].event_id.startswith("evt-") and len({r.event_id for r in first}) == 401
    assert [r.seq for r in first] == sorted(r.seq for r in first)  # in the producer's order
    assert [r.status for r in again] == [pb.ITEM_STATUS_ALREADY_PRESENT] * 401
    assert [(r.seq, r.chain_hash) for r in again] == [(r.seq, r.chain_hash) for r in first]


async def test_bad_credentials_and_bad_input_are_not_retried(suite, tenant):
    def produce(actor_type):
        with IngestClient(suite["ingest"], token=producer_token(actor_type), sleep=slept.append) as ingest:
            return ingest.append_audit_events(events(1, "lim-client-2"))

    slept: list[float] = []
    with pytest.raises(IngestError) as refused:
        await asyncio.to_thread(produce, "HUMAN")  # evidence.write is for AGENT or SYSTEM callers
    assert (refused.value.code, refused.value.attempts, slept) == (grpc.StatusCode.PERMISSION_DENIED, 1, [])
    with pytest.raises(ValueError):
        IngestClient(suite["ingest"], token="t", batch_size=1001)


@pytest.fixture()
async def tight_ingest(suite, database_url, tmp_path):
    """An Ingest server of its own whose in-flight bound is 4 KiB."""
    conf = settings(tmp_path, ingest_inflight_bytes=4096, ingest_inflight_bytes_per_tenant=0)
    server = build_server("ingest", ingest_server.servicers, conf, login_url(database_url, "ingest"), port=0)
    address = f"127.0.0.1:{await server.start()}"
    yield server, address
    await server.stop(grace=1)


async def test_a_full_server_is_retried_after_its_retry_info_delay(tenant, tight_ingest):
    server, address = tight_ingest
    gate = server.admission.inflight_bytes
    slept: list[float] = []
    client = IngestClient(address, token=producer_token(), max_attempts=100, base_backoff_s=5.0,
                          sleep=lambda s: (slept.append(s), time.sleep(s)))
    held = gate.acquire(TENANT, 4096)  # another request holds the whole bound
    try:
        sending = asyncio.create_task(asyncio.to_thread(client.append_audit_events, events(3, "lim-client-3")))
        for _ in range(2000):
            if gate.refused or sending.done():
                break
            await asyncio.sleep(0.005)
        assert gate.refused >= 1
    finally:
        held.release()
    try:
        results = await sending
    finally:
        client.close()
    assert [r.status for r in results] == [pb.ITEM_STATUS_CREATED] * 3
    assert client.retries == len(slept) >= 1
    # The server's RetryInfo delay (50 ms: no hold time measured yet), not the 5 s backoff.
    assert all(0.04 <= s <= 1.0 for s in slept), slept


def test_batches_stay_under_the_servers_request_size():
    big = events(8, "lim-client-4")
    for event in big:
        event.after_state.update({"blob": "x" * (1024 * 1024)})  # 1 MiB each: 8 MiB in all
    client = IngestClient("127.0.0.1:1", token="t")  # no call is made
    try:
        batches = list(client._batches(big))
    finally:
        client.close()
    assert [len(b) for b in batches] == [2, 2, 2, 2]  # 3 MiB a request at most (the server takes 4 MiB)
    assert [e.event_id for b in batches for e in b] == [e.event_id for e in big]
