"""The embedded cluster's files against another OS user (issue #17 review, part 4).

Under a permissive umask AOS_DATA_DIR was made 0777: another user could rename secrets/
away or plant symbolic links where we (as root) then touched, chmod-ed and chown-ed
postgres.log, or wrote the superuser's password (.initdb-password, O_TRUNC through the link).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from aos_runtime.embedded import EmbeddedPostgres, UnsafeDataDir

pytestmark = pytest.mark.db


@contextlib.contextmanager
def umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def server_dir():
    """Not under pytest's basetemp (0700, re-closed by any other pytest session starting as
    root): the server's OS user must traverse every parent, as tests/conftest.py does."""
    work = Path(tempfile.mkdtemp(prefix="aos-test-files-"))
    yield work
    shutil.rmtree(work, ignore_errors=True)


def test_the_data_dir_is_made_without_group_or_other_write_under_umask_0(tmp_path):
    with umask(0):
        pg = EmbeddedPostgres(tmp_path / "aos", durable=False)
    assert mode(pg.data_dir) == 0o755
    assert mode(pg.data_dir / "secrets") == 0o700


def test_a_data_dir_others_can_write_is_closed_when_ours(tmp_path):
    data_dir = tmp_path / "aos"
    data_dir.mkdir()
    data_dir.chmod(0o777)
    EmbeddedPostgres(data_dir, durable=False)
    assert mode(data_dir) == 0o755


def test_a_data_dir_of_another_user_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to give the directory to another user")
    data_dir = tmp_path / "aos"
    data_dir.mkdir(mode=0o755)
    os.chown(data_dir, 65534, 65534)  # nobody
    with pytest.raises(UnsafeDataDir, match="belongs to uid 65534"):
        EmbeddedPostgres(data_dir, durable=False)


@pytest.mark.parametrize("name", ["postgres.log", "postgres.lock", "postgres.port"])
def test_a_symlink_planted_in_the_data_dir_is_refused_and_not_followed(server_dir, name):
    """The victim is a file the attacker wants chmod-ed, chown-ed, truncated or written."""
    tmp_path = server_dir  # with the port file planted, initdb runs first: not under pytest's basetemp
    pg = EmbeddedPostgres(tmp_path / "aos", durable=False)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    victim.chmod(0o644)
    before = os.stat(victim)
    (pg.data_dir / name).symlink_to(victim)
    with pytest.raises(UnsafeDataDir, match="symbolic link"):
        pg.start()
    after = os.stat(victim)
    assert victim.read_text() == "keep"
    assert (after.st_mode, after.st_uid, after.st_gid) == (before.st_mode, before.st_uid, before.st_gid)
    assert pg._running_port() is None


def test_the_initdb_password_never_lands_where_a_planted_link_points(server_dir):
    """Under umask 0, a symlink at the old password file's path: the server starts, the
    victim holds no password, and what is left in the data directory is not open to others."""
    tmp_path = server_dir
    data_dir = tmp_path / "aos"
    with umask(0):
        pg = EmbeddedPostgres(data_dir, durable=False)
        victim = tmp_path / "victim"
        victim.write_text("")
        (data_dir / ".initdb-password").symlink_to(victim)
        pg.start()
    try:
        assert pg.password not in victim.read_text()
        assert mode(data_dir) == 0o755
        assert mode(pg.logfile) == 0o600 and mode(pg.pgdata) == 0o700
        assert not [p for p in data_dir.iterdir() if p.name.startswith(".initdb-") and p.is_dir()]
        writable = [p for p in data_dir.iterdir() if not p.is_symlink() and mode(p) & 0o022]
        assert not writable, writable
    finally:
        pg.stop()
