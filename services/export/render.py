"""Byte-reproducible renderers for evidence exports: PDF, CSV and ZIP.

Product invariant: the same export request over the same records yields the
same artifact bytes, PDF and ZIP included. So nothing here reads the clock,
draws random ids or depends on an order the input does not give; every date in
an artifact comes from the records. Bytes are reproducible for a given install
(reportlab and zlib versions, reportlab's settings left at their defaults).
"""
from __future__ import annotations

import hashlib
import io
import re
import stat
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from functools import partial
from typing import Any
from uuid import UUID
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import cm
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    PageBreak,
    Paragraph,
    Preformatted,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from aos_recording.hashing import canonical_json, rfc3339


@dataclass(frozen=True)
class Section:
    """A heading, then its paragraphs, then a table when it has columns."""
    title: str
    paragraphs: Sequence[str] = ()
    columns: Sequence[str] = ()
    rows: Sequence[Sequence[str]] = ()  # each exactly len(columns) cells; long cells wrap
    total_rows: int | None = None       # the rows there are, when ``rows`` holds only the first PDF_MAX_ROWS


@dataclass(frozen=True)
class Report:
    """A report a person reads; render_pdf lays it out."""
    title: str
    subtitle: str                               # e.g. "Evidence bundle — LLM run run-123"
    generated_from: str                         # RFC 3339 from the records: the PDF's creation date
    summary: list[tuple[str, str]]              # (label, value)
    sections: list[Section]
    timeline: list[tuple[str, str, str]]        # (RFC 3339 time, kind, text), already sorted
    hashes: list[tuple[str, str]]               # (label, hex digest)
    how_to_verify: list[str]                    # paragraphs or commands for an auditor
    # The events and hashes there are, when ``timeline`` or ``hashes`` holds only the first
    # PDF_MAX_ROWS of them (a run's steps are not held: services/export/bundles.Steps).
    timeline_total: int | None = None
    hashes_total: int | None = None


# --- PDF -------------------------------------------------------------------

_PAGE_WIDTH = A4[0]
_MARGIN = 2 * cm
_BODY_WIDTH = _PAGE_WIDTH - 2 * _MARGIN
_HASH_LABEL_WIDTH = 5 * cm
_CELL_PADDING = 3  # reportlab's default cell padding, each side

_TITLE = ParagraphStyle("title", fontName="Helvetica-Bold", fontSize=24, leading=30, spaceAfter=12)
_SUBTITLE = ParagraphStyle("subtitle", fontName="Helvetica", fontSize=14, leading=18, spaceAfter=24)
_HEADING = ParagraphStyle("heading", fontName="Helvetica-Bold", fontSize=14, leading=18, spaceBefore=12,
                          spaceAfter=6, keepWithNext=1)
_BODY = ParagraphStyle("body", fontName="Helvetica", fontSize=10, leading=13, spaceAfter=6)
_CELL = ParagraphStyle("cell", fontName="Helvetica", fontSize=8, leading=10)
_HEADER_CELL = ParagraphStyle("header_cell", parent=_CELL, fontName="Helvetica-Bold")
_CODE = ParagraphStyle("code", fontName="Courier", fontSize=8, leading=10)

_TABLE_STYLE = TableStyle([
    ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
    ("VALIGN", (0, 0), (-1, -1), "TOP"),
])
_HEADED_TABLE_STYLE = TableStyle([("BACKGROUND", (0, 0), (-1, 0), colors.lightgrey)], parent=_TABLE_STYLE)

# Control characters but TAB and LF: no glyph to draw, and not allowed in Paragraph's XML markup.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _drawable(text: str) -> str:
    """``text`` limited to what Helvetica and Courier can draw: anything else becomes '?'.

    The built-in fonts need no font files but only cover WinAnsi (Latin-1 plus
    a few typographic marks such as '—'), so '→ 日本' renders as '? ??'. Line
    ends are normalised to '\\n'.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("?", text).encode("cp1252", errors="replace").decode("cp1252")


def _para(text: str, style: ParagraphStyle) -> Paragraph:
    """A Paragraph showing ``text`` literally: markup escaped, line breaks kept."""
    return Paragraph(escape(_drawable(text)).replace("\n", "<br/>"), style)


def _table(columns: Sequence[str], rows: Iterable[Sequence[str]], widths: Sequence[float]) -> Table:
    """A table of wrapped cells; the header row repeats on every page the table spans."""
    data: list[list[Flowable]] = [[_para(c, _HEADER_CELL) for c in columns]]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"row has {len(row)} cells, table has {len(columns)} columns: {row!r}")
        data.append([_para(cell, _CELL) for cell in row])
    # splitInRow: a cell taller than a page (a large JSON state) splits instead of failing the layout.
    return Table(data, colWidths=list(widths), repeatRows=1, splitInRow=1, style=_HEADED_TABLE_STYLE)


def _hash_table(hashes: Sequence[tuple[str, str]]) -> Table:
    """Labels beside digests in Courier, long digests wrapped at the column's width."""
    digest_width = _BODY_WIDTH - _HASH_LABEL_WIDTH
    chars_per_line = int((digest_width - 2 * _CELL_PADDING) // (0.6 * _CODE.fontSize))  # Courier: 0.6 em a glyph
    data = [[_para(label, _CELL), Preformatted(_drawable(digest), _CODE, maxLineLength=chars_per_line)]
            for label, digest in hashes]
    return Table(data, colWidths=[_HASH_LABEL_WIDTH, digest_width], style=_TABLE_STYLE)


def _section(title: str, body: Sequence[Flowable], empty: str) -> list[Flowable]:
    return [_para(title, _HEADING), *(body or [_para(empty, _BODY)])]


# A report is read by a person, and reportlab's tables cost ~15 KiB and a growing time per
# row (bench/pdf_table_cost.py: 500 rows 38 MiB peak RSS; 5,000 rows 108 MiB, 8 s; 20,000
# rows 336 MiB): a table lists at most this many rows and says so; the JSON (a ZIP's
# evidence.json) carries all.
PDF_MAX_ROWS = 500


def _cut(rows: Sequence[object], total: int | None, what: str) -> list[Flowable]:
    """The note above a table cut to PDF_MAX_ROWS; nothing for one that is not. ``total``: how
    many rows there are, when ``rows`` holds only the first of them."""
    count = len(rows) if total is None else total
    if count <= PDF_MAX_ROWS:
        return []
    return [_para(f"The first {PDF_MAX_ROWS:,} of {count:,} {what}; the JSON export (and a ZIP package's "
                  f"evidence.json) carries all of them.", _BODY)]


def _story(report: Report) -> list[Flowable]:
    story: list[Flowable] = [
        Spacer(1, 6 * cm),
        _para(report.title, _TITLE),
        _para(report.subtitle, _SUBTITLE),
        _para(f"Generated from records as of {report.generated_from}", _BODY),
        PageBreak(),
    ]
    summary = [_table(("Item", "Value"), report.summary, (5 * cm, _BODY_WIDTH - 5 * cm))] if report.summary else []
    story += _section("Summary", summary, "Nothing to summarise.")
    for section in report.sections:
        body: list[Flowable] = [_para(p, _BODY) for p in section.paragraphs]
        if section.columns:
            width = _BODY_WIDTH / len(section.columns)
            body += _cut(section.rows, section.total_rows, "rows")
            body.append(_table(section.columns, section.rows[:PDF_MAX_ROWS], [width] * len(section.columns)))
        elif section.rows:
            raise ValueError(f"section {section.title!r} has rows but no columns")
        story += _section(section.title, body, "Nothing recorded.")
    timeline = [*_cut(report.timeline, report.timeline_total, "events"),
                _table(("Time", "Kind", "Event"), report.timeline[:PDF_MAX_ROWS],
                       (4.4 * cm, 3.5 * cm, _BODY_WIDTH - 7.9 * cm))] if report.timeline else []
    story += _section("Timeline", timeline, "No events.")
    story += _section("Hashes", [*_cut(report.hashes, report.hashes_total, "hashes"),
                                 _hash_table(report.hashes[:PDF_MAX_ROWS])]
                      if report.hashes else [], "No hashes.")
    story += _section("How to verify", [_para(p, _BODY) for p in report.how_to_verify], "No instructions.")
    return story


def _footer(canvas: Canvas, _doc: SimpleDocTemplate) -> None:
    canvas.saveState()
    canvas.setFont("Helvetica", 8)
    canvas.drawCentredString(_PAGE_WIDTH / 2, _MARGIN / 2, f"page {canvas.getPageNumber()}")
    canvas.restoreState()


def _as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken as UTC, as hashing.rfc3339 does."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _pdf_date(rfc3339_text: str) -> str:
    """An RFC 3339 timestamp as a PDF date in UTC."""
    value = _as_utc(datetime.fromisoformat(rfc3339_text))
    return (f"D:{value.year:04d}{value.month:02d}{value.day:02d}"
            f"{value.hour:02d}{value.minute:02d}{value.second:02d}+00'00'")


class _RecordClockCanvas(Canvas):
    """A canvas whose only clock is the records' timestamp.

    ``invariant=1`` makes reportlab stamp every document 2000-01-01 instead of
    now, per document and without touching the global ``rl_config.invariant``.
    But ``SOURCE_DATE_EPOCH`` in the environment overrides that stamp, and the
    stamp feeds both the Info dates and the digest behind the trailer /ID. So
    the dates come from a date formatter (public API) and the /ID digest is
    reseeded from the same date: neither depends on the process's environment.
    """

    def __init__(self, *args: Any, pdf_date: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setDateFormatter(lambda *_ymdhms: pdf_date)
        # reportlab seeds this md5 with its own timestamp and later adds title, author, subject, keywords.
        # (The stubs leave out the canvas's PDFDocument, _doc.)
        digest = hashlib.md5(b"a reportlab document" + pdf_date.encode(), usedforsecurity=False)
        self._doc.signature = digest  # type: ignore[attr-defined]


def render_pdf(report: Report) -> bytes:
    """The report as a PDF; identical bytes for an identical report.

    Only the built-in Helvetica and Courier fonts are used, so text outside
    WinAnsi (Latin-1 plus a few marks like '—') is drawn as '?'; the Info
    dictionary (title, subject) keeps the full Unicode text. Raises ValueError
    for a malformed ``generated_from`` or a table row of the wrong width.
    """
    pdf_date = _pdf_date(report.generated_from)
    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out, pagesize=A4, leftMargin=_MARGIN, rightMargin=_MARGIN, topMargin=_MARGIN, bottomMargin=_MARGIN,
        title=report.title, subject=report.subtitle, author="AOS Evidence Plane",
        creator="AOS Evidence Plane export", producer="AOS Evidence Plane export (ReportLab)",
        # Per document, so nothing global changes; explicit so reportlab settings defaults don't leak in.
        invariant=1, pageCompression=1, lang="en", initialFontName="Helvetica",
    )
    doc.build(_story(report), onFirstPage=_footer, onLaterPages=_footer,
              canvasmaker=partial(_RecordClockCanvas, pdf_date=pdf_date))
    return out.getvalue()


# --- CSV -------------------------------------------------------------------

# Spreadsheets run a cell starting with one of these as a formula (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NEEDS_QUOTES = re.compile(r'[",\r\n]')


def _csv_text(value: Any) -> str:
    """One cell's text, before quoting.

    Text that a spreadsheet would run as a formula gets a leading apostrophe
    (``=SUM(A1)`` becomes ``'=SUM(A1)``): the file is read by people with
    spreadsheets, and the apostrophe shows them the value was neutralised.
    Numbers are left alone: ``-5`` is data, not a formula.
    """
    if type(value) is str:  # most cells: the same result as the isinstance chain below
        return "'" + value if value.startswith(_FORMULA_STARTS) else value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal)):
        return str(value)
    if isinstance(value, datetime):
        text = rfc3339(value)
    elif isinstance(value, (Mapping, list, tuple)):
        text = canonical_json(value).decode()
    elif isinstance(value, (str, date, UUID)):
        text = str(value)
    else:  # a default repr could carry a memory address: refuse rather than vary
        raise TypeError(f"cannot render {type(value).__name__} as a CSV cell")
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


_QUOTE_OR_BREAK = re.compile(r'["\r\n]')


def _csv_record(cells: Sequence[str]) -> str:
    # Most records need no quoting: one search over the joined record decides for every cell
    # (a cell's own comma shows as one comma more than the separators), instead of one per cell.
    line = ",".join(cells)
    if len(cells) > 1 and line.count(",") == len(cells) - 1 and not _QUOTE_OR_BREAK.search(line):
        return line + "\r\n"
    fields = ['"' + c.replace('"', '""') + '"' if _NEEDS_QUOTES.search(c) else c for c in cells]
    if fields == [""]:  # a lone empty field would be a blank line, which readers skip
        fields = ['""']
    return ",".join(fields) + "\r\n"


def csv_lines(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[bytes]:
    """render_csv line by line, for artifacts too large to hold: the header, then each row."""
    yield csv_row(columns)
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"row has {len(row)} cells, header has {len(columns)}: {row!r}")
        yield csv_row(row)


def csv_row(cells: Sequence[Any]) -> bytes:
    """One CSV record (render_csv's rules), for a writer that checks widths itself."""
    # A text cell inline (_csv_text's first branch): most cells are text.
    return _csv_record([("'" + v if v.startswith(_FORMULA_STARTS) else v) if type(v) is str else _csv_text(v)
                        for v in cells]).encode("utf-8")


def render_csv(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    """RFC 4180 CSV: UTF-8 without BOM, CRLF line ends, header record first.

    Cells: None is empty, bools are ``true``/``false``, datetimes RFC 3339 UTC,
    mappings and lists canonical JSON (RFC 8785). Fields holding a quote,
    comma, CR or LF are quoted. Text starting with = + - @ TAB or CR gets a
    leading apostrophe against formula injection (header names included).
    Raises ValueError for a row whose width differs from the header's.
    """
    return b"".join(csv_lines(columns, rows))


# --- ZIP -------------------------------------------------------------------

_ZIP_EPOCH = datetime(1980, 1, 1, tzinfo=timezone.utc)  # the earliest date a ZIP entry can carry
_REGULAR_FILE_0644 = (stat.S_IFREG | 0o644) << 16       # unix mode in the high 16 bits
_UNIX = 3
SPOOL_BYTES = 1024 * 1024                                # kept in memory; beyond, a temporary file


def _check_member_name(name: str) -> None:
    """Reject names that could escape the extraction directory or mean a directory."""
    parts = name.split("/")
    if (not name or name.startswith("/") or "\\" in name or "\x00" in name or re.match(r"[A-Za-z]:", name)
            or any(part in ("", ".", "..") for part in parts)):
        raise ValueError(f"unsafe ZIP member name: {name!r}")


class _Window:
    """A seekable file for zipfile.ZipFile that hands bytes on once a member is done.

    zipfile writes a member's local header, its compressed data, then seeks back to fill
    the header's CRC and sizes. Only the member being written is kept (in a spool that
    moves to a temporary file past SPOOL_BYTES); ``commit`` passes it to ``out`` in
    chunks and forgets it. A seek before the current member is a bug, and raises.
    """

    def __init__(self, out: Callable[[bytes], None]) -> None:
        self._out = out
        self._base = 0
        self._spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)

    def write(self, data: bytes) -> int:
        return self._spool.write(data)

    def tell(self) -> int:
        return self._base + self._spool.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET or offset < self._base:
            raise OSError(f"the ZIP stream cannot seek to {offset} (whence {whence}): "
                          f"{self._base} bytes are already written out")
        return self._base + self._spool.seek(offset - self._base)

    def seekable(self) -> bool:
        return True

    def flush(self) -> None:
        pass

    def commit(self) -> None:
        """Hands on everything written so far; the stream continues after it."""
        end = self._spool.seek(0, io.SEEK_END)
        self._spool.seek(0)
        while chunk := self._spool.read(SPOOL_BYTES):
            self._out(chunk)
        self._spool.close()
        self._spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
        self._base += end

    def close(self) -> None:
        self._spool.close()


class Spool:
    """A ZIP member's content as it is produced, kept in a temporary file past SPOOL_BYTES,
    with its running SHA-256 and size (for the package manifest and SHA256SUMS)."""

    def __init__(self) -> None:
        self._file = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
        self._digest = hashlib.sha256()
        self.size = 0

    @classmethod
    def of(cls, data: bytes) -> Spool:
        spool = cls()
        spool.write(data)
        return spool

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._digest.update(data)
        self.size += len(data)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def chunks(self) -> Iterator[bytes]:
        self._file.seek(0)
        while chunk := self._file.read(SPOOL_BYTES):
            yield chunk

    def close(self) -> None:
        self._file.close()


class ZipStream:
    """A ZIP written member by member into ``out``, never held whole: byte for byte what
    zipfile writes into a seekable file with ``writestr`` (so packages made before streaming
    re-render identically). Every entry carries ``timestamp`` (UTC, naive taken as UTC,
    clamped to the ZIP epoch 1980-01-01; DOS dates keep even seconds only), mode 0644 from
    a unix host, DEFLATE level 9, no extra fields and no comments. ``add`` raises ValueError
    for a duplicate name or one that is absolute, contains '..', '.', empty segments or
    backslashes."""

    def __init__(self, out: Callable[[bytes], None], timestamp: datetime) -> None:
        when = max(_as_utc(timestamp), _ZIP_EPOCH)
        self._date_time = (when.year, when.month, when.day, when.hour, when.minute, when.second)
        self._window = _Window(out)
        self._archive = zipfile.ZipFile(self._window, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9)
        self._seen: set[str] = set()

    def add(self, name: str, chunks: Iterable[bytes], size: int) -> None:
        """One member of ``size`` bytes, given in chunks (any split: deflate's output does not
        depend on it). The size decides ZIP64 exactly as ``writestr`` does."""
        _check_member_name(name)
        if name in self._seen:
            raise ValueError(f"duplicate ZIP member name: {name!r}")
        self._seen.add(name)
        info = zipfile.ZipInfo(name, date_time=self._date_time)
        info.create_system = _UNIX
        info.external_attr = _REGULAR_FILE_0644
        info.compress_type = zipfile.ZIP_DEFLATED
        # What writestr(..., compresslevel=9) sets; zipfile has no public setter before 3.13.
        info._compresslevel = 9  # type: ignore[attr-defined]
        info.file_size = size    # writestr sets it before writing: it decides ZIP64
        written = 0
        with self._archive.open(info, "w") as member:
            for chunk in chunks:
                member.write(chunk)
                written += len(chunk)
        if written != size:
            raise ValueError(f"ZIP member {name!r}: {written} bytes written, {size} announced")
        self._window.commit()

    def close(self) -> None:
        """Writes the central directory and hands on the rest."""
        self._archive.close()
        self._window.commit()
        self._window.close()


def render_zip(members: Sequence[tuple[str, bytes]], timestamp: datetime) -> bytes:
    """A ZIP of small in-memory ``members`` in the given order (ZipStream into bytes)."""
    out = bytearray()
    stream = ZipStream(out.extend, timestamp)
    for name, data in members:
        stream.add(name, [data], len(data))
    stream.close()
    return bytes(out)
