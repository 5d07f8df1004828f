"""Reading a list RPC a page at a time into one answer of the list's own type."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

MAX_PAGE = 1000  # the services' page size ceiling

Answer = TypeVar("Answer")


def read_pages(call: Callable[[Any], Answer], request: Any, answer: Answer, field: str, limit: int) -> Answer:
    """``answer`` (the list's response message) with up to ``limit`` items of its repeated ``field``
    (0: every item), read with ``call`` a page at a time. It keeps the first page's metadata and
    totals and the last page's token, so it continues where the listing stopped."""
    items = getattr(answer, field)
    first = True
    while True:
        request.page_size = MAX_PAGE if limit == 0 else min(MAX_PAGE, limit - len(items))
        page = call(request)
        if first:
            answer.CopyFrom(page)  # type: ignore[attr-defined]  # a protobuf message
            first = False
        else:
            items.extend(getattr(page, field))
            answer.next_page_token = page.next_page_token  # type: ignore[attr-defined]
            if "has_more" in answer.DESCRIPTOR.fields_by_name:  # type: ignore[attr-defined]
                answer.has_more = page.has_more  # type: ignore[attr-defined]
        if not page.next_page_token or (limit and len(items) >= limit):  # type: ignore[attr-defined]
            return answer
        request.page_token = page.next_page_token  # type: ignore[attr-defined]
