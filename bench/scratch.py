"""What every benchmark sets up: a scratch directory, a database, its logins, free ports.

Benchmarks run as scripts (``python bench/<name>.py``), so they import this module
by its plain name.

Database credentials, as in the suite (SPEC §6): the admin URL (DATABASE_URL, or the
scratch embedded Postgres's superuser) migrates, bulk-loads (COPY as the owner) and
does owner work (VACUUM, retention); every Producer, Database, in-process server and
service process logs in as its own role, with the DSN ``service_logins`` provisions. They
refuse the admin URL (UnsafeDatabaseLogin / UnsafeProducerLogin).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from aos_runtime import migrate
from aos_runtime.config import Settings
from aos_runtime.embedded import EmbeddedPostgres
from aos_runtime.provision import LOGINS, provision_from_settings


@contextlib.contextmanager
def scratch_database(prefix: str = "aos-bench-", revision: str = "head",
                     keep: Path | None = None) -> Iterator[tuple[str, Path]]:
    """(admin database URL migrated to ``revision``, scratch directory): DATABASE_URL when set,
    else an embedded Postgres (non-durable) in the scratch directory; both gone afterwards.

    With ``keep``, the directory is that one and stays (the embedded Postgres stopped, its data
    kept): a later run with the same ``keep`` starts on what the earlier one loaded."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    work = keep.resolve() if keep is not None else Path(tempfile.mkdtemp(prefix=prefix))
    server, url = None, os.environ.get("DATABASE_URL")
    if not url:
        server = EmbeddedPostgres(work / "pg", durable=False)
        server.start()
        url = server.url
    try:
        migrate.upgrade(url, revision)
        yield url, work
    finally:
        if server:
            server.stop()
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def service_logins(admin_url: str, data_dir: Path) -> dict[str, str]:
    """{overview, logs, export, producer: that login's DSN} on ``admin_url``'s database, made able
    to log in as the migration step does (aos_runtime.provision, run here as the admin).

    Passwords: AOS_<LOGIN>_DATABASE_URL when configured for this DATABASE_URL (an operator's
    own logins are only checked), else generated once under ``data_dir``. Pass the
    AOS_DATA_DIR of any suite (``python -m services``) the benchmark starts with the same
    admin URL: it provisions from the same files, so both agree on every password."""
    external = bool(os.environ.get("DATABASE_URL")) and os.environ["DATABASE_URL"] == admin_url
    # A scratch embedded database is nobody's deployment: logins configured for another
    # database must not be pointed at it.
    settings = Settings.from_env(os.environ if external else {})
    settings = dataclasses.replace(settings, database_url=admin_url, data_dir=Path(data_dir))
    return provision_from_settings(settings, admin_url)


# Every variable that carries a database credential: a service process gets none but its own.
_CREDENTIALS = {"DATABASE_URL", "AOS_READ_DATABASE_URL", "PGPASSWORD", "PGPASSFILE",
                *(f"AOS_{login.upper()}_DATABASE_URL" for login in LOGINS)}


def service_env(dsns: Mapping[str, str], service: str, **variables: str) -> dict[str, str]:
    """The environment of ``python -m services.<service>`` started by a benchmark: this one's
    without any AOS_ variable or database credential, plus the service's own login DSN
    (AOS_<SERVICE>_DATABASE_URL), no migration at start (the benchmark migrated), and
    AOS_DEV_KEYS (a DSN given makes the service treat its deployment as real: keys not given
    are generated under AOS_DATA_DIR only when asked), then ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AOS_") and k not in _CREDENTIALS}
    env.update({f"AOS_{service.upper()}_DATABASE_URL": dsns[service], "AOS_MIGRATE_ON_START": "false",
                "AOS_DEV_KEYS": "true"})
    env.update(variables)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
