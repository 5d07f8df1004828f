"""Stored wire forms of immutable evidence (issue #22).

An evidence row never changes once written (the ledger is append-only, a run's or a
system record's row is written once), so its protobuf encoding — the message
``aos_evidence.messages`` builds from it, with its EvidenceMetadata — need be computed
only once per process. ``WireForms`` keeps those encodings in a bounded LRU keyed by
(kind, schema version, tenant, id), and a list answer is then its page's stored items
(framed as items of the answer's repeated field: tag, length, bytes) joined between a
header and a tail built per call: protobuf concatenates repeated fields, so the bytes are exactly what
``SerializeToString(deterministic=True)`` of the whole answer gives (tests/unit/test_wire.py
proves it on generated rows). Deterministic, because a Struct (an entry's states, a system
record's details) is a map, whose entries protobuf otherwise writes in an order that may
differ between a message and its copy inside another: any order parses to the same message,
but only the sorted one is one canonical form to compare and to keep.

What this is not: an answer cache. Every call still reads its page from the database
under the tenant's row-level security; only the conversion of a row already seen is
skipped, and only when the row read now is the row the encoding was made from — the
whole row (its joins included: a trace written after an audit entry changes the entry's
metadata) is kept beside the encoding and compared, so a row that differs in any column
is converted again. Tokens, totals and the answer's own metadata are computed per call.

``SCHEMA_VERSION`` names the converters' output: bump it with any change to what a
converter writes (a new field, another rendering), so that no encoding of the old form
is ever served (the cache is per process; a deploy starts empty, the key keeps it honest
in tests and in a process that reloads code).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

SCHEMA_VERSION = 3  # 2: audit entries carry hash_version and payload commitments (docs/ERASURE.md); 3: trace
# steps and system records too
DEFAULT_ITEMS = 20_000  # ~30 MiB of audit entries (encoding ~0.6 KiB + the row kept to compare)


class WireForms:
    """A bounded, thread-safe LRU of items' encodings: (kind, version, field, tenant, id) → (row, bytes)."""

    def __init__(self, max_items: int = DEFAULT_ITEMS) -> None:
        self.max_items = max_items
        self._items: OrderedDict[tuple[str, int, int | None, str, Any], tuple[tuple[Any, ...], bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def encoded(self, kind: str, tenant_id: str, row: Mapping[str, Any],
                convert: Callable[[Mapping[str, Any]], Message], key: str = "id", field: int | None = None) -> bytes:
        """``convert(row).SerializeToString(deterministic=True)``, from the store when this exact
        row was seen; with ``field``, framed as an item of that repeated field (tag, length, bytes),
        kept framed so that a list answer only joins its items."""
        values = tuple(row.values())
        ident = (kind, SCHEMA_VERSION, field, tenant_id, row[key])
        kept = self._items.get(ident)
        if kept is not None and kept[0] == values:
            self.hits += 1
            with self._lock:
                if ident in self._items:
                    self._items.move_to_end(ident)
            return kept[1]
        self.misses += 1
        data = convert(row).SerializeToString(deterministic=True)
        if field is not None:
            data = varint(field << 3 | 2) + varint(len(data)) + data
        if self.max_items > 0:
            with self._lock:
                self._items[ident] = (values, data)
                self._items.move_to_end(ident)
                while len(self._items) > self.max_items:
                    self._items.popitem(last=False)
        return data

    def framed(self, kind: str, tenant_id: str, rows: Iterable[Mapping[str, Any]],
               convert: Callable[[Mapping[str, Any]], Message], field: int, key: str = "id") -> list[bytes]:
        """Each row's item of the repeated ``field`` (``encoded`` with ``field``). The hits are
        served here without a call each (a page is mostly hits): same check, same LRU order.
        Refreshing an item's place takes no lock: OrderedDict.move_to_end is one step under the
        GIL, and an item evicted meanwhile by another thread only misses its refresh."""
        items, out, hits = self._items, [], 0
        for row in rows:
            ident = (kind, SCHEMA_VERSION, field, tenant_id, row[key])
            kept = items.get(ident)
            if kept is not None and kept[0] == tuple(row.values()):
                hits += 1
                try:
                    items.move_to_end(ident)
                except KeyError:
                    pass
                out.append(kept[1])
            else:
                out.append(self.encoded(kind, tenant_id, row, convert, key, field))
        self.hits += hits
        return out


def varint(value: int) -> bytes:
    """A protobuf base-128 varint (non-negative values: lengths and tags)."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


if TYPE_CHECKING:
    class Encoded(bytes, Generic[M]):
        """A message of type ``M`` in its wire form: what a handler registered with
        ``aos_runtime.server.preserialized`` may answer instead of the message (grpc sends
        the bytes as they are; the caller receives an ``M``). The type says which message."""
else:
    class Encoded(Generic[M]):
        """At run time the bytes themselves (grpc takes exact ``bytes`` only, and a subclass
        would cost a copy of every answer): ``Encoded[M](data)`` is ``data``; ``Encoded[M]``
        stays a type the contract test reads (tests/contract/test_handler_types.py)."""

        def __new__(cls, data: bytes) -> bytes:  # type: ignore[misc]
            return data


def answer(before: M, framed: Sequence[bytes], after: M) -> Encoded[M]:
    """An answer's bytes: the fields numbered below the repeated field (``before``), its items
    (``framed``: WireForms.framed), the fields numbered above it (``after``). Equal to
    serializing one message holding all three, as protobuf writes fields in number order."""
    return Encoded(before.SerializeToString(deterministic=True) + b"".join(framed) +
                   after.SerializeToString(deterministic=True))


# The process's store (one per process: each AOS_WORKERS worker has its own).
forms = WireForms()
