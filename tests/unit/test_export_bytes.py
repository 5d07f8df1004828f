"""Export artifacts keep their bytes across the export speed-up (issue #22).

The canonicaliser (orjson where it is RFC 8785), the record writer's exact-type path, the CSV
cell's and the batched sink writes must not change one byte of an artifact: each digest below
was computed with main at dafa644 (before them) from the same generated rows — floats,
non-BMP text, controls, secrets to redact, nested states, null fields — and is pinned
in tests/unit/export_pins.py.
``bench/export_verify_cost.py`` checks the same over a bulk-loaded ledger, main against the branch.
"""
from __future__ import annotations

import pytest

from aos_recording import hashing
from services.export import bundles
from tests.unit.export_pins import PINNED, digest_of, ledger_rows


@pytest.mark.parametrize("case", sorted(PINNED), ids="-".join)
def test_artifact_bytes_are_main_s(case):
    assert digest_of(case) == PINNED[case]


def test_the_rows_take_both_canonicaliser_paths():
    """The pinned rows exercise the fast path and the reference (floats, non-BMP keys), and redaction."""
    rows = ledger_rows()
    fast = sum(hashing._fast(bundles.RecordWriter().audit_entry(r)) for r in rows)
    assert 0 < fast < len(rows)
    writer = bundles.RecordWriter()
    assert sum(writer.audit_entry(r)["redacted"] for r in rows) > 0
    assert writer.redactor.total == sum(writer.redactor.counts.values()) > 0


if __name__ == "__main__":  # prints the digests of the code on the path (how PINNED was made)
    for case in sorted(PINNED):
        print(repr(case), repr(digest_of(case)))
