"""Ledger checkpoints and the keys that sign them.

Two forms. The DSSE statement: the tenant's audit ledger head (seq, chain hash) in a DSSE
envelope signed by the service's active key; it is recorded, because retention keeps a
chain segment until a signed statement covers it (migrations 0008 and 0010).

The C2SP checkpoint of each of the tenant's transparency logs (SPEC §5; the ledger and
the export chain, Merkle trees kept by the database, migration 0013): a tlog-checkpoint
(origin ``<AOS_LOG_ORIGIN>/<log>/<tenant>``, tree size, base64 root computed from the
stored hashes in O(log n) reads) in a signed-note signed under the origin, kept per size
(migration 0016) with the witnesses' cosignatures, which are served with it.

The log key is the export signing ring's active key. Auditors already pin that key
(ListSigningKeys, out of band) and the ring already has what a log key needs: one secret
per deployment shared by every instance, a development default, rotation with retired
keys kept verifiable. A second secret to deploy and rotate would add no assurance here:
whoever holds the export key can already sign what an auditor trusts. The log's verifier
key (the vkey witnesses pin) is that public key under the origin's name. When the ring
rotates, a kept note signed by the retired key is served with the active key's signature
added (its text does not change), so both pins verify it.
"""
from __future__ import annotations

import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy.engine import Connection

from aos.evidence.v1 import bundle_pb2, integrity_pb2
from aos_evidence import queries as evidence
from aos_recording import dsse, note, tlog, verify_export
from aos_recording.hashing import canonical_json, rfc3339
from aos_runtime import faults
from aos_runtime.evidence import timestamp
from services.export import store

LOGS = {integrity_pb2.TRANSPARENCY_LOG_LEDGER: "ledger", integrity_pb2.TRANSPARENCY_LOG_EXPORTS: "exports"}
LOG_ENUM = {name: number for number, name in LOGS.items()}


def sign(conn: Connection, tenant: str, key: dsse.SigningKey) -> integrity_pb2.LedgerCheckpoint:
    """Signs the tenant's ledger head with ``key`` and records the signed statement (the
    evidence retention needs before it drops that chain segment). A tenant with no ledger
    yet gets a signed statement of seq 0 and the zero hash, which is not recorded."""
    head = evidence.ledger_head(conn, tenant)
    issued = datetime.now(timezone.utc)
    seq: int = head["seq"] if head else 0
    chain_hash = bytes(head["chain_hash"]).hex() if head else "00" * 32
    statement = {"tenant_id": tenant, "seq": seq, "chain_hash": chain_hash, "issued_at": rfc3339(issued)}
    envelope = dsse.envelope_json(dsse.sign_envelope(dsse.CHECKPOINT_PAYLOAD_TYPE, canonical_json(statement), key))
    if head:
        store.record_checkpoint(conn, seq, bytes(head["chain_hash"]), envelope)
    return integrity_pb2.LedgerCheckpoint(tenant_id=tenant, seq=seq, chain_hash=chain_hash,
                                          issued_at=timestamp(issued), dsse_envelope=envelope)


def signing_key_message(key: dsse.PublicKey) -> bundle_pb2.SigningKey:
    """A key of the ring as ListSigningKeys answers it (status and validity window included)."""
    message = bundle_pb2.SigningKey(key_id=key.key_id, algorithm="ed25519", public_key=key.raw,
                                    valid_from=timestamp(key.valid_from),
                                    status=f"SIGNING_KEY_STATUS_{key.status}")  # a name outside the enum raises
    if key.valid_until is not None:
        message.valid_until.CopyFrom(timestamp(key.valid_until))
    return message


# --- C2SP checkpoints -------------------------------------------------------------------------

@dataclass(frozen=True)
class LogSigner:
    """Signs the tenant logs' checkpoints: the ring's active key, under each log's origin."""

    key: dsse.SigningKey
    base: str  # AOS_LOG_ORIGIN

    def origin(self, log: str, tenant: str) -> str:
        return note.log_origin(self.base, log, tenant)

    def verifier(self, origin: str) -> note.NoteVerifier:
        return note.NoteVerifier.ed25519(origin, self.key.public.raw)


def _reader(conn: Connection, tenant: str, log: str) -> tlog.HashReader:
    """The log's stored hashes, by index; a missing one is the store's fault (LogHashesMissing)."""
    def read(indexes: Sequence[int]) -> list[bytes]:
        found = store.tlog_hashes(conn, tenant, log, list(indexes))
        if len(found) != len(indexes):
            present = set(store.tlog_hash_indexes(conn, tenant, log, list(indexes)))
            raise faults.LogHashesMissing(log, [i for i in indexes if i not in present])
        return found
    return read


def tree_root(conn: Connection, tenant: str, log: str, size: int) -> bytes:
    """The RFC 6962 root of the log's first ``size`` leaves, from O(log n) stored hashes."""
    return tlog.tree_hash(size, _reader(conn, tenant, log))


def publish(conn: Connection, tenant: str, log: str, signer: LogSigner,
            size: int | None = None) -> integrity_pb2.LogCheckpoint:
    """Signs the log's checkpoint at ``size`` (None: its size now) and keeps it (the first note
    at a size stays; an empty log's is not kept); answers the kept note with its cosignatures.
    A tree whose root at a kept size changed raises ``faults.CheckpointTreeMismatch``."""
    if size is None:
        size = store.tlog_size(conn, tenant, log)
    root = tree_root(conn, tenant, log, size)
    origin = signer.origin(log, tenant)
    checkpoint = note.Checkpoint(origin, size, root)
    signed = note.sign_checkpoint(checkpoint, signer.key.private)
    if size == 0:  # a log with no leaf yet: signed and answered, not kept (nothing to witness or prove)
        return served(conn, {"tenant_id": tenant, "log": log, "tree_size": 0, "root_hash": root,
                             "body": checkpoint.body().decode(), "note": signed.decode(),
                             "key_id": signer.verifier(origin).key_id.hex(),
                             "signed_at": datetime.now(timezone.utc)}, signer)
    kept = store.keep_checkpoint_note(conn, tenant, log, size, root, checkpoint.body().decode(), signed.decode(),
                                      signer.verifier(origin).key_id.hex())
    if bytes(kept["root_hash"]) != root:
        raise faults.CheckpointTreeMismatch(log, size)
    return served(conn, kept, signer)


def kept(conn: Connection, tenant: str, log: str, size: int) -> Mapping[str, Any] | None:
    """The checkpoint kept at ``size``, if any (its row)."""
    return store.checkpoint_note(conn, tenant, log, size)


def served(conn: Connection, row: Mapping[str, Any], signer: LogSigner) -> integrity_pb2.LogCheckpoint:
    """A kept checkpoint as answered: its note, the active key's signature added if another
    key signed it (rotation), then every cosignature kept, in the order received."""
    origin = signer.origin(row["log"], row["tenant_id"])
    verifier = signer.verifier(origin)
    signed = row["note"].encode()
    if row["key_id"] != verifier.key_id.hex():
        signed = note.add_signatures(signed, [note.note_signature(row["body"].encode(), origin, signer.key.private)])
    lines = store.cosignature_lines(conn, row["tenant_id"], row["log"], row["tree_size"])
    if lines:
        signed = note.add_signatures(signed, [line.encode() for line in lines])
    return integrity_pb2.LogCheckpoint(
        origin=origin, log=LOG_ENUM[row["log"]], tree_size=row["tree_size"], root_hash=bytes(row["root_hash"]),
        signed_note=signed.decode(), log_verifier_key=verifier.vkey(), signed_at=timestamp(row["signed_at"]),
        cosignature_count=len(lines))


def publish_all(conn: Connection) -> list[Mapping[str, Any]]:
    """The logs that grew past their newest kept checkpoint (every tenant's)."""
    return store.unpublished_logs(conn)


def manifest_section(conn: Connection, tenant: str, signer: LogSigner, size: int,
                     seqs: Sequence[int]) -> dict[str, Any]:
    """A v3 export manifest's ``transparency_log``: the ledger checkpoint at ``size`` (the
    export's bound, signed and kept now if it was not already) and one proof that the
    ledger entries ``seqs`` the artifact carries are leaves of its tree; O(k log n) stored
    hashes read once."""
    checkpoint = publish(conn, tenant, "ledger", signer, size)
    row = kept(conn, tenant, "ledger", size)
    # the note as the log signed it (an empty ledger's is not kept, and has no cosignature)
    signed_note = row["note"] if row is not None else checkpoint.signed_note
    # Record indexes as an array (8 bytes each), not a list of ints: 200,000 of them at an export's end.
    indexes = array.array("q", (s - 1 for s in seqs))
    proof = tlog.prove_records(indexes, size, _reader(conn, tenant, "ledger")) if seqs else []
    return verify_export.transparency_section(checkpoint.origin, size, checkpoint.root_hash, signed_note.encode(),
                                              proof, len(seqs))
