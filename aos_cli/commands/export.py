"""``export create | show | list | download | verify``: signed evidence bundles, and checking them."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from aos.evidence.v1 import bundle_pb2
from aos.export.v1 import export_service_pb2 as pb
from aos_cli.client import EXIT_FAILED, EXIT_OK, UsageError, VerificationFailed
from aos_cli.commands import audit
from aos_cli.context import Context
from aos_cli.keys import file_keys, server_keys
from aos_cli.output import to_dict, when
from aos_cli.pages import read_pages
from aos_cli.values import enum_label, enum_member, enum_value, timestamp
from aos_recording import dsse, verify_export

BUNDLE_TYPE = "aos.evidence.v1.BundleType"
FORMAT = "aos.evidence.v1.ExportFormat"
SYSTEM_EVENT_TYPE = "aos.evidence.v1.SystemEventType"
SEVERITY = "aos.evidence.v1.SystemSeverity"
AUDIT_ONLY = ("entity_type", "actor_type", "actor_id", "correlation_id")
SYSTEM_ONLY = ("component", "severity")
KEYS_FILE = "keys.json"
ENVELOPE_SUFFIX = ".dsse.json"


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    group = sub.add_parser("export", help="evidence exports").add_subparsers(dest="action", required=True)

    create = group.add_parser("create", parents=[common], help="build, sign and record an export",
                              description="Exactly one subject. Slice filters: --event-type, --since and --until "
                                          "for both slices; --entity-type, --actor-type, --actor-id and "
                                          "--correlation-id for --audit-slice; --component and --severity for "
                                          "--system-slice.")
    subject = create.add_mutually_exclusive_group(required=True)
    subject.add_argument("--run", metavar="RUN_ID", help="one LLM run")
    subject.add_argument("--incident", metavar="ID", help="one incident")
    subject.add_argument("--audit-slice", action="store_true", help="a filtered slice of the audit ledger")
    subject.add_argument("--system-slice", action="store_true", help="a filtered slice of the system records")
    audit.add_filters(create)
    create.add_argument("--component", help="system slice: only this component")
    create.add_argument("--severity", help="system slice: DEBUG, INFO, WARNING, ERROR or CRITICAL")
    create.add_argument("--bundle", required=True, help="EVIDENCE, SOC2 or EXECUTIVE")
    create.add_argument("--format", required=True, help="JSON, CSV (slices only), PDF or ZIP")
    create.add_argument("--idempotency-key", help="retrying with the same key returns the same export")
    create.add_argument("--download", metavar="PATH", type=_destination,
                        help="then download the artifact to PATH (a directory when it ends with /)")
    create.set_defaults(handler=create_command)

    show = group.add_parser("show", parents=[common], help="one export (GetExport): what it is, and whether "
                                                            "content it carried was erased since")
    show.add_argument("export_id", metavar="EXPORT_ID")
    show.set_defaults(handler=show_command)

    listing = group.add_parser("list", parents=[common], help="the tenant's exports, newest first (ListExports)")
    listing.add_argument("--run", metavar="RUN_ID", help="only exports of this run")
    listing.add_argument("--incident", metavar="ID", help="only exports of this incident")
    listing.add_argument("--since", help="created at or after (ISO 8601, UTC when no zone)")
    listing.add_argument("--until", help="created before (ISO 8601)")
    listing.add_argument("--limit", type=int, default=50, help="exports to show, following pages (0: all; default 50)")
    listing.set_defaults(handler=list_command)

    download = group.add_parser("download", parents=[common], help="save an artifact, its envelope and the keys",
                                description=f"Streams the artifact to PATH and checks its SHA-256; saves "
                                            f"PATH{ENVELOPE_SUFFIX} (the signed manifest) and {KEYS_FILE} "
                                            f"(the public keys) next to it, ready for `export verify --offline`.")
    download.add_argument("export_id", metavar="EXPORT_ID")
    download.add_argument("-o", "--output", metavar="PATH", type=_destination,
                          help="file or directory (default: the export's file name, here)")
    download.set_defaults(handler=download_command)

    verify = group.add_parser("verify", parents=[common], help="verify an export (by the service, or offline)",
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              description="With EXPORT_ID the service re-checks checksum, signature, chain and "
                                          "re-rendering.\nWith --offline nothing is asked of any service: the "
                                          f"artifact is checked against its envelope (default ARTIFACT"
                                          f"{ENVELOPE_SUFFIX}) under the keys you pin\n(--key, --trust); "
                                          f"{KEYS_FILE} beside it (or --keys) is information, never trust.",
                              epilog="offline, " + verify_export.exit_codes_help())
    verify.add_argument("export_id", metavar="EXPORT_ID", nargs="?")
    verify.add_argument("--offline", metavar="ARTIFACT", type=Path, help="a downloaded artifact")
    verify.add_argument("--recompute", action="store_true",
                        help="the service verifies afresh (a full re-render) instead of answering from its "
                             "recorded verification of the export")
    verify.add_argument("--envelope", type=Path, help="the export's DSSE envelope (.dsse.json)")
    verify_export.add_trust_arguments(verify)
    verify_export.add_log_policy_arguments(verify)
    verify.set_defaults(handler=verify_command)


def _subject(args: argparse.Namespace) -> dict[str, Any]:
    given = {name for name in (*AUDIT_ONLY, *SYSTEM_ONLY, "event_type", "since", "until") if getattr(args, name)}
    if args.run or args.incident:
        if given:
            raise UsageError(f"--{sorted(given)[0].replace('_', '-')} filters a slice, not --run or --incident")
        return {"run_id": args.run} if args.run else {"incident_id": args.incident}
    if args.audit_slice:
        if given & set(SYSTEM_ONLY):
            raise UsageError("--component and --severity filter --system-slice")
        return {"audit_slice": pb.AuditSlice(**audit.filters(args))}
    if given & set(AUDIT_ONLY):
        raise UsageError("--entity-type, --actor-type, --actor-id and --correlation-id filter --audit-slice")
    fields = audit.filters(args, SYSTEM_EVENT_TYPE)
    if args.component:
        fields["component"] = args.component
    if args.severity:
        fields["severity"] = enum_value(SEVERITY, args.severity, "--severity")
    return {"system_slice": pb.SystemSlice(**fields)}


def _show_export(ctx: Context, export: bundle_pb2.Export) -> None:
    subject = export.run_id or export.incident_id or export.slice_filter
    redacted = ", ".join(f"{c.kind} {c.count}" for c in export.redaction.counts) or "nothing"
    ctx.out.fields([
        ("export", export.export_id), ("scope", enum_label("aos.evidence.v1.ExportScope", export.scope)),
        ("subject", subject), ("bundle / format", (f"{enum_label(BUNDLE_TYPE, export.bundle_type)} / "
                                                   f"{enum_label(FORMAT, export.format)}")),
        ("file", f"{export.filename} ({export.content_type}, {export.size_bytes} bytes)"),
        ("sha-256", export.checksum), ("chain", f"seq {export.seq}, hash {export.chain_hash}"),
        ("signed by", export.signing_key_id), ("redacted", f"{export.redaction.profile}: {redacted}"),
        ("created", f"{when(export.created_at)} by {export.requested_by_id}"),
        ("content", erased_note(export)),
    ], title="Export")


def erased_note(export: bundle_pb2.Export) -> str:
    """Whether an erasure took content the export carried (docs/ERASURE.md §3a), in words, each
    erasure with its basis (§3c): recorded (the export recorded carrying the subject's payloads),
    or untracked (it recorded nothing; its count is at most what it carried)."""
    if not export.content_erased:
        return "stored"
    untracked = any(e.basis == bundle_pb2.ERASURE_BASIS_UNTRACKED for e in export.erasures)
    return (f"ERASED after export ({'up to ' if untracked else ''}{export.payloads_erased} payloads, erasure "
            f"{erasures_text(export)}): artifact deleted, manifest and chain kept")


def erasures_text(export: bundle_pb2.Export | pb.VerifyExportResponse) -> str:
    """"era_1 recorded, era_2 untracked": each erasure with its basis (the ids alone when none says)."""
    if not export.erasures:
        return ", ".join(export.erasure_ids)
    return ", ".join(f"{e.erasure_id} {BASES.get(e.basis, 'basis unknown')}" for e in export.erasures)


BASES = {bundle_pb2.ERASURE_BASIS_RECORDED: "recorded", bundle_pb2.ERASURE_BASIS_UNTRACKED: "untracked"}


LIST_COLUMNS = ("created", "export", "scope", "subject", "bundle / format", "bytes", "content")


def show_command(args: argparse.Namespace, ctx: Context) -> int:
    answer = ctx.client.exports.GetExport(pb.GetExportRequest(export_id=args.export_id))
    if ctx.out.json_mode:
        ctx.out.document(to_dict(answer.export))
        return EXIT_OK
    _show_export(ctx, answer.export)
    return EXIT_OK


def list_command(args: argparse.Namespace, ctx: Context) -> int:
    if args.limit < 0:
        raise UsageError("--limit must be 0 (all) or positive")
    request = pb.ListExportsRequest(run_id=args.run or "", incident_id=args.incident or "")
    if args.since:
        request.created_after.CopyFrom(timestamp(args.since, "--since"))
    if args.until:
        request.created_before.CopyFrom(timestamp(args.until, "--until"))
    result = read_pages(ctx.client.exports.ListExports, request, pb.ListExportsResponse(), "exports", args.limit)
    if ctx.out.json_mode:
        ctx.out.document(to_dict(result))
        return EXIT_OK
    estimate = "~" if result.total_size_is_estimate else ""
    ctx.out.table(LIST_COLUMNS, ([
        when(e.created_at), e.export_id, enum_label("aos.evidence.v1.ExportScope", e.scope),
        e.run_id or e.incident_id or e.slice_filter,
        f"{enum_label(BUNDLE_TYPE, e.bundle_type)} / {enum_label(FORMAT, e.format)}", e.size_bytes,
        f"ERASED ({erasures_text(e)})" if e.content_erased else "stored"] for e in result.exports),
        title=f"{len(result.exports)} of {estimate}{result.total_size} exports (newest first)")
    return EXIT_OK


def create_command(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.CreateExportRequest(bundle_type=enum_member(bundle_pb2.BundleType, args.bundle, "--bundle"),
                                     format=enum_member(bundle_pb2.ExportFormat, args.format, "--format"),
                                     idempotency_key=args.idempotency_key or "", **_subject(args))
    # CreateExport is one unary call that answers once the export is built, signed and recorded;
    # the service exposes no "building" state to poll (an export is listed only once it exists),
    # so the progress shown is the time spent waiting, not a share of the work.
    with ctx.out.waiting("building the export (render, sign, record)…", "export built in {elapsed}"):
        answer = ctx.client.exports.CreateExport(request)
    saved = download(ctx, answer.export.export_id, args.download) if args.download else None
    if ctx.out.json_mode:
        ctx.out.document({**to_dict(answer), **({"download": saved} if saved else {})})
        return EXIT_OK
    _show_export(ctx, answer.export)
    if saved:
        _show_download(ctx, saved)
    return EXIT_OK


def _destination(text: str) -> Path:
    """A download destination; ``out/`` names a directory (created) even before it exists."""
    path = Path(text)
    if text.endswith(("/", "\\")):
        path.mkdir(parents=True, exist_ok=True)
    return path


def _target(path: Path | None, export: bundle_pb2.Export) -> Path:
    name = Path(export.filename).name or export.export_id  # never a path the service chose
    if path is None:
        return Path(name)
    return path / name if path.is_dir() else path


def download(ctx: Context, export_id: str, path: Path | None) -> dict[str, Any]:
    """Artifact to ``path`` (checked against its checksum), envelope and keys beside it."""
    export = ctx.client.exports.GetExport(pb.GetExportRequest(export_id=export_id)).export
    target = _target(path, export)
    # Written aside and renamed once its checksum holds: PATH is never a partial or altered artifact.
    partial = target.with_name(target.name + ".part")
    digest, size, first = hashlib.sha256(), 0, None
    try:
        with partial.open("wb") as sink, ctx.out.progress(export_id, export.size_bytes, transfer=True) as (
                bar, task):
            for message in ctx.client.exports.DownloadExport(pb.DownloadExportRequest(export_id=export_id)):
                if first is None:
                    first = message
                    bar.update(task, total=message.size_bytes)
                sink.write(message.data)
                digest.update(message.data)
                size += len(message.data)
                bar.advance(task, len(message.data))
        expected = first.checksum if first else export.checksum
        if digest.hexdigest() != expected or expected != export.checksum or size != export.size_bytes:
            raise VerificationFailed(f"the downloaded artifact does not match its checksum: got {size} bytes "
                                     f"with SHA-256 {digest.hexdigest()}, expected {export.size_bytes} bytes with "
                                     f"{export.checksum}")
        os.replace(partial, target)
        envelope = target.with_name(target.name + ENVELOPE_SUFFIX)
        # Verbatim: the offline verifier accepts only the exact canonical text that was signed.
        envelope.write_text(export.dsse_envelope, encoding="utf-8", newline="")
        keys = target.parent / KEYS_FILE
        keys.write_text(json.dumps(dsse.keys_document(server_keys(ctx.client)), indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename or target}: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return {"export_id": export_id, "path": str(target), "size_bytes": size, "sha256": digest.hexdigest(),
            "envelope": str(envelope), "keys": str(keys)}


def _show_download(ctx: Context, saved: dict[str, Any]) -> None:
    ctx.out.fields([("artifact", saved["path"]), ("size", f"{saved['size_bytes']} bytes"),
                    ("sha-256", f"{saved['sha256']} (matches the export's checksum)"),
                    ("envelope", saved["envelope"]), ("keys", saved["keys"])], title="Downloaded")
    ctx.out.note(f"verify offline, pinning the signing key's public key you obtained out of band: "
                 f"aos-evidence export verify --offline {saved['path']} --key PUBLIC_KEY")


def download_command(args: argparse.Namespace, ctx: Context) -> int:
    saved = download(ctx, args.export_id, args.output)
    if ctx.out.json_mode:
        ctx.out.document(saved)
    else:
        _show_download(ctx, saved)
    return EXIT_OK


def verify_command(args: argparse.Namespace, ctx: Context) -> int:
    if args.offline:
        if args.export_id:
            raise UsageError("give EXPORT_ID (the service verifies) or --offline ARTIFACT, not both")
        return _verify_offline(ctx, args)
    if not args.export_id:
        raise UsageError("EXPORT_ID or --offline ARTIFACT is required")
    if args.envelope or args.keys or args.key or args.trust or args.log_key or args.witness or args.checkpoint:
        raise UsageError("--envelope, --key, --trust, --keys, --log-key, --witness and --checkpoint go with --offline")
    answer = ctx.client.exports.VerifyExport(pb.VerifyExportRequest(export_id=args.export_id,
                                                                    recompute=args.recompute))
    if ctx.out.json_mode:
        ctx.out.document(answer)
    else:
        how = (f"recorded verification of {when(answer.verified_at)} (audit entry seq {answer.audit_entry_seq}, "
               f"{answer.verifier_version}; --recompute to verify afresh)" if answer.recorded else
               f"verified by the service at {when(answer.verified_at)} ({answer.verifier_version})")
        ctx.out.checks(((c.name, c.passed, c.detail) for c in answer.checks), answer.valid,
                       title=f"Export {args.export_id}, {how}")
        if answer.payloads_erased:
            # VALID here is about what the server still holds, never about the erased bytes.
            untracked = any(e.basis == bundle_pb2.ERASURE_BASIS_UNTRACKED for e in answer.erasures)
            ctx.out.line(f"content erased after export ({'up to ' if untracked else ''}{answer.payloads_erased} "
                         f"payloads; erasure {erasures_text(answer)}): the signed manifest, the export chain and "
                         "the records' "
                         "commitments verify; the server no longer holds the artifact — verify a copy downloaded "
                         "before with `export verify --offline`")
    return EXIT_OK if answer.valid else EXIT_FAILED


def _verify_offline(ctx: Context, args: argparse.Namespace) -> int:
    artifact: Path = args.offline
    beside_envelope = artifact.with_name(artifact.name + ENVELOPE_SUFFIX)
    envelope = args.envelope or (beside_envelope if beside_envelope.is_file() else None)
    # keys.json beside the artifact travelled with it: it may name the signer and supply
    # public keys for pinned ids, but grants no trust (verify_export.trust).
    keys = args.keys or ([artifact.parent / KEYS_FILE] if (artifact.parent / KEYS_FILE).is_file() else [])
    listed = file_keys(keys)
    try:
        pinned = verify_export.trust(args.key, args.trust, listed)
        policy = verify_export.log_policy_of(args)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    try:
        envelope_text = envelope.read_bytes() if envelope else None
        data = artifact.open("rb")  # read in blocks by the verifier, never whole (an export may be GiBs)
    except OSError as exc:
        raise UsageError(f"cannot read the input: {exc}") from None
    with data:
        result = verify_export.verify(data, envelope_text, pinned, listed, policy)
    verdict = result.verdict
    if ctx.out.json_mode:
        ctx.out.document(result.as_dict())
    else:
        pins = ", ".join([*args.key, *map(str, args.trust)]) or "no pinned key"
        ctx.out.checks(((c.name, c.passed, c.detail) for c in result.checks), result.ok,
                       title=f"{artifact}, verified offline under {pins}")
        ctx.out.line(f"{verdict.name} (exit {verdict.exit_code}): {verdict.meaning}"
                     + (f" (note: {result.note})" if result.note else ""))
    return verdict.exit_code
