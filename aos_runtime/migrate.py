"""Schema migrations (Alembic) and the services' login roles, as the admin (owner) DSN:
DATABASE_URL, or the embedded Postgres's superuser.

    python -m aos_runtime.migrate            # upgrade to head, then provision the login roles
    python -m aos_runtime.migrate upgrade [REV]
    python -m aos_runtime.migrate provision  # the login roles only (aos_runtime.provision)
    python -m aos_runtime.migrate downgrade base

This is the one step that holds the admin credentials; services run it as a separate
process (AOS_MIGRATE_ON_START) and never load them themselves. ``--keep-running``: an
embedded Postgres this step started is left running for the process that asked for it.
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
    from aos_runtime.provision import provision_from_settings

    keep_running = "--keep-running" in argv
    argv = [a for a in argv if a != "--keep-running"]
    settings = Settings.from_env()
    action = argv[0] if argv else "upgrade"
    if action not in ("upgrade", "downgrade", "provision"):
        print(f"unknown action {action!r}: use upgrade [REV], provision or downgrade [REV]", file=sys.stderr)
        return 2
    with database_url_for(settings, keep_running=keep_running) as url:
        if action == "upgrade":
            upgrade(url, argv[1] if len(argv) > 1 else "head")
            provision_from_settings(settings, url, only_configured=True)
        elif action == "provision":
            provision_from_settings(settings, url, only_configured=True)
        else:
            downgrade(url, argv[1] if len(argv) > 1 else "base")
    return 0


if __name__ == "__main__":
    from aos_runtime.config import ConfigError

    try:
        sys.exit(main(sys.argv[1:]))
    except ConfigError as exc:  # provisioning refused, a bad variable: one clear line, exit 2
        print(f"migrate: {exc}", file=sys.stderr)
        sys.exit(2)
