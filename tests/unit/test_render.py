"""The export renderers: same input, same bytes, in any process, PDF, CSV and ZIP alike."""
from __future__ import annotations

import base64
import io
import os
import re
import subprocess
import sys
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st
from reportlab import rl_config

from services.export.render import Section, render_csv, render_pdf, render_zip
from tests.unit.samples import sample_report

REPO = Path(__file__).resolve().parents[2]
T = datetime(2026, 1, 13, 12, 0, 0, 123456, tzinfo=timezone.utc)


def _page_count(pdf: bytes) -> int:
    return len(re.findall(rb"/Type /Page(?!s)", pdf))


def _shown_strings(pdf: bytes) -> list[list[bytes]]:
    """The strings drawn on each page (content streams are ASCII85 over Flate)."""
    streams = re.findall(rb"stream\r?\n(.*?)endstream", pdf, re.S)
    contents = [zlib.decompress(base64.a85decode(stream.strip(), adobe=True)) for stream in streams]
    return [re.findall(rb"\((.*?)\) Tj", content) for content in contents]


def _shown_text(pdf: bytes) -> list[bytes]:
    """The text drawn on each page, strings run together."""
    return [b"".join(strings) for strings in _shown_strings(pdf)]


# --- PDF -------------------------------------------------------------------

def test_pdf_is_a_pdf_and_the_same_bytes_every_time():
    pdf = render_pdf(sample_report())
    assert pdf.startswith(b"%PDF-")
    assert pdf.rstrip().endswith(b"%%EOF")
    assert render_pdf(sample_report()) == pdf


def test_pdf_is_the_same_bytes_in_another_process_whatever_its_clock_settings():
    # SOURCE_DATE_EPOCH would move reportlab's invariant timestamp; TZ and hash seed must not matter either.
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000", "TZ": "Asia/Tokyo", "PYTHONHASHSEED": "12345"}
    code = ("import sys; from tests.unit.samples import sample_report; "
            "from services.export.render import render_pdf; sys.stdout.buffer.write(render_pdf(sample_report()))")
    child = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, check=True)
    assert child.stdout == render_pdf(sample_report())


def test_pdf_is_the_same_bytes_from_concurrent_threads():
    report = sample_report()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = set(pool.map(lambda _: render_pdf(report), range(8)))
    assert results == {render_pdf(report)}


def test_pdf_leaves_reportlab_global_settings_alone():
    before = rl_config.invariant
    render_pdf(sample_report())
    assert rl_config.invariant == before


def test_pdf_dates_come_from_the_records_in_utc():
    pdf = render_pdf(sample_report(generated_from="2026-01-13T14:30:05.5+02:00"))
    assert b"/CreationDate (D:20260113123005+00'00')" in pdf
    assert b"/ModDate (D:20260113123005+00'00')" in pdf


def test_pdf_metadata_is_set_explicitly():
    pdf = render_pdf(sample_report())
    for entry in (b"/Title (Evidence bundle)", b"/Author (AOS Evidence Plane)", b"/Creator (AOS Evidence Plane export)"):
        assert entry in pdf


@pytest.mark.parametrize("changes", [
    {"title": "Another bundle"},
    {"generated_from": "2026-01-13T12:00:01.000000Z"},
    {"hashes": [("Trace content hash", "cd" * 32)]},
    {"timeline": []},
])
def test_different_reports_give_different_bytes(changes):
    assert render_pdf(sample_report(**changes)) != render_pdf(sample_report())


def test_pdf_lays_out_every_part_with_page_numbers():
    pages = _shown_text(render_pdf(sample_report()))
    text = b"".join(pages)
    for part in (b"Evidence bundle \\227 LLM run run-123", b"Summary", b"Ledger", b"LimitUpdated", b"Timeline",
                 b"completion received", b"Hashes", b"How to verify", b"aos-verify bundle.zip"):
        assert part in text
    assert [b"page %d" % n in page for n, page in enumerate(pages, 1)] == [True] * len(pages)


def test_pdf_wraps_long_hex_digests_in_courier():
    digest = "f" * 200
    pdf = render_pdf(sample_report(hashes=[("Long digest", digest)]))
    assert b"/BaseFont /Courier" in pdf
    lines = [s for page in _shown_strings(pdf) for s in page if s.startswith(b"fff")]
    assert len(lines) > 1 and b"".join(lines) == digest.encode()


def test_markup_and_text_outside_latin1_render_literally():
    hostile = 'a < b && c > d <b>not bold</b> "q" → 日本 \x00\x07'
    pdf = render_pdf(sample_report(title=hostile, subtitle=hostile, summary=[(hostile, hostile)],
                                   sections=[Section(hostile, [hostile], [hostile], [[hostile]])],
                                   timeline=[(hostile, hostile, hostile)], hashes=[(hostile, hostile)],
                                   how_to_verify=[hostile]))
    text = b"".join(_shown_text(pdf))
    assert b"<b>not bold</b>" in text  # shown as text, not applied as markup
    assert b"? ??" in text  # what the built-in fonts cannot draw becomes '?'


def test_a_2000_row_table_spans_pages_and_repeats_its_header():
    rows = [[str(i), f"event-{i}", "payload " * (i % 30)] for i in range(2000)]
    pdf = render_pdf(sample_report(sections=[Section("Big", columns=["seq-col", "event-col", "payload-col"],
                                                     rows=rows)]))
    assert _page_count(pdf) > 10
    pages_with_header = [page for page in _shown_text(pdf) if b"payload-col" in page]
    assert len(pages_with_header) > 10


def test_a_cell_taller_than_a_page_splits_instead_of_failing():
    report = sample_report(sections=[Section("Huge", columns=["k", "v"],
                                             rows=[["state", "\n".join(f"line {i}" for i in range(400))]])])
    pdf = render_pdf(report)
    assert _page_count(pdf) > 3
    assert render_pdf(report) == pdf


def test_an_empty_report_still_renders_every_heading():
    report = sample_report(summary=[], sections=[Section("No rows", columns=["a"])], timeline=[], hashes=[],
                           how_to_verify=[])
    text = b"".join(_shown_text(render_pdf(report)))
    for heading in (b"Summary", b"No rows", b"Timeline", b"No events.", b"Hashes", b"How to verify"):
        assert heading in text


def test_pdf_rejects_malformed_input():
    with pytest.raises(ValueError):
        render_pdf(sample_report(generated_from="yesterday"))
    with pytest.raises(ValueError):
        render_pdf(sample_report(sections=[Section("S", columns=["a", "b"], rows=[["only one"]])]))
    with pytest.raises(ValueError):
        render_pdf(sample_report(sections=[Section("S", rows=[["no columns"]])]))


# --- CSV -------------------------------------------------------------------

def test_csv_exact_bytes():
    columns = ["id", "note", "n", "ok", "at", "state", "cmd", "none"]
    rows = [
        ["a,1", 'say "hi"\nbye', -5, True, T, {"b": 1, "a": [1, "é"]}, "=SUM(A1:A2)", None],
        ["b", "plain", 1.5, False, T.astimezone(timezone(timedelta(hours=2))), [], "-1+2", ""],
        ["c", "@me", 0, False, T, {}, "\tx", "\rx"],
    ]
    assert render_csv(columns, rows) == (
        "id,note,n,ok,at,state,cmd,none\r\n"
        '"a,1","say ""hi""\nbye",-5,true,2026-01-13T12:00:00.123456Z,"{""a"":[1,""é""],""b"":1}",\'=SUM(A1:A2),\r\n'
        "b,plain,1.5,false,2026-01-13T12:00:00.123456Z,[],'-1+2,\r\n"
        "c,'@me,0,false,2026-01-13T12:00:00.123456Z,{},'\tx,\"'\rx\"\r\n"
    ).encode()


def test_csv_is_utf8_without_bom_and_keeps_a_lone_empty_field():
    data = render_csv(["name"], [["日本"], [None]])
    assert data == 'name\r\n日本\r\n""\r\n'.encode()
    assert not data.startswith(b"\xef\xbb\xbf")


def test_csv_rejects_ragged_rows_and_unknown_types():
    with pytest.raises(ValueError):
        render_csv(["a", "b"], [["1"]])
    with pytest.raises(TypeError):
        render_csv(["a"], [[object()]])


# --- ZIP -------------------------------------------------------------------

MEMBERS = [("manifest.json", b'{"v":1}'), ("records/ledger.csv", b"seq\r\n1\r\n" * 100), ("a.pdf", b"%PDF-")]


def test_zip_is_the_same_bytes_and_reads_back():
    data = render_zip(MEMBERS, T)
    assert render_zip(MEMBERS, T) == data
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.comment == b""
        infos = archive.infolist()
        assert [i.filename for i in infos] == [name for name, _ in MEMBERS]  # order kept, not sorted
        for info, (name, content) in zip(infos, MEMBERS):
            assert archive.read(name) == content
            assert info.date_time == (2026, 1, 13, 12, 0, 0)
            assert info.compress_type == zipfile.ZIP_DEFLATED
            assert info.create_system == 3
            assert info.external_attr >> 16 == 0o100644
            assert info.extra == b"" and info.comment == b""


def test_zip_timestamp_is_utc_and_clamped_to_1980():
    assert render_zip(MEMBERS, T.astimezone(timezone(timedelta(hours=-5)))) == render_zip(MEMBERS, T)
    assert render_zip(MEMBERS, T.replace(tzinfo=None)) == render_zip(MEMBERS, T)
    old = render_zip(MEMBERS, datetime(1970, 1, 1, tzinfo=timezone.utc))
    with zipfile.ZipFile(io.BytesIO(old)) as archive:
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert render_zip(MEMBERS, T + timedelta(seconds=2)) != render_zip(MEMBERS, T)


@pytest.mark.parametrize("name", ["../x", "a/../b", "/etc/passwd", "C:evil", "a\\b", "", "dir/", "./a", "a//b"])
def test_zip_rejects_unsafe_names(name):
    with pytest.raises(ValueError):
        render_zip([(name, b"x")], T)


def test_zip_rejects_duplicate_names():
    with pytest.raises(ValueError):
        render_zip([("a.txt", b"1"), ("a.txt", b"2")], T)


def test_a_pdf_table_lists_a_bounded_number_of_rows_and_says_so(monkeypatch):
    # reportlab's tables grow ~15 KiB and a growing time per row (bench/pdf_table_cost.py): a report never lists more than
    # PDF_MAX_ROWS of a table (here 3), and names how many there are and where they all are.
    from services.export import render

    monkeypatch.setattr(render, "PDF_MAX_ROWS", 3)
    rows = [[str(i), f"event {i}", "{}"] for i in range(7)]
    timeline = [("2026-01-13T11:59:00.000000Z", "step", f"step {i}") for i in range(5)]
    pdf = render_pdf(sample_report(sections=[Section("Ledger", columns=["seq", "event", "state"], rows=rows)],
                                   timeline=timeline, hashes=[("h", "ab" * 32)] * 2))
    text = b"".join(_shown_text(pdf))
    assert b"event 2" in text and b"event 3" not in text and b"step 2" in text and b"step 3" not in text
    assert b"The first 3 of 7 rows" in text and b"The first 3 of 5 events" in text
    assert b"of 2 hashes" not in text                       # a table within the bound is not cut
    # Within the bound nothing changes: the same bytes as before the bound existed.
    monkeypatch.setattr(render, "PDF_MAX_ROWS", 500)
    assert b"The first" not in b"".join(_shown_text(render_pdf(sample_report())))


# --- CSV records: the one-search path against the per-cell rules ---------------------------------

def _csv_row_per_cell(cells) -> bytes:
    """csv_row as it was before the one-search path: every cell through _csv_text, each searched."""
    from services.export import render

    fields = ['"' + c.replace('"', '""') + '"' if re.search(r'[",\r\n]', c) else c
              for c in (render._csv_text(v) for v in cells)]
    if fields == [""]:
        fields = ['""']
    return (",".join(fields) + "\r\n").encode("utf-8")


_cell_text = st.text(st.sampled_from(list('ab,"\r\n=+-@\t é\U0001f602\x00')), max_size=6)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.none() | st.booleans() | st.integers() | _cell_text | st.lists(_cell_text, max_size=2)
                | st.dictionaries(_cell_text, _cell_text, max_size=2), min_size=1, max_size=6))
def test_csv_rows_equal_the_per_cell_rules(cells):
    """Commas, quotes, CR and LF in any cell, formula starts, empty and lone cells, JSON cells."""
    from services.export.render import csv_row

    assert csv_row(cells) == _csv_row_per_cell(cells)
