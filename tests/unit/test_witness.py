"""aos_recording.witness: a witness cosigns a checkpoint only when it extends the last one it
cosigned; its cosignatures meet our k-of-n policy and aics-tlog's witness policy."""
import pytest
from aics_tlog import checkpoint as aics_checkpoint, note as aics_note
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aos_recording import note, tlog, witness

ORIGIN = note.log_origin(note.DEFAULT_LOG_ORIGIN, "ledger", "tenant-w")
W = "witness.example/w1"


class Log:
    def __init__(self):
        self.key = Ed25519PrivateKey.generate()
        self.vkey = note.verifier_key(ORIGIN, self.key.public_key())
        self.hashes, self.size = [], 0

    def append(self, count):
        self.hashes += tlog.append_hashes(self.size, [tlog.leaf_hash(b"%d" % (self.size + i)) for i in range(count)],
                                          lambda ix: [self.hashes[i] for i in ix])
        self.size += count

    def read(self, ix):
        return [self.hashes[i] for i in ix]

    def checkpoint(self, size=None, root=None):
        size = self.size if size is None else size
        cp = note.Checkpoint(ORIGIN, size, root or tlog.tree_hash(size, self.read))
        return note.sign_checkpoint(cp, self.key)

    def proof(self, old, new=None):
        new = self.size if new is None else new
        return tlog.prove_tree(new, old, self.read) if 0 < old < new else []


@pytest.fixture
def setup():
    return Log(), Ed25519PrivateKey.generate()


def cosign(log, key, state, new_note, proof, at=1_765_000_000, **kw):
    return witness.cosign_checkpoint(state, new_note, proof, log_key=log.vkey, origin=ORIGIN, name=W,
                                     private_key=key, timestamp=at, **kw)


def refused(reason, *args, **kw):
    with pytest.raises(witness.WitnessError) as exc:
        cosign(*args, **kw)
    assert exc.value.reason == reason


def test_growth_is_cosigned_and_the_cosignature_verifies_elsewhere(setup):
    log, key = setup
    log.append(5)
    refused(witness.NO_STATE, log, key, None, log.checkpoint(), [])
    first = cosign(log, key, None, log.checkpoint(), [], first_use=True)
    state = first.state
    for grow in (1, 2, 13, 64):
        old = log.size
        log.append(grow)
        done = cosign(log, key, state, log.checkpoint(), log.proof(old))
        assert done.checkpoint.size == log.size
        state = done.state
    # the same checkpoint again is fine (nothing new); the cosignature checks out with ours...
    state = cosign(log, key, state, log.checkpoint(), []).state
    wkey = note.cosigner_key(W, key.public_key())
    [got] = note.require_cosignatures(state, [wkey], 1, log_key=log.vkey)
    assert got.name == W
    # ...and with aics-tlog's witness policy
    result = aics_checkpoint.verify_checkpoint(aics_note.parse_note(state), aics_note.parse_vkey(log.vkey),
                                               [aics_note.parse_vkey(wkey)], 1, now=1_765_000_010)
    assert result.ok, result.error


def test_rollback_fork_bad_proof_wrong_log_are_refused(setup):
    log, key = setup
    log.append(10)
    state = cosign(log, key, None, log.checkpoint(), [], first_use=True).state
    log.append(6)
    new_note, proof = log.checkpoint(), log.proof(10)
    refused(witness.ROLLBACK, log, key, state, log.checkpoint(size=9), [])
    refused(witness.FORK, log, key, state, log.checkpoint(size=10, root=tlog.leaf_hash(b"other")), [])
    refused(witness.INCONSISTENT, log, key, state, new_note, proof[:-1])
    refused(witness.INCONSISTENT, log, key, state, new_note, [bytes([proof[0][0] ^ 1]) + proof[0][1:]] + proof[1:])
    # a fork at a larger size: a root not extending the cosigned tree fails the honest proof
    refused(witness.INCONSISTENT, log, key, state, log.checkpoint(root=tlog.leaf_hash(b"fork")), proof)
    impostor = Log()
    impostor.append(16)
    refused(witness.BAD_CHECKPOINT, log, key, state, impostor.checkpoint(), proof)
    refused(witness.BAD_STATE, log, key, impostor.checkpoint(size=10), new_note, proof)
    other_origin = note.sign_checkpoint(note.Checkpoint(ORIGIN + "x", 16, tlog.tree_hash(16, log.read)), log.key)
    refused(witness.BAD_CHECKPOINT, log, key, state, other_origin, proof)
    refused(witness.BAD_CHECKPOINT, log, key, None, log.checkpoint(size=0, root=tlog.leaf_hash(b"x")), [],
            first_use=True)
    # and the honest one still goes through
    assert cosign(log, key, state, new_note, proof).checkpoint.size == 16
