"""A witness's core: cosign a log's new checkpoint only if it extends the last one cosigned.

Pure functions (no files, no network) that ``aos-evidence witness`` wraps: the witness keeps,
per log, the last checkpoint note it cosigned (its *state*); given a new checkpoint note
signed by the log and a consistency proof from the kept size to the new one, it checks the
log's signature, the origin, that the tree did not shrink or fork, and the proof
(``tlog.check_tree``), and only then returns its C2SP tlog-cosignature line and the note
to keep next. The rules follow C2SP tlog-witness: a first checkpoint (no state) is
accepted with an empty proof from size 0 (trust on first use, said so by ``first_use``);
an equal size must carry the same root; a smaller size, another root at the same size,
or a proof that fails are refused, and the state is left as it was.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aos_recording import note, tlog

# WitnessError reasons.
BAD_CHECKPOINT = "BAD_CHECKPOINT"  # the new note is no checkpoint signed by the log key, or of another origin
BAD_STATE = "BAD_STATE"            # the kept note does not verify under the log key (the state file was altered)
ROLLBACK = "ROLLBACK"              # the new tree is smaller than the one cosigned before
FORK = "FORK"                      # same size, another root: the log shows two histories
INCONSISTENT = "INCONSISTENT"      # the consistency proof does not verify
NO_STATE = "NO_STATE"              # no kept checkpoint, and first use was not allowed


class WitnessError(ValueError):
    """The witness refuses to cosign; ``reason`` is one of the constants above."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class Cosigned:
    """What the witness returns: its signature line, the checkpoint it cosigned, and the
    note to keep as its new state (the log's note with the cosignature added)."""

    line: bytes
    checkpoint: note.Checkpoint
    state: bytes


def _open(checkpoint_note: bytes, log_key: note.NoteVerifier, origin: str, reason: str) -> note.Checkpoint:
    try:
        return note.open_checkpoint(checkpoint_note, log_key, origin=origin)[0]
    except note.NoteError as exc:
        raise WitnessError(reason, str(exc)) from None


def cosign_checkpoint(state: bytes | None, new_note: bytes, proof: Sequence[bytes], *,
                      log_key: note.NoteVerifier | str, origin: str, name: str,
                      private_key: Ed25519PrivateKey, timestamp: int, first_use: bool = False) -> Cosigned:
    """Verify ``new_note`` against the kept ``state`` (None: nothing kept) with ``proof``
    (the log's consistency proof from the kept size to the new one) and cosign it as
    ``name`` at ``timestamp``. Raises ``WitnessError``; nothing changes then."""
    key = note.parse_verifier_key(log_key) if isinstance(log_key, str) else log_key
    new = _open(new_note, key, origin, BAD_CHECKPOINT)
    if new.size == 0 and new.root != tlog.EMPTY_ROOT:
        raise WitnessError(BAD_CHECKPOINT, "an empty tree's root is SHA-256 of nothing")
    if state is None:
        if not first_use:
            raise WitnessError(NO_STATE, f"no checkpoint of {origin} kept; first use not allowed")
        if proof:
            raise WitnessError(INCONSISTENT, "a first checkpoint takes an empty proof (from size 0)")
    else:
        old = _open(state, key, origin, BAD_STATE)
        if new.size < old.size:
            raise WitnessError(ROLLBACK, f"tree size {new.size} is below the cosigned {old.size}")
        if new.size == old.size:
            if new.root != old.root:
                raise WitnessError(FORK, f"two roots for tree size {new.size}")
            if proof:
                raise WitnessError(INCONSISTENT, "equal sizes take an empty proof")
        elif old.size > 0:
            try:
                tlog.check_tree(proof, new.size, new.root, old.size, old.root)
            except tlog.ProofError as exc:
                raise WitnessError(INCONSISTENT, str(exc)) from None
        elif proof:
            raise WitnessError(INCONSISTENT, "from size 0 the proof is empty")
    body, _ = note.split_note(new_note)
    line = note.cosign(body, name, private_key, timestamp)
    return Cosigned(line, new, note.add_signatures(new_note, [line]))
