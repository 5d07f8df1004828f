"""The generated ledger rows and the artifact digests pinned from main at dafa644 (before the
export speed-up, issue #22), for the tests that hold export bytes to them
(tests/unit/test_export_bytes.py, tests/unit/test_export_fast.py)."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aos_evidence.kinds import BundleType, ExportFormat, ExportScope
from aos_recording import dsse, hashing
from services.export import artifacts, builder, bundles
from tests.unit.bundle_rows import link, state

T0 = datetime(2026, 3, 1, 8, 0, 0, tzinfo=timezone.utc)
_TEXTS = ["plain", "é and ü", "\U0001f602 emoji", "\ufb33 dalet", "tab\there", "line\nbreak", "quote \" back \\",
          "=SUM(A1)", "-5", "ctl \x01\x1f\x7f", "alice@example.com", "Bearer sk-proj-abcdefghijklmnopqrstuvwxyz012345",
          "", "comma, and \"quotes\"", "\u2028\u2029"]


def _state(rng: random.Random, depth: int = 0):
    # bundle_rows' generator with these pins' own keys and texts (the draws the pins were made of)
    return state(rng, depth, ("n", "password", "api_key", "input_tokens", "\U0001f602", "\ufb33", "z", "a",
                              "Authorization", "é"), _TEXTS)


def ledger_rows(count: int = 400, seed: int = 22) -> list[dict]:
    rng = random.Random(seed)
    rows, prev = [], hashing.GENESIS
    for seq in range(1, count + 1):
        row = {"id": f"t.aud-{seq}", "tenant_id": "t", "seq": seq,
               "event_type": rng.choice(["RunCompleted", "LimitBreached", "PolicyRuleUpdated", "IncidentResolved"]),
               "entity_type": rng.choice(["RUN", "LIMIT", "POLICY_RULE"]), "entity_id": f"e-{rng.randrange(50)}",
               "actor_type": rng.choice(["AGENT", "HUMAN", "SYSTEM"]), "actor_id": rng.choice(_TEXTS + ["actor-1"]),
               "action_reason": rng.choice([None, *_TEXTS]), "correlation_id": rng.choice([None, f"run-{seq // 3}"]),
               "created_at": T0 + timedelta(seconds=seq * 37, microseconds=rng.randrange(10**6)),
               "before_state": rng.choice([None, _state(rng)]), "after_state": _state(rng), "hash_version": 1}
        prev = link(row, prev)
        rows.append(row)
    return rows


def key() -> dsse.SigningKey:
    return dsse.SigningKey.from_private(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))


def slice_digest(fmt: ExportFormat, bundle_type: BundleType) -> str:
    plan = builder.Plan(tenant_id="t", scope=ExportScope.AUDIT_SLICE, bundle_type=bundle_type, format=fmt)
    writer = bundles.RecordWriter()
    sink = artifacts.Sink(lambda n, data: None)
    rendered = artifacts.render_slice(builder._head(plan), "audit_entry",
                                      (writer.audit_entry(r) for r in ledger_rows()), fmt, writer, key(), sink)
    return rendered.checksum.hex()


def bundle_digest(fmt: ExportFormat) -> str:
    writer = bundles.RecordWriter()
    plan = builder.Plan(tenant_id="t", scope=ExportScope.INCIDENT, bundle_type=BundleType.EVIDENCE, format=fmt,
                        incident_id="inc-1")
    bundle = {**builder._head(plan), "governance": [writer.audit_entry(r) for r in ledger_rows(60, seed=3)]}
    sink = artifacts.Sink(lambda n, data: None)
    return artifacts.render_bundle(bundle, fmt, writer.redactor.counts, key(), sink).checksum.hex()


# sha256 of each artifact as main at dafa644 rendered it (see the module's docstring).
PINNED = {
    ("slice", "JSON", "EVIDENCE"): "24624e63595a83e0ad6f6a7af587f2ec9ca23bcbe4fe923d52f14622bb122162",
    ("slice", "CSV", "EVIDENCE"): "b0950f94fe29ae13732d24144d57c2cb54143028bda18ae6d78e822e65e4fd86",
    ("slice", "JSON", "SOC2"): "0d4f193becfd97d0b66a19377eb2efab08664b6d6cbe7ef1f8c8fa977daf8156",
    ("slice", "CSV", "SOC2"): "1490b293684255fa429d7f1360e13b85a57dfb7176118e1f0b3e50cf05c33956",
    ("slice", "JSON", "EXECUTIVE"): "85704586b8d89dfe5eea07aafa9892b1ef87d5ce8fe5220430e39af0d3baa043",
    ("slice", "ZIP", "EVIDENCE"): "a91a8137992ddf8567b33bca78106d7788bafcaa3fb7590f7e3a05616d4b8dab",
    ("bundle", "JSON", "EVIDENCE"): "d02c38fc7ef4fc4ffbc919b9f7c035c4d940a4e2ce36387c528634b6b194f2b8",
}


def digest_of(case: tuple[str, str, str]) -> str:
    what, fmt, bundle_type = case
    if what == "slice":
        return slice_digest(ExportFormat[fmt], BundleType[bundle_type])
    return bundle_digest(ExportFormat[fmt])
