"""Delivering the outbox: one signed POST per project batch, retried on a schedule.

Reports are rows in ``outbox`` written in the same transaction as the state change they report,
so none is lost if a process dies; a claimed batch comes back after its lease if the deliverer
dies mid-POST (the receiver may then see a report twice — reports are idempotent by
``msg_id`` + ``state``).

Inbound user messages go the same way to the project's incoming webhook (Picky's global
webhook): one signed POST per message, in Picky's shape, with the same retry schedule
(``unique-id`` makes a repeat recognisable). A 2xx answer carrying a reply is sent back to the
user (``webhooks/instant_reply.py``); the answer is read up to ``InstantReplies.max_bytes`` and
within the webhook timeout, and one that is larger or slower sends nothing (the POST still
counts as delivered). Number filter answers (Picky's event 2) go to the event webhook, one POST
per project's claimed answers, on the same schedule.

Webhook URLs are checked when set (``pushgate project webhook``), and again at every send: the
host is resolved, refused if any address is not public (unless ``allow_private``,
``PUSHGATE_ALLOW_PRIVATE_WEBHOOKS``), and the POST goes to the vetted address itself
(``pushgate.outbound``), so a DNS answer changed since cannot turn a webhook into a request to
the gateway's own network. A refused target is a failed attempt like any other: logged with
its reason and retried on the schedule (the operator may fix the URL or its DNS meanwhile).
Redirects are not followed, and proxies from the environment are not used (they would
connect from elsewhere than the addresses vouched for).

A database outage is ridden out (``store/outage.py``): the loop backs off and goes on, and
the outcome of a POST that could not be written (delivered, or to be retried) is kept and
written before anything new is claimed, so a report the receiver took is not POSTed again
because the database was away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Iterable
from typing import TypeVar

import httpx

from pushgate.core.models import InboundForward, OutboxBatch
from pushgate.core.optouts import OptoutEvent
from pushgate.core.records import CheckForward
from pushgate.metrics import WEBHOOK_DELIVERIES
from pushgate.outbound import AddressRefused, default_port, resolve_public, send_pinned
from pushgate.store.base import Store
from pushgate.store.outage import keep_going, outage_of
from pushgate.webhooks.instant_reply import InstantReplies
from pushgate.webhooks.optouts import confirm, optouts_body
from pushgate.webhooks.payloads import checks_body, inbound_body, reports_body
from pushgate.webhooks.signing import HEADER, sign

log = logging.getLogger("pushgate.webhooks")
# How much of a failed try's reason is kept (the dashboard's webhooks page shows it).
ERROR_CHARS = 300

T = TypeVar("T")


def _grouped(items: Iterable[T], key: Callable[[T], Hashable]) -> list[list[T]]:
    """``items`` in groups of equal ``key``, each group in the items' order."""
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return list(groups.values())


class DeliveryWake(asyncio.Event):
    """What wakes a deliverer. ``set()``: anything may be new (reports, inbound messages,
    number check answers, opt-out events). ``reports()``: only reports can be (outcomes or
    status updates were recorded), so the deliverer looks at the outbox alone: on the
    dispatch path, where every write of a batch's outcomes wakes it, three reads fewer."""

    def __init__(self) -> None:
        super().__init__()
        # Whether the deliverer's next look is at everything: at first, after a set(), and
        # as the deliverer itself says (after its idle poll, a step that found work or failed).
        self.anything = True

    def set(self) -> None:
        self.anything = True
        super().set()

    def reports(self) -> None:
        super().set()


def render(batch: OutboxBatch) -> bytes:
    return reports_body(batch.project_id, [item.report for item in batch.items])


class WebhookDeliverer:
    def __init__(
        self,
        store: Store,
        worker_id: str,
        timeout: float,
        schedule: list[float],
        batch_size: int = 500,
        idle_poll: float = 0.2,
        wake: DeliveryWake | None = None,
        allow_private: bool = False,
        replies: InstantReplies | None = None,
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.timeout = timeout
        self.schedule = schedule
        self.batch_size = batch_size
        self.idle_poll = idle_poll
        self.wake = wake or DeliveryWake()
        self.allow_private = allow_private
        self.replies = replies if replies is not None and replies.max_bytes > 0 else None
        self._stopping = asyncio.Event()
        self.client = httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False)
        # Shared with the dispatcher of this process (same store).
        self.outage = outage_of(store)
        # Outcomes of POSTs not written yet (the database was away), oldest first: which
        # store call, the ids, and when the POST was answered.
        # (call, ids, when, why a retry's try failed)
        self.unsettled: list[tuple[str, list[int], float, str | None]] = []

    async def run(self) -> None:
        """Until ``stop()``. Nothing restarts this loop: a database outage is ridden out with
        back-off, and a bug is logged with its traceback and retried likewise."""
        async def step() -> bool:
            # Cleared before the look, not before the wait: a wake-up during the step (a row
            # committed after its claim read) makes the wait after it return at once.
            self.wake.clear()
            everywhere, self.wake.anything = self.wake.anything, False
            try:
                handled = await self.deliver_once(everywhere)
            except Exception:
                self.wake.anything = True   # the step after the back-off looks everywhere
                raise
            if handled:
                self.wake.anything = True   # more may be due in any of the four
            return handled > 0

        try:
            await keep_going("webhook deliverer", step, self._idle, self._stopping.is_set,
                             self.outage, survive_bugs=True, logger=log)
        finally:
            await self.client.aclose()

    def stop(self) -> None:
        self._stopping.set()
        self.wake.set()

    async def _idle(self) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
        try:
            async with asyncio.timeout(self.idle_poll):
                await self.wake.wait()
        except TimeoutError:
            # The poll: retries fall due, and other processes' rows wake nobody here.
            self.wake.anything = True

    async def deliver_once(self, everywhere: bool = True) -> int:
        """Claim what is due, POST it, record the outcome; returns the items handled.
        Outcomes kept from earlier POSTs are written first; if that fails nothing is claimed
        (a kept outcome's rows would come back to the claim when their lease ends). Not
        ``everywhere``: the outbox's reports only, not inbound messages, number check
        answers or opt-out events."""
        await self.settle()
        now = time.time()
        batches = await self.store.claim_outbox(
            self.worker_id, self.batch_size, now, lease_seconds=self.timeout + 30)
        missed: Exception | None = None
        inbound: list[InboundForward] = []
        checks: list[CheckForward] = []
        optouts: list[OptoutEvent] = []
        if everywhere:
            try:
                inbound = await self.store.claim_inbound(self.batch_size, now,
                                                         self.timeout + 30)
            except Exception as exc:
                # The reports just claimed still go out now, not when their lease ends.
                if not batches:
                    raise
                missed = exc
        if everywhere and missed is None:
            try:
                checks = await self.store.claim_check_reports(self.batch_size, now,
                                                              self.timeout + 30)
            except Exception as exc:
                if not batches and not inbound:
                    raise
                missed = exc
        if everywhere and missed is None:
            try:
                optouts = await self.store.claim_optout_events(self.batch_size, now,
                                                               self.timeout + 30)
            except Exception as exc:
                if not batches and not inbound and not checks:
                    raise
                missed = exc
        if not batches and not inbound and not checks and not optouts:
            return 0
        # One user's messages (a claim holds them oldest first) are forwarded one after
        # another, so the incoming webhook gets a conversation in the order it was written;
        # different users' go out side by side.
        senders = _grouped(inbound, lambda item: (item.project_id, item.message.number))
        targets = _grouped(checks, lambda item: (item.report.project_id, item.url, item.secret))
        projects = _grouped(optouts, lambda event: event.project_id)
        await asyncio.gather(*(self._post(batch) for batch in batches),
                             *(self._forward_in_order(group) for group in senders),
                             *(self._post_checks(group) for group in targets),
                             *(self._post_optouts(group) for group in projects))
        await self.settle()
        if missed is not None:
            raise missed
        return (sum(len(b.items) for b in batches) + len(inbound) + len(checks)
                + len(optouts))

    def _done(self, call: str, ids: list[int], error: str | None = None) -> None:
        """Note a POST's outcome (for a retry, why it failed: the dashboard shows it), to be
        written by ``settle``."""
        self.unsettled.append((call, ids, time.time(),
                               None if error is None else error[:ERROR_CHARS]))

    async def settle(self) -> None:
        """Write the noted outcomes, oldest first, the same calls merged into one. Whatever
        could not be written stays noted (and the error is raised). Writing a completion
        twice is harmless; a retry written twice counts one attempt more."""
        while self.unsettled:
            call, _ids, at, error = self.unsettled[0]
            same = [entry for entry in self.unsettled if entry[0] == call and entry[3] == error]
            ids = [i for entry in same for i in entry[1]]
            if call == "complete_outbox":
                await self.store.complete_outbox(ids)
            elif call == "complete_inbound":
                await self.store.complete_inbound(ids)
            elif call == "complete_checks":
                await self.store.complete_check_reports(ids)
            elif call == "retry_checks":
                await self.store.retry_check_reports(ids, at, self.schedule)
            elif call == "complete_optouts":
                await self.store.complete_optout_events(ids)
            elif call == "retry_optouts":
                await self.store.retry_optout_events(ids, at, self.schedule)
            elif call == "retry_outbox":
                await self.store.retry_outbox(ids, at, self.schedule, error)
            else:
                await self.store.retry_inbound(ids, at, self.schedule, error)
            self.unsettled = [entry for entry in self.unsettled
                              if not (entry[0] == call and entry[3] == error)]

    async def _forward_in_order(self, items: list[InboundForward]) -> None:
        for item in items:
            await self._forward(item)

    async def _forward(self, item: InboundForward) -> None:
        if not item.url:   # the project removed its incoming webhook since
            self._done("complete_inbound", [item.id])
            return
        body = inbound_body(item.message, item.url)
        keep = self.replies.max_bytes if self.replies is not None else 0
        ok, reason, answer = await self._exchange(item.url, item.secret, body, keep)
        if ok:
            self._done("complete_inbound", [item.id])
            if self.replies is not None:
                if answer is None:
                    log.warning("no instant reply from the incoming webhook of project %s: "
                                "%s", item.project_id, reason,
                                extra={"project_id": item.project_id})
                else:
                    await self.replies.answer(item, answer)
        else:
            log.warning("incoming webhook of project %s failed (%s); will retry",
                        item.project_id, reason, extra={"project_id": item.project_id})
            self._done("retry_inbound", [item.id], reason)

    async def _post_checks(self, group: list[CheckForward]) -> None:
        """Number filter answers (event 2) of one project, in one POST to its event webhook."""
        first = group[0]
        ids = [item.id for item in group]
        if not first.url:   # the project removed its event webhook since
            self._done("complete_checks", ids)
            return
        body = checks_body(first.report.project_id, [item.report for item in group])
        ok, reason = await self._send(first.url, first.secret, body)
        if ok:
            self._done("complete_checks", ids)
        else:
            log.warning("number filter answers to project %s failed (%s); will retry",
                        first.report.project_id, reason,
                        extra={"project_id": first.report.project_id})
            self._done("retry_checks", ids)

    async def _post_optouts(self, group: list[OptoutEvent]) -> None:
        """Users' STOP / START of one project: each confirmation queued (first try only),
        then the events (event 4) in one POST to its event webhook."""
        validity = self.replies.validity if self.replies is not None else None
        for event in group:
            await confirm(self.store, event, validity)
        first = group[0]
        ids = [event.id for event in group]
        if not first.webhook_url:   # no event webhook: the confirmations were all to do
            self._done("complete_optouts", ids)
            return
        ok, reason = await self._send(first.webhook_url, first.webhook_secret,
                                      optouts_body(first.project_id, group))
        if ok:
            self._done("complete_optouts", ids)
        else:
            log.warning("opt-out events to project %s failed (%s); will retry",
                        first.project_id, reason, extra={"project_id": first.project_id})
            self._done("retry_optouts", ids)

    async def _send(self, url: str, secret: str, body: bytes) -> tuple[bool, str]:
        ok, reason, _answer = await self._exchange(url, secret, body, 0)
        return ok, reason

    async def _exchange(self, url: str, secret: str, body: bytes,
                        keep: int) -> tuple[bool, str, bytes | None]:
        """POST ``body``: whether the receiver answered 2xx, what it answered (the reason
        of a failure), and with ``keep`` its answer's body when it is at most ``keep``
        bytes and complete within the timeout (None otherwise, the reason saying why).
        Every webhook POST, of whatever kind, is counted here once."""
        ok, reason, answer = await self._post_once(url, secret, body, keep)
        WEBHOOK_DELIVERIES.labels("delivered" if ok else "failed").inc()
        return ok, reason, answer

    async def _post_once(self, url: str, secret: str, body: bytes,
                         keep: int) -> tuple[bool, str, bytes | None]:
        headers = {"Content-Type": "application/json", HEADER: sign(secret, body),
                   "User-Agent": "pushgate-webhook/1"}
        try:
            target = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            return False, f"invalid webhook URL: {exc}", None
        if target.scheme not in ("http", "https") or not target.raw_host:
            return False, f"webhook URL {url!r} is not an http(s) URL", None
        started = asyncio.get_running_loop().time()
        try:
            addresses = await resolve_public(target.raw_host.decode("ascii"),
                                             default_port(target), self.allow_private)
            response = await send_pinned(self.client, "POST", target, addresses, self.timeout,
                                         headers=headers, content=body, stream=keep > 0)
        except AddressRefused as exc:
            hint = "" if exc.retryable else " (PUSHGATE_ALLOW_PRIVATE_WEBHOOKS=true allows it)"
            return False, f"target refused: {exc.reason}{hint}", None
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__}: {exc}", None
        ok, reason = 200 <= response.status_code < 300, f"HTTP {response.status_code}"
        if keep <= 0:
            return ok, reason, None
        try:
            if not ok:
                return ok, reason, None
            return ok, reason, await _read_answer(response, keep, started + self.timeout)
        except _Unread as unread:
            return ok, f"{reason}, {unread}", None
        finally:
            await response.aclose()

    async def _post(self, batch: OutboxBatch) -> None:
        body = render(batch)
        ids = [item.id for item in batch.items]
        ok, reason = await self._send(batch.url, batch.secret, body)
        if ok:
            self._done("complete_outbox", ids)
        else:
            log.warning("webhook to project %s failed (%s); %d reports will be retried",
                        batch.project_id, reason, len(ids),
                        extra={"project_id": batch.project_id})
            self._done("retry_outbox", ids, reason)


class _Unread(Exception):
    """Why an answer was not read."""


async def _read_answer(response: httpx.Response, keep: int, deadline: float) -> bytes:
    """The streamed answer's body, at most ``keep`` bytes (decoded), read by ``deadline``
    (the loop's clock); ``_Unread`` otherwise. The connection is closed, not reused, when the
    answer is left unread."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > keep:
        raise _Unread(f"answer of {declared} bytes, over {keep}")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout_at(deadline):
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > keep:
                    raise _Unread(f"answer over {keep} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise _Unread("answer not complete within the webhook timeout") from None
    except httpx.HTTPError as exc:
        raise _Unread(f"answer broke off: {type(exc).__name__}") from None
    return b"".join(chunks)
