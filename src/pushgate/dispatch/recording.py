"""What a runner hands the store while it sends: the outcomes of a batch as they come
(``OutcomeRecorder``) and a connector's own receipts and inbound messages (``StoreSink``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from pushgate import metrics
from pushgate.core.models import (
    InboundMessage,
    InboundPart,
    SendResult,
    StatusUpdate,
)
from pushgate.store.outage import is_unavailable

if TYPE_CHECKING:
    from pushgate.dispatch.runner import ChannelRunner
    from pushgate.dispatch.worker import Dispatcher

log = logging.getLogger("pushgate.dispatch")


# While a paced batch goes out, the outcomes of its finished sends are recorded at least this
# often (in the background, so the sends keep their pace): a message sent is no longer
# `sending`, so a worker killed mid-batch leaves only its last moments of sends to come back
# as possible re-sends, not up to a second's worth, and their reports go out as they happen.
RECORD_EVERY_SECONDS = 0.05
class StoreSink:
    """A connector's own receipts and inbound messages, written to the store before the
    connector acknowledges them to the provider."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    async def updates(self, updates: list[StatusUpdate]) -> None:
        if updates:
            await self.dispatcher.store.apply_status_updates(updates)
            self.dispatcher.notify_reports()

    async def inbound(self, messages: list[InboundMessage]) -> None:
        if messages:
            await self.dispatcher.store.record_inbound(messages, time.time())
            self.dispatcher.notify_webhooks()

    async def inbound_parts(self, parts: list[InboundPart]) -> list[InboundPart]:
        return await self.dispatcher.store.add_inbound_parts(parts) if parts else []

    async def due_inbound_parts(self, channel_id: int, before: float,
                                limit: int) -> list[InboundPart]:
        return await self.dispatcher.store.due_inbound_parts(channel_id, before, limit)

    async def drop_inbound_parts(self, parts: list[InboundPart]) -> None:
        if parts:
            await self.dispatcher.store.drop_inbound_parts(parts)


class OutcomeRecorder:
    """Records a batch's send outcomes as the connector reports them (``Channel.send_each``):
    the outcomes that arrive within ``RECORD_EVERY_SECONDS`` of each other go in one write,
    one write at a time, so a batch behind a slow provider shows its answers as they come
    while a fast one still costs a write or two. A failed write leaves its outcomes for
    ``close``, which records whatever is left (with anything earlier writes could not
    record) and returns every outcome."""

    def __init__(self, runner: ChannelRunner) -> None:
        self.runner = runner
        self.results: list[SendResult] = []
        self._waiting: list[SendResult] = []
        self._writer: asyncio.Task[None] | None = None
        self._next_write = time.monotonic() + RECORD_EVERY_SECONDS
        self._closing = asyncio.Event()
        self._began = time.monotonic()
        self._latency = metrics.send_seconds(runner.spec.id)

    def report(self, result: SendResult) -> None:
        self._latency.observe(time.monotonic() - self._began)
        self.results.append(result)
        self._waiting.append(result)
        if self._writer is None and not self._closing.is_set():
            self._writer = asyncio.create_task(self._write_while_waiting())

    async def _write_while_waiting(self) -> None:
        try:
            while self._waiting and not self._closing.is_set():
                wait = self._next_write - time.monotonic()
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._closing.wait()
                    if self._closing.is_set():
                        return  # ``close`` writes what is waiting
                batch, self._waiting = self._waiting, []
                self._next_write = time.monotonic() + RECORD_EVERY_SECONDS
                began = time.monotonic()
                try:
                    await self.runner.record(batch)
                except Exception as exc:
                    # ``record`` kept the batch in the runner's ``unrecorded``: ``close`` (or
                    # the runner's next step) writes it. No more tries in this batch.
                    if is_unavailable(exc):
                        self.runner.dispatcher.outage.failed(exc, began)
                    else:
                        log.exception("channel %s: recording outcomes failed; retried at the "
                                      "end of the batch", self.runner.spec.id)
                    return
        finally:
            self._writer = None

    async def close(self) -> list[SendResult]:
        """Wait for the write in progress, record the rest; every outcome reported."""
        self._closing.set()
        if self._writer is not None:
            await self._writer
        # What is waiting joins what earlier writes could not record; if this write fails
        # too, all of it stays with the runner for its next step.
        self.runner.unrecorded.extend(self._waiting)
        self._waiting = []
        await self.runner.flush()
        return self.results
