"""``witness``: cosign a tenant log's C2SP checkpoint only if it extends the last one cosigned.

A witness (C2SP tlog-witness's rules, through aos_recording.witness) keeps, per log, the last
checkpoint note it cosigned (its *state*, a file in --state DIR named after the log's origin).
The logs it witnesses are the ones whose verifier key is pinned with --log-key (repeatable):
the key's name is the log's origin, ``<base>/ledger/<tenant>`` (the audit ledger) or
``<base>/exports/<tenant>`` (the export chain). For each, a run fetches the log's checkpoint
(GetLedgerCheckpoint with that ``log``) and the consistency proof from the kept size to the
new one (GetConsistencyProof, same ``log``), verifies the log's signature under the pinned
key, the origin, that the tree neither shrank nor forked and the proof; only then it cosigns
(cosignature/v1), keeps the new state (before anything leaves: a cosignature given out is
always one the state remembers) and submits the cosignature (AddCheckpointCosignature, same
``log``). A refusal (rollback, fork, bad proof, bad signature) leaves that log's state alone;
the other logs are still witnessed, and the exit status is 1 if any log was refused.

Output (--json): with one --log-key, that log's document (as before the export log was
witnessed); with several, ``{"cosigned": <all cosigned>, "logs": [one document per log]}``.

The client policy beside it: ``checked_checkpoint`` verifies a served checkpoint under a
pinned log key and a k-of-n witness policy (--witness VKEY … --min-witnesses K).
"""
from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from aos.evidence.v1 import integrity_pb2
from aos.export.v1 import export_service_pb2 as export_pb
from aos.logs.v1 import audit_ledger_service_pb2 as audit_pb
from aos_cli.client import EXIT_FAILED, EXIT_OK, UsageError
from aos_cli.context import Context
from aos_recording import note, witness

FUTURE_SKEW_S = 600  # a cosignature dated later than now plus this is not counted


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    command = sub.add_parser(
        "witness", parents=[common],
        help="cosign the ledger's (and the export log's) checkpoint if it is consistent with the last one "
             "this witness cosigned",
        description="For each log pinned with --log-key (the tenant's ledger, its export chain or both): fetch "
                    "its C2SP checkpoint and the consistency proof from the size this witness last cosigned, "
                    "verify both offline, cosign (C2SP tlog-cosignature) and submit; refuses (exit 1) on a "
                    "rollback or a fork and keeps that log's state unchanged.")
    command.add_argument("--log-key", metavar="VKEY", required=True, action="append",
                         help="a log's verifier key, pinned out of band (<origin>+<hex id>+<base64 key>); its "
                              "origin (<base>/ledger/<tenant> or <base>/exports/<tenant>) says which log. "
                              "Repeat to witness both logs")
    command.add_argument("--key", metavar="FILE", type=Path, required=True,
                         help="the witness's Ed25519 private key (PEM, PKCS#8)")
    command.add_argument("--name", metavar="NAME", required=True,
                         help="the witness's key name (as in its verifier key, e.g. witness.example.org)")
    command.add_argument("--state", metavar="DIR", type=Path, required=True,
                         help="where the last cosigned checkpoint of each log is kept")
    command.add_argument("--first-use", action="store_true",
                         help="with no kept state, accept the current checkpoint (trust on first use)")
    command.add_argument("--new-key", action="store_true",
                         help="create --key (mode 0600) if it does not exist")
    command.set_defaults(handler=witness_command)


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """--log-key / --witness / --min-witnesses: the k-of-n policy for commands that accept checkpoints."""
    parser.add_argument("--log-key", metavar="VKEY",
                        help="the log's verifier key, pinned out of band; the checkpoint must verify under it")
    parser.add_argument("--witness", metavar="VKEY", action="append", default=[],
                        help="a witness's cosignature/v1 verifier key (repeat for each)")
    parser.add_argument("--min-witnesses", metavar="K", type=int, default=0,
                        help="at least K distinct --witness keys must have cosigned the checkpoint")


def witness_keys(vkeys: Sequence[str]) -> list[note.NoteVerifier]:
    keys = []
    for vkey in vkeys:
        try:
            key = note.parse_verifier_key(vkey)
        except (note.NoteError, ValueError) as exc:
            raise UsageError(f"--witness {vkey[:60]!r}: not a verifier key: {exc}") from None
        if key.sig_type != note.SIG_COSIGNATURE:
            raise UsageError(f"--witness {key.name}: a witness key is a cosignature/v1 (type 0x04) key")
        keys.append(key)
    return keys


def log_key(vkey: str) -> note.NoteVerifier:
    try:
        key = note.parse_verifier_key(vkey)
    except (note.NoteError, ValueError) as exc:
        raise UsageError(f"--log-key: not a verifier key: {exc}") from None
    if key.sig_type != note.SIG_ED25519:
        raise UsageError("--log-key: a log key is an Ed25519 note key (type 0x01)")
    return key


def checked_checkpoint(signed_note: str, args: argparse.Namespace, now: int | None = None
                       ) -> tuple[note.Checkpoint, list[note.VerifiedSignature]]:
    """A served checkpoint under the policy of ``add_policy_arguments``: the log's signature under
    --log-key (required when a policy is asked), and at least --min-witnesses distinct --witness
    keys' cosignatures (none dated past now + FUTURE_SKEW_S). Raises note.NoteError."""
    if args.min_witnesses < 0 or args.min_witnesses > len(args.witness):
        raise UsageError(f"--min-witnesses must be between 0 and the {len(args.witness)} --witness keys given")
    if args.log_key is None:
        raise UsageError("--log-key is required to check a checkpoint")
    key = log_key(args.log_key)
    checkpoint, _ = note.open_checkpoint(signed_note.encode(), key, origin=key.name)
    cosigned: list[note.VerifiedSignature] = []
    if args.min_witnesses:
        not_after = (int(time.time()) if now is None else now) + FUTURE_SKEW_S
        cosigned = note.require_cosignatures(signed_note.encode(), witness_keys(args.witness), args.min_witnesses,
                                             not_after=not_after)
    return checkpoint, cosigned


def witnessed_head(ctx: Context, args: argparse.Namespace, result,
                   log: integrity_pb2.TransparencyLog = integrity_pb2.TRANSPARENCY_LOG_LEDGER
                   ) -> note.Checkpoint | None:
    """With --log-key: the ``log``'s C2SP checkpoint as served now, checked under the policy
    (recorded in ``result`` as the "checkpoint" check; None when it fails). Without: None and
    nothing recorded (the commands then rely on the service's own roots, and say so)."""
    if args.log_key is None:
        if args.witness or args.min_witnesses:
            raise UsageError("--witness and --min-witnesses need --log-key (the log's verifier key)")
        return None
    served = ctx.client.exports.GetLedgerCheckpoint(export_pb.GetLedgerCheckpointRequest(
        log=log)).log_checkpoint
    try:
        checkpoint, cosigned = checked_checkpoint(served.signed_note, args)
    except note.NoteError as exc:
        result.add("checkpoint", False, f"the served checkpoint fails the policy: {exc}")
        return None
    witnesses = (f"; cosigned by {len({c.public_key for c in cosigned})} of the required {args.min_witnesses} "
                 f"witnesses ({', '.join(sorted({c.name for c in cosigned}))})" if args.min_witnesses else "")
    result.add("checkpoint", True, f"size {checkpoint.size} signed by the pinned log key{witnesses}")
    return checkpoint


def _load_or_create_key(path: Path, create: bool) -> Ed25519PrivateKey:
    if not path.exists():
        if not create:
            raise UsageError(f"--key {path}: no such file (--new-key creates one)")
        key = Ed25519PrivateKey.generate()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        except OSError as exc:
            raise UsageError(f"cannot create {path}: {exc.strerror or exc}") from None
        return key
    try:
        loaded = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"--key {path}: not an unencrypted PEM private key: {exc}") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise UsageError(f"--key {path}: a witness key is Ed25519, not {type(loaded).__name__}")
    return loaded


def state_file(directory: Path, origin: str) -> Path:
    """The state of one log: its origin, made a file name."""
    return directory / (origin.replace("/", "_") + ".checkpoint")


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


LOG_BY_KIND = {"ledger": integrity_pb2.TRANSPARENCY_LOG_LEDGER, "exports": integrity_pb2.TRANSPARENCY_LOG_EXPORTS}


def witnessed_log(key: note.NoteVerifier) -> integrity_pb2.TransparencyLog:
    """Which log a pinned key is for, from its origin ``<base>/<kind>/<tenant>`` (SPEC §5)."""
    parts = key.name.rsplit("/", 2)
    if len(parts) != 3 or parts[1] not in LOG_BY_KIND or not parts[0]:
        raise UsageError(f"--log-key {key.name}: the origin names no log (<base>/ledger/<tenant> or "
                         f"<base>/exports/<tenant>)")
    return LOG_BY_KIND[parts[1]]


def witness_command(args: argparse.Namespace, ctx: Context) -> int:
    logs: list[tuple[note.NoteVerifier, integrity_pb2.TransparencyLog]] = []
    for vkey in args.log_key:
        key = log_key(vkey)
        which = witnessed_log(key)
        if any(which == other for _, other in logs):
            raise UsageError(f"--log-key: two keys for the {integrity_pb2.TransparencyLog.Name(which)} log")
        logs.append((key, which))
    private = _load_or_create_key(args.key, args.new_key)
    try:
        own = note.cosigner_key(args.name, private.public_key())
    except ValueError as exc:
        raise UsageError(f"--name {args.name!r}: {exc}") from None
    try:
        args.state.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--state {args.state}: {exc.strerror or exc}") from None
    docs = [witness_one(args, ctx, key, which, private, own) for key, which in logs]
    cosigned = all(doc["cosigned"] for doc in docs)
    if ctx.out.json_mode:
        ctx.out.document(docs[0] if len(docs) == 1 else {"cosigned": cosigned, "logs": docs})
    return EXIT_OK if cosigned else EXIT_FAILED


def witness_one(args: argparse.Namespace, ctx: Context, log: note.NoteVerifier,
                which: integrity_pb2.TransparencyLog, private: Ed25519PrivateKey, own: str) -> dict:
    """Witness one log (its state file, its checkpoint, its proof); the document of the outcome,
    printed here in text mode."""
    origin = log.name
    kind = integrity_pb2.TransparencyLog.Name(which).removeprefix("TRANSPARENCY_LOG_").lower()
    kept_path = state_file(args.state, origin)
    try:
        state = kept_path.read_bytes() if kept_path.exists() else None
    except OSError as exc:
        raise UsageError(f"cannot read {kept_path}: {exc.strerror or exc}") from None
    served = ctx.client.exports.GetLedgerCheckpoint(export_pb.GetLedgerCheckpointRequest(
        log=which)).log_checkpoint
    new_note = served.signed_note.encode()
    proof: list[bytes] = []
    old_size = 0
    if state is not None:
        try:
            old_size = note.open_checkpoint(state, log, origin=origin)[0].size
        except note.NoteError:
            old_size = -1  # the witness core refuses it (BAD_STATE) below
        if 0 < old_size < served.tree_size:
            reply = ctx.client.audit.GetConsistencyProof(audit_pb.GetConsistencyProofRequest(
                first_tree_size=old_size, second_tree_size=served.tree_size, log=which))
            proof = list(reply.proof)
    try:
        done = witness.cosign_checkpoint(state, new_note, proof, log_key=log, origin=origin, name=args.name,
                                         private_key=private, timestamp=int(time.time()), first_use=args.first_use)
    except witness.WitnessError as exc:
        doc = {"cosigned": False, "reason": exc.reason, "detail": str(exc), "log": kind, "origin": origin,
               "kept_size": old_size if state is not None else None, "size": served.tree_size}
        if not ctx.out.json_mode:
            ctx.out.checks([("checkpoint", False, str(exc))], False, title=f"Witness {args.name} on {origin}")
            ctx.out.line("NOT COSIGNED (state unchanged)")
        return doc
    # Kept before it leaves: the witness never hands out a cosignature its state does not hold.
    _write_atomically(kept_path, done.state)
    submitted = ctx.client.exports.AddCheckpointCosignature(export_pb.AddCheckpointCosignatureRequest(
        log=which, checkpoint_note=served.signed_note, cosignature=done.line.decode()))
    doc = {"cosigned": True, "log": kind, "origin": origin, "size": done.checkpoint.size,
           "kept_size": old_size if state is not None else None, "proof_hashes": len(proof),
           "added": submitted.added, "cosignatures": submitted.checkpoint.cosignature_count,
           "witness_key": own, "state": str(kept_path)}
    if ctx.out.json_mode:
        return doc
    detail = ("first checkpoint (trust on first use)" if state is None
              else f"size {old_size} → {done.checkpoint.size}: {len(proof)} hashes prove it consistent")
    ctx.out.checks([("checkpoint", True, f"signed by {origin}; {detail}"),
                    ("submitted", True, "kept by the log" if submitted.added else "the log had this witness's "
                                                                               "cosignature already")],
                   True, title=f"Witness {args.name} on {origin}")
    ctx.out.fields([("witness key", own), ("cosignatures on it", submitted.checkpoint.cosignature_count),
                    ("state", kept_path)])
    ctx.out.line("COSIGNED")
    return doc
