"""Copying a whole pushgate database to another one (SQLite → PostgreSQL when scaling out).

Both databases are migrated to the same Alembic head first, so the tables match column for
column; rows are copied table by table in primary-key order, in chunks, inside one target
transaction (a failed copy leaves the target empty). Queued messages, leases and outbox rows come
along unchanged, so delivery resumes where it stopped. The gateway must be stopped while this
runs: rows written to the source meanwhile would not be copied.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import MetaData, create_engine, func, select, text
from sqlalchemy.engine import Connection, Engine

from pushgate.store.migrate import sqlalchemy_url, upgrade

CHUNK = 5_000
# Parents before children is not required (no foreign keys), but a stable order makes the
# progress readable.
SKIP_TABLES = {"alembic_version"}

Progress = Callable[[str, int, int], None]   # (table, rows copied so far, rows in table)


class TransferError(Exception):
    pass


def _engine(url: str) -> Engine:
    return create_engine(sqlalchemy_url(url))


def copy_database(source_url: str, target_url: str, progress: Progress | None = None) -> dict[
        str, int]:
    """Copy every row of ``source_url`` into the empty database at ``target_url``; returns the
    row count per table. Raises ``TransferError`` if the target already holds data."""
    upgrade(source_url)
    upgrade(target_url)
    source, target = _engine(source_url), _engine(target_url)
    try:
        metadata = MetaData()
        metadata.reflect(bind=source)
        tables = [t for name, t in sorted(metadata.tables.items()) if name not in SKIP_TABLES]
        target_meta = MetaData()
        target_meta.reflect(bind=target)
        copied: dict[str, int] = {}
        with source.connect() as src, target.begin() as dst:
            for table in tables:
                target_table = target_meta.tables[table.name]
                if dst.execute(select(func.count()).select_from(target_table)).scalar():
                    raise TransferError(
                        f"the target's {table.name} table is not empty; copy into a freshly "
                        "migrated database")
            for table in tables:
                target_table = target_meta.tables[table.name]
                total = src.execute(select(func.count()).select_from(table)).scalar() or 0
                done = 0
                order = list(table.primary_key.columns) or list(table.columns)
                result = src.execution_options(stream_results=True).execute(
                    select(table).order_by(*order))
                while rows := result.fetchmany(CHUNK):
                    dst.execute(target_table.insert(), [dict(row._mapping) for row in rows])
                    done += len(rows)
                    if progress:
                        progress(table.name, done, total)
                if progress and total == 0:
                    progress(table.name, 0, 0)
                copied[table.name] = done
            if target.dialect.name == "postgresql":
                _reset_sequences(dst, [t.name for t in tables if "id" in t.columns])
        return copied
    finally:
        source.dispose()
        target.dispose()


def _reset_sequences(conn: Connection, tables: list[str]) -> None:
    """Copied ids were given explicitly; move each id sequence past them."""
    for name in tables:
        sequence = conn.execute(
            text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": name}).scalar()
        if sequence:
            conn.execute(text(
                f"SELECT setval('{sequence}', coalesce((SELECT max(id) FROM \"{name}\"), 0) + 1,"
                " false)"))
