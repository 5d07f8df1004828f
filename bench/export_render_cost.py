"""The CPU of an audit slice's render alone, no database (issue #22, ratio 6): what the Export
service's rendering thread spends per record.

    PYTHONPATH=.:gen:bench .venv/bin/python bench/export_render_cost.py [--entries 100000] [--repeat 5]
        [--profile FILE] [--top 25] [--text]

Rows are made as ``store.audit_slice`` hands them to the renderer (tuples in
``hashing.LEDGER_ROW_COLUMNS`` order, batches of 1,000, ``created_at`` in Etc/UTC as psycopg gives
it, the hashes as bytes): the bulk loader's entries (``aos_recording.bulk.ledger_rows``: ids,
actors, a state ``{"n", "run_id"}`` on every other entry), or with ``--text`` its text-heavy
entries (``text_ledger_rows``: reasons, before and after states with notes). Each repeat renders
an AUDIT_SLICE EVIDENCE JSON artifact to a sink that only hashes (``artifacts.render_slice`` through
``bundles.AuditRecords``, as ``builder.render`` does), timed with ``time.process_time``; the minimum
and the median are printed, with the artifact's SHA-256 (the same for any checkout that renders the
same bytes). The rows are made first and frozen out of the garbage collector's sight (the service
holds a few batches at a time, not all). ``--profile`` writes a cProfile of one more render and
prints the top functions. Run it with another checkout first on PYTHONPATH (from that checkout:
``cd MAIN_COPY && PYTHONPATH=/path/to/this/bench:.:gen:bench python /path/to/this/bench/export_render_cost.py``)
to measure that checkout's code on the same rows.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import io
import pstats
import random
import statistics
import time
from zoneinfo import ZoneInfo

from psycopg.types.json import Jsonb

from aos_evidence.kinds import BundleType, ExportFormat, ExportScope
from aos_recording import bulk, dsse, hashing
from services.export import artifacts, bundles

_UTC = ZoneInfo("Etc/UTC")


def rows(entries: int, text: bool, seed: int = 7) -> list[list[tuple]]:
    """The slice's batches of 1,000 rows, as the renderer receives them."""
    tenant = bulk.tenant_ids(1)[0]
    made = (bulk.text_ledger_rows if text else bulk.ledger_rows)(tenant, entries, random.Random(seed))
    out: list[tuple] = []
    prev = hashing.GENESIS
    for seq, copied in enumerate(made, start=1):
        if text:
            (id_, tenant_id, event, entity, entity_id, actor_type, actor_id, reason, correlation_id, created,
             before, after, content, *_rest) = copied
        else:
            (id_, tenant_id, event, entity, entity_id, actor_type, actor_id, correlation_id, created, after,
             content, *_rest) = copied
            reason, before = None, None
        before = before.obj if isinstance(before, Jsonb) else before
        after = after.obj if isinstance(after, Jsonb) else after
        chain = hashing.chain_hash(prev, content)
        out.append((seq, content, prev, chain, 1, None, id_, tenant_id, event, entity, entity_id, actor_type, actor_id,
                    reason, correlation_id, created.astimezone(_UTC), before, after))
        prev = chain
    return [out[i:i + 1000] for i in range(0, len(out), 1000)]


def render(batches: list[list[tuple]], key: dsse.SigningKey) -> tuple[bytes, int]:
    head = {"format_version": bundles.FORMAT_VERSION, "tenant_id": batches[0][0][7] if batches else "",
            "scope": ExportScope.AUDIT_SLICE.value, "subject": {}, "bundle_type": BundleType.EVIDENCE.value}
    writer = bundles.RecordWriter()
    digest = hashlib.sha256()
    sink = artifacts.Sink(lambda n, data: digest.update(data))
    records = bundles.AuditRecords(writer, iter(batches))
    rendered = artifacts.render_slice(head, "audit_entry", records, ExportFormat.JSON, writer, key, sink)
    return rendered.checksum, rendered.records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--text", action="store_true", help="the bulk loader's text-heavy entries")
    parser.add_argument("--profile", help="write a cProfile of one more render here")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    batches = rows(args.entries, args.text)
    # The service holds a few batches at a time, this script all of them: out of the collector's
    # sight (else each full collection during a render walks every row made above).
    gc.collect()
    gc.freeze()
    key = dsse.SigningKey.generate()
    times = []
    checksum, records = b"", 0
    for _ in range(args.repeat):
        started = time.process_time()
        checksum, records = render(batches, key)
        times.append(time.process_time() - started)
    print(f"{records:,} records, sha256 {checksum.hex()[:16]}…: CPU min {min(times):.3f} s "
          f"({min(times) / records * 1e6:.2f} µs a record), median {statistics.median(times):.3f} s; "
          f"rounds {' '.join(f'{t:.3f}' for t in times)}")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        render(batches, key)
        profiler.disable()
        profiler.dump_stats(args.profile)
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).sort_stats("tottime")
        stats.print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)
        print(out.getvalue())


if __name__ == "__main__":
    main()
