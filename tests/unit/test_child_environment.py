"""The environment `python -m services` gives its children (services/__main__.py)."""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from services.__main__ import MALLOC_DEFAULTS, _child_environment

ROOT = Path(__file__).resolve().parents[2]


def test_children_get_the_allocator_settings_unless_the_environment_sets_them(monkeypatch):
    """glibc's allocator returns what an export freed (issue #19: bench/export_memory.py): the
    children get MALLOC_DEFAULTS; a value the operator set wins; no credential passes."""
    for name in MALLOC_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://someone:secret@db/aos")
    env = _child_environment(SimpleNamespace(read_database_url=None))  # type: ignore[arg-type]
    assert {k: env[k] for k in MALLOC_DEFAULTS} == MALLOC_DEFAULTS
    assert "DATABASE_URL" not in env and env["AOS_MIGRATE_ON_START"] == "false"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert _child_environment(SimpleNamespace(read_database_url=None))["MALLOC_ARENA_MAX"] == "8"  # type: ignore[arg-type]


def test_the_image_sets_the_same_allocator_settings():
    runtime = (ROOT / "Dockerfile").read_text().rsplit("FROM ", 1)[-1]
    for name, value in MALLOC_DEFAULTS.items():
        assert re.search(rf"^\s*{name}={value}\b", runtime, re.M), f"the runtime image does not set {name}={value}"
