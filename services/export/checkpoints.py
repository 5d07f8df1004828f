"""Ledger checkpoints and the keys that sign them.

A checkpoint is the tenant's audit ledger head (seq, chain hash) in a DSSE envelope
signed by the service's active key; it is recorded, because retention keeps a chain
segment until a signed statement covers it (migrations 0008 and 0010).
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy.engine import Connection

from aos.evidence.v1 import bundle_pb2, integrity_pb2
from aos_evidence import queries as evidence
from aos_recording import dsse
from aos_recording.hashing import canonical_json, rfc3339
from aos_runtime.evidence import timestamp
from services.export import store


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
