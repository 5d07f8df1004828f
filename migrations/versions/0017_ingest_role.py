"""The Ingest service's database role: appends audit entries and system records, nothing else.

Revision ID: 0017_ingest_role
Revises: 0016_checkpoint_notes
Create Date: 2026-12-07

Why (issue #21): producers write evidence through the Ingest service (SPEC §2), which logs
in as its own role (SPEC §6) rather than as aos_producer (INSERT on every table, UPDATE on
the source tables). ``aos_ingest`` gets exactly what the first slice writes:

- INSERT on ``audit_ledger`` and ``system_records`` (the chain, seq, prev_hash, chain_hash
  and recorded_at are assigned by the existing triggers, which run as the owner; row-level
  security's WITH CHECK holds each row to the session's tenant);
- SELECT on those two tables, for the idempotency check (is this producer id recorded,
  with which content hash) and for the RETURNING of the chain columns; row-level security
  limits it to the session's tenant.

Nothing else, not even ``tenants``: an append for a tenant the platform has no row for meets
the tenant foreign key (checked as the owner), which the services answer FAILED_PRECONDITION
TENANT_NOT_FOUND (aos_runtime.errors), and the whole batch is rolled back.

It is created NOLOGIN NOINHERIT like the other service roles (0001); provisioning
(aos_runtime/provision.py) makes it a login with no other attribute and no membership.
TEMPORARY on the database is PUBLIC's no more (0012), so the role has none; the check
below fails the migration if it somehow does, as 0012 checks the others.

Downgrade revokes its privileges; the role stays (roles are cluster-wide, 0001).
"""
from alembic import op

revision = "0017_ingest_role"
down_revision = "0016_checkpoint_notes"
branch_labels = None
depends_on = None

ROLE = "aos_ingest"
WRITES = ("audit_ledger", "system_records")


def upgrade() -> None:
    op.execute(f"""
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
    CREATE ROLE {ROLE} NOLOGIN NOINHERIT;
  END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;""")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {ROLE}")
    op.execute(f"GRANT SELECT, INSERT ON {', '.join(WRITES)} TO {ROLE}")
    # The migrating user may assume each service role (as 0001 granted the others).
    op.execute(f"GRANT {ROLE} TO CURRENT_USER")
    op.execute(f"""
DO $$ BEGIN
    IF has_database_privilege('{ROLE}', current_database(), 'TEMPORARY') THEN
        RAISE EXCEPTION 'role {ROLE} can create temporary tables in database %: run REVOKE TEMPORARY ON '
                        'DATABASE % FROM PUBLIC as the database owner (migration 0012)',
                        current_database(), current_database();
    END IF;
END $$;""")


def downgrade() -> None:
    op.execute(f"REVOKE ALL ON {', '.join(WRITES)} FROM {ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {ROLE}")
