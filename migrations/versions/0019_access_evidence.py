"""Access evidence: the Logs and Export sessions append AccessGranted / AccessDenied, nothing else.

Revision ID: 0019_access_evidence
Revises: 0018_tlog_lookups
Create Date: 2026-12-07

Why (issue #21, access evidence): every read of a piece of evidence leaves an access entry
in the caller's audit ledger. The Logs service's role is read-only (SELECT only, sessions
``default_transaction_read_only``); the Export role may INSERT any ledger entry already (its
EvidenceExported, ExportVerified). Granting the Logs role INSERT on the ledger would let a
Logs session write any event (a forged LimitOverrideGranted), so it gets no table privilege
at all; instead one narrow door:

``aos_record_access(...)``, SECURITY DEFINER as the owner, ``search_path`` pinned
(``pg_catalog, public, pg_temp``, as 0012 pins every function), EXECUTE for ``aos_logs`` and
``aos_export`` only (revoked from PUBLIC). It appends one entry and refuses, with
insufficient_privilege, anything but:

- event_type ``AccessGranted`` or ``AccessDenied``;
- entity_type one of the resources a read names (LLM_RUN, SYSTEM_RECORD, AUDIT_ENTRY,
  LOG_EXPORT);
- the tenant of the session's transaction (``aos_current_tenant()``), which the function
  sets itself: no parameter names a tenant, so a call cannot aim at another tenant than the
  one its transaction is scoped to (none set: refused);
- no before_state (a read changes nothing), an after_state that is a JSON object;
- created_at within the last hour and at most a minute ahead of the database's clock: an
  access is recorded when it happens (the services buffer entries for well under a second),
  never backdated into the past the ledger already holds;
- a 32-byte content hash. The chain (seq, prev_hash, chain_hash, recorded_at) is assigned
  by the ledger's trigger as for every entry, and the transparency log's leaf with it.

What the database cannot check: that the content hash is the hash of the fields (SPEC §5's
JCS is not computed in SQL) — an entry with a wrong one is reported by the integrity
report (O4) as a content mismatch — nor that the actor is the token's (the database never
sees the token). A compromised Logs process can therefore write false access entries of
its tenant of choice, as it can read any tenant's rows by setting ``aos.tenant_id``; what
it cannot do through its role is write any other kind of evidence, change or remove an
entry, or break a chain.

The three entity types are added to the ledger's entity_type CHECK (as 0014 added an event).

Downgrade drops the function and restores 0001's entity list; it fails, as it must, once an
access entry about one of the new entities is recorded (the ledger is append-only).
"""
from alembic import op

revision = "0019_access_evidence"
down_revision = "0018_tlog_lookups"
branch_labels = None
depends_on = None

# Frozen copies (migrations never import the code they migrate for).
PREVIOUS_ENTITIES = ("POLICY_RULE", "POLICY_PROPOSAL", "LIMIT", "INCIDENT", "ACTOR", "API_KEY", "LOG_EXPORT")
ACCESS_ENTITIES = ("LLM_RUN", "SYSTEM_RECORD", "AUDIT_ENTRY", "LOG_EXPORT")
ENTITIES = PREVIOUS_ENTITIES + ("LLM_RUN", "SYSTEM_RECORD", "AUDIT_ENTRY")
ACCESS_EVENTS = ("AccessGranted", "AccessDenied")
WRITERS = ("aos_logs", "aos_export")
SIGNATURE = ("aos_record_access(text, text, text, text, text, text, text, text, timestamptz, jsonb, bytea)")


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def _replace_entity_check(entities: tuple[str, ...]) -> None:
    conn = op.get_bind()
    # The ledger's entity_type CHECK and any local copy a partition holds (as 0014 does for events).
    for relation, name in conn.exec_driver_sql(
            "SELECT c.conrelid::regclass::text, c.conname FROM pg_constraint c "
            "WHERE c.contype = 'c' AND c.conislocal "
            "AND c.conrelid IN (SELECT relid FROM pg_partition_tree('audit_ledger'::regclass)) "
            "AND pg_get_constraintdef(c.oid) LIKE '%%entity_type%%' "
            "AND pg_get_constraintdef(c.oid) LIKE '%%API_KEY%%' "
            "ORDER BY c.conrelid = 'audit_ledger'::regclass DESC").fetchall():
        conn.exec_driver_sql(f'ALTER TABLE {relation} DROP CONSTRAINT IF EXISTS "{name}"')
    conn.exec_driver_sql("ALTER TABLE audit_ledger ADD CONSTRAINT audit_ledger_entity_type_check "
                         f"CHECK (entity_type IN {_in(entities)})")


def upgrade() -> None:
    _replace_entity_check(ENTITIES)
    op.execute(f"""
CREATE FUNCTION aos_record_access(p_id text, p_event_type text, p_entity_type text, p_entity_id text,
                                  p_actor_type text, p_actor_id text, p_action_reason text,
                                  p_correlation_id text, p_created_at timestamptz, p_after_state jsonb,
                                  p_content_hash bytea)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    tenant text := aos_current_tenant();
    assigned bigint;
BEGIN
    IF tenant IS NULL THEN
        RAISE EXCEPTION 'aos_record_access: the transaction names no tenant'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p_event_type IS NULL OR p_event_type NOT IN {_in(ACCESS_EVENTS)} THEN
        RAISE EXCEPTION 'aos_record_access records access events only, not %', p_event_type
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p_entity_type IS NULL OR p_entity_type NOT IN {_in(ACCESS_ENTITIES)} THEN
        RAISE EXCEPTION 'aos_record_access: % is not a resource a read names', p_entity_type
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p_after_state IS NULL OR jsonb_typeof(p_after_state) <> 'object' THEN
        RAISE EXCEPTION 'aos_record_access: after_state must be a JSON object'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p_created_at IS NULL OR p_created_at < now() - interval '1 hour'
       OR p_created_at > now() + interval '1 minute' THEN
        RAISE EXCEPTION 'aos_record_access: created_at % is not now', p_created_at
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO public.audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, actor_id,
                                     action_reason, correlation_id, created_at, before_state, after_state,
                                     content_hash)
    VALUES (p_id, tenant, p_event_type, p_entity_type, p_entity_id, p_actor_type, p_actor_id,
            p_action_reason, p_correlation_id, p_created_at, NULL, p_after_state, p_content_hash)
    RETURNING seq INTO assigned;
    RETURN assigned;
END $$;
ALTER FUNCTION {SIGNATURE} OWNER TO aos_owner;
REVOKE EXECUTE ON FUNCTION {SIGNATURE} FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {SIGNATURE} TO {', '.join(WRITERS)};
""")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")
    _replace_entity_check(PREVIOUS_ENTITIES)
