"""Development secrets under AOS_DATA_DIR, created on first use and never committed."""
from __future__ import annotations

import os
import secrets
from pathlib import Path


def dev_secret(data_dir: Path, name: str) -> str:
    """The secret ``name`` under ``data_dir`` (e.g. ``jwt-secret``), created once."""
    path = Path(data_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Written aside, then linked into place: two processes starting at once
        # agree on one secret and neither reads a half-written file.
        tmp = path.with_name(f".{name}.{os.getpid()}")
        tmp.write_text(secrets.token_urlsafe(48))
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()
