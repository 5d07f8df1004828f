"""REST answers of the Logs lists rendered from stored JSON (issue #22).

The gateway answers a call with ``JSONResponse(transcode.to_json(reply))``: the whole
message through ``MessageToDict``, then ``json.dumps``. For a list answer that is 50
evidence items converted to dicts and dumped on every call, although the same item (same
bytes) renders to the same JSON every time. Here the answer is taken as its bytes (the
channel does not deserialize it), its repeated field's items are cut out of the wire form,
and each item's JSON text is looked up by the item's bytes in a bounded per-process LRU
(content-addressed: equal bytes are the equal message, so a stored rendering can never be
stale); only the answer's small remainder (metadata, page fields) goes through
``MessageToDict``. The text is assembled as ``json.dumps`` writes the whole dict —
tests/gateway/test_stored_json.py proves byte equality with JSONResponse's rendering.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable
from itertools import repeat
from typing import Any, cast

from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from gateway import transcode

DEFAULT_ITEMS = 20_000
# Only the Logs services' answers: their items are immutable evidence, so the same bytes
# come back call after call (elsewhere every item would be a miss).
PACKAGES = ("aos.logs.v1.",)

# What Starlette's JSONResponse.render calls (json.dumps with these arguments builds this very
# encoder on every call): built once.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))


def _dumps(value: Any) -> str:
    """As Starlette's JSONResponse.render does (its bytes are this text in UTF-8)."""
    return _ENCODER.encode(value)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


def _repeated_message_field(method: MethodDescriptor) -> FieldDescriptor | None:
    """The one repeated message field (not a map) of the method's answer, if it has exactly one."""
    fields = [f for f in method.output_type.fields
              if f.is_repeated and f.message_type is not None
              and not f.message_type.GetOptions().map_entry]
    return fields[0] if len(fields) == 1 else None


def renders(method: MethodDescriptor) -> bool:
    """Whether ``method``'s answers are rendered here (a unary Logs read with one list of items)."""
    return (method.full_name.startswith(PACKAGES) and not method.server_streaming
            and not method.client_streaming and _repeated_message_field(method) is not None)


def _render(item_cls: type[Message], data: bytes) -> str:
    return _dumps(transcode.to_json(item_cls.FromString(data)))


class ItemJson:
    """A bounded, thread-safe LRU: an item's bytes → its JSON text (``MessageToDict`` as the gateway's).

    functools.lru_cache (the standard library's C LRU) keyed by (item class, bytes): a page's
    items are looked up in one ``map`` over it, with no Python frame per hit."""

    def __init__(self, max_items: int = DEFAULT_ITEMS) -> None:
        self.max_items = max_items
        self._cache = functools.lru_cache(maxsize=max(0, max_items))(_render)
        # A message class is hashable (by identity); typeshed's lru_cache types its arguments as Hashable.
        self._text = cast(Callable[[type[Message], bytes], str], self._cache)

    def __len__(self) -> int:
        return self._cache.cache_info().currsize

    @property
    def hits(self) -> int:
        return self._cache.cache_info().hits

    def text(self, item_cls: type[Message], data: bytes) -> str:
        return self._text(item_cls, data)

    def joined(self, item_cls: type[Message], items: list[bytes]) -> str:
        """The items' JSON texts as one JSON array."""
        return "[" + ",".join(map(self._text, repeat(item_cls, len(items)), items)) + "]"


items = ItemJson()


class Renderer:
    """One method's answers, from their bytes to the JSON body the gateway sends."""

    def __init__(self, method: MethodDescriptor, store: ItemJson | None = None) -> None:
        field = _repeated_message_field(method)
        if field is None or field.message_type is None:
            raise ValueError(f"{method.full_name}: its answer has no single list of items")
        self.field = field
        self.response_cls = message_factory.GetMessageClass(method.output_type)
        self.item_cls = message_factory.GetMessageClass(field.message_type)
        self.store = store if store is not None else items

    def split(self, data: bytes) -> tuple[bytes, list[bytes]]:
        """(the answer without its items, the items' bytes), walking the top-level fields.

        One-byte tags and one- or two-byte lengths (field numbers below 16, items under 16 KiB)
        read inline; longer ones through ``_varint``. The remainder is the answer's other fields'
        bytes, in their order."""
        number = self.field.number
        item_tag = (number << 3) | 2
        rest: list[bytes] = []
        found: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end:
            start = pos
            tag = data[pos]
            pos += 1
            if tag & 0x80:
                tag, pos = _varint(data, start)
            wire_type = tag & 7
            if wire_type == 2:
                length = data[pos]
                pos += 1
                if length & 0x80:
                    second = data[pos]
                    if second & 0x80:
                        length, pos = _varint(data, pos - 1)
                    else:  # two bytes: items of 128 bytes to 16 KiB
                        length = (length & 0x7F) | (second << 7)
                        pos += 1
                stop = pos + length
                if stop > end:
                    raise ValueError("truncated message")
                if tag == item_tag:
                    found.append(data[pos:stop])
                    pos = stop
                    continue
                pos = stop
            elif wire_type == 0:
                _, pos = _varint(data, pos)
            elif wire_type == 1:
                pos += 8
            elif wire_type == 5:
                pos += 4
            else:
                raise ValueError(f"unexpected wire type {wire_type}")
            if pos > end:
                raise ValueError("truncated message")
            rest.append(data[start:pos])
        return b"".join(rest), found

    def body(self, data: bytes) -> bytes:
        """``JSONResponse(transcode.to_json(Response.FromString(data))).body``, items from the store."""
        rest, found = self.split(data)
        remainder = self.response_cls.FromString(rest)
        head = transcode.to_json(remainder)
        listed = self.store.joined(self.item_cls, found)
        name = self.field.name
        order = list(head)
        if found:
            # MessageToDict writes the fields that are set in field-number order, then (always
            # printing) the unset ones in declaration order: with items, the list is a set field.
            present = sorted([f for f, _ in remainder.ListFields()] + [self.field], key=lambda f: f.number)
            first = [f.name for f in present]
            order = first + [key for key in head if key not in first]
        return ("{" + ",".join(_dumps(key) + ":" + (listed if key == name else _dumps(head[key]))
                               for key in order) + "}").encode()
