"""Functions find only the real tables; sessions make no temporary tables and no large objects.

Revision ID: 0012_pinned_search_path
Revises: 0011_platform_records
Create Date: 2026-12-06

Why (issue #17, review after part 1):
- ``SET search_path = pg_catalog, public`` without ``pg_temp`` still searches the session's
  temporary schema FIRST for relations. A service session's
  ``CREATE TEMP TABLE audit_ledger(...)`` with a fake head row made the chain trigger
  (SECURITY DEFINER, running as the owner) read the fake head and store a forged seq and
  prev_hash; the same trick reached aos_check_step_trace and aos_record_once. Functions
  that set no search_path at all (the append-only and stamping triggers, the tenant
  lookup) run with the caller's, which the caller chooses. Every function of schema
  public now pins ``pg_catalog, public, pg_temp``: pg_temp last, so an unqualified name
  always resolves to the catalog or the real table first.
  One exception, ``aos_current_tenant()``, the row-level security policies' tenant: a SQL
  function with a SET clause is never inlined, and pinned it cost ~2.2 µs per row wherever
  a policy is a filter rather than an index condition (1M rows: 0.26 s → 2.5 s, PG 15).
  Its body, ``SELECT nullif(current_setting('aos.tenant_id', true), '')``, names no
  relation and no type; functions are never looked up in pg_temp, and no service role may
  create anything in public (0001) or in pg_temp (below): nothing can shadow it.
- TEMPORARY on the database is revoked from PUBLIC: no service makes a temporary table,
  so a service session cannot create the shadow at all (defence in depth with the above).
  The owner role keeps it (granted by name): aos_drop_ledger_partitions (0008) builds its
  list of dropped chain ends in a temporary table, as the owner. No login is a member of
  the owner (check_login), so no session reaches that grant.
- The large-object functions that create or write one are revoked from PUBLIC: a
  read-only service session could ``SET default_transaction_read_only = off`` and fill the
  disk with large objects it then owns, out of every table's grants.

Both revokes need the objects' owners: the database owner (TEMPORARY) and a superuser
(pg_catalog's functions). A REVOKE by anyone else is only a warning in PostgreSQL, so the
result is checked for every service role and the migration fails when any of them keeps
the privilege: an operator without a superuser must run the REVOKEs below themselves.

Downgrade restores 0011's state: the SECURITY DEFINER functions back to
``pg_catalog, public``, the others to no search_path, TEMPORARY and the large-object
functions granted to PUBLIC again (lo_import/lo_export were never PUBLIC's).
"""
from alembic import op

revision = "0012_pinned_search_path"
down_revision = "0011_platform_records"
branch_labels = None
depends_on = None

OWNER = "aos_owner"
SERVICE_ROLES = ("aos_overview", "aos_logs", "aos_export", "aos_producer")
PINNED = "pg_catalog, public, pg_temp"
# The large-object functions that create one or write into one (lo_open opens for writing;
# lo_import reads a server file into a new one, superuser-only already).
LO_WRITERS = ("lo_from_bytea", "lo_create", "lo_creat", "lo_put", "lowrite", "lo_open", "lo_truncate",
              "lo_truncate64", "lo_import")
# Granted to PUBLIC by initdb (lo_import is revoked from PUBLIC there).
LO_PUBLIC = tuple(name for name in LO_WRITERS if name != "lo_import")

# Kept inlinable (see above): relation-free SQL the policies call on every row.
INLINED = "('aos_current_tenant()')"

# Every function of schema public owned by the owner role or the migration's user, not an
# extension's (an extension's functions are its own to configure).
_FUNCTIONS = f"""
SELECT p.oid::regprocedure FROM pg_proc p
WHERE p.pronamespace = 'public'::regnamespace
  AND p.proowner IN (SELECT oid FROM pg_roles WHERE rolname IN ('{OWNER}', current_user))
  AND p.oid::regprocedure::text NOT IN {INLINED}
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                  AND d.deptype = 'e')"""


def _names(values) -> str:
    return "ARRAY[" + ", ".join(f"'{v}'" for v in values) + "]"


def upgrade() -> None:
    op.execute(f"""
DO $$
DECLARE fn regprocedure;
BEGIN
    FOR fn IN {_FUNCTIONS} LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = {PINNED}', fn);
    END LOOP;
END $$;""")
    op.execute(f"""
DO $$
DECLARE fn regprocedure; r text;
BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO {OWNER}', current_database());
    FOR fn IN SELECT p.oid::regprocedure FROM pg_proc p WHERE p.pronamespace = 'pg_catalog'::regnamespace
              AND p.proname = ANY({_names(LO_WRITERS)}) LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', fn);
    END LOOP;
    -- A REVOKE by a non-owner is a mere warning: check what each service role can still do.
    FOREACH r IN ARRAY {_names(SERVICE_ROLES)} LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r);
        IF has_database_privilege(r, current_database(), 'TEMPORARY') THEN
            RAISE EXCEPTION 'role % can still create temporary tables in database %: run REVOKE TEMPORARY '
                            'ON DATABASE % FROM PUBLIC (and from %) as the database owner', r,
                            current_database(), current_database(), r;
        END IF;
        FOR fn IN SELECT p.oid::regprocedure FROM pg_proc p WHERE p.pronamespace = 'pg_catalog'::regnamespace
                  AND p.proname = ANY({_names(LO_WRITERS)}) LOOP
            IF has_function_privilege(r, fn, 'EXECUTE') THEN
                RAISE EXCEPTION 'role % can still execute %: run REVOKE EXECUTE ON FUNCTION % FROM PUBLIC '
                                'as a superuser (migration 0012)', r, fn, fn;
            END IF;
        END LOOP;
    END LOOP;
END $$;""")


def downgrade() -> None:
    op.execute(f"""
DO $$
DECLARE fn regprocedure;
BEGIN
    FOR fn IN SELECT p.oid::regprocedure FROM pg_proc p WHERE p.pronamespace = 'pg_catalog'::regnamespace
              AND p.proname = ANY({_names(LO_PUBLIC)}) LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', fn);
    END LOOP;
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO PUBLIC', current_database());
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM {OWNER}', current_database());
    FOR fn IN {_FUNCTIONS} LOOP
        IF (SELECT prosecdef FROM pg_proc WHERE oid = fn) THEN
            EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, public', fn);
        ELSE
            EXECUTE format('ALTER FUNCTION %s RESET search_path', fn);
        END IF;
    END LOOP;
END $$;""")
