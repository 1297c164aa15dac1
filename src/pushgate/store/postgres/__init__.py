"""The PostgreSQL store: many API nodes and workers on one database.

asyncpg with a connection pool per process. Every write is one transaction on one pooled
connection; concurrent commits share WAL flushes in the server (its own group commit), so no
writer thread is needed as with SQLite. The behaviour is that of ``store/sqlite/`` (the reference);
where SQLite's single writer serialises everything for free, this store locks what it changes:

- accept: the messages go in with one ``INSERT … SELECT FROM unnest(arrays)``, their ids drawn in
  bulk from the table's sequence (so the answer lists them in request order without reading
  them back); the debit is a conditional ``UPDATE … WHERE balance_micro >= total`` in the same
  transaction, taken last so the project row stays locked only until the commit. Concurrent
  pushes on any number of API nodes can never overdraw a balance.
- claims (messages and outbox) take batches with ``FOR UPDATE SKIP LOCKED``: workers never wait
  on each other's rows and never claim the same one.
- outcomes, status updates and events are applied with ``UPDATE … FROM unnest(arrays)`` and
  ``INSERT … SELECT FROM unnest(arrays)``; rows are locked in id order first, so concurrent
  transactions cannot deadlock on them (and are retried if the server reports one anyway).
- channel leases are ``INSERT … ON CONFLICT``: a free or expired lease is taken, one's own
  renewed, anyone else's left alone.
- a push does ``pg_notify('pushgate_messages', channel_id)`` in its transaction; ``listen``
  keeps a dedicated LISTEN connection so idle dispatchers in every process wake at the commit.

Pool size: ``?pool_min_size=2&pool_max_size=10`` in the URL (the defaults), stripped before the
URL reaches asyncpg.
"""

from __future__ import annotations

from pushgate.store.base import Store
from pushgate.store.postgres.accept import PostgresAccept
from pushgate.store.postgres.admin import PostgresAdmin
from pushgate.store.postgres.checks import PostgresChecks
from pushgate.store.postgres.devices import PostgresDevices
from pushgate.store.postgres.inbound import PostgresInbound
from pushgate.store.postgres.optouts import PostgresOptouts
from pushgate.store.postgres.outbox import PostgresOutbox
from pushgate.store.postgres.outcomes import PostgresOutcomes
from pushgate.store.postgres.queue import PostgresQueue
from pushgate.store.postgres.reports import PostgresReports
from pushgate.store.postgres.status import PostgresStatus


class PostgresStore(
    PostgresAdmin,
    PostgresAccept,
    PostgresOptouts,
    PostgresReports,
    PostgresQueue,
    PostgresOutcomes,
    PostgresStatus,
    PostgresOutbox,
    PostgresInbound,
    PostgresDevices,
    PostgresChecks,
    Store,
):
    """Many API nodes and workers on one PostgreSQL database: every area of the `Store`
    interface."""


__all__ = ["PostgresStore"]
