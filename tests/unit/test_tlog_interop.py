"""Interop: our proofs, checkpoints, notes and cosignatures checked by an implementation not
written here, aics-tlog (PyPI; C2SP tlog-checkpoint / signed-note / tlog-cosignature and
RFC 9162 verifiers and builders, Apache-2.0), and theirs checked by ours.

aics-tlog is installed from requirements-interop.lock (see the note there)."""
import random

import aics_tlog
import pytest
from aics_tlog import checkpoint as aics_checkpoint, cosign as aics_cosign, note as aics_note, tree as aics_tree
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aos_recording import note, tlog

ORIGIN = note.log_origin(note.DEFAULT_LOG_ORIGIN, "ledger", "tenant-interop")
NOW = 1_765_000_000


class Log:
    """A log of n leaves in our stored-hash layout."""

    def __init__(self, leaves):
        self.leaves = list(leaves)
        self.hashes = tlog.append_hashes(0, [tlog.leaf_hash(d) for d in self.leaves], lambda ix: [])

    def read(self, indexes):
        return [self.hashes[i] for i in indexes]


def test_the_library_is_the_one_pinned():
    assert aics_tlog.__version__ == "0.2.1"


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 9, 31, 64, 100, 257])
def test_our_proofs_verify_with_aics_and_theirs_equal_ours(size):
    rng = random.Random(size)
    leaves = [rng.randbytes(32) for _ in range(size)]
    ours = Log(leaves)
    theirs = aics_tree.MerkleTree(leaves)
    root = tlog.tree_hash(size, ours.read)
    assert theirs.root() == root
    for n in sorted({0, size // 2, size - 1, rng.randrange(size)}):
        proof = tlog.prove_record(size, n, ours.read)
        assert aics_tree.verify_leaf_inclusion(leaves[n], n, size, proof, root)
        assert theirs.inclusion_proof(n, size) == proof
        # and a proof of theirs for an earlier tree verifies with ours
        if n + 1 < size:
            tlog.check_record(theirs.inclusion_proof(n, n + 1), n + 1, theirs.root(n + 1), n, tlog.leaf_hash(leaves[n]))
        tampered = [bytes([proof[0][0] ^ 1]) + proof[0][1:]] + proof[1:] if proof else None
        if tampered:
            assert not aics_tree.verify_leaf_inclusion(leaves[n], n, size, tampered, root)
    for old in sorted({1, size // 3 or 1, size - 1 or 1, size}):
        proof = tlog.prove_tree(size, old, ours.read)
        old_root = tlog.tree_hash(old, ours.read)
        assert aics_tree.verify_consistency(old, size, old_root, root, proof)
        assert theirs.consistency_proof(old, size) == proof
        if proof:
            assert not aics_tree.verify_consistency(old, size, old_root, root, proof[:-1])


def test_our_signed_checkpoint_verifies_with_aics():
    log = Ed25519PrivateKey.generate()
    ours = Log([b"entry %d" % i for i in range(42)])
    cp = note.Checkpoint(ORIGIN, 42, tlog.tree_hash(42, ours.read))
    signed = note.sign_checkpoint(cp, log)
    vkey = note.verifier_key(ORIGIN, log.public_key())
    their_key = aics_note.parse_vkey(vkey)
    assert aics_note.format_vkey(aics_note.vkey_from_ed25519(ORIGIN, log.public_key())) == vkey
    parsed = aics_note.parse_note(signed)
    assert aics_note.verify_note(parsed, [their_key])
    result = aics_checkpoint.verify_checkpoint(parsed, their_key, expected_origin=ORIGIN)
    assert result.ok and result.log_ok and (result.origin, result.size, result.root) == (ORIGIN, 42, cp.root)
    their_cp = aics_checkpoint.parse_checkpoint(parsed.text)
    assert (their_cp.origin, their_cp.size, their_cp.root) == (cp.origin, cp.size, cp.root)
    # a tampered root fails there too
    forged = signed.replace(note.Checkpoint(ORIGIN, 42, cp.root).body().split(b"\n")[2],
                            note.Checkpoint(ORIGIN, 42, tlog.leaf_hash(b"x")).body().split(b"\n")[2])
    assert not aics_checkpoint.verify_checkpoint(aics_note.parse_note(forged), their_key).ok


def test_our_cosignatures_meet_an_aics_witness_policy():
    log, w1, w2 = (Ed25519PrivateKey.generate() for _ in range(3))
    cp = note.Checkpoint(ORIGIN, 9, tlog.leaf_hash(b"9"), ("an extension line",))
    signed = note.sign_checkpoint(cp, log)
    full = note.add_signatures(signed, [note.cosign(cp.body(), "w1.example/w", w1, NOW),
                                        note.cosign(cp.body(), "w2.example/w", w2, NOW + 1)])
    their_log = aics_note.parse_vkey(note.verifier_key(ORIGIN, log.public_key()))
    their_witnesses = [aics_note.parse_vkey(note.cosigner_key("w1.example/w", w1.public_key())),
                       aics_note.parse_vkey(note.cosigner_key("w2.example/w", w2.public_key()))]
    assert aics_note.format_vkey(aics_cosign.cosignature_vkey("w1.example/w", w1.public_key())) == \
        note.cosigner_key("w1.example/w", w1.public_key())
    result = aics_checkpoint.verify_checkpoint(aics_note.parse_note(full), their_log, their_witnesses, 2, now=NOW + 5)
    assert result.ok, result.error
    assert result.witnesses == ["w1.example/w", "w2.example/w"]
    assert result.timestamps == {"w1.example/w": NOW, "w2.example/w": NOW + 1}


def test_their_checkpoints_and_cosignatures_verify_with_ours():
    log, w1, w2 = (Ed25519PrivateKey.generate() for _ in range(3))
    leaves = [b"leaf %d" % i for i in range(13)]
    theirs = aics_tree.MerkleTree(leaves)
    their_cp = aics_checkpoint.Checkpoint(origin=ORIGIN, size=13, root=theirs.root())
    their_note = aics_checkpoint.sign_checkpoint(their_cp, log, ORIGIN)
    sigs = list(their_note.signatures)
    for name, key, at in (("w1.example/w", w1, NOW), ("w2.example/w", w2, NOW + 2)):
        _, line = aics_cosign.sign_cosignature(key, name, at, ORIGIN, 13, theirs.root())
        sigs.append(line)
    text = aics_note.Note(text=their_note.text, signatures=tuple(sigs)).to_bytes()
    cp, _ = note.open_checkpoint(text, note.verifier_key(ORIGIN, log.public_key()), origin=ORIGIN)
    assert cp == note.Checkpoint(ORIGIN, 13, tlog.tree_hash(13, Log(leaves).read))
    assert cp.body() == their_cp.text().encode()
    got = note.require_cosignatures(text, [note.cosigner_key("w1.example/w", w1.public_key()),
                                           note.cosigner_key("w2.example/w", w2.public_key())], 2,
                                    log_key=note.verifier_key(ORIGIN, log.public_key()))
    assert [(v.name, v.timestamp) for v in got] == [("w1.example/w", NOW), ("w2.example/w", NOW + 2)]


def test_both_refuse_the_same_malformed_notes():
    log = Ed25519PrivateKey.generate()
    cp = note.Checkpoint(ORIGIN, 3, tlog.leaf_hash(b"3"))
    signed = note.sign_checkpoint(cp, log)
    vkey = note.verifier_key(ORIGIN, log.public_key())
    their_key = aics_note.parse_vkey(vkey)
    body, lines = note.split_note(signed)
    cases = {
        "duplicate known line": body + b"\n" + lines[0] + lines[0],
        "no blank line": body + lines[0],
        "control character": signed.replace(b"\n3\n", b"\n3\r\n"),
        "not UTF-8": b"\xff" + signed,
    }
    for what, bad in cases.items():
        with pytest.raises(note.NoteError):
            note.open_checkpoint(bad, vkey)
        try:
            ok = aics_checkpoint.verify_checkpoint(aics_note.parse_note(bad), their_key).ok
        except ValueError:
            ok = False
        assert not ok, what
