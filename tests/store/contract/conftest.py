"""The store contract: every test in this folder runs on SQLite and on PostgreSQL.

The ``db_url`` fixture (tests/conftest.py) gives each test both backends; without
``PUSHGATE_TEST_PG_DSN`` the PostgreSQL half is reported skipped with the reason, and under
``CI=true`` it fails instead. A test pinned to one backend, or one that uses no database, does
not belong here: what one store alone has to prove lives beside this folder
(``test_sqlite_*.py``, ``test_postgres_specific.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

CONTRACT = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if CONTRACT not in Path(item.path).parents:
            continue
        pinned = item.get_closest_marker("sqlite_only") or item.get_closest_marker("postgres_only")
        if pinned or "db_url" not in getattr(item, "fixturenames", ()):
            raise pytest.UsageError(
                f"{item.nodeid}: a contract test runs on every store (no backend marker, uses"
                " db_url through store/make/query)")
