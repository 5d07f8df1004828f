"""VerifyExport's checks: a recorded export against its artifact, its signed manifest, the
export chain and, where it can be done here, a re-rendering from the source records.

The server verifies with its own key ring (pinned by definition); an auditor verifies the
downloaded artifact offline (aos_recording.verify_export) with the keys they pin.

A verification's result is itself evidence: ``verify_and_record`` appends it to the
tenant's audit ledger (ExportVerified: the verdict, VERIFIER_VERSION, each check with what
it compared), and VerifyExport answers later calls for the export from that entry.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection

from aos.evidence.v1 import bundle_pb2
from aos_evidence.kinds import ExportFormat
from aos_recording import dsse, verify, verify_export
from aos_recording.hashing import artifact_checksum, canonical_json, manifest_hash, rfc3339
from aos_recording.writers import AuditLedgerWriter
from aos_runtime.db import cpu_bound
from services.export import builder, redaction, store

# Names the checks below and how they compare. A recorded result is reused only by the
# same version: change it whenever a check is added or compares differently.
VERIFIER_VERSION = "aos-export-verifier/1"


def check_export(conn: Connection, row: Mapping[str, Any], keys: dsse.KeyRing) -> list[bundle_pb2.ExportCheck]:
    """Every check of a recorded export (its log_exports ``row``), each passed or failed with
    what was compared; ``keys`` is the service's own key ring. Reads in the caller's
    transaction; a check that cannot pass fails, it never raises."""
    checks: list[bundle_pb2.ExportCheck] = []

    def check(name: str, passed: bool, detail: str) -> None:
        checks.append(bundle_pb2.ExportCheck(name=name, passed=passed, detail=detail))

    erased = store.erased_content(conn, row["tenant_id"], row["id"])
    if erased is None:
        stored = artifact_checksum(store.artifact_chunks(conn, row["tenant_id"], row["id"]))
        check("checksum", stored == bytes(row["checksum"]),
              f"stored artifact SHA-256 {stored.hex()}; recorded {bytes(row['checksum']).hex()}")
    else:
        # docs/ERASURE.md §5: the artifact held content erased since; it was deleted with it. Nothing
        # here can show those bytes again, so nothing claims to: the signed checksum is reported as
        # what an earlier copy must match, and the checks below cover what the server still holds.
        check("artifact", True,
              f"content erased after export ({erased_count(erased)}, erasure {', '.join(erased.erasure_ids)}, "
              f"basis {', '.join(erased.bases)}): "
              f"the stored artifact ({erased.artifact_bytes} bytes) was deleted with it; the signed manifest "
              f"keeps its SHA-256 {bytes(row['checksum']).hex()}, which a copy downloaded before still matches "
              "(verify it offline)")
    # A stored manifest that is no JSON object fails the checks below, never raises.
    manifest = row["manifest"] if isinstance(row["manifest"], dict) else {}
    check("manifest", manifest.get("checksum") == bytes(row["checksum"]).hex()
          and manifest.get("export_id") == row["id"] and manifest.get("size") == row["size_bytes"],
          "the manifest names this export, its size and its checksum")
    # The service's own key ring is pinned by definition; the key must have been valid
    # when the manifest says it signed (manifests before signed_at: created_at). A manifest
    # with no usable time cannot show that: a failed check, as offline (verify_export).
    signed_at = verify_export.signed_time(manifest)
    if signed_at is None:
        check("signature", False, "the stored manifest states no usable signing time (signed_at, or created_at "
                                  "for older manifests, as an RFC 3339 timestamp with a time zone): the key's "
                                  "validity at signing cannot be checked")
    else:
        try:
            payload = dsse.verify_envelope(row["dsse_envelope"], keys.public_keys(),
                                           dsse.MANIFEST_PAYLOAD_TYPE, at=signed_at)
            check("signature", payload == canonical_json(manifest),
                  f"DSSE Ed25519 signature by key {row['signing_key_id']} over the canonical manifest, "
                  f"valid at {rfc3339(signed_at)}")
        except dsse.DsseError as exc:
            check("signature", False, str(exc))
    check("content_hash", manifest_hash(manifest) == bytes(row["content_hash"]),
          "the export chain's content hash is the manifest's SHA-256")
    report = verify.verify_exports(conn, row["tenant_id"])
    here = [a for a in report.anomalies if a.seq == row["seq"]]
    check("export_chain", not report.anomalies,
          f"{report.checked} exports of the tenant checked; "
          + ("no anomaly" if not report.anomalies else
             "; ".join(f"seq {a.seq}: {a.kind}" for a in report.anomalies[:5])
             + (f" (this export: {here[0].kind})" if here else "")))
    profile = (manifest.get("redaction") or {}).get("profile")
    if erased is not None:
        # Re-rendered without the erased payloads (their commitments stay in each record): the same
        # records, counts and ledger ranges as the signed manifest says, or the records changed.
        again = builder.rerender(conn, row, keys.active)
        same = again.records == manifest.get("records") and again.contents == manifest.get("contents")
        check("records", same,
              f"re-rendered from the source records with their commitments, the erased content left out: "
              f"{again.records} records" + (", the same records and ledger ranges as the signed manifest" if same
                                            else f"; the signed manifest says {manifest.get('records')} records "
                                                 "(the source records changed since the export)"))
    elif profile != redaction.PROFILE:
        # Re-rendering applies today's redaction: an export made under another profile
        # cannot come out byte for byte, and that is not a change of its records.
        check("reproducible", False, f"redacted under profile {profile}; this service redacts under "
                                     f"{redaction.PROFILE} and cannot re-render it; verify it offline")
    elif keys.active.public.key_id == row["signing_key_id"] or row["format"] != ExportFormat.ZIP:
        rendered = builder.rerender_checksum(conn, row, keys.active)
        check("reproducible", rendered == bytes(row["checksum"]),
              "re-rendered from the source records: " +
              ("identical bytes" if rendered == bytes(row["checksum"]) else
               f"SHA-256 {rendered.hex()} differs (the source records changed since the export)"))
    else:
        check("reproducible", False, f"a ZIP signed by retired key {row['signing_key_id']} cannot be re-signed "
                                     "here; verify it offline with that key")
    return checks


@cpu_bound
def verify_and_record(conn: Connection, row: Mapping[str, Any], keys: dsse.KeyRing, actor_type: str,
                      actor_id: str) -> Mapping[str, Any]:
    """Every check of the export, recorded as an ExportVerified ledger entry in the same
    transaction; returns that entry as store.recorded_verification reads it."""
    checks = check_export(conn, row, keys)
    valid = all(c.passed for c in checks)
    created_at = store.database_now(conn)
    erased = store.erased_content(conn, row["tenant_id"], row["id"])
    state = {"export_id": row["id"], "export_seq": row["seq"], "checksum": bytes(row["checksum"]).hex(),
             "valid": valid, "verifier_version": VERIFIER_VERSION,
             "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in checks]}
    if erased is not None:
        state.update(payloads_erased=erased.payloads, erasure_ids=list(erased.erasure_ids),
                     erasures=[{"erasure_id": t["erasure_id"], "basis": t["basis"],
                                "payloads_erased": t["payloads_erased"], "erased_at": rfc3339(t["erased_at"])}
                               for t in erased.tombstones])
    # No correlation id and no run_id: an access to evidence, never part of a run's governance.
    entry = AuditLedgerWriter(conn).append(
        tenant_id=row["tenant_id"], event_type="ExportVerified", entity_type="LOG_EXPORT", entity_id=row["id"],
        actor_type=actor_type, actor_id=actor_id, after_state=state, created_at=created_at,
        action_reason=f"VerifyExport: {'valid' if valid else 'NOT valid'} ({VERIFIER_VERSION})"
        + (f"; content erased after export ({erased_count(erased)})" if erased is not None else ""))
    return {"id": entry.id, "seq": entry.seq, "created_at": created_at, "after_state": state,
            "erasures": erased.tombstones if erased is not None else ()}


def erased_count(erased: store.ErasedContent) -> str:
    """"N payloads", or "up to N payloads" when a tombstone's basis is UNTRACKED (docs/ERASURE.md §3c:
    the export recorded nothing of whose payloads it carried; N is what it may have carried)."""
    return f"{'up to ' if erased.upper_bound else ''}{erased.payloads} payloads"


def current_verification(conn: Connection, row: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The recorded verification by this verifier version, while it still speaks of the export
    as it stands: not once an erasure deleted its artifact (or more of its content) after it."""
    recorded = store.recorded_verification(conn, row["tenant_id"], row["id"], VERIFIER_VERSION)
    if recorded is None:
        return None
    erased = store.erased_content(conn, row["tenant_id"], row["id"])
    if (recorded["after_state"].get("payloads_erased") or 0) != (erased.payloads if erased else 0):
        return None
    # The erasures with their bases, read from the tombstones (a verification recorded before the
    # bases were recorded with it speaks of the same tombstones: their count is what it recorded).
    return {**recorded, "erasures": erased.tombstones if erased is not None else ()}


def checks_of(recorded: Mapping[str, Any]) -> list[bundle_pb2.ExportCheck]:
    return [bundle_pb2.ExportCheck(name=c["name"], passed=c["passed"], detail=c["detail"])
            for c in recorded["after_state"]["checks"]]
