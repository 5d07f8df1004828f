"""What a database session's login is and could become — the one check every login passes.

The services (``aos_runtime.db.check_login``) and the producer library
(``aos_recording.writers.Producer``) refuse a login that could do more than its role:
another login, a role attribute (superuser, BYPASSRLS, …), membership of a role (SET ROLE),
ownership of anything (tables, functions, large objects), or a stored role setting. Core of
the recording library: imports neither the server runtime nor grpc.
"""
from __future__ import annotations

from typing import Any

# pg_roles, pg_auth_members and the catalogs' owner columns are readable by every role. Direct
# memberships are enough: with none, the login reaches no other role, directly or through another.
_LOGIN = """
SELECT session_user::text, current_user::text, r.rolsuper, r.rolbypassrls, r.rolcreaterole, r.rolcreatedb,
       r.rolreplication,
       ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
             WHERE m.member = r.oid ORDER BY 1),
       (SELECT count(*) FROM pg_class WHERE relowner = r.oid AND relpersistence <> 't')
     + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid)
     + (SELECT count(*) FROM pg_proc WHERE proowner = r.oid)
     + (SELECT count(*) FROM pg_database WHERE datdba = r.oid),
       (SELECT count(*) FROM pg_largeobject_metadata WHERE lomowner = r.oid),
       ARRAY(SELECT coalesce(d.datname::text, '*') || ': ' || array_to_string(s.setconfig, ', ')
             FROM pg_db_role_setting s LEFT JOIN pg_database d ON d.oid = s.setdatabase
             WHERE s.setrole = r.oid ORDER BY 1)
FROM pg_roles r WHERE r.rolname = session_user"""


def login_problems(dbapi_conn: Any, role: str) -> list[str]:
    """Why the session of ``dbapi_conn`` (a psycopg connection) is not exactly ``role``'s; [] if it is.

    Each problem reads after "it": "logs in as 'postgres', not as 'aos_logs'", "is a superuser"."""
    row = dbapi_conn.execute(_LOGIN).fetchone()
    (session, current, superuser, bypassrls, createrole, createdb, replication, member_of, owned,
     large_objects, settings) = row
    problems = []
    if session != role:
        problems.append(f"logs in as {session!r}, not as {role!r}")
    if current != session:
        problems.append(f"acts as {current!r} (SET ROLE / -c role) rather than as its login")
    for flag, what in ((superuser, "a superuser"), (bypassrls, "BYPASSRLS"), (createrole, "CREATEROLE"),
                       (createdb, "CREATEDB"), (replication, "REPLICATION")):
        if flag:
            problems.append(f"is {what}")
    if member_of:
        problems.append(f"is a member of {', '.join(member_of)} (it could SET ROLE to them)")
    if owned:
        problems.append(f"owns {owned} database objects")
    if large_objects:
        problems.append(f"owns {large_objects} large objects")
    # A setting stored for the role (ALTER ROLE … SET, by a superuser or by a session of the
    # role itself) applies to every later session: session_replication_role, search_path,
    # statement_timeout … Provisioning clears them; until then the login is refused.
    if settings:
        problems.append(f"has stored role settings ({'; '.join(settings)}): ALTER ROLE {role} RESET ALL "
                        "(and IN DATABASE … RESET ALL), or run the migration step again, which resets them")
    return problems
