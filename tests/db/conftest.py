"""Each database-test module gets a freshly migrated database of its own: these tests
write rows (system-wide ones included) that must not leak into other modules' counts."""
import pytest


@pytest.fixture(scope="module")
def database_url(databases) -> str:
    return databases.create()
