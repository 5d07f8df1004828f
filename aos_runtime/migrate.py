"""Schema migrations (Alembic) against DATABASE_URL or the embedded Postgres.

    python -m aos_runtime.migrate            # upgrade to head
    python -m aos_runtime.migrate downgrade base
"""
from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

from aos_runtime.db import sync_url

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' is interpolation syntax in alembic's ini handling; passwords may hold one.
    config.set_main_option("sqlalchemy.url", sync_url(database_url).replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def main(argv: list[str]) -> int:
    from aos_runtime.config import Settings
    from aos_runtime.embedded import database_url_for

    settings = Settings.from_env()
    action = argv[0] if argv else "upgrade"
    with database_url_for(settings) as url:
        if action == "upgrade":
            upgrade(url, argv[1] if len(argv) > 1 else "head")
        elif action == "downgrade":
            downgrade(url, argv[1] if len(argv) > 1 else "base")
        else:
            print(f"unknown action {action!r}: use upgrade [REV] or downgrade [REV]", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
