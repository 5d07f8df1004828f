"""tools/offline-images/postgres-entrypoint.sh (the entrypoint of aos-postgres:local), run without
Docker against this machine's PostgreSQL binaries: it must give docker-compose.yml what the official
postgres image gives it: the POSTGRES_USER login with POSTGRES_PASSWORD, POSTGRES_DB, no trust (not
even on the socket, POSTGRES_INITDB_ARGS), and a refusal without a password. Skipped where no
PostgreSQL 15 server binaries are installed (Debian: postgresql-15)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "tools" / "offline-images" / "postgres-entrypoint.sh"
PG_BIN = Path("/usr/lib/postgresql/15/bin")

pytestmark = pytest.mark.skipif(not (PG_BIN / "initdb").is_file(),
                                reason=f"no PostgreSQL 15 server binaries in {PG_BIN} (Debian: postgresql-15)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def workdir():
    # initdb refuses root: as root, run the entrypoint as nobody, in a directory nobody may write.
    path = Path(tempfile.mkdtemp(prefix="aos-pg-entrypoint-"))
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _start(workdir: Path, env: dict[str, str], port: int) -> subprocess.Popen:
    argv = [str(ENTRYPOINT), "-p", str(port), "-k", str(workdir), "-c", "listen_addresses=127.0.0.1"]
    if os.geteuid() == 0:
        argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]
    full = {"PATH": f"{PG_BIN}:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
            "PGDATA": str(workdir / "data"), **env}
    return subprocess.Popen(argv, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_entrypoint_initialises_like_the_official_image(workdir):
    port = _free_port()
    password = "pw-" + os.urandom(12).hex()
    server = _start(workdir, {"POSTGRES_USER": "aos", "POSTGRES_PASSWORD": password, "POSTGRES_DB": "aos",
                              "POSTGRES_INITDB_ARGS": "--auth-local=scram-sha-256 --auth-host=scram-sha-256"},
                    port)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = psycopg.connect(host="127.0.0.1", port=port, user="aos", password=password, dbname="aos",
                                       connect_timeout=3)
                break
            except psycopg.OperationalError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                assert time.monotonic() < deadline, "the entrypoint's postgres never accepted the login"
                time.sleep(0.5)
        with conn:
            assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'aos'").fetchone() == (True,)
            methods = {row[0] for row in conn.execute("SELECT auth_method FROM pg_hba_file_rules")}
            assert methods == {"scram-sha-256"}, methods  # no trust anywhere, the socket included
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(host="127.0.0.1", port=port, user="aos", password="wrong", dbname="aos",
                            connect_timeout=3).close()
        with pytest.raises(psycopg.OperationalError):  # the unix socket asks for the password too
            psycopg.connect(host=str(workdir), port=port, user="aos", dbname="aos", connect_timeout=3).close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_entrypoint_refuses_to_initialise_without_a_password(workdir):
    server = _start(workdir, {"POSTGRES_USER": "aos", "POSTGRES_DB": "aos"}, _free_port())
    output, _ = server.communicate(timeout=30)
    assert server.returncode != 0 and "POSTGRES_PASSWORD is required" in output, output
    assert not (workdir / "data" / "PG_VERSION").exists()
