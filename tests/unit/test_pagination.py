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
