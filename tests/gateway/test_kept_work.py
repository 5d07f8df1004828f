"""What the gateway keeps between calls instead of redoing it (issue #22): route matches, request
messages of calls without a body, client metadata. Each must answer exactly what the uncached
code answers, refuse what it refuses (every time: a refusal is never kept), and leave alone
what is too long to keep."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from aos_runtime import errors
from gateway import clients, routes, transcode
from gateway.backends import SERVICE_BACKENDS, service_descriptor
from gateway.routes import MethodNotAllowed, RouteNotFound, RouteTable

REAL = RouteTable.from_services(service_descriptor(name) for name in SERVICE_BACKENDS)

# Path segments: route literals, ids, encoded and odd ones.
SEGMENTS = st.sampled_from(["api", "v1", "logs", "audit", "runs", "system", "exports", "identity", "trace",
                            "e-1", "r%2F1", "%zz", "", "a:verify", "records", "signing-keys", "%C3%A9", "%FF"])
PATHS = st.lists(SEGMENTS, min_size=1, max_size=6).map(lambda parts: "/" + "/".join(parts))
VERBS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"])


def outcome(call):
    try:
        return ("ok", call())
    except (RouteNotFound, MethodNotAllowed, UnicodeDecodeError, errors.ApiError) as exc:
        return (type(exc).__name__, str(exc))


@settings(max_examples=400, deadline=None)
@given(verb=VERBS, path=PATHS)
def test_a_kept_route_match_is_the_match(verb, path):
    for _ in range(2):  # the first match, then the kept one
        assert outcome(lambda: REAL.match(verb, path)) == outcome(lambda: REAL._match(verb, path))


def test_kept_route_matches_refusals_and_long_paths():
    table = RouteTable(REAL.routes)
    route, values = table.match("GET", "/api/v1/logs/audit/e-1")
    values["entry_id"] = "changed"  # the caller's own copy
    assert table.match("GET", "/api/v1/logs/audit/e-1")[1] == {"entry_id": "e-1"}
    assert table._cached.cache_info().hits == 1
    for _ in range(2):
        with pytest.raises(RouteNotFound):
            table.match("GET", "/no/such/route")
    long = "/api/v1/logs/audit/" + "x" * routes.MAX_CACHED_PATH
    assert table.match("GET", long)[1] == {"entry_id": "x" * routes.MAX_CACHED_PATH}
    assert table._cached.cache_info().currsize == 1  # the refusals and the long path were not kept


QUERIES = st.lists(st.tuples(st.sampled_from(["page_size", "page_token", "event_type", "order", "search", "query", "leaf_index",
                                              "unknown", "sort", "tenant_id"]),
                             st.sampled_from(["50", "0", "-1", "x", "", "ASC", "DESC", "created_at", "9" * 30])),
                   max_size=4)
REQUESTS = transcode.Requests()
LISTS = ["/api/v1/logs/audit", "/api/v1/logs/llm-runs", "/api/v1/logs/system", "/api/v1/logs/audit/e-1",
         "/api/v1/logs/search", "/api/v1/logs/audit/proofs/inclusion"]


@settings(max_examples=300, deadline=None)
@given(path=st.sampled_from(LISTS), query=QUERIES)
def test_a_kept_request_is_the_built_request(path, query):
    requests = REQUESTS  # one for every example: a key that left something out would answer another's
    route, variables = REAL.match("GET", path)
    for _ in range(2):
        kept = outcome(lambda: requests.build(route, variables, query, b""))
        built = outcome(lambda: transcode.build_request(route, variables, query, b""))
        if kept[0] == "ok":
            assert built[0] == "ok" and kept[1] == built[1]
            assert kept[1].SerializeToString(deterministic=True) == built[1].SerializeToString(deterministic=True)
        else:
            assert kept[0] == built[0] and kept[1] == built[1]


def test_requests_with_a_body_or_a_long_query_are_not_kept():
    requests = transcode.Requests()
    route, variables = REAL.match("GET", "/api/v1/logs/audit")
    assert requests.build(route, variables, [("page_size", "5")], b"") is requests.build(
        route, variables, [("page_size", "5")], b"")
    long = [("search", "w" * transcode.MAX_CACHED_CHARS)]
    assert requests.build(route, variables, long, b"") is not requests.build(route, variables, long, b"")
    with pytest.raises(errors.ApiError):
        requests.build(route, variables, [], b"{}")  # a GET takes no body: refused, not kept
    assert requests._build.cache_info().currsize == 1


KEPT: dict[tuple[str, ...], clients.ClientMetadata] = {}
ADDRESSES = st.sampled_from(["127.0.0.1", "10.0.0.7", "10.0.0.8:4431", "203.0.113.9", "[2001:db8::1]:443",
                             "2001:db8::2", "not-an-ip", "", " 198.51.100.4 "])


@settings(max_examples=300, deadline=None)
@given(peer=st.one_of(st.none(), ADDRESSES), hops=st.lists(st.lists(ADDRESSES, max_size=3).map(", ".join),
                                                           max_size=2),
       agent=st.one_of(st.none(), st.text(max_size=40)), trusted=st.sampled_from([(), ("10.0.0.0/8",),
                                                                                  ("10.0.0.0/8", "2001:db8::/32")]))
def test_kept_client_metadata_is_the_computed_metadata(peer, hops, agent, trusted):
    networks = clients.networks(trusted)
    kept = KEPT.setdefault(trusted, clients.ClientMetadata(networks))  # shared by the examples
    for _ in range(2):
        assert kept(peer, hops, agent) == tuple(clients.client_metadata(peer, hops, agent, networks))


def test_long_client_headers_are_not_kept():
    kept = clients.ClientMetadata(())
    agent = "a" * clients.MAX_CACHED_CHARS
    assert kept("127.0.0.1", [], agent) == tuple(clients.client_metadata("127.0.0.1", [], agent, ()))
    assert kept._cached.cache_info().currsize == 0
    kept("127.0.0.1", [], "curl")
    assert kept._cached.cache_info().currsize == 1
