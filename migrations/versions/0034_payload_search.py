"""Search finds the payloads of hash-format-2 records while they are held, never after an erasure
(issue #25; docs/ERASURE.md §3, docs/DATABASE.md "Search").

Revision ID: 0034_payload_search
Revises: 0033_tokens_sort_key
Create Date: 2026-12-07

Why: a format-2 record (an audit entry, trace step or system record written with a data
subject, 0023_erasure) keeps its payload fields — an entry's reason and states, a step's input
and output, a record's summary and details — in ``evidence_payloads``, and its row holds them
empty (a CHECK). The search documents (0021) are expressions over the rows, so SearchEvidence,
the lists' ``search`` and GetLlmRunGovernance's ``search`` never found a word of them: a
subject's text was invisible to search while it was held.

- ``ix_evidence_payloads_search``: GIN on (tenant_id, record_type, the payload's document). The
  document is 0021's aos_search_document of the payload as the row's column would give it: a
  string payload (a reason, a summary) as its text, any other JSON value as its JSON text (keys
  and values), as 0021 indexes ``before_state::text``. 256 kB pending list, as 0021's.
- ``payload_search`` (owned by aos_owner, SELECT for aos_logs): the tenant's payloads
  (``tenant_id = aos_current_tenant()``, the policies' own predicate, so ``doc @@ query`` is an
  index condition with the tenant, as 0021's views), each with its record type and id, its
  field and, for a trace step (record id ``<trace_id>/<step_index>``), the step's trace id and
  index. The Logs service reads only keys from it (a record matches when its row's document or
  one of its held payloads matches the query); the records themselves from their tables.
- Erasure deletes the payload rows (0023's aos_erase_subject, unchanged): an erased payload is
  in neither the view nor an index scan's answer from then on. Like the deleted rows' bytes in
  the table, the index's entries for them stay in its pages until VACUUM removes them; no read
  returns them.

Cost: one more GIN entry set per payload row written (format-2 records only).

Downgrade drops the view and the index.
"""
from alembic import op

revision = "0034_payload_search"
down_revision = "0033_tokens_sort_key"
branch_labels = None
depends_on = None

# A payload's document: as 0021's documents read the same field from a format-1 row.
DOC = ("aos_search_document(CASE WHEN jsonb_typeof(payload) = 'string' THEN payload #>> '{}' "
       "ELSE payload::text END)")


def upgrade() -> None:
    op.execute(f"""
        CREATE INDEX ix_evidence_payloads_search ON evidence_payloads
            USING gin (tenant_id, record_type, ({DOC})) WITH (gin_pending_list_limit = 256);
        CREATE VIEW payload_search AS
            SELECT tenant_id, record_type, record_id, field,
                   CASE WHEN record_type = 'trace_step' THEN substring(record_id FROM '^(.*)/[0-9]+$') END
                       AS trace_id,
                   CASE WHEN record_type = 'trace_step' THEN substring(record_id FROM '/([0-9]+)$')::integer END
                       AS step_index,
                   {DOC} AS doc
            FROM evidence_payloads WHERE tenant_id = aos_current_tenant();
        ALTER VIEW payload_search OWNER TO aos_owner;
        GRANT SELECT ON payload_search TO aos_logs;""")


def downgrade() -> None:
    op.execute("""
        DROP VIEW IF EXISTS payload_search;
        DROP INDEX IF EXISTS ix_evidence_payloads_search;""")
