"""What redaction costs per field and per record (issue #17 part 6).

    .venv/bin/python bench/redaction_cost.py [--records 20000] [--impl path/to/redaction.py]

An export redacts a handful of fields of every record (services/export/bundles.py:
_REDACTED_FIELDS); an audit slice can hold 200k records or more. This times
Redactor.redact over a fixed, seeded corpus shaped like what exports carry: the
ledger's short fields and state dicts (ids, 64-hex hashes, RFC 3339 times, epoch
milliseconds), trace steps' prompts and tool payloads (prose, some with a secret or
an email), and reports microseconds per field and per record, best of --repeat runs;
then the cost of one long, unique prompt (about 4 KB of prose, as trace steps carry),
where per-string work (which detectors a string needs) is not amortised by repetition.
--impl times another copy of the module (e.g. the previous version, saved with
`git show <commit>:services/export/redaction.py > /tmp/old.py`) over the same corpus.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import random
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROSE = ["The customer asked for a refund of the duplicate charge on 03-02.",
         "Budget exhausted after 3 retries; the run was terminated by policy.",
         "Draft reply: thanks for your patience, the fix ships on Monday.",
         "Tool billing.lookup returned 2 charges for customer C-118.",
         "Escalated to the on-call engineer; incident inc-pii-7 acknowledged."]
SECRETS = ["contact jane.doe@example.com for access", "Authorization: Bearer " + "a1B2c3D4e5F6g7H8i9J0k1L2",
           "postgres://svc:" + "hunter2hunter2" + "@db.internal/evidence", "key AKIA" + "IOSFODNN7EXAMPLE"]


def corpus(n: int, seed: int = 7) -> list[tuple[str, object]]:
    """(kind, value) pairs, one per redacted field, for n records."""
    rng = random.Random(seed)
    fields: list[tuple[str, object]] = []
    for i in range(n):
        digest = hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()
        if i % 2:  # an audit entry: actor_id, action_reason, before_state, after_state
            fields += [("actor_id", f"user-{rng.randrange(50)}"),
                       ("action_reason", rng.choice(PROSE) if i % 3 else None),
                       ("before_state", {"status": "open", "seq": i, "chain_hash": digest} if i % 5 == 0 else None),
                       ("after_state", {"n": i, "run_id": f"tenant-demo.run-support-{i // 7}",
                                        "export_id": str(uuid.UUID(int=rng.getrandbits(128))),
                                        "at": f"2026-11-01T12:{i % 60:02d}:00.123456Z",
                                        "ts_ms": 1_790_000_000_000 + i, "checksum": digest})]
        else:  # a trace step: input_data, output_data, metadata
            text = rng.choice(SECRETS) if i % 50 == 0 else rng.choice(PROSE)
            fields += [("input_data", {"prompt": text, "tool": "billing.lookup", "customer": f"C-{i % 997}"}),
                       ("output_data", {"summary": rng.choice(PROSE), "charges": i % 4, "content_hash": digest}),
                       ("metadata", {"model": "gpt-4o", "tokens": 1200 + i % 800, "latency_ms": 812})]
    return fields


def load(impl: str | None):
    if impl is None:
        from services.export import redaction
        return redaction
    spec = importlib.util.spec_from_file_location("redaction_under_test", impl)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--impl", help="path of a redaction.py to time instead of the current one")
    args = parser.parse_args()
    module = load(args.impl)
    fields = corpus(args.records)
    best, counts = float("inf"), {}
    for _ in range(args.repeat):
        redactor = module.Redactor()
        started = time.perf_counter()
        for _, value in fields:
            if value is not None:
                redactor.redact(value)
        best = min(best, time.perf_counter() - started)
        counts = redactor.counts
    print(f"impl {args.impl or 'services/export/redaction.py'} profile {module.PROFILE}")
    print(f"{args.records} records, {len(fields)} fields: {best:.3f} s, "
          f"{best / len(fields) * 1e6:.1f} us/field, {best / args.records * 1e6:.1f} us/record; counts {counts}")
    rng = random.Random(11)
    prompts = [" ".join(rng.choice(PROSE) for _ in range(60)) + f" (ticket {i}, 2026-11-01T12:00:00Z)"
               for i in range(500)]
    best = float("inf")
    for _ in range(args.repeat):
        redactor = module.Redactor()
        started = time.perf_counter()
        for prompt in prompts:
            redactor.redact(prompt)
        best = min(best, time.perf_counter() - started)
    print(f"{len(prompts)} unique prompts of ~{len(prompts[0])} characters: {best / len(prompts) * 1e6:.0f} us/prompt")


if __name__ == "__main__":
    main()
