"""The dispatcher and the webhook deliverer ride out a database outage in-process.

A wrapper store fails every call for a while the way a store fails when its database is away
(PostgreSQL: ``StoreUnavailable`` from a lost connection; SQLite: ``database is locked`` as the
driver raises it, a disk I/O error, a commit failed for a full disk). The loops must keep going
and deliver everything afterwards, send no message twice (outcomes known during the outage are
kept and written later), POST no report twice, and log one line when the outage starts and one
when it ends, with no traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tests.dispatch.test_dispatcher import queue, wait_for
from tests.fakes.server import serve_app

from pushgate.core.policy import RetryPolicy
from pushgate.dispatch.worker import Dispatcher
from pushgate.store.base import Store
from pushgate.store.errors import StoreUnavailable
from pushgate.store.outage import outage_of
from pushgate.webhooks.deliverer import DeliveryWake, WebhookDeliverer

OUTAGE_LINE = "database unavailable"
RECOVERY_LINE = "database available again"


def database_is_locked() -> sqlite3.OperationalError:
    """A real ``database is locked`` from the driver (a write while another connection holds
    the write lock, with no busy wait), as a SQLite read or write can raise it."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "locked.db")
        holder = sqlite3.connect(path, isolation_level=None)
        other = sqlite3.connect(path, isolation_level=None, timeout=0)
        try:
            holder.execute("CREATE TABLE t (x)")
            holder.execute("BEGIN IMMEDIATE")
            try:
                other.execute("INSERT INTO t VALUES (1)")
            except sqlite3.OperationalError as exc:
                return exc
            raise AssertionError("the second connection was not locked out")
        finally:
            other.close()
            holder.close()


def disk_io_error() -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError("disk I/O error")
    exc.sqlite_errorcode = 10      # SQLITE_IOERR, as the driver sets it
    exc.sqlite_errorname = "SQLITE_IOERR"
    return exc


ERRORS: dict[str, Callable[[], Exception]] = {
    "connection lost": lambda: StoreUnavailable(
        "PostgreSQL: connection was closed in the middle of operation"),
    "database is locked": database_is_locked,
    "disk I/O error": disk_io_error,
    "disk full": lambda: StoreUnavailable("commit failed: database or disk is full"),
}


class FlakyStore:
    """``inner`` with a switch: while ``down``, every call fails with ``error()`` before it
    reaches the database. ``go_down_after`` takes the database away for ``seconds`` right
    after the ``nth`` successful call of that name."""

    def __init__(self, inner: Store, error: Callable[[], Exception]) -> None:
        self.inner = inner
        self.error = error
        self.down_until = 0.0
        self.failed_calls: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self._trigger: tuple[str, int, float] | None = None
        self.went_down = False

    def go_down_after(self, name: str, seconds: float, nth: int = 1) -> None:
        self._trigger = (name, nth, seconds)

    @property
    def down(self) -> bool:
        return time.monotonic() < self.down_until

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                self.failed_calls[name] = self.failed_calls.get(name, 0) + 1
                raise self.error()
            result = await attr(*args, **kwargs)
            self.calls[name] = self.calls.get(name, 0) + 1
            if (self._trigger is not None and self._trigger[0] == name
                    and self.calls[name] == self._trigger[1]):
                self.down_until = time.monotonic() + self._trigger[2]
                self._trigger = None
                self.went_down = True
            return result

        return call


class Receiver:
    """A webhook receiver counting every report it took, by (msg_id, status)."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, int]] = []
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.reports.extend((item["msg_id"], item["status"]) for item in body["data"])
        return Response(b"{}", media_type="application/json")


@pytest.fixture
def receiver_url() -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()
    with serve_app(receiver.app) as url:
        yield receiver, f"{url}/hook"


def outage_lines(caplog: pytest.LogCaptureFixture) -> tuple[int, int]:
    messages = [r.getMessage() for r in caplog.records]
    return (sum(OUTAGE_LINE in m for m in messages), sum(RECOVERY_LINE in m for m in messages))


@contextlib.asynccontextmanager
async def running(dispatcher: Dispatcher, deliverer: WebhookDeliverer) -> Any:
    tasks = [asyncio.create_task(dispatcher.run()), asyncio.create_task(deliverer.run())]
    try:
        yield tasks
    finally:
        dispatcher.stop()
        deliverer.stop()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)


async def ride_out(store: Store, make: Any, query: Any, receiver: Receiver, url: str,
                   error: str, caplog: pytest.LogCaptureFixture, count: int, outage: float,
                   after: tuple[str, int], **channel: Any) -> None:
    """Queue ``count`` messages, run a dispatcher and a deliverer on a store that goes away
    for ``outage`` seconds right after the ``after`` = (name, nth) successful call, and check that
    outcomes could not be written meanwhile, and that everything is then delivered and
    reported once, with one outage and one recovery logged."""
    caplog.set_level(logging.INFO, logger="pushgate")
    project, _token, _secret = await make.project(webhook_url=url)
    spec = await make.channel(project.id, **channel)
    ids = await queue(store, spec, count)
    flaky = FlakyStore(store, ERRORS[error])
    flaky.go_down_after(after[0], outage, after[1])
    dispatcher = Dispatcher(flaky, worker_id="w-outage", claim_batch=200,  # type: ignore[arg-type]
                            idle_poll=0.02, retry_policy=RetryPolicy(base_seconds=0.01))
    wake = dispatcher.webhook_wake = DeliveryWake()
    deliverer = WebhookDeliverer(flaky, "w-outage", timeout=5,  # type: ignore[arg-type]
                                 schedule=[0.0], idle_poll=0.02, wake=wake,
                                 allow_private=True)  # the receiver is on 127.0.0.1

    async def all_delivered() -> bool:
        return query("SELECT state, count(*) FROM messages GROUP BY state") == [
            ("delivered", count)]

    async def all_reported() -> bool:
        return len({r for r in receiver.reports if r[1] == 1}) == count

    async with running(dispatcher, deliverer) as tasks:
        await wait_for(all_delivered, f"all {count} delivered")
        await wait_for(all_reported, f"all {count} delivery reports")
        # Both loops are still running: the outage ended nothing.
        assert not any(task.done() for task in tasks), [t for t in tasks if t.done()]
    # The outage caught sends whose outcomes could not be written.
    assert flaky.went_down and flaky.failed_calls.get("record_outcomes"), flaky.failed_calls

    # Each message sent once: no re-send, one attempt, one submission recorded.
    assert query("SELECT count(*), sum(resends), sum(attempts), count(submitted_at)"
                 " FROM messages WHERE id BETWEEN ? AND ?", min(ids), max(ids)) == [
        (count, 0, count, count)]
    # Each report POSTed once.
    assert len(receiver.reports) == len(set(receiver.reports)), "a report was POSTed twice"
    assert outage_lines(caplog) == (1, 1), [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if r.exc_info], "a traceback for an outage"
    assert not outage_of(flaky).down


async def test_a_paced_channel_rides_out_an_outage_mid_batch(
    store: Store, db_url: str, make: Any, query: Any, receiver_url: tuple[Receiver, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The outage starts while a paced batch goes out (the first batch goes at once on the
    full token bucket, the second one paced over a second, its finished sends written in the
    background — the database goes away after the first such write): the batch's sends go
    on, their outcomes are kept and written once the database is back; nothing is sent
    again."""
    receiver, url = receiver_url
    kind = "database is locked" if db_url.startswith("sqlite") else "connection lost"
    await ride_out(store, make, query, receiver, url, kind, caplog, count=300, outage=1.5,
                   after=("record_outcomes", 2), rate_per_second=100, config={"delivery_delay": 0})


@pytest.mark.sqlite_only
@pytest.mark.parametrize("error", ["disk I/O error", "disk full", "database is locked"])
async def test_an_unpaced_channel_rides_out_sqlite_errors(
    store: Store, make: Any, query: Any, receiver_url: tuple[Receiver, str], error: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unpaced channel's batch is sent, then its outcomes cannot be written: they are
    kept and written before the next claim."""
    receiver, url = receiver_url
    await ride_out(store, make, query, receiver, url, error, caplog, count=400, outage=0.8,
                   after=("claim_messages", 1),
                   config={"delivery_delay": 0})
