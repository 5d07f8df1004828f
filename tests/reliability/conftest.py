"""The reliability tests run against the end-to-end suite: its in-process servers and demo data."""
from tests.e2e.conftest import demo, suite  # noqa: F401 - fixtures, re-exported for this directory
