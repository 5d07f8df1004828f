"""Development secrets under AOS_DATA_DIR, created on first use and never committed.

They live in ``AOS_DATA_DIR/secrets/`` (mode 0700), each file 0600 and owned by the
user running the suite. The data directory itself stays traversable: the embedded
Postgres, running as another OS user, keeps its data in ``AOS_DATA_DIR/pgdata``.

A secret is written under a temporary name, synced, then hard-linked into place: two
processes starting at once agree on one secret (the second link fails, it reads the
first's) and nobody ever reads a half-written file. Secrets an older version wrote
directly under AOS_DATA_DIR are moved into ``secrets/`` on first use, so an existing
``.aos/`` keeps its tokens and signatures valid.

A secret file readable or writable by group or others, or owned by another user, is
refused (``SecretFileError``): it may have been read, or replaced, by someone else.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from aos_runtime.config import ConfigError

SECRETS_DIR = "secrets"


class SecretFileError(ConfigError):
    """A secret or key file (or its directory) others could read, write or own."""


def check_private(path: Path, what: str | None = None, *, directory: bool = False) -> None:
    """Refuse ``path`` unless the running user owns it and nobody else has any access.

    ``what`` names where the path came from (e.g. a configuration variable) in the error.
    """
    label = f"{what} ({path})" if what else str(path)
    try:
        st = Path(path).stat()
    except OSError as exc:
        raise SecretFileError(f"{label}: {exc.strerror or exc}") from None
    if st.st_uid != os.geteuid():
        raise SecretFileError(f"{label} is owned by uid {st.st_uid}, not by the user running this "
                              f"process (uid {os.geteuid()}): refusing a secret someone else controls")
    loose = stat.S_IMODE(st.st_mode) & 0o077
    if loose:
        wanted = "700" if directory else "600"
        raise SecretFileError(f"{label} has mode {stat.S_IMODE(st.st_mode):04o}: group or others may "
                              f"access it; `chmod {wanted} {path}` (and replace the secret if it may have leaked)")


def secrets_dir(data_dir: Path) -> Path:
    """``data_dir/secrets``, created 0700 (and checked) on first use."""
    directory = Path(data_dir) / SECRETS_DIR
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        directory.mkdir(mode=0o700)
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
    except FileExistsError:
        pass
    check_private(directory, directory=True)
    return directory


def dev_secret_file(data_dir: Path, name: str, generate: Callable[[], bytes]) -> Path:
    """The path of the development secret ``name`` (e.g. ``export-signing-key.pem``),
    created once with ``generate()``'s bytes, or moved from its pre-``secrets/`` location."""
    path = secrets_dir(data_dir) / name
    if not path.exists():
        _adopt_legacy(Path(data_dir) / name, path)
    if not path.exists():
        _create_once(path, generate())
    check_private(path)
    return path


def dev_secret(data_dir: Path, name: str) -> str:
    """The secret ``name`` under ``data_dir`` (e.g. ``jwt-secret``), created once."""
    return dev_secret_file(data_dir, name, lambda: secrets.token_urlsafe(48).encode()).read_text().strip()


def read_dev_secret(data_dir: Path, name: str) -> str | None:
    """The secret ``name`` if a suite already created it (moved from its legacy place
    if need be), else None; never creates one (the CLI uses it to find make run's)."""
    legacy = Path(data_dir) / name
    path = Path(data_dir) / SECRETS_DIR / name
    if not path.exists() and not legacy.exists():
        return None
    path = secrets_dir(data_dir) / name
    if not path.exists():
        _adopt_legacy(legacy, path)
    if not path.exists():
        return None
    check_private(path)
    return path.read_text().strip()


def _adopt_legacy(legacy: Path, path: Path) -> None:
    """Move a secret from ``AOS_DATA_DIR/<name>`` (where older versions wrote it) to ``path``.

    Linked, then unlinked: if two processes race, both end up reading the one file, and
    one that comes later finds ``path`` already there.
    """
    if not legacy.is_file():
        return
    check_private(legacy)  # one others could read is no secret any more: refused, not moved
    with contextlib.suppress(FileExistsError):
        os.link(legacy, path)
    with contextlib.suppress(FileNotFoundError):
        legacy.unlink()
    _sync_dir(path.parent)


def _create_once(path: Path, content: bytes) -> None:
    """Create ``path`` holding ``content`` (mode 0600) unless it exists: first writer wins."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            return
    finally:
        os.unlink(temp)
    # Losing a signing key in a crash would orphan every envelope it signed.
    _sync_dir(path.parent)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
