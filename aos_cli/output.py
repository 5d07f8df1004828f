"""What the CLI prints: rich tables for people, one JSON document (proto3 JSON) for scripts.

Results go to stdout; notes, errors and progress bars to stderr, so
``aos-evidence --json … | jq`` and ``TOKEN=$(aos-evidence token mint)`` stay clean.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

PIPED_WIDTH = 200  # piped output is read by grep, not people: do not fold rows at 80 columns (COLUMNS wins)


def to_dict(message: Message) -> dict[str, Any]:
    """Proto3 JSON with the proto field names (snake_case, as the contract's JSON)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def when(value: timestamp_pb2.Timestamp) -> str:
    """A timestamp for a table cell: UTC, to the second, ``-`` when unset."""
    if not value.seconds and not value.nanos:
        return "-"
    return value.ToDatetime().strftime("%Y-%m-%d %H:%M:%SZ")


def _title(title: str | None) -> Text | None:
    # Titles name files and records: literal text, never rich markup.
    return Text(title, style="table.title") if title else None


def passed(ok: bool) -> Text:
    return Text("ok", style="green") if ok else Text("FAIL", style="bold red")


class Output:
    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode
        self.out = Console(highlight=False)
        if not self.out.is_terminal and "COLUMNS" not in os.environ:
            self.out.width = PIPED_WIDTH
        self.err = Console(stderr=True, highlight=False)

    def document(self, doc: Message | dict[str, Any], *, compact: bool = False) -> None:
        """One JSON document on stdout (plain print: rich would wrap and colour it)."""
        data = to_dict(doc) if isinstance(doc, Message) else doc
        print(json.dumps(data, separators=(",", ":")) if compact else json.dumps(data, indent=2), flush=True)

    def table(self, columns: Iterable[str], rows: Iterable[Iterable[Any]], *, title: str | None = None) -> None:
        table = Table(title=_title(title), title_justify="left")
        for column in columns:
            table.add_column(column, overflow="fold")  # wrap, never cut: a hash must print whole
        for row in rows:
            # Text cells: record values are data, never rich markup ("[redacted]" must print as is).
            table.add_row(*(cell if isinstance(cell, Text) else Text(str(cell)) for cell in row))
        self.out.print(table)

    def fields(self, pairs: Iterable[tuple[str, Any]], *, title: str | None = None) -> None:
        """A two-column name/value table for one record."""
        table = Table(show_header=False, title=_title(title), title_justify="left")
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for name, value in pairs:
            table.add_row(name, value if isinstance(value, Text) else Text(str(value)))
        self.out.print(table)

    def checks(self, rows: Iterable[tuple[str, bool, str]], valid: bool, *, title: str) -> None:
        """A verification: each check with its result, then the verdict."""
        self.table(("check", "result", "detail"), ([name, passed(ok), detail] for name, ok, detail in rows),
                   title=title)
        self.out.print(Text("VALID", style="bold green") if valid else Text("INVALID", style="bold red"))

    def line(self, text: str | Text) -> None:
        self.out.print(text, markup=False, soft_wrap=True)

    def note(self, text: str) -> None:
        self.err.print(text, markup=False, soft_wrap=True, style="dim")

    def error(self, message: str, details: Iterable[str] = ()) -> None:
        self.err.print(f"error: {message}", markup=False, soft_wrap=True, style="bold red")
        for detail in details:
            self.err.print(f"  {detail}", markup=False, soft_wrap=True)

    @contextmanager
    def progress(self, description: str, total: int | None, *, transfer: bool = False
                 ) -> Iterator[tuple[Progress, TaskID]]:
        """A progress bar on stderr, shown only on a terminal."""
        columns = [TextColumn("{task.description}"), BarColumn()]
        columns += [DownloadColumn(), TransferSpeedColumn()] if transfer else [MofNCompleteColumn()]
        columns.append(TimeRemainingColumn())
        with Progress(*columns, console=self.err, disable=not self.err.is_terminal, transient=not transfer) as bar:
            yield bar, bar.add_task(description, total=total)

    @contextmanager
    def waiting(self, description: str, done: str) -> Iterator[None]:
        """While one call blocks: a spinner with the elapsed time on stderr (a terminal only),
        then ``done`` with the time it took ("{elapsed}" in it), as a note (stderr, always)."""
        started = time.monotonic()
        columns = [SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()]
        # Progress refreshes from its own thread: the spinner and the clock move while this one waits.
        with Progress(*columns, console=self.err, disable=not self.err.is_terminal, transient=True,
                      refresh_per_second=8) as bar:
            bar.add_task(description, total=None)
            yield
        self.note(done.format(elapsed=f"{time.monotonic() - started:.1f} s"))
