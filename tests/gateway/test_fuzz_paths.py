"""Hypothesis over raw HTTP requests to the gateway (issue #8): paths, methods, query strings, bodies.

Schemathesis (test_fuzz.py) sends what the OpenAPI document describes; this sends what it
does not. Requests go byte for byte through a real socket to the uvicorn server of the
``served`` fixture (httpcore sends the request target as given, where httpx would
normalize it): every route template with its variables filled by hostile segments
(empty, 10k long, percent-encoded unicode, NUL and control characters, dot segments,
``%2F``, ``%252F``, ``%zz``, ``;`` parameters, another tenant's ids), the path bent
(trailing and repeated slashes, case changes, verbs), random paths, every method; query
strings of the route's own parameters with hostile values, unknown and repeated
parameters, ``tenant_id`` smuggling, a 100k query; JSON bodies malformed, mistyped,
deeply nested, huge, with unknown fields, under wrong content types. Credentials are a
valid token for TENANT, or none, or untrustworthy ones.

Whatever the request: an answer within DEADLINE_S, never a 5xx, every error a JSON
google.rpc.Status whose code agrees with the HTTP status (but for what uvicorn's HTTP parser
refuses before the gateway, see H11_HEAD_LIMIT), without usable credentials a 401 or a
refusal the gateway makes before any call (never data, never a record's 404), and no other
tenant's data in a 200.

FUZZ_EXAMPLES (as in tests/reliability/test_fuzz.py) sets the examples per route; the
cases run per route family and status are printed at the end and written to
rest-fuzz-counts.json under pytest's basetemp.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import httpcore
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gateway import console, fields, transcode
from gateway.backends import SERVICE_BACKENDS, service_descriptor
from gateway.routes import Route, RouteTable, Variable
from tests.e2e.support import ACME, BASE, DEMO, token
from tests.logins import load_demo_scenarios

pytestmark = pytest.mark.db

TENANT = "tenant-restfuzz"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
DEADLINE_S = 10
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])

ROUTES = list(RouteTable.from_services(service_descriptor(name) for name in SERVICE_BACKENDS).routes)
BODY_ROUTES = [route for route in ROUTES if route.body]
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
# What only the gateway answers, before any service has seen the credentials.
GATEWAY_REASONS = {"ROUTE_NOT_FOUND", "METHOD_NOT_ALLOWED", "NOT_FOUND", "REQUEST_ENTITY_TOO_LARGE"}
# What answers without credentials: the health check, the OpenAPI document, the console's pages
# and files (gateway/console.py; the data they show comes from the API, with the caller's token).
PUBLIC = {"/healthz", "/openapi.json", *console.PATHS}
# Other tenants of the session's database (the demo data, the other gateway and fuzz tests).
TENANT_NAME = re.compile(r"tenant-[A-Za-z0-9_-]+")

# Family (a route, or "random path") → status → cases run.
COUNTS: defaultdict[str, Counter] = defaultdict(Counter)


def family(route: Route) -> str:
    return f"{route.http_method} {route.template.template}"


# --- hostile pieces -------------------------------------------------------------------

RUN_IDS = [f"{TENANT}.run-support-103", f"{TENANT}.run-research-7", f"{ACME}.run-support-103",
           f"{DEMO}.run-support-103", "run-support-103"]
SEGMENTS = [
    "", "x" * 10_000, "%00", "a%00b", "%0A", "%0D%0A", "%09", "%1B", "%7F", "%C2%85", "%E2%80%AE", "%EF%BB%BF",
    ".", "..", "%2E%2E", "%2e", "...", "a%2Fb", "%2F", "%2F..%2F", "%252F", "%2525", "%25", "%zz", "%", "%4",
    "%e9", "%C0%AF", "%ED%A0%80", "%FF%FE", "%F4%90%80%80", ";", "a;b=c", "%3B", "%3A", "a%3Ab", "x:download",
    "x:verify", "x:", "*", "%2A", "{run_id}", "%7Brun_id%7D", "~", "+", "%20", "a%20b", "%E6%97%A5%E6%9C%AC",
    "%F0%9F%98%80", "exp_acme", "acme-entry", f"{ACME}.inc-pii-7", *RUN_IDS,
]


def encoded(text: str) -> str:
    return quote(text, safe="")


SEGMENT = st.one_of(
    st.sampled_from(SEGMENTS),
    st.text(max_size=30).map(encoded),  # any unicode, percent-encoded
    st.text(st.characters(max_codepoint=0x1F), min_size=1, max_size=6).map(encoded),  # NUL and controls
    st.from_regex(r"[A-Za-z0-9_.~-]{1,40}", fullmatch=True),  # plain, unreserved
    st.builds(str.__add__, st.sampled_from(RUN_IDS), st.sampled_from(["%00", "%0A", "/", "%2F", ";x", ":x", "."])),
)

QUERY_VALUES = [
    "", "0", "-1", "1", "50", "1000", "1001", "2147483647", "2147483648", "-2147483649", "9223372036854775807",
    "9223372036854775808", "-9223372036854775809", "1" * 400, "1.5", "1.0", "1e3", "-0", "0x10", "1_000", "NaN",
    "Infinity", "-Infinity", "%D9%A1%D9%A2", "true", "false", "TRUE", "yes", "no", "on", "off", "t",
    "2026-11-01T12:00:00Z", "2026-11-01T12:00:00.123456789Z", "2026-11-01T12:00:00+01:00", "2026-13-45T00:00:00Z",
    "2026-02-30T00:00:00Z", "0000-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z",
    "9999-12-31T23:59:59Z", "10000-01-01T00:00:00Z", "2026-11-01T12:00:00+25:00", "2026-11-01T24:00:00Z",
    "2026-11-01T12:00:60Z", "2026-11-01", "2026-11-01T12:00:00.1234567891Z", "2026-11-01%2012:00:00",
    "2026-11-01+12:00:00", "1700000000", "-62135596801", "3600s", "1.5s", "UNKNOWN_ENUM_NAME", "%00", "%0A", "%ff",
    "%C0%AF", "%zz", "%", "%2B1", "+1", "%20", ACME, DEMO, TENANT, "x" * 10_000, *RUN_IDS,
]
# Names of no field, names bound elsewhere, names reaching through messages they cannot.
ODD_NAMES = ["tenant_id", "tenantId", "tenant", "TENANT_ID", "tenant_id%00", "%74enant_id", "page_token", "",
             "a", "created_after.seconds", "created_after.nanos", "audit_slice", "audit_slice.tenant_id",
             "body", "run_id", "%zz", "%ff", "x" * 1000, "__proto__", "filter[]", "page_size[0]"]


def enum_names() -> list[str]:
    names: set[str] = set()

    def walk(descriptor, seen: set[str]) -> None:
        if descriptor.full_name in seen:
            return
        seen.add(descriptor.full_name)
        for f in descriptor.fields:
            if f.enum_type:
                names.update(v.name for v in f.enum_type.values)
            elif f.message_type:
                walk(f.message_type, seen)

    for route in ROUTES:
        walk(route.method.input_type, set())
    return sorted(names)


ENUM_NAMES = enum_names()


def query_names(route: Route) -> list[str]:
    """The route's own query parameters: every leaf field, dotted through nested messages,
    in proto and in JSON (lowerCamel) spelling."""
    names: list[str] = []

    def walk(descriptor, prefix: str, camel: str, depth: int) -> None:
        for f in descriptor.fields:
            if fields.is_leaf(f):
                names.extend({prefix + f.name, camel + f.json_name})
            elif fields.is_nested(f) and depth < 3:
                walk(f.message_type, f"{prefix}{f.name}.", f"{camel}{f.json_name}.", depth + 1)

    walk(route.method.input_type, "", "", 0)
    return names


def param(name: str, value: str, shape: str) -> str:
    return {"pair": f"{name}={value}", "bare": name, "no name": f"={value}", "blank": f"{name}="}[shape]


def queries(route: Route | None) -> st.SearchStrategy[str]:
    names = (query_names(route) if route else []) + ODD_NAMES
    value = st.one_of(st.sampled_from(QUERY_VALUES), st.sampled_from(ENUM_NAMES),
                      st.text(max_size=20).map(encoded), st.sampled_from(SEGMENTS))
    pairs = st.lists(st.builds(param, st.sampled_from(names), value,
                               st.sampled_from(["pair"] * 6 + ["bare", "no name", "blank"])), max_size=6)
    joined = st.builds(lambda parts, sep, lead, tail: lead + sep.join(parts) + tail, pairs,
                       st.sampled_from(["&"] * 6 + ["&&", ";", "&amp;"]), st.sampled_from(["", "", "&", "?"]),
                       st.sampled_from(["", "", "&", "#frag", "&&"]))
    return st.one_of(
        st.just(""),
        joined,
        st.sampled_from(names).map(lambda name: f"{name}=1&{name}=2"),  # repeated
        st.sampled_from(["a=" + "x" * 100_000, "page_size=" + "9" * 100_000, "&" * 50_000, "=x&&a&=&&",
                         f"tenant_id={ACME}", f"tenantId={ACME}&tenant_id={TENANT}"]),
    )


# --- bodies ---------------------------------------------------------------------------

def deep(depth: int, open_: str, close: str, inner: str = "1") -> bytes:
    return (open_ * depth + inner + close * depth).encode()


RAW_BODIES = [
    b"", b" ", b"{", b"}", b"{}", b"[]", b"null", b"true", b"0", b'"text"', b"not json", b"\xff\xfe\x00",
    b"{\"run_id\": }", b"{'run_id': 'x'}", b'{"run_id": "a"} trailing', b"\xef\xbb\xbf{}", "{}".encode("utf-16"),
    b'{"run_id": NaN}', b'{"format": Infinity}', b'{"run_id": "\\ud800"}', b'{"run_id": "\\u0000"}',
    b'{"run_id": "a", "run_id": "b"}', b'{"runId": "a", "run_id": "b"}', b'{"": 1}', b'{"run_id": 1e999}',
    b'{"bundle_type": 1e400}', b'{"format": 99999999999999999999999}', b'{"format": -1}', b'{"format": 1.5}',
    deep(100_000, "[", "]"), deep(900, "[", "]"), deep(900, '{"a":', "}"), deep(5_000, '{"a":', "}"),
    deep(900, '{"audit_slice":', "}", "{}"), b'{"audit_slice": ' + deep(900, "[", "]") + b"}",
    b'{"run_id": "' + b"x" * 900_000 + b'"}', b'{"idempotency_key": "' + b"\\u0000" * 1000 + b'"}',
    b"x" * (1024 * 1024 + 1),  # over the gateway's body limit
]
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([v for v in QUERY_VALUES if len(v) < 1000] + ENUM_NAMES), st.text(max_size=30),
    st.just("x" * 100_000),
)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=8)


def body_keys(route: Route) -> list[str]:
    request = route.method.input_type
    keys = [f.name for f in request.fields] + [f.json_name for f in request.fields]
    return keys + ["tenant_id", "tenantId", "unknown_field", "@type", ""]


# A body CreateExport takes.
VALID_EXPORT = {"bundle_type": "BUNDLE_TYPE_EVIDENCE", "format": "EXPORT_FORMAT_JSON"}


def bodies(route: Route | None) -> st.SearchStrategy[bytes]:
    keys = body_keys(route) if route else ["tenant_id", "run_id", "x"]
    value = st.one_of(JSON_VALUES, st.sampled_from(RUN_IDS))
    documents = st.dictionaries(st.sampled_from(keys), value, max_size=5)
    # Valid but for one field, so that what lies behind the body's parsing runs too.
    near_valid = st.builds(lambda key, v: {**VALID_EXPORT, key: v}, st.sampled_from(keys), value)
    return st.one_of(
        st.sampled_from(RAW_BODIES),
        documents.map(lambda d: json.dumps(d).encode()),
        near_valid.map(lambda d: json.dumps(d).encode()),
        JSON_VALUES.map(lambda v: json.dumps(v).encode()),  # any JSON, an object or not
        st.binary(max_size=64),
    )


CONTENT_TYPES = ["application/json", "application/json", "application/json; charset=utf-8", None, "text/plain",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml",
                 "application/json; charset=latin-1", "application/grpc", "*/*", "garbage"]


# --- credentials ----------------------------------------------------------------------

@dataclass(frozen=True)
class Credentials:
    header: bytes | None
    usable: bool  # a valid token for TENANT with every scope


def credentials() -> st.SearchStrategy[Credentials]:
    valid = Credentials(f"Bearer {token(TENANT)}".encode(), True)
    untrusted = [None, b"", b"Bearer", b"Bearer garbage", b"Basic dXNlcjpwYXNz",
                 f"Bearer {token(TENANT, ttl_s=-120)}".encode(), f"Bearer {token(TENANT)}x".encode(),
                 f"bearer{token(TENANT)}".encode(), b"Bearer " + b"x" * 10_000, b"Bearer \xe9\xff",
                 f"Bearer {token(TENANT, audience='elsewhere')}".encode()]
    return st.one_of(st.just(valid), st.just(valid), st.just(valid),
                     st.sampled_from(untrusted).map(lambda header: Credentials(header, False)))


# --- requests and checks --------------------------------------------------------------

@dataclass
class Request:
    method: str
    target: str
    credentials: Credentials
    body: bytes = b""
    content_type: str | None = None


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


async def send(pool: httpcore.AsyncConnectionPool, base: str, request: Request) -> Answer:
    """The request exactly as built; a hang fails the test (no answer within DEADLINE_S)."""
    url = urlsplit(base)
    headers = [(b"Host", url.netloc.encode())]
    if request.credentials.header is not None:
        headers.append((b"Authorization", request.credentials.header))
    if request.content_type is not None:
        headers.append((b"Content-Type", request.content_type.encode()))
    if request.body or request.method in ("POST", "PUT", "PATCH"):
        headers.append((b"Content-Length", str(len(request.body)).encode()))
    target = httpcore.URL(scheme=b"http", host=url.hostname.encode(), port=url.port,
                          target=request.target.encode("ascii"))
    try:
        reply = await asyncio.wait_for(pool.request(request.method.encode(), target, headers=headers,
                                                    content=request.body or None), DEADLINE_S)
    except TimeoutError:
        pytest.fail(f"no answer within {DEADLINE_S} s: {request.method} {request.target[:300]}")
    return Answer(reply.status, {k.lower(): v for k, v in reply.headers}, reply.content)


# h11's default limit on a request's head, which uvicorn keeps and gateway.serving holds httptools
# to (serving.MAX_HEAD_BYTES): when a read leaves more than this of a head still incomplete, the
# HTTP parser refuses it before the gateway, in plain text (so a 100k URL gets the gateway's
# answer or the parser's, depending on how the bytes arrive).
H11_HEAD_LIMIT = 16 * 1024
PARSER_REFUSAL = b"Invalid HTTP request received."


def head_size(request: Request) -> int:
    return len(request.method) + len(request.target) + len(request.credentials.header or b"") + 200


def refused_by_parser(request: Request, answer: Answer) -> bool:
    return answer.status == 400 and answer.body == PARSER_REFUSAL and head_size(request) > H11_HEAD_LIMIT


def check(request: Request, answer: Answer) -> None:
    what = f"{request.method} {request.target[:300]} -> {answer.status}: {answer.body[:500]!r}"
    assert answer.status < 500, what
    if refused_by_parser(request, answer):
        return  # not the gateway's answer: see RELIABILITY.md, Fuzzing
    if answer.status >= 400 and request.method != "HEAD":  # a HEAD answer has no body
        assert answer.headers.get(b"content-type", b"").startswith(b"application/json"), what
        status = json.loads(answer.body)
        assert isinstance(status, dict) and isinstance(status.get("code"), int) and 0 < status["code"] <= 16, what
        assert isinstance(status.get("message"), str) and isinstance(status.get("details", []), list), what
        expected = {405: 12, 413: 8}.get(answer.status)  # HTTP-level refusals keep their own status
        if expected is None:
            assert transcode.http_status(status["code"]) == answer.status, what
        else:
            assert status["code"] == expected, what
        reasons = {d.get("reason") for d in status.get("details", []) if isinstance(d, dict)}
    else:
        reasons = set()
    path = request.target.partition("?")[0]
    if path in PUBLIC or path.startswith(console.PREFIX + "/"):
        return
    if not request.credentials.usable:
        # Only what the gateway refuses by itself comes before the services' authentication.
        assert answer.status in (400, 401, 404, 405, 413), what
        # A 404 must be "no such route", not "no such record" (a HEAD answer shows no reason).
        assert answer.status != 404 or request.method == "HEAD" or reasons & GATEWAY_REASONS, what
    else:
        assert answer.status != 401, what
    if 200 <= answer.status < 300 and answer.headers.get(b"content-type") == b"application/json" and answer.body:
        leaks = list(foreign(json.loads(answer.body), request))
        assert not leaks, f"another tenant's data ({leaks[:5]}): {what}"


def strings(document: object, key: str = ""):
    """(key, value) of every string in a JSON document."""
    if isinstance(document, dict):
        for k, v in document.items():
            yield from strings(v, k)
    elif isinstance(document, list):
        for v in document:
            yield from strings(v, key)
    elif isinstance(document, str):
        yield key, document


def foreign(document: object, request: Request):
    """What names another tenant: a tenant_id not TENANT's; any other string naming one,
    unless it is a value the request sent (an idempotency key, a filter echoed back)."""
    sent = request.target + request.body.decode("latin-1")
    for key, value in strings(document):
        if key == "tenant_id" and value not in ("", TENANT):  # "": a system-wide record, everyone's
            yield key, value
        elif set(TENANT_NAME.findall(value)) - {TENANT} and value not in sent:
            yield key, value


async def exchange(pool, base: str, family_name: str, request: Request) -> None:
    answer = await send(pool, base, request)
    COUNTS[family_name][f"{answer.status}{' (parser)' if refused_by_parser(request, answer) else ''}"] += 1
    check(request, answer)


# --- paths ----------------------------------------------------------------------------

def bent(path: str, how: str) -> str:
    """The path changed the way clients and proxies change paths."""
    if how == "trailing slash":
        return path + "/"
    if how == "double slash":
        return path.replace("/", "//", 2)
    if how == "leading double slash":
        return "/" + path
    if how == "upper":
        return path.upper()
    if how == "title":
        return path.replace("/api/v1/logs", "/api/v1/Logs")
    if how == "dot segment":
        return path.replace("/api/v1/", "/api/v1/./")
    if how == "parent segment":
        return path.replace("/api/v1/", "/api/x/../v1/")
    if how == "encoded slash":
        return path.replace("/api/v1/", "/api%2Fv1/")
    if how == "matrix":
        return path.replace("/api/v1", "/api;x=1/v1")
    if how == "verb":
        return path + ":download"
    if how == "empty verb":
        return path + ":"
    return path


BENDS = ["as is"] * 8 + ["trailing slash", "double slash", "leading double slash", "upper", "title", "dot segment",
                         "parent segment", "encoded slash", "matrix", "verb", "empty verb"]


def route_paths(route: Route) -> st.SearchStrategy[str]:
    variables = {name: SEGMENT for name in route.template.variables}

    def build(values: dict[str, str], how: str) -> str:
        path = "/" + "/".join(values[s.field] if isinstance(s, Variable) else s for s in route.template.segments)
        if route.template.verb:
            path += f":{route.template.verb}"
        return bent(path, how)

    return st.builds(build, st.fixed_dictionaries(variables), st.sampled_from(BENDS))


LITERALS = sorted({s for route in ROUTES for s in route.template.segments if isinstance(s, str)})
RANDOM_PATHS = st.one_of(
    st.lists(st.one_of(st.sampled_from(LITERALS), SEGMENT), max_size=8).map(lambda parts: "/api/" + "/".join(parts)),
    st.lists(st.one_of(st.sampled_from(LITERALS), SEGMENT), max_size=5).map(lambda parts: "/" + "/".join(parts)),
    st.sampled_from(["/", "//", "/api", "/api/", "/api/v1", "/api/v1/logs", "/healthz", "/healthz/", "/openapi.json",
                     "/openapi.json/..", "/HEALTHZ", "/api/v1/logs/exports/signing-keys:download",
                     "/api/v1/logs/exports/:download", "/api/v1/logs/exports:download", "/%2e%2e/%2e%2e/etc/passwd",
                     "/api/v1/logs/llm-runs/" + "/" * 1000, "/" + "a/" * 2000, "*", "http://gateway/api/v1/logs/audit",
                     "/api/v1/logs/audit#fragment", "/api/v1/logs/audit?", "/api/v1/logs/audit??x"]),
)


def targets(paths: st.SearchStrategy[str], route: Route | None) -> st.SearchStrategy[str]:
    return st.builds(lambda path, query: f"{path}?{query}" if query else path, paths, queries(route))


def methods(route: Route | None) -> st.SearchStrategy[str]:
    right = [route.http_method] * 6 if route else []
    return st.sampled_from(right + METHODS)


def requests(route: Route | None, paths: st.SearchStrategy[str]) -> st.SearchStrategy[Request]:
    with_body = st.tuples(bodies(route), st.sampled_from(CONTENT_TYPES))
    no_body = st.just((b"", None))
    body = st.one_of(with_body, with_body, no_body) if route and route.body else st.one_of(no_body, no_body, with_body)
    return st.builds(lambda method, target, creds, payload: Request(method, target, creds, *payload),
                     methods(route), targets(paths, route), credentials(), body)


# --- fixtures -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_tenant(database_url, demo) -> str:
    """TENANT with the demo scenarios of its own (CreateExport calls write to it); tenant-acme's
    and tenant-demo's data are there too, and must never show."""
    return load_demo_scenarios(database_url, TENANT, base=BASE)


@pytest.fixture(scope="module")
async def pool(served, fuzz_tenant):
    async with httpcore.AsyncConnectionPool(max_connections=4) as connections:
        yield connections


@pytest.fixture(scope="module", autouse=True)
def case_counts(request, tmp_path_factory):
    """After the module: the cases run per route family and status, as a table and as JSON."""
    yield
    if not COUNTS:
        return
    path = tmp_path_factory.getbasetemp() / "rest-fuzz-counts.json"
    path.write_text(json.dumps(COUNTS, indent=2, sort_keys=True))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        reporter.write_sep("-", "REST fuzz cases per route family")  # shown without -s too
        for line in [*summary_table(), f"REST fuzz case counts: {path}"]:
            reporter.write_line(line)


def summary_table() -> list[str]:
    rows = [(name, sum(counts.values()), ", ".join(f"{s} {n}" for s, n in sorted(counts.items())))
            for name, counts in sorted(COUNTS.items())]
    rows.append(("total", sum(r[1] for r in rows), ""))
    width = max(len(r[0]) for r in rows)
    return [f"{'family':<{width}}  {'cases':>6}  statuses"] + [f"{r[0]:<{width}}  {r[1]:>6}  {r[2]}" for r in rows]


# --- the properties -------------------------------------------------------------------

@pytest.mark.parametrize("route", ROUTES, ids=family)
@FUZZ
@given(data=st.data())
async def test_any_request_on_a_route_gets_a_status_answer(pool, served, route, data):
    request = data.draw(requests(route, route_paths(route)), label="request")
    await exchange(pool, served, family(route), request)


@pytest.mark.parametrize("route", BODY_ROUTES, ids=family)
@settings(FUZZ, max_examples=3 * EXAMPLES)
@given(data=st.data())
async def test_any_body_gets_a_status_answer(pool, served, route, data):
    path = "/" + "/".join(f"{TENANT}.run-support-103" if isinstance(s, Variable) else s
                          for s in route.template.segments)
    path += f":{route.template.verb}" if route.template.verb else ""
    creds, payload, content_type = data.draw(st.tuples(credentials(), bodies(route), st.sampled_from(CONTENT_TYPES)))
    await exchange(pool, served, f"{family(route)} (bodies)", Request(route.http_method, path, creds, payload,
                                                                       content_type))


@settings(FUZZ, max_examples=4 * EXAMPLES)
@given(data=st.data())
async def test_any_path_gets_a_status_answer(pool, served, data):
    request = data.draw(requests(None, RANDOM_PATHS), label="request")
    await exchange(pool, served, "random path", request)


# --- below the gateway: uvicorn's HTTP parser ---------------------------------------

@pytest.mark.parametrize("line", [
    b"GET /api/v1/logs/llm-runs/\xff\xfe/envelope HTTP/1.1\r\n",  # a request line is ASCII (RFC 9112)
    b"GET /api/v1/logs/audit?a=" + b"x" * (H11_HEAD_LIMIT + 4_000) + b" HTTP/1.1\r\n",
], ids=["raw non-ASCII path", "head over the parser's limit"])
async def test_what_the_http_parser_refuses_gets_a_400_not_a_hang(served, fuzz_tenant, line):
    """Requests the gateway never sees: uvicorn answers 400 in plain text and closes."""
    url = urlsplit(served)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        head = line + b"Host: gateway\r\n\r\n"
        split = H11_HEAD_LIMIT + 1_000  # a read ends past the limit with the head incomplete
        writer.write(head[:split])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(head[split:])
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), DEADLINE_S)
    finally:
        writer.close()
    assert reply.startswith(b"HTTP/1.1 400 ") and reply.endswith(PARSER_REFUSAL), reply[:300]


# --- bugs this fuzzing found ----------------------------------------------------------
# All fixed in gateway/; each request stays as a regression case, its reason saying what it was.

def found(method: str, target: str, body: bytes = b"", *, authorization: bytes | None = None, status: int,
          error_reason: str, reason: str):
    """A request the fuzzing found answered wrongly (``reason`` says how), and what it gets now."""
    return pytest.param(method, target, body, authorization, status, error_reason, id=f"{method} {target[:60]}")


@pytest.mark.parametrize("method, target, body, authorization, status, error_reason", [
    found("POST", "/api/v1/logs/exports", b'{"format": Infinity}', status=400, error_reason="INVALID_ARGUMENT",
          reason="an enum field given a non-finite number: OverflowError out of json_format.ParseDict, 500"),
    found("POST", f"/api/v1/logs/llm-runs/{TENANT}.run-support-103/export", b'{"bundle_type": -1e400}',
          status=400, error_reason="INVALID_ARGUMENT", reason="the same through 1e400, which JSON reads as infinity"),
    found("GET", f"/api/v1/logs/llm-runs/{TENANT}.run-support-103%0A/envelope", status=400,
          error_reason="INVALID_ARGUMENT",
          reason="a %0A in the path missed the catch-all route (Starlette's 'path' stops at a newline): "
                 "a bare 404 NOT_FOUND instead of the service's malformed-id answer"),
    found("GET", "/api/v1/logs/audit%0A/", status=404, error_reason="ROUTE_NOT_FOUND",
          reason="the same miss with a trailing slash: a 307 redirect to the path without it"),
    found("GET", "/api/v1/logs/audit", authorization=b"Bearer " + b"x" * 10_000, status=400,
          error_reason="INVALID_ARGUMENT",
          reason="a 10k Authorization header, forwarded as metadata over the services' 8 KiB limit: "
                 "RESOURCE_EXHAUSTED from gRPC (past its soft limit, probabilistically), a 429"),
])
async def test_found_bugs_get_a_status_answer(pool, served, method, target, body, authorization, status,
                                              error_reason):
    creds = Credentials(f"Bearer {token(TENANT)}".encode(), True) if authorization is None \
        else Credentials(authorization, False)
    request = Request(method, target, creds, body, "application/json" if body else None)
    answer = await send(pool, served, request)
    check(request, answer)
    reasons = {d.get("reason") for d in json.loads(answer.body)["details"]}
    assert answer.status == status and error_reason in reasons, (answer.status, answer.body[:300])
