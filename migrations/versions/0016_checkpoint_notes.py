"""The transparency logs' C2SP checkpoints, kept, and the witnesses' cosignatures on them.

Revision ID: 0016_checkpoint_notes
Revises: 0015_ledger_stats
Create Date: 2026-12-06

Why (issue #20): GetLedgerCheckpoint answers each tenant's ledger (and export chain) as a
C2SP tlog-checkpoint in a signed note (SPEC §5). An auditor or a witness who holds one must
be able to come back for it (by tree size), and a witness's cosignature must be kept and
served with it from then on; the Export service also publishes checkpoints by itself at
AOS_CHECKPOINT_INTERVAL_S.

What it adds:
- ``checkpoint_notes``: per tenant, log and tree size, the first checkpoint signed at that
  size: its root, the note text (origin, size, base64 root), the signed note as the log
  signed it (no cosignatures) and when. A note's text is a function of (origin, size, root)
  and Ed25519 is deterministic, so signing the same size again under the same key gives the
  same note; the first is kept (ON CONFLICT DO NOTHING). Append-only.
- ``checkpoint_cosignatures``: a witness's cosignature/v1 line on a kept checkpoint, one per
  witness key (name and 4-byte key id) and checkpoint, the first kept. Append-only. The
  foreign key holds it to a kept checkpoint of the same tenant and log.
- ``aos_tlog_unpublished()``: for the periodic publisher, the (tenant, log, size) of every
  log whose newest kept checkpoint is below its tree size. SECURITY DEFINER (owner) because
  the publisher works for every tenant and row-level security shows it none without one; it
  returns sizes only, no hashes or entries. It probes the primary keys: one backwards probe
  of tlog_hashes per (tenant, log) found by a loose index scan, one of checkpoint_notes.

Both tables: row-level security on the tenant; SELECT and INSERT for aos_export (which holds
the log key: a database check of the root would add nothing against that role; the service
computes the root from tlog_hashes in the same transaction), SELECT for aos_logs.

Downgrade drops the function and both tables.
"""
from alembic import op

revision = "0016_checkpoint_notes"
down_revision = "0015_ledger_stats"
branch_labels = None
depends_on = None

OWNER = "aos_owner"
PINNED = "pg_catalog, public, pg_temp"
TABLES = ("checkpoint_notes", "checkpoint_cosignatures")

SCHEMA = """
CREATE TABLE checkpoint_notes (
    tenant_id  text        NOT NULL,
    log        text        NOT NULL CHECK (log IN ('ledger', 'exports')),
    tree_size  bigint      NOT NULL CHECK (tree_size >= 0),
    root_hash  bytea       NOT NULL CHECK (octet_length(root_hash) = 32),
    -- the C2SP tlog-checkpoint text and the signed note as the log signed it
    body       text        NOT NULL CHECK (body <> '' AND right(body, 1) = E'\\n'),
    note       text        NOT NULL CHECK (left(note, length(body) + 1) = body || E'\\n'),
    key_id     text        NOT NULL,  -- the log's note key: hex of its 4-byte signed-note key id
    signed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, log, tree_size)
);
CREATE TABLE checkpoint_cosignatures (
    tenant_id      text        NOT NULL,
    log            text        NOT NULL,
    tree_size      bigint      NOT NULL,
    witness_name   text        NOT NULL,
    witness_key_id bytea       NOT NULL CHECK (octet_length(witness_key_id) = 4),
    cosigned_at    bigint      NOT NULL CHECK (cosigned_at >= 0),  -- the cosignature's own timestamp (POSIX s)
    line           text        NOT NULL CHECK (line <> '' AND right(line, 1) = E'\\n'),
    received_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, log, tree_size, witness_name, witness_key_id),
    FOREIGN KEY (tenant_id, log, tree_size) REFERENCES checkpoint_notes (tenant_id, log, tree_size)
);
"""

POLICY = """
ALTER TABLE {t} OWNER TO {owner};
CREATE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE ON {t}
    FOR EACH ROW EXECUTE FUNCTION aos_refuse_mutation();
CREATE TRIGGER {t}_no_truncate BEFORE TRUNCATE ON {t}
    FOR EACH STATEMENT EXECUTE FUNCTION aos_refuse_mutation();
ALTER TABLE {t} ENABLE ALWAYS TRIGGER {t}_append_only;
ALTER TABLE {t} ENABLE ALWAYS TRIGGER {t}_no_truncate;
ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;
CREATE POLICY {t}_tenant ON {t} USING (tenant_id = aos_current_tenant())
    WITH CHECK (tenant_id = aos_current_tenant());
GRANT SELECT, INSERT ON {t} TO aos_export;
GRANT SELECT ON {t} TO aos_logs;
"""

UNPUBLISHED = f"""
CREATE FUNCTION aos_tlog_unpublished() RETURNS TABLE (tenant_id text, log text, tree_size bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = {PINNED}
AS $$
    WITH RECURSIVE logs(tenant_id, log) AS (
        (SELECT h.tenant_id, h.log FROM tlog_hashes h ORDER BY h.tenant_id, h.log LIMIT 1)
        UNION ALL
        SELECT n.tenant_id, n.log FROM logs l CROSS JOIN LATERAL (
            SELECT h.tenant_id, h.log FROM tlog_hashes h WHERE (h.tenant_id, h.log) > (l.tenant_id, l.log)
             ORDER BY h.tenant_id, h.log LIMIT 1) n
    )
    SELECT l.tenant_id, l.log, s.tree_size FROM logs l
     CROSS JOIN LATERAL (SELECT h.tree_size FROM tlog_hashes h WHERE h.tenant_id = l.tenant_id AND h.log = l.log
                          ORDER BY h.hash_index DESC LIMIT 1) s
     WHERE s.tree_size > coalesce((SELECT c.tree_size FROM checkpoint_notes c
                                    WHERE c.tenant_id = l.tenant_id AND c.log = l.log
                                    ORDER BY c.tree_size DESC LIMIT 1), 0)
$$;
ALTER FUNCTION aos_tlog_unpublished() OWNER TO {OWNER};
REVOKE EXECUTE ON FUNCTION aos_tlog_unpublished() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aos_tlog_unpublished() TO aos_export;
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    for table in TABLES:
        op.execute(POLICY.format(t=table, owner=OWNER))
    op.execute(UNPUBLISHED)


def downgrade() -> None:
    op.execute("""
        DROP FUNCTION aos_tlog_unpublished();
        DROP TABLE checkpoint_cosignatures;
        DROP TABLE checkpoint_notes;""")
