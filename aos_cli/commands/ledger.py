"""``ledger checkpoint | verify``: keep a signed ledger head, later prove the ledger still extends it.

``verify`` trusts neither the service nor the file blindly: the checkpoint's DSSE signature
is checked, the whole chain is re-linked client-side from the hashes the service lists
(chain_hash = SHA-256(prev_hash ‖ content_hash), each prev_hash its predecessor's
chain_hash), and the entry at the checkpoint's seq must still carry the checkpoint's chain
hash. Content hashes are re-computed by the service (GetIntegrityReport): the entries'
before/after state is not in the listing.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from google.protobuf import json_format

from aos.evidence.v1 import integrity_pb2
from aos.export.v1 import export_service_pb2 as export_pb
from aos.logs.v1 import audit_ledger_service_pb2 as audit_pb
from aos_cli.client import EXIT_FAILED, EXIT_OK, UsageError
from aos_cli.commands.witness import add_policy_arguments, witnessed_head
from aos_cli.context import Context
from aos_cli.keys import file_keys, server_keys, signing_keys_trusted
from aos_cli.output import to_dict, when
from aos_cli.pages import MAX_PAGE
from aos_cli.values import enum_label
from aos_recording import dsse, hashing, tlog, verify_export
from aos_recording.verify_export import Verification

Kind = integrity_pb2.AnomalyKind
GENESIS = hashing.GENESIS.hex()
INTACT = (integrity_pb2.INTEGRITY_STATUS_VERIFIED, integrity_pb2.INTEGRITY_STATUS_EMPTY)


class Link(NamedTuple):
    """What the client-side walk keeps of each entry (not the whole entry: ledgers are long)."""
    seq: int
    prev_hash: str
    content_hash: str
    chain_hash: str


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    group = sub.add_parser("ledger", help="ledger checkpoints").add_subparsers(dest="action", required=True)
    checkpoint = group.add_parser("checkpoint", parents=[common], help="save a signed checkpoint of the ledger head")
    checkpoint.add_argument("-o", "--output", metavar="PATH", type=Path, required=True, help="e.g. cp.json")
    checkpoint.set_defaults(handler=checkpoint_command)
    verify = group.add_parser("verify", parents=[common],
                              help="prove the ledger was neither rewritten nor truncated before a checkpoint")
    verify.add_argument("--checkpoint", metavar="PATH", type=Path, required=True, help="a saved checkpoint")
    # The same pins as the offline export verifier: trust is only what the auditor pinned; with
    # no pin the signature check fails (UNTRUSTED), the audited service cannot vouch for itself.
    verify_export.add_trust_arguments(verify)
    verify.set_defaults(handler=verify_command)
    prove = group.add_parser("prove", parents=[common],
                             help="prove an entry is in the ledger's Merkle tree (RFC 6962), verified offline")
    prove.add_argument("entry", metavar="ENTRY", help="an entry id, or a seq number")
    prove.add_argument("--size", metavar="N", type=int, default=0,
                       help="the tree size to prove against (default: the kept state's, else the current one)")
    prove.add_argument("--state", metavar="FILE", type=Path,
                       help="a state kept by check-consistency: the proof must reach its root")
    add_log_argument(prove)
    add_policy_arguments(prove)
    prove.set_defaults(handler=prove_command)
    consistency = group.add_parser(
        "check-consistency", parents=[common],
        help="prove the ledger's tree extends a kept state (no entry before it changed); keep the newer state")
    consistency.add_argument("--from", dest="source", metavar="FILE", type=Path,
                             help="the kept state {tenant, size, root} (default: --state)")
    consistency.add_argument("--state", metavar="FILE", type=Path,
                             help="where the newest verified state is kept (default: --from); a missing file "
                                  "is started from the current tree (trust on first use)")
    add_log_argument(consistency)
    add_policy_arguments(consistency)
    consistency.set_defaults(handler=consistency_command)


# --log's choices: the TransparencyLog values by their canonical names (SPEC §5).
LOGS = {"ledger": integrity_pb2.TRANSPARENCY_LOG_LEDGER, "exports": integrity_pb2.TRANSPARENCY_LOG_EXPORTS}


def add_log_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log", choices=tuple(LOGS), default="ledger",
                        help="which of the tenant's transparency logs: the audit ledger (default) or the export "
                             "chain (ENTRY then names an export)")


def checkpoint_command(args: argparse.Namespace, ctx: Context) -> int:
    checkpoint = ctx.client.exports.GetLedgerCheckpoint(export_pb.GetLedgerCheckpointRequest()).checkpoint
    # The file is the checkpoint's proto3 JSON: `verify` parses it back with the same schema.
    text = json_format.MessageToJson(checkpoint, preserving_proto_field_name=True, indent=2)
    try:
        args.output.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    if ctx.out.json_mode:
        ctx.out.document(checkpoint)
    else:
        ctx.out.fields([("tenant", checkpoint.tenant_id), ("seq", checkpoint.seq),
                        ("chain hash", checkpoint.chain_hash), ("issued", when(checkpoint.issued_at)),
                        ("signed by", _key_id(checkpoint.dsse_envelope)), ("saved to", args.output)],
                       title="Ledger checkpoint")
    return EXIT_OK


def _key_id(envelope: str) -> str:
    try:
        return json.loads(envelope)["signatures"][0]["keyid"]
    except (ValueError, KeyError, IndexError, TypeError):
        return "?"


def load_checkpoint(path: Path) -> integrity_pb2.LedgerCheckpoint:
    try:
        return json_format.Parse(path.read_text(encoding="utf-8"), integrity_pb2.LedgerCheckpoint())
    except (OSError, UnicodeDecodeError, json_format.ParseError) as exc:
        raise UsageError(f"--checkpoint: not a saved ledger checkpoint: {exc}") from None


UNPINNED = ("UNTRUSTED: no key pinned. Pin the export signing key you obtained out of band: --key PUBLIC_KEY "
            "(ListSigningKeys' public_key, base64), or --key KEY_ID (a weaker 64-bit pin), or --trust FILE; "
            "--keys files and the service's own key list are information, not trust")


def _signed_statement(checkpoint: integrity_pb2.LedgerCheckpoint, pinned: verify_export.Trust,
                      result: Verification) -> dict[str, Any] | None:
    """The statement the signature covers, or None (recorded in ``result``) when it does not verify.

    The signature is checked over PAE(payloadType, payload), never the envelope's text (a
    saved checkpoint re-indented, or with a trailing newline, still verifies), and the key
    must have been valid at the signed ``issued_at``."""
    if not pinned.keys:
        result.add("signature", False, f"{UNPINNED} (the checkpoint names key {_key_id(checkpoint.dsse_envelope)})")
        return None
    try:
        payload, key = dsse.open_envelope(checkpoint.dsse_envelope, pinned.keys, dsse.CHECKPOINT_PAYLOAD_TYPE)
        statement = json.loads(payload)
        issued = datetime.fromisoformat(statement["issued_at"])
        if not key.valid_at(issued):
            raise dsse.DsseError(dsse.KEY_NOT_VALID_AT, f"key {key.key_id} was not valid at {statement['issued_at']}")
    except (dsse.DsseError, ValueError, KeyError, TypeError) as exc:
        result.add("signature", False, f"{exc} (keys: pinned)")
        return None
    result.note = pinned.strength(key.key_id)
    result.add("signature", True, f"signed by key {key.key_id}, issued {statement['issued_at']}; "
                                  + (result.note or "pinned by its public key"))
    listed = {"tenant_id": checkpoint.tenant_id, "seq": checkpoint.seq, "chain_hash": checkpoint.chain_hash}
    edited = [f"{name} {listed[name]!r} (signed: {statement.get(name)!r})" for name in listed
              if listed[name] != statement.get(name)]
    result.add("statement", not edited, "the file's fields are the signed ones" if not edited
               else "the file differs from its signed statement: " + ", ".join(edited))
    return statement


def walk(ctx: Context, tenant: str) -> list[Link]:
    """Every entry's hashes, all pages, newest first; the token must be ``tenant``'s."""
    request = audit_pb.ListAuditEntriesRequest(page_size=MAX_PAGE)
    links: list[Link] = []
    with ctx.out.progress("walking the ledger", None) as (bar, task):
        while True:
            page = ctx.client.audit.ListAuditEntries(request)
            if not request.page_token:
                if page.metadata.tenant_id != tenant:
                    raise UsageError(f"the checkpoint is tenant {tenant}'s, the token tenant "
                                     f"{page.metadata.tenant_id}'s")
                bar.update(task, total=page.total_size)
            links += [Link(e.seq, e.prev_hash, e.content_hash, e.chain_hash) for e in page.entries]
            bar.advance(task, len(page.entries))
            if not page.next_page_token:
                return links
            request.page_token = page.next_page_token


def _linked(link: Link) -> str | None:
    try:
        return hashing.chain_hash(bytes.fromhex(link.prev_hash), bytes.fromhex(link.content_hash)).hex()
    except ValueError:  # not hex: cannot link at all
        return None


def chain_anomalies(links: list[Link], checkpoint_seq: int, checkpoint_hash: str) -> list[integrity_pb2.ChainAnomaly]:
    """Every break of the chain, by seq, and whether the checkpoint's entry is still there, unchanged."""
    found: list[integrity_pb2.ChainAnomaly] = []

    def anomaly(seq: int, kind: integrity_pb2.AnomalyKind, expected: str, actual: str, detail: str) -> None:
        found.append(integrity_pb2.ChainAnomaly(seq=seq, kind=kind, expected=expected, actual=actual, detail=detail))

    by_seq: dict[int, Link] = {}
    previous: Link | None = None
    for link in sorted(links, key=lambda item: item.seq):
        if link.seq in by_seq:
            anomaly(link.seq, Kind.ANOMALY_KIND_SEQUENCE_DISORDER, "one entry", "several", "the seq repeats")
            continue
        by_seq[link.seq] = link
        expected_seq = previous.seq + 1 if previous else 1
        if link.seq != expected_seq:
            # The predecessor is missing, so this entry's link cannot be checked.
            anomaly(link.seq, Kind.ANOMALY_KIND_SEQUENCE_GAP, str(expected_seq), str(link.seq),
                    f"entries {expected_seq}..{link.seq - 1} are missing")
        elif link.prev_hash != (previous.chain_hash if previous else GENESIS):
            anomaly(link.seq, Kind.ANOMALY_KIND_BROKEN_LINK, previous.chain_hash if previous else GENESIS,
                    link.prev_hash, "prev_hash is not the previous entry's chain_hash")
        computed = _linked(link)
        if computed != link.chain_hash:
            anomaly(link.seq, Kind.ANOMALY_KIND_CHAIN_MISMATCH, computed or "hex hashes", link.chain_hash,
                    "chain_hash is not SHA-256(prev_hash ‖ content_hash)")
        previous = link
    if checkpoint_seq:
        held = by_seq.get(checkpoint_seq)
        if held is None:
            anomaly(checkpoint_seq, Kind.ANOMALY_KIND_TRUNCATION, checkpoint_hash, "no entry",
                    f"the ledger ends at seq {max(by_seq, default=0)}, before the checkpoint")
        elif held.chain_hash != checkpoint_hash:
            anomaly(checkpoint_seq, Kind.ANOMALY_KIND_CHECKPOINT_MISMATCH, checkpoint_hash, held.chain_hash,
                    "the entry the checkpoint names has another chain hash: history was rewritten")
    return found


def integrity_report(ctx: Context) -> audit_pb.GetIntegrityReportResponse:
    """The service's re-hash of the whole chain, its bounded pages merged into one report."""
    request = audit_pb.GetIntegrityReportRequest()
    merged = audit_pb.GetIntegrityReportResponse()
    while True:
        page = ctx.client.audit.GetIntegrityReport(request)
        if not request.page_token:
            merged.CopyFrom(page)
        else:
            merged.anomalies.extend(page.anomalies)
            merged.entries_checked += page.entries_checked
            merged.verified_to_seq = page.verified_to_seq
            if merged.status != integrity_pb2.INTEGRITY_STATUS_ANOMALIES_FOUND:
                merged.status = page.status
        if not page.has_more:
            merged.has_more, merged.next_page_token = False, ""
            return merged
        request.page_token = page.next_page_token


def verify_command(args: argparse.Namespace, ctx: Context) -> int:
    checkpoint = load_checkpoint(args.checkpoint)
    pinned = signing_keys_trusted(args.key, args.trust, file_keys(args.keys) if args.keys else [],
                                  lambda: server_keys(ctx.client))
    result = Verification()
    statement = _signed_statement(checkpoint, pinned, result)
    # Judge the ledger by what was signed; the file's own fields only when the signature failed.
    tenant, seq, chain_hash = ((statement["tenant_id"], statement["seq"], statement["chain_hash"]) if statement
                               else (checkpoint.tenant_id, checkpoint.seq, checkpoint.chain_hash))
    links = walk(ctx, tenant)
    client_side = chain_anomalies(links, seq, chain_hash)
    held = {Kind.ANOMALY_KIND_TRUNCATION, Kind.ANOMALY_KIND_CHECKPOINT_MISMATCH}
    chain = [a for a in client_side if a.kind not in held]
    result.add("chain", not chain, f"{len(links)} entries: every chain hash and link holds" if not chain
               else f"{len(chain)} anomalies, first at seq {chain[0].seq}")
    at_checkpoint = [a for a in client_side if a.kind in held]
    result.add("checkpoint", not at_checkpoint,
               f"seq {seq} still has chain hash {chain_hash}" if not at_checkpoint else at_checkpoint[0].detail)
    report = integrity_report(ctx)
    status = enum_label("aos.evidence.v1.IntegrityStatus", report.status)
    result.add("integrity", report.status in INTACT and not report.anomalies,
               f"service re-hashed {report.entries_checked} entries (seq {report.verified_from_seq}.."
               f"{report.verified_to_seq}): {status}")
    anomalies = [("client", a) for a in client_side] + [("service", a) for a in report.anomalies]
    if ctx.out.json_mode:
        ctx.out.document({"valid": result.ok, "note": result.note, "checkpoint": to_dict(checkpoint),
                          "checks": [asdict(c) for c in result.checks],
                          "anomalies": [{"found_by": source, **to_dict(a)} for source, a in anomalies],
                          "integrity_report": to_dict(report)})
        return EXIT_OK if result.ok else EXIT_FAILED
    if anomalies:
        ctx.out.table(("found by", "seq", "kind", "expected", "actual", "detail"), (
            [source, a.seq, enum_label("aos.evidence.v1.AnomalyKind", a.kind), a.expected, a.actual, a.detail]
            for source, a in anomalies), title="Anomalies")
    ctx.out.checks(((c.name, c.passed, c.detail) for c in result.checks), result.ok,
                   title=f"Ledger of {tenant} against the checkpoint at seq {seq}")
    if result.note:
        ctx.out.line(f"note: {result.note}")
    return EXIT_OK if result.ok else EXIT_FAILED


# --- the Merkle tree (RFC 6962): inclusion and consistency, checked here ---------------------
class TreeState(NamedTuple):
    """A tree head this auditor verified: the tenant, the tree's size and its root hash, and
    which log it is of (a state is never compared with, nor advanced by, the other log's tree)."""
    tenant: str
    size: int
    root: bytes
    log: str = "ledger"


def load_state(path: Path) -> TreeState:
    """A state file as ``save_state`` writes it: {"tenant", "log", "size", "root" (base64)}; a
    state without "log" was kept before there were two logs, of the ledger."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        root = base64.b64decode(doc["root"], validate=True)
        state = TreeState(str(doc["tenant"]), int(doc["size"]), root, str(doc.get("log", "ledger")))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise UsageError(f"{path}: not a ledger tree state ({{tenant, size, root}}): {exc}") from None
    if state.size < 1 or len(state.root) != 32:
        raise UsageError(f"{path}: a state needs a size of at least 1 and a 32-byte root")
    if state.log not in LOGS:
        raise UsageError(f"{path}: log {state.log!r} is none of {', '.join(LOGS)}")
    return state


def _same_log(state: TreeState, args: argparse.Namespace, path: Path) -> TreeState:
    if state.log != args.log:
        raise UsageError(f"{path} keeps the {state.log} log's tree, not the {args.log} log's: "
                         f"give --log {state.log}, or another state file")
    return state


def save_state(path: Path, state: TreeState) -> None:
    """Written whole or not at all (a temporary file renamed over the old one)."""
    doc = {"tenant": state.tenant, "log": state.log, "size": state.size,
           "root": base64.b64encode(state.root).decode()}
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def _verdict(ctx: Context, result: Verification, title: str, doc: dict[str, Any]) -> int:
    if ctx.out.json_mode:
        ctx.out.document({"verified": result.ok, **doc, "checks": [asdict(c) for c in result.checks]})
    else:
        ctx.out.checks(((c.name, c.passed, c.detail) for c in result.checks), result.ok, title=title)
        ctx.out.line("VERIFIED" if result.ok else "NOT VERIFIED")
    return EXIT_OK if result.ok else EXIT_FAILED


def prove_command(args: argparse.Namespace, ctx: Context) -> int:
    state = _same_log(load_state(args.state), args, args.state) if args.state else None
    log = LOGS[args.log]
    result = Verification()
    # With --log-key the proof goes to the signed (and, with --min-witnesses, cosigned) head.
    head = witnessed_head(ctx, args, result, log)
    if args.log_key is not None and head is None:
        return _verdict(ctx, result, f"{args.log.capitalize()} checkpoint", {})
    size = args.size or (state.size if state else 0) or (head.size if head else 0)
    if size < 0:
        raise UsageError("--size must not be negative")
    request = audit_pb.GetInclusionProofRequest(tree_size=size, log=log)
    if args.entry.isdigit():
        request.seq = int(args.entry)
    else:
        request.entry_id = args.entry
    proof = ctx.client.audit.GetInclusionProof(request)
    tenant = proof.metadata.tenant_id
    if state and state.tenant != tenant:
        raise UsageError(f"the state is tenant {state.tenant}'s, the token tenant {tenant}'s")
    leaf_hash = tlog.leaf_hash(proof.leaf_data)
    result.add("leaf", leaf_hash == proof.leaf_hash,
               f"leaf {proof.leaf_index} (seq {proof.seq}): SHA-256(0x00 ‖ {proof.leaf_data.hex()})")
    try:
        tlog.check_record(list(proof.audit_path), proof.tree_size, proof.root_hash, proof.leaf_index, leaf_hash)
        result.add("inclusion", True, f"{len(proof.audit_path)} hashes lead to the root of the tree of size "
                                      f"{proof.tree_size}")
    except tlog.ProofError as exc:
        result.add("inclusion", False, f"the audit path does not lead to the stated root: {exc}")
    if head and proof.tree_size == head.size:
        result.add("signed root", proof.root_hash == head.root,
                   f"the root of the signed checkpoint of size {head.size}" if proof.root_hash == head.root
                   else "the service's root differs from its signed checkpoint's: FORK")
    if state and proof.tree_size == state.size:
        result.add("root", proof.root_hash == state.root,
                   f"the kept root of size {state.size}" if proof.root_hash == state.root
                   else "the service's root differs from the kept one: FORK")
    elif not (head and proof.tree_size == head.size):
        ctx.out.note("note: the root is the service's own statement; keep a verified state "
                     "(check-consistency --state) and prove against it to rely on it")
    return _verdict(ctx, result, f"Entry {proof.entry_id} in the {args.log} log of {tenant}", {
        "log": args.log, "entry_id": proof.entry_id, "seq": proof.seq, "tree_size": proof.tree_size,
        "root": base64.b64encode(proof.root_hash).decode(),
        "kept_root": base64.b64encode(state.root).decode() if state else None})


def _current_size(ctx: Context, log: integrity_pb2.TransparencyLog) -> tuple[str, int]:
    page = ctx.client.audit.ListLedgerLeaves(audit_pb.ListLedgerLeavesRequest(page_size=1, log=log))
    return page.metadata.tenant_id, page.last_seq


def consistency_command(args: argparse.Namespace, ctx: Context) -> int:
    source, target = args.source or args.state, args.state or args.source
    if source is None:
        raise UsageError("give --from FILE (a kept state) or --state FILE")
    log = LOGS[args.log]
    tenant, current = _current_size(ctx, log)
    result = Verification()
    # With --log-key the newer tree is the signed (and, with --min-witnesses, cosigned) head,
    # not the service's bare answer.
    signed = witnessed_head(ctx, args, result, log)
    if args.log_key is not None:
        if signed is None:
            return _verdict(ctx, result, f"{args.log.capitalize()} tree of {tenant}", {"tenant": tenant})
        current = signed.size
    if not source.exists() and args.source is None:
        if current == 0:
            raise UsageError(f"tenant {tenant}'s {args.log} log is empty: nothing to keep yet")
        head = ctx.client.audit.GetConsistencyProof(
            audit_pb.GetConsistencyProofRequest(first_tree_size=current, second_tree_size=current, log=log))
        if signed is not None and head.first_root_hash != signed.root:
            result.add("signed root", False, "the service's root differs from its signed checkpoint's: FORK")
            return _verdict(ctx, result, f"{args.log.capitalize()} tree of {tenant}",
                            {"tenant": tenant, "size": current})
        save_state(target, TreeState(tenant, current, head.first_root_hash, args.log))
        ctx.out.note(f"note: no state in {target}: the current tree (size {current}) is kept as the first one "
                     "(trust on first use)")
        result.add("kept", True, f"size {current}, root {base64.b64encode(head.first_root_hash).decode()}")
        return _verdict(ctx, result, f"{args.log.capitalize()} tree of {tenant}", {"tenant": tenant, "size": current})
    old = _same_log(load_state(source), args, source)
    if old.tenant != tenant:
        raise UsageError(f"the state is tenant {old.tenant}'s, the token tenant {tenant}'s")
    if current < old.size:
        result.add("size", False, f"the tree has {current} leaves, fewer than the kept {old.size}: "
                                  "history was truncated (FORK)")
        return _verdict(ctx, result, f"{args.log.capitalize()} tree of {tenant} against the kept size {old.size}",
                        {"tenant": tenant, "kept_size": old.size, "size": current})
    proof = ctx.client.audit.GetConsistencyProof(audit_pb.GetConsistencyProofRequest(
        first_tree_size=old.size, second_tree_size=current, log=log))
    result.add("kept root", proof.first_root_hash == old.root,
               f"the tree of size {old.size} still has the kept root" if proof.first_root_hash == old.root
               else f"the service's tree of size {old.size} has another root: FORK")
    try:
        tlog.check_tree(list(proof.proof), proof.second_tree_size, proof.second_root_hash, old.size, old.root)
        result.add("consistency", True, f"size {old.size} → {proof.second_tree_size}: {len(proof.proof)} hashes "
                                        "prove the older tree a prefix of the newer")
    except tlog.ProofError as exc:
        result.add("consistency", False, f"the newer tree does not extend the kept one: FORK ({exc})")
    if signed is not None:
        result.add("signed root", proof.second_root_hash == signed.root,
                   f"the newer root is the signed checkpoint's (size {signed.size})"
                   if proof.second_root_hash == signed.root
                   else "the service's root differs from its signed checkpoint's: FORK")
    if result.ok and target is not None:
        save_state(target, TreeState(tenant, proof.second_tree_size, proof.second_root_hash, args.log))
        result.add("kept", True, f"{target} now holds size {proof.second_tree_size}")
    return _verdict(ctx, result, f"{args.log.capitalize()} tree of {tenant} against the kept size {old.size}", {
        "tenant": tenant, "kept_size": old.size, "size": proof.second_tree_size,
        "root": base64.b64encode(proof.second_root_hash).decode()})
