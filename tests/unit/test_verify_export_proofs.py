"""A v3 manifest names the ledger checkpoint an export was built against and carries one proof
that every ledger entry in the artifact is a leaf of its tree; the offline verifier checks the
checkpoint (under a pinned log key and a k-of-n witness policy) and the proof, and an audit
path derived from it verifies with aics-tlog. A v2 manifest still verifies (without them)."""
from __future__ import annotations

import json

import pytest
from aics_tlog import tree as aics_tree
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aos_evidence.kinds import ExportFormat
from aos_recording import dsse, hashing, note, tlog, verify_export
from aos_recording.verify_export import LogPolicy, Verdict
from services.export import artifacts, bundles
from tests.unit.samples import ledger_entries

TENANT = "tenant-proofs"
ORIGIN = note.log_origin(note.DEFAULT_LOG_ORIGIN, "ledger", TENANT)
NOW = 1_765_000_000


def ledger(n: int) -> list[dict]:
    return ledger_entries(n, TENANT)


class World:
    """A ledger of 40 entries, its tree, the log's key and two witnesses, an export signing key."""

    def __init__(self) -> None:
        self.entries = ledger(40)
        self.leaves = [bytes.fromhex(e["content_hash"]) for e in self.entries]
        self.hashes = tlog.append_hashes(0, [tlog.leaf_hash(d) for d in self.leaves], lambda ix: [])
        self.log = Ed25519PrivateKey.generate()
        self.vkey = note.verifier_key(ORIGIN, self.log.public_key())
        self.witnesses = [(f"w{i}.example", Ed25519PrivateKey.generate()) for i in range(2)]
        self.witness_keys = tuple(note.cosigner_key(n, k.public_key()) for n, k in self.witnesses)
        self.key = dsse.SigningKey.generate()

    def read(self, indexes):
        return [self.hashes[i] for i in indexes]

    def note(self, size: int, root: bytes | None = None) -> bytes:
        return note.sign_checkpoint(note.Checkpoint(ORIGIN, size, root or tlog.tree_hash(size, self.read)), self.log)

    def cosigned(self, signed: bytes, k: int = 2) -> bytes:
        body, _ = note.split_note(signed)
        return note.add_signatures(signed, [note.cosign(body, n, w, NOW) for n, w in self.witnesses[:k]])

    def export(self, carried: list[dict], fmt: str = "JSON", size: int = 40, proof=None, signed_note=None,
               version: str = verify_export.MANIFEST_V3) -> tuple[bytes, str]:
        # a filter subject: the slice need not be contiguous
        head = {"format_version": bundles.FORMAT_VERSION, "tenant_id": TENANT, "scope": "AUDIT_SLICE",
                "subject": {"filter": {"entity_type": "POLICY_RULE"}}, "bundle_type": "EVIDENCE"}
        chunks: list[bytes] = []
        rendered = artifacts.render_slice(head, "audit_entry", iter([dict(r) for r in carried]), ExportFormat(fmt),
                                          bundles.RecordWriter(), self.key,
                                          artifacts.Sink(lambda n, data: chunks.append(data)))
        data = b"".join(chunks)
        manifest = {"format_version": version, "export_id": "exp_unit", "tenant_id": TENANT, "scope": "AUDIT_SLICE",
                    "format": fmt, "size": len(data), "checksum": hashing.sha256(data).hex(),
                    "records": rendered.records, "created_at": "2026-11-01T12:30:00.000000Z",
                    "signed_at": "2026-11-01T12:30:00.000000Z", "signed_by": self.key.public.key_id,
                    "contents": rendered.contents}
        if version == verify_export.MANIFEST_V3:
            seqs = [e["seq"] for e in carried]
            manifest["transparency_log"] = verify_export.transparency_section(
                ORIGIN, size, tlog.tree_hash(size, self.read), signed_note or self.note(size),
                proof if proof is not None else tlog.prove_records([s - 1 for s in seqs], size, self.read), len(seqs))
        envelope = dsse.envelope_json(dsse.sign_envelope(dsse.MANIFEST_PAYLOAD_TYPE,
                                                         hashing.canonical_json(manifest), self.key))
        return data, envelope

    def verify(self, data, envelope, **policy) -> verify_export.Verification:
        return verify_export.verify(data, envelope, [self.key.public], policy=LogPolicy(**policy))


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def checks(result) -> dict[str, verify_export.Check]:
    return {c.name: c for c in result.checks}


@pytest.mark.parametrize("fmt", ["JSON", "CSV", "ZIP"])
def test_an_export_proves_its_entries_against_a_cosigned_checkpoint(world, fmt):
    carried = world.entries[4:30:3]  # a filtered slice: scattered entries
    data, envelope = world.export(carried, fmt)
    plain = world.verify(data, envelope)
    assert plain.ok, plain.checks
    assert checks(plain)["inclusion"].passed and "not checked" in checks(plain)["checkpoint"].detail
    # the note fetched later by size, now with two cosignatures: 2-of-2 under the pinned log key
    later = world.cosigned(world.note(40))
    strict = world.verify(data, envelope, log_key=world.vkey, witnesses=world.witness_keys, min_witnesses=2,
                          not_after=NOW + 60, checkpoint=later)
    assert strict.ok, strict.checks
    assert "cosigned by 2 of the required 2" in checks(strict)["checkpoint"].detail
    # the note the manifest carries has no cosignature yet: the policy is not met with it
    unmet = world.verify(data, envelope, log_key=world.vkey, witnesses=world.witness_keys, min_witnesses=1)
    assert unmet.verdict is Verdict.TAMPERED and not checks(unmet)["checkpoint"].passed


def test_an_audit_path_from_the_bundle_verifies_with_aics_tlog(world):
    carried = world.entries[10:20]
    data, envelope = world.export(carried)
    manifest = json.loads(dsse.verify_envelope(envelope, [world.key.public], dsse.MANIFEST_PAYLOAD_TYPE))
    section = manifest["transparency_log"]
    leaves = [(e["seq"], e["content_hash"]) for e in json.loads(data)["records"]]
    root = tlog.tree_hash(40, world.read)
    for seq, content in leaves:
        path = verify_export.inclusion_proof(leaves, section, seq)
        assert aics_tree.verify_leaf_inclusion(bytes.fromhex(content), seq - 1, 40, path, root)
        assert path == tlog.prove_record(40, seq - 1, world.read)


def test_a_signed_export_of_another_history_is_caught(world):
    """The exporter signs honestly-shaped manifests, but the entries are not the log's, the
    note is not the manifest's tree, or the log key / witnesses are not the pinned ones."""
    carried = world.entries[:8]
    # entries of another history (a rewritten entry 3), proof computed over that history
    forged = [dict(e) for e in carried]
    forged[2] = {**forged[2], "content_hash": hashing.sha256(b"rewritten").hex()}
    other = tlog.append_hashes(0, [tlog.leaf_hash(bytes.fromhex(e["content_hash"])) for e in forged] +
                               [tlog.leaf_hash(d) for d in world.leaves[8:]], lambda ix: [])
    proof = tlog.prove_records(range(8), 40, lambda ix: [other[i] for i in ix])
    data, envelope = world.export(forged, proof=proof)
    result = world.verify(data, envelope)
    assert not checks(result)["inclusion"].passed
    # a proof for fewer entries than the artifact carries
    data, envelope = world.export(carried, proof=tlog.prove_records(range(7), 40, world.read))
    assert not checks(world.verify(data, envelope))["inclusion"].passed
    # the note is of another size than the manifest's tree
    data, envelope = world.export(carried, signed_note=world.note(39))
    assert not checks(world.verify(data, envelope))["checkpoint"].passed
    data, envelope = world.export(carried)
    # a note signed by another log key, or a pinned log key that is not the log's
    impostor = Ed25519PrivateKey.generate()
    foreign = note.sign_checkpoint(note.Checkpoint(ORIGIN, 40, tlog.tree_hash(40, world.read)), impostor)
    assert not checks(world.verify(data, envelope, log_key=world.vkey, checkpoint=foreign))["checkpoint"].passed
    assert not checks(world.verify(data, envelope, log_key=note.verifier_key(ORIGIN, impostor.public_key()))
                      )["checkpoint"].passed
    # every byte of the cosigned note matters under the 2-of-2 policy
    later = world.cosigned(world.note(40))
    for at in range(len(later)):
        bad = bytearray(later)
        bad[at] ^= 0x01
        result = world.verify(data, envelope, log_key=world.vkey, witnesses=world.witness_keys, min_witnesses=2,
                              not_after=NOW + 60, checkpoint=bytes(bad))
        assert not result.ok, f"byte {at} of the checkpoint note"


def test_a_v2_manifest_verifies_as_before_but_not_under_a_log_policy(world):
    data, envelope = world.export(world.entries[:5], version="aos.export-manifest/v2")
    assert world.verify(data, envelope).ok
    required = world.verify(data, envelope, log_key=world.vkey)
    assert not required.ok and "names no checkpoint" in checks(required)["checkpoint"].detail


def test_the_command_takes_the_policy(world, tmp_path, capsys):
    data, envelope = world.export(world.entries[:6])
    (tmp_path / "a.json").write_bytes(data)
    (tmp_path / "e.json").write_text(envelope)
    (tmp_path / "cp").write_bytes(world.cosigned(world.note(40), k=1))
    base = [str(tmp_path / "a.json"), "--envelope", str(tmp_path / "e.json"), "--key",
            world.key.public.raw.hex(), "--log-key", world.vkey, "--checkpoint", str(tmp_path / "cp")]
    for vkey in world.witness_keys:
        base += ["--witness", vkey]
    assert verify_export.main([*base, "--min-witnesses", "1"]) == 0
    assert verify_export.main([*base, "--min-witnesses", "2"]) == Verdict.TAMPERED.exit_code
    assert verify_export.main([*base, "--min-witnesses", "3"]) == Verdict.UNUSABLE_INPUT.exit_code
    assert verify_export.main([*base[:-2], "--log-key", "nonsense"]) == Verdict.UNUSABLE_INPUT.exit_code
