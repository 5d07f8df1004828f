"""Retention row by row: a tenant's expired rows leave a shared month that cannot drop whole.

Revision ID: 0027_retention_rows
Revises: 0026_erasure_exports
Create Date: 2026-12-07

Why (issue #25, "a CRITICAL system record (permanent by default) keeps its month for every
tenant"): monthly partitions are shared by all tenants, and 0022's retention drops only whole
ones. One row that must stay (a permanent level, another tenant's longer policy, a legal hold)
kept the month, so every other tenant's expired rows in it stayed too, for ever.

Choice: delete the rows that may go, row-set by row-set (one tenant's rows of one partition —
of one level for system records), rather than moving the rows that must stay into a keep
table. A keep table would be a second place every read, index, row-level security policy,
export and the append-only triggers would have to cover, and the move itself is a DELETE plus
an INSERT of evidence (the chain trigger would have to let a row in with its old seq and
hash). Deleting leaves the rows that stay where readers look; its cost (dead tuples until
vacuum) is bounded by the rows removed. A month that is whole-droppable still drops whole.

- ``aos_retention_remove_rows(parent, partition, tenant, level)``: SECURITY DEFINER
  (runs as aos_owner, pinned search_path), EXECUTE only for the new NOLOGIN role
  ``aos_retention`` (granted to the migrating user, as the service roles are). It takes the
  partition SHARE ROW EXCLUSIVE (writers into that month wait; readers do not) and
  ``legal_holds`` SHARE (a hold placed meanwhile waits, or is seen), then refuses (AOS02) when:
  an active hold of the tenant covers a row of the set (TENANT; RUN, INCIDENT and SUBJECT as
  retention.py's partition check reads them); for the ledger, the set is not the beginning of
  the tenant's chain (an entry with a lower seq is kept elsewhere) or no recorded checkpoint at
  or after its last entry still matches — the rule of 0008's drop, per tenant: rows go only
  behind a checkpoint the tenant's verifiers can start from, and the last removed entry is
  recorded first as the tenant's RETENTION_ANCHOR; for trace steps, a trace of the set is
  running or has steps outside the partition (a trace's steps go together, finished).
  Otherwise it deletes the set's format 2 payloads and salts (evidence_payloads; erasure
  tombstones stay) and the rows, and returns both counts. It enforces holds and the proofs'
  gates; whether the tenant's policy has expired the set is its caller's question (the clock is
  the caller's: tests move it, so a time argument would prove nothing), as for 0022's drops.
  Never the default partition (its rows have no month). A dry run calls it in a transaction
  it rolls back (an aborted DELETE leaves no dead rows), so it reports the gates' answers. The caller (aos_recording.retention) writes the tenant's
  EvidenceRowsRemoved entry in the same transaction (the content hash is computed in Python).
- ``aos_refuse_mutation()`` lets a DELETE through on a partition of the ledger, system records
  or trace steps only while that function runs: its ``SET aos.retention_rows = 'on'`` clause
  holds only for the call, and the trigger also requires current_user = aos_owner (the
  function's definer), on a monthly partition (not the default one). No service role holds DELETE on these tables; a session of the owner
  or a superuser that sets the flag itself still meets the trigger unless it is aos_owner —
  which owns the tables and could drop the trigger anyway. UPDATE and TRUNCATE stay refused.
- Merkle trees: tlog_hashes (0013) are not in these tables and are never removed, so
  inclusion and consistency proofs outlive the rows, as they outlive a dropped month.
- Audit vocabulary: EvidenceRowsRemoved (entity EVIDENCE_PARTITION).

Downgrade restores aos_refuse_mutation and the CHECK lists and drops the function (the role
stays: roles are cluster-wide); it fails, as it must, once an EvidenceRowsRemoved entry exists.
"""
from alembic import op

revision = "0027_retention_rows"
down_revision = "0026_erasure_exports"
branch_labels = None
depends_on = None

PINNED = "pg_catalog, public, pg_temp"
ROLE = "aos_retention"

# Frozen copy (migrations never import the code they migrate): the list as 0023_erasure leaves it.
PREVIOUS_EVENTS = (
    "PolicyRuleCreated", "PolicyRuleModified", "PolicyRuleRetired",
    "PolicyProposalApproved", "PolicyProposalRejected",
    "LimitCreated", "LimitUpdated", "LimitBreached", "LimitOverrideGranted", "LimitOverrideRevoked",
    "IncidentAcknowledged", "IncidentResolved", "IncidentManuallyClosed",
    "EmergencyOverrideActivated", "EmergencyOverrideDeactivated",
    "ActorLoggedIn", "ActorLoggedOut", "ApiKeyCreated", "ApiKeyRevoked",
    "AccessGranted", "AccessDenied", "EvidenceExported", "ExportVerified",
    "RetentionPolicyChanged", "LegalHoldPlaced", "LegalHoldReleased", "EvidencePartitionDropped",
    "SubjectErasureRequested", "SubjectErased",
)
AUDIT_EVENTS = PREVIOUS_EVENTS + ("EvidenceRowsRemoved",)

ORIGINAL_REFUSE = f"""
CREATE OR REPLACE FUNCTION aos_refuse_mutation() RETURNS trigger
LANGUAGE plpgsql SET search_path = {PINNED}
AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'AOS01', HINT = 'evidence rows are never changed or removed';
END $$;
"""

REFUSE = f"""
CREATE OR REPLACE FUNCTION aos_refuse_mutation() RETURNS trigger
LANGUAGE plpgsql SET search_path = {PINNED}
AS $$
BEGIN
    -- The one way past (0027_retention_rows): a DELETE of a monthly partition's row by
    -- aos_retention_remove_rows, whose SET clause raises the flag for its call only.
    IF TG_OP = 'DELETE' AND current_user = 'aos_owner'
       AND current_setting('aos.retention_rows', true) = 'on' AND TG_TABLE_SCHEMA = 'public'
       AND TG_TABLE_NAME ~ '^(audit_ledger|system_records|aos_trace_steps)_p[0-9]{{4}}_[0-9]{{2}}$' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'AOS01', HINT = 'evidence rows are never changed or removed';
END $$;
"""

FUNCTION = f"""
CREATE FUNCTION aos_retention_remove_rows(p_parent text, p_part text, p_tenant text, p_level text)
RETURNS TABLE (rows_removed bigint, payloads_removed bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {PINNED} SET timezone = 'UTC'
SET aos.retention_rows = 'on'
AS $$
DECLARE
    part      regclass;
    rtype     text;
    rid       text;
    only_lv   text := '';
    tjoin     text := '';
    covers    text;
    hold      text;
    n         bigint;
    payloads  bigint;
    last_seq  bigint;
    last_hash bytea;
    n_before  bigint;
    cp        record;
    bad       record;
BEGIN
    IF p_parent IS NULL OR p_parent NOT IN ('audit_ledger', 'system_records', 'aos_trace_steps') THEN
        RAISE EXCEPTION 'aos_retention_remove_rows: % is not an evidence table it removes rows from', p_parent
            USING ERRCODE = '22023';
    END IF;
    IF coalesce(p_tenant, '') = '' THEN
        RAISE EXCEPTION 'aos_retention_remove_rows: a tenant is required' USING ERRCODE = '22023';
    END IF;
    IF (p_parent = 'system_records') <> (p_level IS NOT NULL) THEN
        RAISE EXCEPTION 'aos_retention_remove_rows: a level is required for system_records, and only there'
            USING ERRCODE = '22023';
    END IF;
    SELECT c.oid::regclass INTO part FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = p_parent::regclass AND c.relname = p_part AND c.relname <> p_parent || '_default';
    IF part IS NULL THEN
        RAISE EXCEPTION 'aos_retention_remove_rows: % is not a monthly partition of %', p_part, p_parent
            USING ERRCODE = '22023';
    END IF;
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', part);
    LOCK TABLE legal_holds IN SHARE MODE;

    IF p_parent = 'audit_ledger' THEN
        rtype := 'audit_entry'; rid := 'x.id';
        covers := '(h.scope = ''RUN'' AND (x.correlation_id = h.target_id OR (x.entity_type = ''LLM_RUN'' '
                  'AND x.entity_id = h.target_id))) OR (h.scope = ''INCIDENT'' AND (x.correlation_id = h.target_id '
                  'OR (x.entity_type = ''INCIDENT'' AND x.entity_id = h.target_id)))';
    ELSIF p_parent = 'system_records' THEN
        rtype := 'system_record'; rid := 'x.id'; only_lv := ' AND x.severity = $2';
        covers := '(h.scope = ''RUN'' AND (x.run_id = h.target_id OR x.correlation_id = h.target_id)) '
                  'OR (h.scope = ''INCIDENT'' AND x.correlation_id = h.target_id)';
    ELSE
        rtype := 'trace_step'; rid := 'x.trace_id || ''/'' || x.step_index';
        tjoin := ' JOIN aos_traces r ON r.tenant_id = x.tenant_id AND r.trace_id = x.trace_id';
        covers := '(h.scope = ''RUN'' AND r.run_id = h.target_id) OR (h.scope = ''INCIDENT'' '
                  'AND r.incident_id = h.target_id)';
    END IF;

    -- A hold of the tenant covering a row of the set keeps the set (the same reading of a
    -- hold's scope as the partition check in aos_recording/retention.py).
    EXECUTE format(
        'SELECT h.id FROM legal_holds h WHERE h.tenant_id = $1 AND h.released_at IS NULL AND ('
        '  h.scope = ''TENANT'''
        '  OR (h.scope = ''SUBJECT'' AND EXISTS (SELECT FROM %1$s x JOIN evidence_payloads e '
        '      ON e.tenant_id = x.tenant_id AND e.record_type = %2$L AND e.record_id = %3$s '
        '      WHERE x.tenant_id = $1%4$s AND e.subject_id = h.target_id))'
        '  OR (h.scope IN (''RUN'', ''INCIDENT'') AND EXISTS (SELECT FROM %1$s x%5$s '
        '      WHERE x.tenant_id = $1%4$s AND (%6$s)))) ORDER BY h.placed_at, h.id LIMIT 1',
        part, rtype, rid, only_lv, tjoin, covers) INTO hold USING p_tenant, p_level;
    IF hold IS NOT NULL THEN
        RAISE EXCEPTION 'retention refused: legal hold % of tenant % covers its rows in %', hold, p_tenant, part
            USING ERRCODE = 'AOS02', DETAIL = hold;
    END IF;

    IF p_parent = 'audit_ledger' THEN
        EXECUTE format('SELECT count(*), max(seq) FROM %s WHERE tenant_id = $1', part) INTO n, last_seq USING p_tenant;
        IF n = 0 THEN
            RETURN QUERY SELECT 0::bigint, 0::bigint;
            RETURN;
        END IF;
        EXECUTE format('SELECT chain_hash FROM %s WHERE tenant_id = $1 AND seq = $2', part)
            INTO last_hash USING p_tenant, last_seq;
        -- every entry of the tenant up to the last removed one, wherever it lives
        SELECT count(*) INTO n_before FROM audit_ledger a WHERE a.tenant_id = p_tenant AND a.seq <= last_seq;
        IF n_before <> n THEN
            RAISE EXCEPTION 'retention refused: tenant % has entries before seq % outside %: not the chain''s beginning',
                p_tenant, last_seq, part USING ERRCODE = 'AOS02';
        END IF;
        SELECT lc.seq, lc.chain_hash = a.chain_hash AS matches INTO cp
          FROM ledger_checkpoints lc
          LEFT JOIN audit_ledger a ON a.tenant_id = lc.tenant_id AND a.seq = lc.seq
         WHERE lc.tenant_id = p_tenant AND lc.kind = 'CHECKPOINT' AND lc.seq >= last_seq
         ORDER BY lc.seq LIMIT 1;
        IF cp.seq IS NULL THEN
            RAISE EXCEPTION 'retention refused: no checkpoint of tenant % covers seq % (in %)', p_tenant, last_seq, part
                USING ERRCODE = 'AOS02', HINT = 'record checkpoints first: SELECT * FROM aos_record_ledger_checkpoints()';
        ELSIF cp.matches IS NOT TRUE THEN
            RAISE EXCEPTION 'retention refused: tenant %''s checkpoint at seq % no longer matches the ledger',
                p_tenant, cp.seq USING ERRCODE = 'AOS02';
        END IF;
        INSERT INTO ledger_checkpoints (tenant_id, kind, seq, chain_hash)
        VALUES (p_tenant, 'RETENTION_ANCHOR', last_seq, last_hash) ON CONFLICT DO NOTHING;
    ELSIF p_parent = 'aos_trace_steps' THEN
        FOR bad IN EXECUTE format(
            'SELECT x.trace_id, t.status FROM %1$s x JOIN aos_traces t ON t.tenant_id = x.tenant_id '
            'AND t.trace_id = x.trace_id WHERE x.tenant_id = $1 AND (t.status = ''running'' OR EXISTS ('
            'SELECT FROM aos_trace_steps k WHERE k.tenant_id = x.tenant_id AND k.trace_id = x.trace_id '
            'AND k.tableoid <> %2$s)) LIMIT 1', part, part::oid) USING p_tenant
        LOOP
            RAISE EXCEPTION 'retention refused: trace % of tenant % is % with steps outside %', bad.trace_id,
                p_tenant, bad.status, part USING ERRCODE = 'AOS02',
                HINT = 'a trace''s steps go together, once it has finished';
        END LOOP;
    END IF;

    -- a removed record's content does not outlive it (its erasure tombstones, no content, stay)
    EXECUTE format('DELETE FROM evidence_payloads e USING %1$s x WHERE e.tenant_id = x.tenant_id '
                   'AND e.record_type = %2$L AND e.record_id = %3$s AND x.tenant_id = $1%4$s',
                   part, rtype, rid, only_lv) USING p_tenant, p_level;
    GET DIAGNOSTICS payloads = ROW_COUNT;
    EXECUTE format('DELETE FROM %s x WHERE x.tenant_id = $1%s', part, only_lv) USING p_tenant, p_level;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN QUERY SELECT n, payloads;
END $$;
ALTER FUNCTION aos_retention_remove_rows(text, text, text, text) OWNER TO aos_owner;
REVOKE ALL ON FUNCTION aos_retention_remove_rows(text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aos_retention_remove_rows(text, text, text, text) TO {ROLE};
"""


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def _replace_check(column: str, marker: str, values: tuple[str, ...]) -> None:
    conn = op.get_bind()
    # The ledger's own CHECK and any local copy a partition holds (as 0014, 0019, 0022, 0023 do).
    for relation, name in conn.exec_driver_sql(
            "SELECT c.conrelid::regclass::text, c.conname FROM pg_constraint c "
            "WHERE c.contype = 'c' AND c.conislocal "
            "AND c.conrelid IN (SELECT relid FROM pg_partition_tree('audit_ledger'::regclass)) "
            f"AND pg_get_constraintdef(c.oid) LIKE '%%{column}%%' "
            f"AND pg_get_constraintdef(c.oid) LIKE '%%{marker}%%' "
            "ORDER BY c.conrelid = 'audit_ledger'::regclass DESC").fetchall():
        conn.exec_driver_sql(f'ALTER TABLE {relation} DROP CONSTRAINT IF EXISTS "{name}"')
    conn.exec_driver_sql(f"ALTER TABLE audit_ledger ADD CONSTRAINT audit_ledger_{column}_check "
                         f"CHECK ({column} IN {_in(values)})")


def upgrade() -> None:
    _replace_check("event_type", "EvidenceExported", AUDIT_EVENTS)
    op.execute(f"""
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
    CREATE ROLE {ROLE} NOLOGIN NOINHERIT;
  END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;""")
    # USAGE: to find the function; nothing else in the schema. The maintenance path (the
    # migrating user) assumes the role for the call, as it may the service roles.
    op.execute(f"GRANT USAGE ON SCHEMA public TO {ROLE}")
    op.execute(f"GRANT {ROLE} TO CURRENT_USER")
    op.execute(REFUSE)
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION aos_retention_remove_rows(text, text, text, text)")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {ROLE}")
    op.execute(ORIGINAL_REFUSE)
    _replace_check("event_type", "EvidenceExported", PREVIOUS_EVENTS)
