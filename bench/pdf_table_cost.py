"""What a PDF table costs in reportlab, by rows: wall time and peak resident memory (issue #19).

    .venv/bin/python bench/pdf_table_cost.py [ROWS ...]     (default 500 5000 20000)

Each size renders in a fresh interpreter (render.render_pdf of one five-column table, the
trace table's shape) and reports seconds and the process's peak RSS (ru_maxrss). The reason
a report lists at most render.PDF_MAX_ROWS rows of a table.
"""
from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
from services.export.render import PDF_MAX_ROWS, Report, Section, render_pdf
import services.export.render as render
render.PDF_MAX_ROWS = 10**9          # measure the table itself, uncut
n = int(sys.argv[1])
rows = [[str(i), "llm_call", f"2026-11-01T12:00:{i % 60:02d}.000000Z", "INFO", "ab" * 32] for i in range(n)]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
pdf = render_pdf(Report("t", "s", "2026-11-01T12:00:00.000000Z", [("a", "b")],
                        [Section("Trace", columns=["Step", "Type", "Time", "Level", "Content hash"], rows=rows)],
                        [], [], ["x"]))
print(json.dumps({"rows": n, "seconds": round(time.perf_counter() - t, 1),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                  "rss_before_render_mib": before // 1024, "pdf_kib": len(pdf) // 1024}))
"""


def main() -> None:
    for rows in [int(a) for a in sys.argv[1:]] or [500, 5000, 20000]:
        out = subprocess.run([sys.executable, "-c", CHILD, str(rows)], capture_output=True, text=True, check=True)
        print(json.dumps(json.loads(out.stdout)), flush=True)


if __name__ == "__main__":
    main()
