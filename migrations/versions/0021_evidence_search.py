"""Evidence search: full-text indexes and the tenant-scoped search views; request_id on system records.

Revision ID: 0021_evidence_search
Revises: 0020_ingest_runs
Create Date: 2026-12-07

Why (issue #25): EvidenceSearchService.SearchEvidence finds a tenant's audit entries, trace
steps and system records by their words (docs/DATABASE.md "Search").

- PostgreSQL full-text search, config ``simple`` (words lower-cased, no stemming, no stop
  words: evidence is ids, codes and text in any language; an auditor searching `denied`
  finds exactly that word). Ids glue words with `-._:@/` in ways the default parser splits
  unevenly (`tenant-demo.run-support-103` → `tenant-demo.run`, `support`, `-103`): those
  characters are spaces in the document, and the service turns such a query term into the
  phrase of its parts, so an id is found by itself or by any of its parts.
- The document is an expression, not a stored column: no table (partitioned, append-only)
  is rewritten, and ``SELECT *`` of system_records and platform_records keeps one shape
  apart from the new request_id, added to both at the same place.
- One GIN index per table on (tenant_id, document) — btree_gin for the text column (a
  trusted extension: no superuser needed; in schema aos_ext, out of public) — so a word common to every tenant is looked up
  within the caller's tenant in the index, not filtered out of every tenant's matches.
  On a partitioned table the index is built on every partition (and new ones).
- Why views: under row-level security a condition with an operator that is not leakproof
  (``@@`` is not) is never an index condition (the planner keeps it behind the policy's
  qual), so a search would compute the document of every row of the tenant. Each view
  (owned by aos_owner, which row-level security does not restrict) selects its table's rows
  WHERE tenant_id = aos_current_tenant() — the policies' own predicate — and the document;
  ``doc @@ query`` on the view is then an index condition with the tenant. The Logs service
  reads only keys from the views; the records themselves it reads from the tables, under
  their policies, so a hit is shown only when both agree. platform_search (system-wide
  records) has no tenant to scope, as platform_records' read policy has none.

request_id: the producer's request id on system records (the seeds' SystemLog field),
nullable, not part of the content hash (SPEC §5 is unchanged). Adding a nullable column
without default rewrites nothing. A partial index serves the ListSystemRecords filter.

Downgrade drops the views, indexes and column, then btree_gin and its schema.
"""
from alembic import op

revision = "0021_evidence_search"
down_revision = "0020_ingest_runs"
branch_labels = None
depends_on = None

# The document of a record: its fields joined by spaces, as one tsvector (config 'simple').
# A function, so that the index, the views and the service's matched fields share one
# definition, and so that the planner sees a small expression (matched against every
# partition's index: a tsvector per field made planning the larger part of a search) with its
# real cost (COST 500: inlined, to_tsvector's default cost made a scan that recomputes the
# document of every row of the tenant look cheaper than the index; measured 100 ms vs 2 ms).
# Not inlined either way: it pins search_path like every function in public (migration 0012).
# A tsvector holds at most 1 MB and a longer document would make the INSERT of the evidence
# fail: the first 100,000 characters are indexed (at most 400 kB of words, well under 1 MB
# with their positions); a step's 4 MB input is stored whole and found by its beginning.
DOCUMENT = r"""
CREATE FUNCTION aos_search_document(VARIADIC parts text[]) RETURNS tsvector
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE COST 500
SET search_path = pg_catalog, public, pg_temp
AS $$ SELECT to_tsvector('simple'::regconfig,
                         regexp_replace(left(array_to_string(parts, ' '), 100000), '[-._:@/]+', ' ', 'g')) $$;
COMMENT ON FUNCTION aos_search_document(text[]) IS
    'The searchable words of a record (migration 0021): its fields (NULLs skipped) joined by spaces, '
    '-._:@/ read as spaces, the first 100,000 characters, config simple.';
"""


def _doc(texts: tuple[str, ...], jsons: tuple[str, ...]) -> str:
    """The document expression: text fields as they are, a jsonb by its text (string and number
    values, and the keys, e.g. `refund_amount`)."""
    return f"aos_search_document({', '.join([*texts, *(f'{c}::text' for c in jsons)])})"


# Frozen here; services/logs/store.py names the same fields for "matched_fields".
AUDIT_DOC = _doc(("event_type", "entity_type", "entity_id", "actor_id", "action_reason", "correlation_id"),
                 ("before_state", "after_state"))
STEP_DOC = _doc(("step_type", "source"), ("input_data", "output_data", "metadata"))
SYSTEM_DOC = _doc(("component", "event_type", "severity", "summary", "actor_id", "correlation_id", "run_id",
                   "request_id", "environment_id"), ("details",))

# GIN's fast update queues new entries in a pending list that every search reads in full until
# (auto)vacuum or the list's limit merges it into the index: with the default 4 MB a search
# right after a bulk load took 540 ms instead of a few. 256 kB bounds that read; an append
# that fills it pays the merge (smaller, more often).
PENDING = "WITH (gin_pending_list_limit = 256)"

VIEWS = {
    "audit_search": f"""
        SELECT tenant_id, id, created_at, actor_id, correlation_id,
               coalesce(after_state ->> 'run_id', before_state ->> 'run_id', correlation_id) AS run_key,
               {AUDIT_DOC} AS doc
        FROM audit_ledger WHERE tenant_id = aos_current_tenant()""",
    "trace_step_search": f"""
        SELECT tenant_id, id, created_at, trace_id, {STEP_DOC} AS doc
        FROM aos_trace_steps WHERE tenant_id = aos_current_tenant()""",
    "system_search": f"""
        SELECT tenant_id, id, created_at, actor_id, correlation_id, run_id, {SYSTEM_DOC} AS doc
        FROM system_records WHERE tenant_id = aos_current_tenant()""",
    "platform_search": f"""
        SELECT tenant_id, id, created_at, actor_id, correlation_id, run_id, {SYSTEM_DOC} AS doc
        FROM platform_records""",
}


def upgrade() -> None:
    # In a schema of its own: its C functions do not pin search_path, and every function in
    # public does (migration 0012). A GIN index finds btree_gin's opclass as the default for
    # text whatever its schema; no role needs USAGE on it.
    op.execute("CREATE SCHEMA IF NOT EXISTS aos_ext")
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin WITH SCHEMA aos_ext")
    op.execute(DOCUMENT)
    op.execute("ALTER FUNCTION aos_search_document(text[]) OWNER TO aos_owner")
    op.execute("""
        ALTER TABLE system_records ADD COLUMN request_id text;
        ALTER TABLE platform_records ADD COLUMN request_id text;
        CREATE INDEX ix_system_records_request ON system_records (tenant_id, request_id)
            WHERE request_id IS NOT NULL;
        CREATE INDEX ix_platform_records_request ON platform_records (request_id) WHERE request_id IS NOT NULL;""")
    op.execute(f"""
        CREATE INDEX ix_audit_ledger_search ON audit_ledger USING gin (tenant_id, ({AUDIT_DOC})) {PENDING};
        CREATE INDEX ix_aos_trace_steps_search ON aos_trace_steps USING gin (tenant_id, ({STEP_DOC})) {PENDING};
        CREATE INDEX ix_system_records_search ON system_records USING gin (tenant_id, ({SYSTEM_DOC})) {PENDING};
        CREATE INDEX ix_platform_records_search ON platform_records USING gin (({SYSTEM_DOC})) {PENDING};""")
    for name, select in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {select}")
        op.execute(f"ALTER VIEW {name} OWNER TO aos_owner")
        op.execute(f"GRANT SELECT ON {name} TO aos_logs")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.execute("""
        DROP INDEX IF EXISTS ix_audit_ledger_search;
        DROP INDEX IF EXISTS ix_aos_trace_steps_search;
        DROP INDEX IF EXISTS ix_system_records_search;
        DROP INDEX IF EXISTS ix_platform_records_search;
        DROP INDEX IF EXISTS ix_system_records_request;
        DROP INDEX IF EXISTS ix_platform_records_request;
        ALTER TABLE system_records DROP COLUMN request_id;
        ALTER TABLE platform_records DROP COLUMN request_id;""")
    op.execute("DROP FUNCTION IF EXISTS aos_search_document(text[])")
    op.execute("DROP EXTENSION IF EXISTS btree_gin")
    op.execute("DROP SCHEMA IF EXISTS aos_ext")
