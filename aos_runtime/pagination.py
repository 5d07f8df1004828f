"""List conventions (SPEC section 3, AIP-132/158): page sizes and keyset page tokens.

A page token is opaque to callers and tamper-evident: it carries the keyset
position (the last item's sort key) and a digest of the tenant and the filters it
was issued for, sealed with an HMAC. A token that was edited, or reused with other
filters or by another tenant, is refused with INVALID_ARGUMENT — never silently
re-interpreted. Tokens survive restarts and work across processes, because the
key comes from configuration (AOS_PAGE_TOKEN_SECRET), not from the process.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, is_dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from aos_runtime.errors import invalid_argument

if TYPE_CHECKING:  # keyset imports this module's limits
    from aos_runtime.keyset import Page

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
EXACT_TOTAL_LIMIT = 10_000  # totals are exact up to here; above, an estimate (flagged)
_VERSION = 1
DEV_SECRET_NAME = "page-token-secret"  # under AOS_DATA_DIR/secrets/ (aos_runtime.local_state)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class PageTokens:
    """Issues and reads page tokens under one key."""

    key: bytes

    @classmethod
    def from_settings(cls, settings) -> PageTokens:
        """AOS_PAGE_TOKEN_SECRET, the same in every instance so that any of them reads a token
        another issued; unset, a development secret (refused when DATABASE_URL is set, unless
        AOS_DEV_KEYS: an instance-local key would make every other instance refuse its tokens)."""
        from aos_runtime.config import check_dev_key_allowed
        from aos_runtime.local_state import dev_secret

        if settings.page_token_secret:
            return cls(settings.page_token_secret.encode())
        check_dev_key_allowed(settings, "AOS_PAGE_TOKEN_SECRET")
        return cls(dev_secret(settings.data_dir, DEV_SECRET_NAME).encode())

    @staticmethod
    def scope_digest(tenant_id: str, list_name: str, filters: Mapping[str, Any]) -> str:
        canonical = json.dumps({"tenant": tenant_id, "list": list_name, "filters": filters}, sort_keys=True,
                               separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self.key, body, hashlib.sha256).digest()[:16]

    def issue(self, tenant_id: str, list_name: str, filters: Mapping[str, Any], position: Sequence[Any]) -> str:
        body = json.dumps({"v": _VERSION, "s": self.scope_digest(tenant_id, list_name, filters),
                           "p": list(position)}, separators=(",", ":"), default=str).encode()
        return f"{_b64(body)}.{_b64(self._mac(body))}"

    def read(self, token: str, tenant_id: str, list_name: str, filters: Mapping[str, Any],
             field: str = "page_token") -> list[Any] | None:
        """The keyset position a token carries (None for an empty token)."""
        if not token:
            return None
        try:
            body_text, mac_text = token.split(".")
            body, mac = _unb64(body_text), _unb64(mac_text)
        except (ValueError, TypeError):
            raise invalid_argument(field, "is not a page token this service issued") from None
        if not hmac.compare_digest(mac, self._mac(body)):
            raise invalid_argument(field, "is not a page token this service issued (it was altered)")
        try:
            payload = json.loads(body)
        except ValueError:
            raise invalid_argument(field, "is not a page token this service issued") from None
        if payload.get("v") != _VERSION or not isinstance(payload.get("p"), list):
            raise invalid_argument(field, "was issued by another version of this service; start again")
        if payload.get("s") != self.scope_digest(tenant_id, list_name, filters):
            raise invalid_argument(field, "was issued for other filters (or another caller); "
                                          "repeat the first request's filters or start again")
        return payload["p"]


def iso_utc(value: datetime | None) -> str | None:
    """A time as page tokens carry it: ISO 8601 in UTC (a keyset position, a sealed filter)."""
    return value.astimezone(timezone.utc).isoformat() if value else None


def sealed(filters: Any) -> dict[str, Any]:
    """The one form a list's filters take inside its page tokens (what a token is bound to):
    a dataclass's fields or a mapping's items, times in UTC ISO 8601, sequences as lists.
    One form for every list, so that two lists never bind the same filter two ways."""
    items = vars(filters) if is_dataclass(filters) else dict(filters)
    return {name: _sealed_value(value) for name, value in items.items()}


def _sealed_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, (tuple, list)):
        return [_sealed_value(v) for v in value]
    return value


@dataclass(frozen=True)
class Listing:
    """One list call's paging, the same for every list: the token read for the caller's
    tenant and filters, the page run after its position, the next token sealed with
    the same binding, and the page fields filled.

    Positions are the last row's keyset, (created_at in UTC, id), plus any ``extra``
    a list needs to continue (a tie-breaker, a window resolved on the first page).
    """

    tokens: PageTokens
    tenant_id: str
    name: str
    filters: Mapping[str, Any]  # sealed

    @classmethod
    def of(cls, tokens: PageTokens, tenant_id: str, name: str, filters: Any) -> Listing:
        return cls(tokens, tenant_id, name, sealed(filters))

    def after(self, page_token: str) -> list[Any] | None:
        """The position a request's page token carries (None on a first page)."""
        return self.tokens.read(page_token, self.tenant_id, self.name, self.filters)

    async def fetch(self, db, page_token: str, query: Callable[..., Any], *args: Any, limit: int) -> Any:
        """``query(conn, tenant, *args, after, limit)`` in the tenant's transaction."""
        return await db.run(self.tenant_id, query, self.tenant_id, *args, self.after(page_token), limit)

    def issue(self, position: Sequence[Any]) -> str:
        return self.tokens.issue(self.tenant_id, self.name, self.filters, position)

    def next_token(self, page: Page, *extra: Any) -> str:
        """The position after the page's last row; a list sorted by a field (its rows carry
        ``sort_key``, aos_runtime.keyset.SortKey) ends it with that row's value."""
        if not page.has_more:
            return ""
        last = page.rows[-1]
        key = last.get("sort_key")
        keyed = [iso_utc(key) if isinstance(key, datetime) else key] if key is not None else []
        return self.issue([iso_utc(last["created_at"]), last["id"], *extra, *keyed])

    def answer(self, response_cls: Any, page: Page, *extra: Any, **fields: Any) -> Any:
        """``response_cls(**fields)`` with the page fields it declares."""
        declared = response_cls.DESCRIPTOR.fields_by_name
        paged = {"next_page_token": self.next_token(page, *extra), "total_size": page.total,
                 "total_size_is_estimate": page.total_is_estimate, "has_more": page.has_more}
        return response_cls(**fields, **{k: v for k, v in paged.items() if k in declared})
