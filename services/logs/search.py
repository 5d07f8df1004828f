"""EvidenceSearchService: full-text search over a tenant's evidence (audit entries, trace
steps, system records), with structured filters, keyset pages and capped totals.

The query is web-search syntax (PostgreSQL's websearch_to_tsquery, config 'simple'). Ids
glue words with `-._:@/`, which the documents turn into spaces (migration 0021); a query
term holding them becomes the quoted phrase of its parts, so `run-support-103` finds the
id and `"budget exceeded"` the phrase. SQL in services/logs/store.py.
"""
from __future__ import annotations

import re

import grpc

from aos.logs.v1 import evidence_search_service_pb2 as pb, evidence_search_service_pb2_grpc as pb_grpc
from aos_runtime import auth
from aos_runtime.pagination import Listing, iso_utc
from aos_runtime.server import ServiceContext
from aos_runtime.validation import Request
from services.logs import store
from services.logs.messages import answer_metadata, search_hit

DESCRIPTOR = pb.DESCRIPTOR.services_by_name["EvidenceSearchService"]
MAX_QUERY = 256
_SEP = re.compile(r"[-._:@/]+")
_PARTS = re.compile(r'"([^"]*)"?|([^\s"]+)')  # quoted phrases (an unclosed one runs to the end), bare terms
_SOURCES = {pb.EVIDENCE_SOURCE_AUDIT: "AUDIT", pb.EVIDENCE_SOURCE_TRACE_STEP: "TRACE_STEP",
            pb.EVIDENCE_SOURCE_SYSTEM: "SYSTEM"}


def normalise_query(query: str) -> tuple[str, bool]:
    """(the query as the documents are written, whether it asks for at least one word).

    A term's separators become spaces inside a quoted phrase; a leading `-` (exclude) and
    `or` stay as websearch_to_tsquery reads them. A query of exclusions only would match
    nearly everything and could use no index: it does not count as asking for a word.
    """
    out: list[str] = []
    positive = False
    for phrase, term in _PARTS.findall(query):
        if term == "":  # a quoted phrase
            words = _SEP.sub(" ", phrase).split()
            if words:
                out.append('"' + " ".join(words) + '"')
                positive = positive or any(re.search(r"\w", w) for w in words)
            continue
        if term.lower() == "or":
            out.append("or")
            continue
        negated = term.startswith("-") and len(term) > 1
        words = _SEP.sub(" ", term[1:] if negated else term).split()
        if not words:
            continue
        body = words[0] if len(words) == 1 else '"' + " ".join(words) + '"'
        out.append(("-" if negated else "") + body)
        positive = positive or (not negated and any(re.search(r"\w", w) for w in words))
    return " ".join(out), positive


def search_query(r: Request, text: str, field: str) -> str:
    """A search text checked (violations on ``field``) and written as the documents are: the
    one reading of a query, for SearchEvidence and for the lists' ``search``."""
    query, positive = normalise_query(text)
    if len(text) > MAX_QUERY:
        r.violations.add(field, f"is longer than {MAX_QUERY} characters")
    elif not text.isprintable():
        r.violations.add(field, "must not contain control characters")
    elif not positive:
        r.violations.add(field, "has no word to find (only punctuation, or only excluded -words)")
    return query


def list_search(r: Request, text: str, field: str = "search") -> str | None:
    """A list's optional ``search``: None when empty, else as SearchEvidence reads a query."""
    return search_query(r, text, field) if text else None


class EvidenceSearchService(pb_grpc.EvidenceSearchServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def SearchEvidence(self, request: pb.SearchEvidenceRequest,
                             context: grpc.aio.ServicerContext) -> pb.SearchEvidenceResponse:
        r = Request()
        if not request.query.strip():
            r.violations.add("query", "is required")
        query = search_query(r, request.query, "query") if request.query.strip() else ""
        sources = []
        for number in request.sources:
            if number not in _SOURCES:
                r.violations.add("sources", f"{number} is not a value of EvidenceSource")
            elif _SOURCES[number] not in sources:
                sources.append(_SOURCES[number])
        start, end = r.time_range(request)
        filters = store.SearchFilters(
            query=query, sources=tuple(sorted(sources)), created_after=start, created_before=end,
            run_id=r.optional_text(request.run_id, "run_id"), actor_id=r.optional_text(request.actor_id, "actor_id"),
            correlation_id=r.optional_text(request.correlation_id, "correlation_id"))
        limit = r.page_size(request.page_size)
        r.done()
        listing = Listing.of(self.ctx.page_tokens, auth.principal().tenant_id, "search", filters)
        page = await listing.fetch(self.ctx.db, request.page_token, store.search_evidence, filters, limit=limit)
        hits = [search_hit(row) for row in page.rows]
        next_token = ""
        if page.has_more:
            last = page.rows[-1]
            next_token = listing.issue([iso_utc(last["created_at"]), last["id"], last["source"]])
        return pb.SearchEvidenceResponse(
            metadata=answer_metadata(listing.tenant_id, "search", hits), hits=hits, next_page_token=next_token,
            total_size=page.total, total_size_is_estimate=page.total_is_estimate, has_more=page.has_more)
