"""The offline verifier's cost on a large ZIP package (issue #19): seconds and peak RSS.

    .venv/bin/python bench/verify_export_memory.py [--entries 200000]

Renders an AUDIT_SLICE ZIP package of ``entries`` synthetic ledger entries (real hashes and
links) with the Export service's own renderer, signs its manifest as the builder does, then
runs ``python -m aos_recording.verify_export`` on it in a child process and reports the
verdict, the wall time and the child's peak RSS (ru_maxrss of the child).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from aos_evidence.kinds import ExportFormat
from aos_recording import dsse, hashing
from services.export import artifacts, bundles

TENANT = "tenant-bench"


def ledger(n: int):
    prev = hashing.GENESIS
    for seq in range(1, n + 1):
        entry = {"id": f"aud-{seq}", "tenant_id": TENANT, "event_type": "PolicyRuleCreated",
                 "entity_type": "POLICY_RULE", "entity_id": f"rule-{seq}", "actor_type": "HUMAN", "actor_id": "u-1",
                 "action_reason": "reviewed", "correlation_id": None,
                 "created_at": f"2026-11-{1 + seq // 86400 % 28:02d}T{seq // 3600 % 24:02d}:{seq // 60 % 60:02d}:"
                               f"{seq % 60:02d}.000000Z",
                 "before_state": None, "after_state": {"n": seq}}
        content = hashing.ledger_content_hash(entry)
        chain = hashing.chain_hash(prev, content)
        yield {**entry, "seq": seq, "content_hash": content.hex(), "prev_hash": prev.hex(), "chain_hash": chain.hex(),
               "redacted": False}
        prev = chain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=200_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aos-bench-verify-"))
    key = dsse.SigningKey.generate()
    head = {"format_version": bundles.FORMAT_VERSION, "tenant_id": TENANT, "scope": "AUDIT_SLICE", "subject": {},
            "bundle_type": "EVIDENCE"}
    started = time.perf_counter()
    with (work / "artifact.zip").open("wb") as out:
        rendered = artifacts.render_slice(head, "audit_entry", ledger(args.entries), ExportFormat.ZIP,
                                          bundles.RecordWriter(), key, artifacts.Sink(lambda _n, d: out.write(d)))
    render_s = time.perf_counter() - started
    at = hashing.rfc3339(datetime.now(timezone.utc))
    manifest = {"format_version": "aos.export-manifest/v2", "export_id": "exp_bench", "tenant_id": TENANT,
                "scope": "AUDIT_SLICE", "format": "ZIP", "size": rendered.size, "checksum": rendered.checksum.hex(),
                "records": rendered.records, "created_at": at, "signed_at": at, "signed_by": key.public.key_id,
                "contents": rendered.contents}
    (work / "export.dsse.json").write_text(dsse.envelope_json(dsse.sign_envelope(
        dsse.MANIFEST_PAYLOAD_TYPE, hashing.canonical_json(manifest), key)))
    started = time.perf_counter()
    child = subprocess.run([sys.executable, "-m", "aos_recording.verify_export", str(work / "artifact.zip"),
                            "--envelope", str(work / "export.dsse.json"), "--key", key.public.raw.hex(), "--json"],
                           capture_output=True, text=True)
    verify_s = time.perf_counter() - started
    verdict = json.loads(child.stdout)["verdict"] if child.stdout else child.stderr
    print(json.dumps({"entries": args.entries, "artifact_mib": round(rendered.size / 2**20, 1),
                      "render_s": round(render_s, 1),
                      "renderer_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                      "verdict": verdict, "verify_s": round(verify_s, 1),
                      "verifier_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024}))


if __name__ == "__main__":
    main()
