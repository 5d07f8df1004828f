"""Page sizes and tamper-evident page tokens bound to tenant and filters."""
import pytest

from aos_runtime.errors import ApiError
from aos_runtime.pagination import PageTokens
from aos_runtime.validation import Request

TOKENS = PageTokens(b"k" * 32)
FILTERS = {"event_type": "LimitCreated", "created_after": None}


def test_page_size_rules():
    r = Request()
    assert [r.page_size(n) for n in (0, 7, 1000, 5000)] == [50, 7, 1000, 1000]
    r.done()
    r.page_size(-1)
    with pytest.raises(ApiError) as err:
        r.done()
    assert err.value.violations == [("page_size", "must not be negative")]


def test_token_round_trip():
    token = TOKENS.issue("t1", "audit", FILTERS, ["2026-01-01T00:00:00.000000Z", "aud-9"])
    assert token.isascii() and "=" not in token and "/" not in token and "+" not in token  # URL-safe
    assert TOKENS.read(token, "t1", "audit", dict(FILTERS)) == ["2026-01-01T00:00:00.000000Z", "aud-9"]
    assert TOKENS.read("", "t1", "audit", FILTERS) is None


@pytest.mark.parametrize("reuse", [
    dict(tenant="t2", name="audit", filters=FILTERS),                                  # another tenant
    dict(tenant="t1", name="audit", filters={**FILTERS, "event_type": "LimitUpdated"}),  # other filters
    dict(tenant="t1", name="system", filters=FILTERS),                                 # another list
])
def test_token_reused_elsewhere_is_refused(reuse):
    token = TOKENS.issue("t1", "audit", FILTERS, ["x", "y"])
    with pytest.raises(ApiError) as err:
        TOKENS.read(token, reuse["tenant"], reuse["name"], reuse["filters"])
    assert err.value.code.name == "INVALID_ARGUMENT" and err.value.violations[0][0] == "page_token"


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # MAC changed
    lambda t: ("f" if t[0] != "f" else "g") + t[1:],            # body changed
    lambda t: t.replace(".", ""),                                 # structure broken
    lambda t: "not a token",
    lambda t: PageTokens(b"other-key").issue("t1", "audit", FILTERS, ["x", "y"]),  # another key
])
def test_altered_tokens_are_refused(mangle):
    token = TOKENS.issue("t1", "audit", FILTERS, ["x", "y"])
    with pytest.raises(ApiError) as err:
        TOKENS.read(mangle(token), "t1", "audit", FILTERS)
    assert err.value.code.name == "INVALID_ARGUMENT"


# --- the one paging helper and the one filter builder ---------------------------------

def _listing(filters, name="audit", tenant="t1"):
    from aos_runtime.pagination import Listing
    return Listing.of(PageTokens(b"k" * 32), tenant, name, filters)


def test_filters_are_sealed_one_way_whatever_form_they_come_in():
    """A dataclass and a mapping with the same filters, and one instant in two time zones,
    bind a token the same way; a tuple and a list too."""
    from dataclasses import dataclass
    from datetime import datetime, timedelta, timezone

    from aos_runtime.pagination import sealed

    @dataclass(frozen=True)
    class Filters:
        event_types: tuple = ()
        created_after: datetime | None = None

    utc = datetime(2026, 5, 1, 12, tzinfo=timezone.utc)
    plus2 = utc.astimezone(timezone(timedelta(hours=2)))
    assert sealed(Filters(("A", "B"), plus2)) == sealed({"event_types": ["A", "B"], "created_after": utc}) == {
        "event_types": ["A", "B"], "created_after": "2026-05-01T12:00:00+00:00"}
    token = _listing(Filters(("A",), plus2)).issue(["2026-05-01T12:00:00+00:00", "x"])
    assert _listing({"event_types": ["A"], "created_after": utc}).after(token) == ["2026-05-01T12:00:00+00:00", "x"]
    with pytest.raises(ApiError) as refused:
        _listing({"event_types": ["B"], "created_after": utc}).after(token)
    assert refused.value.code.name == "INVALID_ARGUMENT" and refused.value.violations[0][0] == "page_token"


def test_the_listing_fills_the_page_fields_its_response_declares():
    from datetime import datetime, timezone
    from types import SimpleNamespace

    from aos.logs.v1 import audit_ledger_service_pb2 as audit_pb, system_logs_service_pb2 as system_pb

    listing = _listing({})
    last = {"created_at": datetime(2026, 5, 1, tzinfo=timezone.utc), "id": "aud_2"}
    page = SimpleNamespace(rows=[{"created_at": last["created_at"], "id": "aud_1"}, last], has_more=True,
                           total=12_000, total_is_estimate=True)
    answer = listing.answer(audit_pb.ListAuditEntriesResponse, page)
    assert (answer.total_size, answer.total_size_is_estimate, answer.has_more) == (12_000, True, True)
    assert listing.after(answer.next_page_token) == ["2026-05-01T00:00:00+00:00", "aud_2"]
    # A response without total_size_is_estimate gets the others; extra position parts follow the keyset.
    window = listing.answer(system_pb.GetSystemAttributionResponse, page, "2026-05-02T00:00:00+00:00")
    assert listing.after(window.next_page_token)[2] == "2026-05-02T00:00:00+00:00"
    done = listing.answer(audit_pb.ListAuditEntriesResponse, SimpleNamespace(rows=[last], has_more=False, total=1,
                                                                             total_is_estimate=False))
    assert (done.next_page_token, done.has_more, done.total_size) == ("", False, 1)


def test_the_filter_builder_binds_values_and_skips_unset_filters():
    from aos_runtime.keyset import where

    clause, params = where("a.tenant_id = :tenant", [
        ("a.event_type", "= ANY", ("A", "B")), ("a.actor_id", "=", None), ("a.entity_type", "=", "x'; DROP"),
        ("a.created_at", ">=", 1), ("a.event_type", "= ANY", ()), ("tr.v", "IS NULL", False),
        ("tr.w", "IS NULL", True), ("a.is_synthetic", "=", False)])
    assert clause == ("a.tenant_id = :tenant AND a.event_type = ANY(:f0) AND a.entity_type = :f1 "
                      "AND a.created_at >= :f2 AND tr.v IS NOT NULL AND tr.w IS NULL AND a.is_synthetic = :f3")
    assert params == {"f0": ["A", "B"], "f1": "x'; DROP", "f2": 1, "f3": False}
    assert where("", [("s.x", "=", None)]) == ("", {})
    with pytest.raises(ValueError):
        where("", [("a.x", "LIKE", "%")])


def test_a_listing_of_frozen_filters_binds_its_tokens_as_one_sealed_each_call_would():
    # Listing.of computes a frozen filters dataclass's sealed form and token scope once (issue #22):
    # its tokens must be those of the uncached path, and refuse what it refuses.
    from datetime import datetime, timezone

    from aos_runtime.pagination import Listing, sealed
    from services.logs.store import AuditFilters

    filters = AuditFilters(event_types=("LimitCreated",), created_after=datetime(2026, 1, 1, tzinfo=timezone.utc))
    cached = Listing.of(TOKENS, "t1", "audit", filters)
    assert cached.scope == PageTokens.scope_digest("t1", "audit", sealed(filters))
    assert dict(cached.filters) == sealed(filters)
    assert Listing.of(TOKENS, "t1", "audit", AuditFilters(event_types=("LimitCreated",), created_after=datetime(
        2026, 1, 1, tzinfo=timezone.utc))).scope == cached.scope  # an equal value: the same binding
    token = cached.issue(["2026-01-01T00:00:00+00:00", "aud-1"])
    # Read back without the cache (a mapping of the same filters) and with it, in either direction.
    assert TOKENS.read(token, "t1", "audit", sealed(filters)) == ["2026-01-01T00:00:00+00:00", "aud-1"]
    assert cached.after(TOKENS.issue("t1", "audit", sealed(filters), ["p", "q"])) == ["p", "q"]
    for other in (Listing.of(TOKENS, "t2", "audit", filters), Listing.of(TOKENS, "t1", "audit.access", filters),
                  Listing.of(TOKENS, "t1", "audit", AuditFilters(event_types=("LimitUpdated",)))):
        assert other.scope != cached.scope
        with pytest.raises(ApiError) as err:
            other.after(token)
        assert err.value.violations[0][0] == "page_token"
    # Filters that cannot be a cache key (a dict) are sealed per call, bound the same way.
    uncached = Listing.of(TOKENS, "t1", "audit", {"event_type": "LimitCreated"})
    assert uncached.scope is None and uncached.after(uncached.issue(["a", "b"])) == ["a", "b"]
    with pytest.raises(TypeError):  # the shared sealed form cannot be changed by a caller
        cached.filters["event_types"] = []  # type: ignore[index]
