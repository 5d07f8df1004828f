"""C2SP checkpoints served by the running Export service, kept, cosigned by witnesses.

Real servers on real channels over the embedded PostgreSQL: GetLedgerCheckpoint answers the
ledger's (and the export chain's) tlog-checkpoint as a signed note whose root is that of
the entries written (checked against aics-tlog's own Merkle tree, an implementation not
written here); AddCheckpointCosignature keeps a configured witness's cosignature and refuses
every other; the served note with its cosignatures meets a k-of-n policy in aics-tlog and in
ours; every byte of it is load-bearing; the publisher keeps checkpoints by itself.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import pytest
from aics_tlog import checkpoint as aics_checkpoint, note as aics_note, tree as aics_tree
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import text

from aos.evidence.v1 import integrity_pb2
from aos.export.v1 import export_service_pb2 as pb, export_service_pb2_grpc as pb_grpc
from aos_recording import note, tlog, witness
from aos_recording.writers import AuditLedgerWriter, Producer
from aos_runtime.service_main import build_server
from tests.db.sessions import session
from tests.e2e.support import WITNESS_KEYS, WITNESSES, auth, service_modules, settings, token, violations
from tests.logins import login_url

pytestmark = pytest.mark.db

LEDGER, EXPORTS = integrity_pb2.TRANSPARENCY_LOG_LEDGER, integrity_pb2.TRANSPARENCY_LOG_EXPORTS


def append(database_url: str, tenant: str, count: int) -> list[bytes]:
    """Appends ``count`` ledger entries for ``tenant``; their content hashes (the leaves)."""
    producer = Producer(login_url(database_url, "producer"), pool_size=1)
    try:
        with producer.transaction(tenant) as conn:
            conn.execute(text("INSERT INTO tenants (id, name) VALUES (:t, :t) ON CONFLICT DO NOTHING"), {"t": tenant})
            writer = AuditLedgerWriter(conn)
            return [writer.append(tenant_id=tenant, event_type="ApiKeyCreated", entity_type="API_KEY",
                                  entity_id=f"key-{i}", actor_type="HUMAN", actor_id="user-witness").content_hash
                    for i in range(count)]
    finally:
        producer.close()


def witness_token(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token(tenant, scopes=('exports.read', 'checkpoints.cosign'))}"),)


async def head(address: str, tenant: str, log=LEDGER) -> pb.GetLedgerCheckpointResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        return await pb_grpc.ExportServiceStub(channel).GetLedgerCheckpoint(
            pb.GetLedgerCheckpointRequest(log=log), metadata=auth(tenant), timeout=10)


async def cosign(address: str, tenant: str, **fields) -> pb.AddCheckpointCosignatureResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        return await pb_grpc.ExportServiceStub(channel).AddCheckpointCosignature(
            pb.AddCheckpointCosignatureRequest(**fields), metadata=witness_token(tenant), timeout=10)


def reason(err: grpc.aio.AioRpcError) -> str:
    for detail in rpc_status.from_call(err).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    raise AssertionError("no ErrorInfo")


def witness_line(checkpoint: integrity_pb2.LogCheckpoint, i: int, state: bytes | None = None,
                 proof=()) -> bytes:
    """Witness i's cosignature of the served checkpoint, through the witness core (which first
    verifies the log's signature, origin and consistency with its state)."""
    name, key = WITNESSES[i]
    done = witness.cosign_checkpoint(state, checkpoint.signed_note.encode(), list(proof),
                                     log_key=checkpoint.log_verifier_key, origin=checkpoint.origin, name=name,
                                     private_key=key, timestamp=int(time.time()), first_use=state is None)
    return done.line


async def test_the_ledger_checkpoint_is_a_c2sp_note_over_the_entries_written(suite, database_url):
    tenant = f"tenant-cp-{uuid.uuid4().hex[:8]}"
    leaves = append(database_url, tenant, 11)
    reply = await head(suite["export"], tenant)
    c2sp, dsse_form = reply.log_checkpoint, reply.checkpoint
    origin = f"aos-evidence.local/ledger/{tenant}"
    assert (c2sp.origin, c2sp.log, c2sp.tree_size) == (origin, LEDGER, 11)
    assert dsse_form.seq == c2sp.tree_size  # both forms at the ledger's head
    # The root is RFC 6962's over the content hashes, as aics-tlog builds it.
    assert c2sp.root_hash == aics_tree.MerkleTree(leaves).root()
    # The note verifies under the log key with our verifier and aics-tlog's.
    checkpoint, _ = note.open_checkpoint(c2sp.signed_note.encode(), c2sp.log_verifier_key, origin=origin)
    assert (checkpoint.size, checkpoint.root) == (11, c2sp.root_hash)
    result = aics_checkpoint.verify_checkpoint(aics_note.parse_note(c2sp.signed_note.encode()),
                                               aics_note.parse_vkey(c2sp.log_verifier_key), expected_origin=origin)
    assert result.ok and (result.size, result.root) == (11, c2sp.root_hash), result.error
    # The log key is the export ring's active key, under the origin's name.
    async with grpc.aio.insecure_channel(suite["export"]) as channel:
        keys = await pb_grpc.ExportServiceStub(channel).ListSigningKeys(pb.ListSigningKeysRequest(),
                                                                        metadata=auth(tenant), timeout=10)
    assert c2sp.log_verifier_key == note.verifier_key(origin, keys.keys[0].public_key)
    # Kept: the same note again by size; signing the head again at the same size gives the same note.
    async with grpc.aio.insecure_channel(suite["export"]) as channel:
        stub = pb_grpc.ExportServiceStub(channel)
        again = await stub.GetLedgerCheckpoint(pb.GetLedgerCheckpointRequest(tree_size=11), metadata=auth(tenant),
                                               timeout=10)
        assert again.log_checkpoint.signed_note == c2sp.signed_note and not again.HasField("checkpoint")
        assert (await head(suite["export"], tenant)).log_checkpoint.signed_note == c2sp.signed_note
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetLedgerCheckpoint(pb.GetLedgerCheckpointRequest(tree_size=12), metadata=auth(tenant),
                                           timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetLedgerCheckpoint(pb.GetLedgerCheckpointRequest(tree_size=-1), metadata=auth(tenant),
                                           timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "tree_size" in violations(err.value)
        # another tenant does not see this tenant's kept checkpoint
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetLedgerCheckpoint(pb.GetLedgerCheckpointRequest(tree_size=11),
                                           metadata=auth(f"{tenant}-other"), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # The tree grows with the ledger; the old checkpoint is consistent with the new one.
    more = append(database_url, tenant, 6)
    grown = (await head(suite["export"], tenant)).log_checkpoint
    assert grown.tree_size == 17 and grown.root_hash == aics_tree.MerkleTree(leaves + more).root()
    proof = aics_tree.MerkleTree(leaves + more).consistency_proof(11, 17)
    tlog.check_tree(proof, 17, grown.root_hash, 11, c2sp.root_hash)


async def test_a_tenant_without_entries_gets_the_empty_tree(suite):
    tenant = f"tenant-empty-{uuid.uuid4().hex[:8]}"
    reply = await head(suite["export"], tenant)
    assert reply.log_checkpoint.tree_size == 0 and reply.log_checkpoint.root_hash == tlog.EMPTY_ROOT
    note.open_checkpoint(reply.log_checkpoint.signed_note.encode(), reply.log_checkpoint.log_verifier_key)


async def test_the_export_chain_has_its_own_log(suite, demo):
    tenant = "tenant-demo"
    async with grpc.aio.insecure_channel(suite["export"]) as channel:
        stub = pb_grpc.ExportServiceStub(channel)
        listed = await stub.ListExports(pb.ListExportsRequest(page_size=1000), metadata=auth(tenant), timeout=10)
        reply = await stub.GetLedgerCheckpoint(pb.GetLedgerCheckpointRequest(log=EXPORTS), metadata=auth(tenant),
                                               timeout=10)
    c2sp = reply.log_checkpoint
    assert not reply.HasField("checkpoint")
    assert c2sp.origin == f"aos-evidence.local/exports/{tenant}" and c2sp.log == EXPORTS
    assert c2sp.tree_size >= len(listed.exports)  # others may export meanwhile; never fewer
    note.open_checkpoint(c2sp.signed_note.encode(), c2sp.log_verifier_key, origin=c2sp.origin)


async def test_witnesses_cosign_and_a_k_of_n_policy_holds_in_aics_tlog(suite, database_url):
    tenant = f"tenant-wit-{uuid.uuid4().hex[:8]}"
    leaves = append(database_url, tenant, 5)
    first = (await head(suite["export"], tenant)).log_checkpoint
    line0 = witness_line(first, 0)
    reply = await cosign(suite["export"], tenant, tree_size=first.tree_size, cosignature=line0.decode())
    assert reply.added and reply.checkpoint.cosignature_count == 1
    # the same witness again: the first cosignature stays
    again = await cosign(suite["export"], tenant, tree_size=first.tree_size, cosignature=line0.decode().rstrip("\n"))
    assert not again.added and again.checkpoint.signed_note == reply.checkpoint.signed_note
    # the second witness names the checkpoint by its note (it must be ours)
    line1 = witness_line(first, 1)
    reply = await cosign(suite["export"], tenant, checkpoint_note=first.signed_note, cosignature=line1.decode())
    assert reply.added and reply.checkpoint.cosignature_count == 2
    served = (await head(suite["export"], tenant)).log_checkpoint
    assert served.cosignature_count == 2 and served.signed_note == reply.checkpoint.signed_note
    signed = served.signed_note.encode()
    # 2-of-2 with aics-tlog (not written here), over the note the running suite served
    their_log = aics_note.parse_vkey(served.log_verifier_key)
    their_witnesses = [aics_note.parse_vkey(k) for k in WITNESS_KEYS]
    result = aics_checkpoint.verify_checkpoint(aics_note.parse_note(signed), their_log, their_witnesses, 2,
                                               expected_origin=served.origin, now=int(time.time()) + 60)
    assert result.ok, result.error
    assert sorted(result.witnesses) == sorted(name for name, _ in WITNESSES[:2])
    assert result.root == aics_tree.MerkleTree(leaves).root()
    # and with ours; 3 of these 2 (plus an unconfigured one) is not met
    assert len(note.require_cosignatures(signed, WITNESS_KEYS, 2, log_key=served.log_verifier_key)) == 2
    third = note.cosigner_key(WITNESSES[2][0], WITNESSES[2][1].public_key())
    with pytest.raises(note.NoteError) as refused:
        note.require_cosignatures(signed, [*WITNESS_KEYS, third], 3, log_key=served.log_verifier_key)
    assert refused.value.reason == note.TOO_FEW_COSIGNATURES
    assert not aics_checkpoint.verify_checkpoint(aics_note.parse_note(signed), their_log,
                                                 [*their_witnesses, aics_note.parse_vkey(third)], 3,
                                                 now=int(time.time()) + 60).ok
    # The witness keeps the cosigned note; the ledger grows; it cosigns the new head only
    # with the consistency proof from its size (here from aics-tlog's tree), and the new
    # checkpoint starts with no cosignatures.
    state = note.add_signatures(first.signed_note.encode(), [line0])
    more = append(database_url, tenant, 4)
    grown = (await head(suite["export"], tenant)).log_checkpoint
    assert grown.cosignature_count == 0
    proof = aics_tree.MerkleTree(leaves + more).consistency_proof(5, 9)
    line = witness_line(grown, 0, state, proof)
    assert (await cosign(suite["export"], tenant, tree_size=9, cosignature=line.decode())).added
    with pytest.raises(witness.WitnessError) as refused_w:
        witness_line(grown, 0, state, proof[:-1])
    assert refused_w.value.reason == witness.INCONSISTENT


async def test_a_cosignature_is_refused_unless_a_known_witness_signed_the_kept_checkpoint(suite, database_url):
    tenant = f"tenant-bad-{uuid.uuid4().hex[:8]}"
    append(database_url, tenant, 3)
    first = (await head(suite["export"], tenant)).log_checkpoint
    append(database_url, tenant, 1)
    second = (await head(suite["export"], tenant)).log_checkpoint
    good = witness_line(first, 0).decode()

    async def refused(**fields) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await cosign(suite["export"], tenant, **fields)
        return err.value

    # an unconfigured witness, with a valid cosignature
    err = await refused(tree_size=3, cosignature=witness_line(first, 2).decode())
    assert (err.code(), reason(err)) == (grpc.StatusCode.PERMISSION_DENIED, "UNKNOWN_WITNESS_KEY")
    # a configured witness's signature altered (one bit of the Ed25519 signature)
    name, b64 = good.rstrip("\n").removeprefix("— ").split(" ")
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 1
    altered = f"— {name} {base64.b64encode(bytes(raw)).decode()}"
    err = await refused(tree_size=3, cosignature=altered)
    assert (err.code(), reason(err)) == (grpc.StatusCode.INVALID_ARGUMENT, "BAD_COSIGNATURE")
    assert "cosignature" in violations(err)
    # a good cosignature of another checkpoint (size 3) sent for size 4
    err = await refused(tree_size=4, cosignature=good)
    assert (err.code(), reason(err)) == (grpc.StatusCode.INVALID_ARGUMENT, "BAD_COSIGNATURE")
    # a checkpoint that is not ours: another root at our size, even validly signed by a log key
    forged = note.sign_checkpoint(note.Checkpoint(first.origin, 3, tlog.leaf_hash(b"forged")), WITNESSES[2][1])
    err = await refused(checkpoint_note=forged.decode(), cosignature=good)
    assert (err.code(), reason(err)) == (grpc.StatusCode.FAILED_PRECONDITION, "CHECKPOINT_NOT_OURS")
    # another origin at our size and root
    other = note.sign_checkpoint(note.Checkpoint("elsewhere.example/log", 3, first.root_hash), WITNESSES[2][1])
    err = await refused(checkpoint_note=other.decode(), cosignature=good)
    assert (err.code(), reason(err)) == (grpc.StatusCode.FAILED_PRECONDITION, "CHECKPOINT_NOT_OURS")
    # no checkpoint kept at that size
    err = await refused(tree_size=99, cosignature=good)
    assert (err.code(), reason(err)) == (grpc.StatusCode.NOT_FOUND, "CHECKPOINT_NOT_FOUND")
    # malformed requests
    for fields, field in [({"tree_size": 3}, "cosignature"), ({"cosignature": good}, "tree_size"),
                          ({"tree_size": 3, "cosignature": "not a signature line"}, "cosignature"),
                          ({"tree_size": 3, "cosignature": good + good}, "cosignature"),
                          ({"checkpoint_note": "no note", "cosignature": good}, "checkpoint_note"),
                          ({"tree_size": 4, "checkpoint_note": first.signed_note, "cosignature": good}, "tree_size"),
                          ({"tree_size": 3, "cosignature": good, "log": 7}, "log")]:
        err = await refused(**fields)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and field in violations(err), (fields, violations(err))
    # nothing was kept by any of these
    assert (await head(suite["export"], tenant)).log_checkpoint.cosignature_count == 0
    async with grpc.aio.insecure_channel(suite["export"]) as channel:
        kept = await pb_grpc.ExportServiceStub(channel).GetLedgerCheckpoint(
            pb.GetLedgerCheckpointRequest(tree_size=3), metadata=auth(tenant), timeout=10)
    assert kept.log_checkpoint.cosignature_count == 0 and second.tree_size == 4


async def test_every_byte_of_a_cosigned_checkpoint_is_checked(suite, database_url):
    """Flip any bit of the served note (text, the log's signature, a cosignature) and the
    2-of-2 policy with the log key refuses it, in ours and in aics-tlog."""
    tenant = f"tenant-flip-{uuid.uuid4().hex[:8]}"
    append(database_url, tenant, 7)
    first = (await head(suite["export"], tenant)).log_checkpoint
    for i in (0, 1):
        await cosign(suite["export"], tenant, tree_size=7, cosignature=witness_line(first, i).decode())
    served = (await head(suite["export"], tenant)).log_checkpoint
    signed = served.signed_note.encode()
    their_log = aics_note.parse_vkey(served.log_verifier_key)
    their_witnesses = [aics_note.parse_vkey(k) for k in WITNESS_KEYS]
    now = int(time.time()) + 60
    note.require_cosignatures(signed, WITNESS_KEYS, 2, log_key=served.log_verifier_key)
    caught = 0
    for at in range(len(signed)):
        bad = bytearray(signed)
        bad[at] ^= 0x01
        try:
            note.require_cosignatures(bytes(bad), WITNESS_KEYS, 2, log_key=served.log_verifier_key)
        except (note.NoteError, ValueError):
            ours = False
        else:
            ours = True
        try:
            theirs = aics_checkpoint.verify_checkpoint(aics_note.parse_note(bytes(bad)), their_log, their_witnesses,
                                                       2, expected_origin=served.origin, now=now).ok
        except Exception:  # noqa: BLE001 - a parse refusal is a refusal
            theirs = False
        assert not ours and not theirs, f"a flipped bit at byte {at} of the note went unnoticed"
        caught += 1
    assert caught == len(signed)


async def test_the_publisher_keeps_checkpoints_without_being_asked(database_url):
    """An export service with AOS_CHECKPOINT_INTERVAL_S=1 keeps a checkpoint of a log that grew
    without any GetLedgerCheckpoint of its head; with 0 it publishes nothing by itself."""
    tenant = f"tenant-pub-{uuid.uuid4().hex[:8]}"
    conf = dataclasses.replace(settings(Path(tempfile.mkdtemp(prefix="aos-pub-"))), checkpoint_interval_s=1)
    server = build_server("export", service_modules()["export"].servicers, conf, login_url(database_url, "export"),
                          port=0)
    address = f"127.0.0.1:{await server.start()}"
    try:
        append(database_url, tenant, 6)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.ExportServiceStub(channel)
            for _ in range(100):
                try:
                    kept = await stub.GetLedgerCheckpoint(pb.GetLedgerCheckpointRequest(tree_size=6),
                                                          metadata=auth(tenant), timeout=10)
                    break
                except grpc.aio.AioRpcError as err:
                    assert err.code() == grpc.StatusCode.NOT_FOUND
                    await asyncio.sleep(0.2)
            else:
                raise AssertionError("no checkpoint was published within 20 s")
        assert kept.log_checkpoint.tree_size == 6
        note.open_checkpoint(kept.log_checkpoint.signed_note.encode(), kept.log_checkpoint.log_verifier_key)
    finally:
        await server.stop(grace=0)


async def test_a_kept_checkpoint_the_tree_no_longer_matches_is_data_loss(suite, database_url):
    """A checkpoint row kept with another root than the stored tree's (as if the tree had been
    rewritten under it) is never served as a checkpoint: DATA_LOSS, CHECKPOINT_TREE_MISMATCH."""
    tenant = f"tenant-mis-{uuid.uuid4().hex[:8]}"
    append(database_url, tenant, 2)
    origin = f"aos-evidence.local/ledger/{tenant}"
    body = note.Checkpoint(origin, 2, tlog.leaf_hash(b"another tree")).body().decode()
    with session(database_url, "aos_export", tenant) as conn:
        conn.execute("INSERT INTO checkpoint_notes (tenant_id, log, tree_size, root_hash, body, note, key_id) "
                     "VALUES (%s, 'ledger', 2, %s, %s, %s, '00000000')",
                     (tenant, tlog.leaf_hash(b"another tree"), body, body + "\n— x AAAAAAA=\n"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await head(suite["export"], tenant)
    assert (err.value.code(), reason(err.value)) == (grpc.StatusCode.DATA_LOSS, "CHECKPOINT_TREE_MISMATCH")
