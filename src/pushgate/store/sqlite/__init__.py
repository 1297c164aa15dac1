"""The embedded store: one SQLite file in WAL mode, durable with ``synchronous=FULL``.

SQLite has one writer at a time, and a commit costs an fsync. So every write runs as a job on
one writer thread, which takes all jobs waiting at that moment into one transaction (each in a
savepoint of its own, so one job's error does not undo the others), commits once, and only then
resolves each job's future. Under load this is group commit: many small pushes share an fsync;
when idle a job commits alone with no added wait. Reads use a separate connection on the
caller's thread; WAL lets them run beside the writer. Several processes may share the file
(API processes on one port, a worker): their writers take turns on a lock file beside it.

The SQL is written against the DB-API directly rather than through SQLAlchemy Core: the accept
and claim paths move hundreds of thousands of rows a second, and ``bench/store_driver.py``
measures SQLAlchemy's per-statement overhead there (see docs/benchmarks.md). The schema itself
is owned by the Alembic migrations.
"""

from __future__ import annotations

from pushgate.store.base import Store
from pushgate.store.sqlite.accept import SQLiteAccept
from pushgate.store.sqlite.admin import SQLiteAdmin
from pushgate.store.sqlite.checks import SQLiteChecks
from pushgate.store.sqlite.devices import SQLiteDevices
from pushgate.store.sqlite.inbound import SQLiteInbound
from pushgate.store.sqlite.optouts import SQLiteOptouts
from pushgate.store.sqlite.outbox import SQLiteOutbox
from pushgate.store.sqlite.outcomes import SQLiteOutcomes
from pushgate.store.sqlite.queue import SQLiteQueue
from pushgate.store.sqlite.reports import SQLiteReports
from pushgate.store.sqlite.status import SQLiteStatus


class SQLiteStore(
    SQLiteAdmin,
    SQLiteAccept,
    SQLiteOptouts,
    SQLiteReports,
    SQLiteQueue,
    SQLiteOutcomes,
    SQLiteStatus,
    SQLiteOutbox,
    SQLiteInbound,
    SQLiteDevices,
    SQLiteChecks,
    Store,
):
    """The embedded store: every area of the `Store` interface over one SQLite file."""


__all__ = ["SQLiteStore"]
