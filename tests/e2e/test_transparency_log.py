"""The ledger's transparency log end to end: proofs the Logs service answers for the demo
tenant verify offline with aos_recording.tlog, another tenant's entry is NOT_FOUND, bad
sizes are INVALID_ARGUMENT field by field, and a database session cannot change the tree
(a superuser who does is caught by the next proof against a root kept before). The export
chain's tree answers the same RPCs with log TRANSPARENCY_LOG_EXPORTS, against the root of
the Export service's C2SP checkpoint; an entry whose month retention dropped is still proved
by its id."""
from __future__ import annotations

import tempfile
from datetime import date, datetime, timezone
from pathlib import Path

import grpc
import psycopg
import pytest

from aos.evidence.v1 import integrity_pb2
from aos.export.v1 import export_service_pb2 as export_pb, export_service_pb2_grpc as export_grpc
from aos.logs.v1 import audit_ledger_service_pb2 as pb, audit_ledger_service_pb2_grpc as pb_grpc
from aos_recording import retention, tlog
from aos_runtime.service_main import build_server
from tests.db.sessions import append_entries, export_rows, make_tenant, new_id, session
from tests.e2e.support import ACME, DEMO, auth, service_modules, settings, violations
from tests.logins import login_url

EXPORTS = integrity_pb2.TRANSPARENCY_LOG_EXPORTS

pytestmark = pytest.mark.db


@pytest.fixture()
async def ledger(suite, demo):
    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        yield pb_grpc.AuditLedgerServiceStub(channel)


async def all_leaves(ledger, tenant: str = DEMO, page_size: int = 4, **bounds) -> list[pb.LedgerLeaf]:
    request = pb.ListLedgerLeavesRequest(page_size=page_size, **bounds)
    found: list[pb.LedgerLeaf] = []
    while True:
        page = await ledger.ListLedgerLeaves(request, metadata=auth(tenant))
        found += page.leaves
        if not page.next_page_token:
            return found
        request.page_token = page.next_page_token


def root_of(leaf_data: list[bytes]) -> bytes:
    """The root of a tree of these leaves, built here from the leaves alone (tlog's stored
    hashes in a dict), independent of what the service stored."""
    stored: dict[int, bytes] = {}
    for n, data in enumerate(leaf_data):
        for offset, h in enumerate(tlog.stored_hashes(n, data, lambda idx: [stored[i] for i in idx])):
            stored[tlog.stored_hash_index(0, n) + offset] = h
    return tlog.tree_hash(len(leaf_data), lambda idx: [stored[i] for i in idx])


async def test_leaves_are_the_entries_content_hashes_in_seq_order(ledger):
    entries = (await ledger.ListAuditEntries(pb.ListAuditEntriesRequest(page_size=1000), metadata=auth())).entries
    leaves = await all_leaves(ledger)
    by_seq = {e.seq: e for e in entries}
    assert [leaf.seq for leaf in leaves] == list(range(1, len(entries) + 1))
    for leaf in leaves:
        entry = by_seq[leaf.seq]
        assert (leaf.entry_id, leaf.leaf_data.hex(), leaf.leaf_index) == (entry.id, entry.content_hash, leaf.seq - 1)
        assert leaf.leaf_hash == tlog.leaf_hash(leaf.leaf_data)
        assert leaf.metadata.tenant_id == DEMO and leaf.metadata.checksum == entry.content_hash
        assert leaf.metadata.recorded_at == entry.metadata.recorded_at


async def test_every_entrys_inclusion_proof_verifies_offline(ledger):
    leaves = await all_leaves(ledger)
    size = len(leaves)
    root = root_of([leaf.leaf_data for leaf in leaves])
    for leaf in leaves:
        proof = await ledger.GetInclusionProof(pb.GetInclusionProofRequest(entry_id=leaf.entry_id), metadata=auth())
        assert (proof.seq, proof.leaf_index, proof.tree_size, proof.root_hash) == (leaf.seq, leaf.seq - 1, size, root)
        assert (proof.leaf_data, proof.leaf_hash) == (leaf.leaf_data, tlog.leaf_hash(leaf.leaf_data))
        tlog.check_record(list(proof.audit_path), proof.tree_size, root, proof.leaf_index, proof.leaf_hash)
        assert len(proof.audit_path) <= size.bit_length()
        # a proof for another leaf, or against another root, fails
        with pytest.raises(tlog.ProofError):
            tlog.check_record(list(proof.audit_path), size, root, proof.leaf_index,
                              tlog.leaf_hash(bytes(32)))


async def test_proofs_against_older_sizes_and_their_consistency(ledger):
    leaves = await all_leaves(ledger)
    data = [leaf.leaf_data for leaf in leaves]
    current = len(data)
    for old in range(1, current + 1):
        proof = await ledger.GetInclusionProof(pb.GetInclusionProofRequest(seq=old, tree_size=old), metadata=auth())
        assert proof.root_hash == root_of(data[:old])
        tlog.check_record(list(proof.audit_path), old, proof.root_hash, old - 1, proof.leaf_hash)
        consistency = await ledger.GetConsistencyProof(pb.GetConsistencyProofRequest(first_tree_size=old),
                                                       metadata=auth())
        assert (consistency.first_tree_size, consistency.second_tree_size) == (old, current)
        assert (consistency.first_root_hash, consistency.second_root_hash) == (root_of(data[:old]), root_of(data))
        tlog.check_tree(list(consistency.proof), current, consistency.second_root_hash, old,
                        consistency.first_root_hash)
        if old < current:  # a forged older root is refused
            with pytest.raises(tlog.ProofError):
                tlog.check_tree(list(consistency.proof), current, consistency.second_root_hash, old, bytes(32))


async def test_another_tenants_entry_is_not_found(ledger):
    other = (await all_leaves(ledger, ACME))[0]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ledger.GetInclusionProof(pb.GetInclusionProofRequest(entry_id=other.entry_id), metadata=auth(DEMO))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(("request_", "expected"), [
    (pb.GetInclusionProofRequest(), {"entry_id"}),
    (pb.GetInclusionProofRequest(entry_id="x", seq=1), {"seq"}),
    (pb.GetInclusionProofRequest(seq=-1), {"seq"}),
    (pb.GetInclusionProofRequest(seq=1, tree_size=-1), {"tree_size"}),
    (pb.GetInclusionProofRequest(seq=1, tree_size=10_000), {"tree_size"}),
    (pb.GetInclusionProofRequest(seq=10_000), {"seq"}),
    (pb.GetInclusionProofRequest(seq=5, tree_size=4), {"tree_size"}),
    (pb.GetConsistencyProofRequest(), {"first_tree_size"}),
    (pb.GetConsistencyProofRequest(first_tree_size=3, second_tree_size=2), {"second_tree_size"}),
    (pb.GetConsistencyProofRequest(first_tree_size=10_000), {"first_tree_size"}),
    (pb.GetConsistencyProofRequest(first_tree_size=1, second_tree_size=10_000), {"second_tree_size"}),
    (pb.ListLedgerLeavesRequest(from_seq=10_000), {"from_seq"}),
    (pb.ListLedgerLeavesRequest(from_seq=3, to_seq=2), {"to_seq"}),
    (pb.ListLedgerLeavesRequest(to_seq=10_000), {"to_seq"}),
    (pb.ListLedgerLeavesRequest(page_size=-1), {"page_size"}),
], ids=lambda v: type(v).__name__ if not isinstance(v, set) else ",".join(sorted(v)))
async def test_bad_sizes_and_ranges_are_invalid_arguments(ledger, request_, expected):
    method = {pb.GetInclusionProofRequest: ledger.GetInclusionProof,
              pb.GetConsistencyProofRequest: ledger.GetConsistencyProof,
              pb.ListLedgerLeavesRequest: ledger.ListLedgerLeaves}[type(request_)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await method(request_, metadata=auth())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(err.value)) == expected, violations(err.value)


async def test_leaves_page_by_keyset_and_bind_their_tokens(ledger):
    first = await ledger.ListLedgerLeaves(pb.ListLedgerLeavesRequest(page_size=3, from_seq=2, to_seq=8),
                                          metadata=auth())
    assert ([leaf.seq for leaf in first.leaves], first.total_size, first.has_more, first.last_seq) == \
        ([2, 3, 4], 7, True, 8)
    assert [leaf.seq for leaf in await all_leaves(ledger, page_size=3, from_seq=2, to_seq=8)] == list(range(2, 9))
    for tampered in (pb.ListLedgerLeavesRequest(page_size=3, from_seq=1, to_seq=8, page_token=first.next_page_token),
                     pb.ListLedgerLeavesRequest(page_size=3, page_token=first.next_page_token[:-2] + "AA")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ledger.ListLedgerLeaves(tampered, metadata=auth())
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in violations(err.value)
    with pytest.raises(grpc.aio.AioRpcError) as err:  # another tenant's use of the token
        await ledger.ListLedgerLeaves(pb.ListLedgerLeavesRequest(page_size=3, from_seq=2, to_seq=8,
                                                                 page_token=first.next_page_token), metadata=auth(ACME))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("role", ["aos_logs", "aos_export", "aos_producer", "aos_overview"])
async def test_no_service_session_can_rewrite_the_tree(ledger, database_url, role):
    before = await ledger.GetInclusionProof(pb.GetInclusionProofRequest(seq=1), metadata=auth())
    for sql in ("UPDATE tlog_hashes SET hash = sha256(hash) WHERE tenant_id = %s",
                "DELETE FROM tlog_hashes WHERE tenant_id = %s",
                "INSERT INTO tlog_hashes (tenant_id, log, hash_index, hash, tree_size) "
                "SELECT %s, 'ledger', 1000000, sha256(''::bytea), 1"):
        with session(database_url, role, DEMO) as conn, pytest.raises(psycopg.Error) as err:
            conn.execute(sql, (DEMO,))
        assert err.value.sqlstate in ("42501", "AOS01"), err.value
    after = await ledger.GetInclusionProof(pb.GetInclusionProofRequest(seq=1, tree_size=before.tree_size),
                                           metadata=auth())
    assert after == before


async def test_a_superusers_rewrite_of_a_stored_hash_is_caught_by_the_next_proof(ledger, database_url):
    """A tenant of its own: the rewrite stays there."""
    tenant = new_id("t")
    append_entries(database_url, tenant, [datetime(2026, 10, 1, tzinfo=timezone.utc)], 6)
    kept = await ledger.GetInclusionProof(pb.GetInclusionProofRequest(seq=6), metadata=auth(tenant))
    with session(database_url) as conn:  # the one role that can set the trigger aside
        conn.execute("ALTER TABLE tlog_hashes DISABLE TRIGGER tlog_hashes_append_only")
        try:
            conn.execute("UPDATE tlog_hashes SET hash = sha256(hash) WHERE tenant_id = %s AND hash_index = %s",
                         (tenant, tlog.stored_hash_index(2, 0)))
        finally:
            conn.execute("ALTER TABLE tlog_hashes ENABLE ALWAYS TRIGGER tlog_hashes_append_only")
    # The hash of leaves 0..3 changed: the tree of size 6 no longer has the kept root, and the
    # proofs of leaves 4 and 5, whose audit paths carry it, fail against the kept root.
    for seq in range(1, 7):
        proof = await ledger.GetInclusionProof(pb.GetInclusionProofRequest(seq=seq, tree_size=6),
                                               metadata=auth(tenant))
        assert proof.root_hash != kept.root_hash
        if seq > 4:
            with pytest.raises(tlog.ProofError):
                tlog.check_record(list(proof.audit_path), 6, kept.root_hash, seq - 1, proof.leaf_hash)


async def test_the_export_chain_is_proved_as_a_second_log_against_its_c2sp_checkpoint(ledger, suite,
                                                                                        database_url):
    tenant = make_tenant(database_url)
    exports = export_rows(database_url, tenant, 7)
    append_entries(database_url, tenant, [datetime(2026, 10, 1, tzinfo=timezone.utc)], 3)  # the ledger: another tree
    data = [content for _, content in exports]
    leaves = await ledger.ListLedgerLeaves(pb.ListLedgerLeavesRequest(log=EXPORTS), metadata=auth(tenant))
    assert [(leaf.seq, leaf.entry_id, leaf.leaf_data) for leaf in leaves.leaves] == \
        [(i + 1, export_id, content) for i, (export_id, content) in enumerate(exports)]
    assert leaves.metadata.source_component == "log_exports.tlog"
    async with grpc.aio.insecure_channel(suite["export"]) as channel:
        checkpoint = (await export_grpc.ExportServiceStub(channel).GetLedgerCheckpoint(
            export_pb.GetLedgerCheckpointRequest(log=EXPORTS), metadata=auth(tenant))).log_checkpoint
    assert (checkpoint.tree_size, checkpoint.root_hash) == (7, root_of(data))
    for seq, (export_id, content) in enumerate(exports, start=1):
        by_id = await ledger.GetInclusionProof(pb.GetInclusionProofRequest(entry_id=export_id, log=EXPORTS),
                                               metadata=auth(tenant))
        by_seq = await ledger.GetInclusionProof(pb.GetInclusionProofRequest(seq=seq, log=EXPORTS),
                                                metadata=auth(tenant))
        assert by_id == by_seq
        assert (by_id.seq, by_id.entry_id, by_id.leaf_data, by_id.root_hash) == \
            (seq, export_id, content, checkpoint.root_hash)
        assert not by_id.HasField("checkpoint")  # DSSE ledger checkpoints are the ledger's
        tlog.check_record(list(by_id.audit_path), 7, checkpoint.root_hash, seq - 1, tlog.leaf_hash(content))
    for old in range(1, 8):
        consistency = await ledger.GetConsistencyProof(pb.GetConsistencyProofRequest(first_tree_size=old, log=EXPORTS),
                                                       metadata=auth(tenant))
        assert consistency.first_root_hash == root_of(data[:old])
        tlog.check_tree(list(consistency.proof), 7, checkpoint.root_hash, old, consistency.first_root_hash)
    # the logs do not mix: an export's id is no ledger entry, the ledger's size is not the exports'
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ledger.GetInclusionProof(pb.GetInclusionProofRequest(entry_id=exports[0][0]), metadata=auth(tenant))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ledger.GetInclusionProof(pb.GetInclusionProofRequest(seq=5), metadata=auth(tenant))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and set(violations(err.value)) == {"seq"}
    # another tenant sees none of it
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ledger.GetInclusionProof(pb.GetInclusionProofRequest(entry_id=exports[0][0], log=EXPORTS),
                                       metadata=auth(DEMO))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # a page token of one log's walk is not the other's
    first = await ledger.ListLedgerLeaves(pb.ListLedgerLeavesRequest(page_size=2, log=EXPORTS), metadata=auth(tenant))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ledger.ListLedgerLeaves(pb.ListLedgerLeavesRequest(page_size=2, page_token=first.next_page_token),
                                      metadata=auth(tenant))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in violations(err.value)


async def test_an_unknown_log_is_an_invalid_argument(ledger):
    for request in (pb.GetInclusionProofRequest(seq=1, log=99), pb.GetConsistencyProofRequest(first_tree_size=1, log=99),
                    pb.ListLedgerLeavesRequest(log=99)):
        method = {pb.GetInclusionProofRequest: ledger.GetInclusionProof,
                  pb.GetConsistencyProofRequest: ledger.GetConsistencyProof,
                  pb.ListLedgerLeavesRequest: ledger.ListLedgerLeaves}[type(request)]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await method(request, metadata=auth())
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and set(violations(err.value)) == {"log"}


async def test_an_entry_whose_month_retention_dropped_is_still_proved_by_its_id(databases):
    """A database of its own (the drop is database-wide): the entry's row is gone, its leaf
    (with its id) is kept, so the proof by id answers as it did before the drop."""
    url = databases.create()
    tenant = "tenant-dropped"
    with session(url) as conn:
        retention.ensure_partitions(conn, first=date(2025, 1, 1), through=date(2025, 3, 1))
    entries = append_entries(url, tenant, [datetime(2025, 1, 10, tzinfo=timezone.utc),
                                           datetime(2025, 2, 10, tzinfo=timezone.utc)], 3)
    server = build_server("logs", service_modules()["logs"].servicers,
                          settings(Path(tempfile.mkdtemp(prefix="aos-tlog-"))), login_url(url, "logs"), port=0)
    address = f"127.0.0.1:{await server.start()}"
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.AuditLedgerServiceStub(channel)
            before = [await stub.GetInclusionProof(pb.GetInclusionProofRequest(entry_id=e.id), metadata=auth(tenant))
                      for e in entries]
            with session(url) as conn:
                retention.record_checkpoints(conn)
                assert retention.drop_partitions_before(conn, date(2025, 2, 1)) == ["audit_ledger_p2025_01"]
            with pytest.raises(grpc.aio.AioRpcError) as err:  # the entry itself is gone
                await stub.GetAuditEntry(pb.GetAuditEntryRequest(entry_id=entries[0].id), metadata=auth(tenant))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            for entry, kept in zip(entries, before, strict=True):
                proof = await stub.GetInclusionProof(pb.GetInclusionProofRequest(entry_id=entry.id),
                                                     metadata=auth(tenant))
                assert proof == kept
                tlog.check_record(list(proof.audit_path), 6, proof.root_hash, entry.seq - 1,
                                  tlog.leaf_hash(entry.content_hash))
            with pytest.raises(grpc.aio.AioRpcError) as err:  # still only the tree's ids
                await stub.GetInclusionProof(pb.GetInclusionProofRequest(entry_id="aud_unknown"), metadata=auth(tenant))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await server.stop(None)
