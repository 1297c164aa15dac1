"""Alembic environment: one migration history for SQLite and PostgreSQL.

The URL comes from the Alembic config (set by ``pushgate.store.migrate``), never from a file.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

_configured_url = context.config.get_main_option("sqlalchemy.url")
if _configured_url is None:
    raise RuntimeError("no sqlalchemy.url in the Alembic config: run `pushgate migrate`")
url: str = _configured_url

# Serialises `pushgate migrate` run from several nodes at once on PostgreSQL: the lock is taken
# inside the migration transaction, before Alembic reads the current revision, and released by
# its commit, so a second node waits, then finds the schema at head and does nothing.
MIGRATE_LOCK_KEY = 0x70757368676174  # "pushgat"


def run_migrations_offline() -> None:
    context.configure(url=url, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, render_as_batch=url.startswith("sqlite"))
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                   {"key": MIGRATE_LOCK_KEY})
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
