"""``erase``: erase a data subject's payloads in the tenant (docs/ERASURE.md; IngestService.EraseDataSubject)."""
from __future__ import annotations

import argparse

from aos.ingest.v1 import ingest_service_pb2 as pb
from aos_cli.client import EXIT_OK, UsageError
from aos_cli.context import Context


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    erase = sub.add_parser(
        "erase", parents=[common], help="erase a data subject's payloads (irreversible; proofs stay valid)",
        description="Deletes the payloads and salts of every record written for SUBJECT_ID in hash format 2: "
                    "the records stay with their commitments and read as ERASED; chains, Merkle proofs, "
                    "checkpoints and earlier exports stay valid. A legal hold refuses it (exit 1, the hold "
                    "named). Needs a token with scope evidence.erase.")
    erase.add_argument("subject_id", metavar="SUBJECT_ID", help="the data subject's id, as producers sent it")
    erase.add_argument("--reason", required=True, help="why (e.g. the request's reference): recorded in the ledger")
    erase.add_argument("--yes", action="store_true", help="confirm: the payloads cannot be brought back")
    erase.set_defaults(handler=erase_command)


def erase_command(args: argparse.Namespace, ctx: Context) -> int:
    if not args.yes:
        raise UsageError("erasure cannot be undone: add --yes to confirm")
    reply = ctx.client.ingest.EraseDataSubject(pb.EraseDataSubjectRequest(subject_id=args.subject_id,
                                                                          reason=args.reason))
    if ctx.out.json_mode:
        ctx.out.document(reply)
        return EXIT_OK
    ctx.out.table(("erasure", "subject", "payloads erased", "request entry", "execution entry"),
                  [[reply.erasure_id, reply.subject_id, str(reply.payloads_erased), f"#{reply.request_seq}",
                    f"#{reply.executed_seq}"]], title="erased")
    if reply.exports_erased:
        ctx.out.line(f"stored artifacts of earlier exports deleted with the content: {', '.join(reply.exports_erased)} "
                     "(their signed manifests stay; copies downloaded before still verify offline)")
    return EXIT_OK
