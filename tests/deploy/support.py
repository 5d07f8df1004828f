"""What the compose tests share (tests/deploy/test_compose.py, test_compose_up.py)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
# The variables compose requires (no defaults: secrets and per-service database passwords).
REQUIRED = ("POSTGRES_PASSWORD", "AOS_OVERVIEW_DB_PASSWORD", "AOS_LOGS_DB_PASSWORD", "AOS_EXPORT_DB_PASSWORD",
            "AOS_INGEST_DB_PASSWORD", "AOS_PRODUCER_DB_PASSWORD", "AOS_AUTH_JWT_SECRET", "AOS_PAGE_TOKEN_SECRET")


def docker_daemon() -> bool:
    return bool(shutil.which("docker")) and subprocess.run(["docker", "info"], capture_output=True,
                                                           timeout=30).returncode == 0
