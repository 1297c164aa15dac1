"""One bind_transceiver session to the SMSC (``Bind``): framing, the submit window, enquire_link,
re-binding with back-off, throttle pauses, and the per-submit failure records."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from pushgate.channels.smpp import pdu
from pushgate.channels.smpp.config import MO_CONFIRM_SECONDS, PAUSE_LOG, SUBMIT_RATE_GUARD_SECONDS
from pushgate.core.models import (
    InboundMessage,
    InboundPart,
    Outcome,
    SendResult,
    StatusUpdate,
)

if TYPE_CHECKING:
    from pushgate.channels.smpp.channel import SmppChannel

log = logging.getLogger("pushgate.channels.smpp")

THROTTLE_STATUSES = frozenset({pdu.ESME_RTHROTTLED, pdu.ESME_RMSGQFUL})
# The SMSC's trouble rather than the message's: worth another attempt later.
RETRYABLE_STATUSES = THROTTLE_STATUSES | {
    pdu.ESME_RSYSERR, pdu.ESME_RSUBMITFAIL, pdu.ESME_RUNKNOWNERR, pdu.ESME_RINVBNDSTS}
CREDENTIAL_STATUSES = frozenset({pdu.ESME_RBINDFAIL, pdu.ESME_RINVPASWD, pdu.ESME_RINVSYSID})



class BindLost(Exception):
    """The session ended before the SMSC answered; ``written`` says whether the request may
    have reached it."""

    def __init__(self, written: bool) -> None:
        super().__init__("the SMPP session ended")
        self.written = written


@dataclass(slots=True)
class Failure:
    # RETRY, FAILED, DEFER or PAUSE_CHANNEL: never one that went out.
    kind: Outcome
    error_code: str
    error_message: str
    retry_after: float | None = None
    # The SMSC asked us to slow down (0x58 / 0x14): not an attempt.
    throttled: bool = False

    def result(self, message_id: int, note: str = "") -> SendResult:
        return SendResult(message_id, self.kind, error_code=self.error_code,
                          error_message=f"{self.error_message}{note}",
                          retry_after=self.retry_after)


def status_failure(status: int, retry_after: float | None = None) -> Failure:
    """A submit_sm_resp error as a send outcome."""
    text = f"submit_sm refused: {pdu.status_text(status)}"
    if status in THROTTLE_STATUSES:
        # The SMSC asking to slow down, not a failed attempt: back to the queue for the pause.
        return Failure(Outcome.DEFER, pdu.status_code(status), text, retry_after,
                       throttled=True)
    if status in RETRYABLE_STATUSES:
        return Failure(Outcome.RETRY, pdu.status_code(status), text, retry_after)
    return Failure(Outcome.FAILED, pdu.status_code(status), text)


@dataclass(slots=True)
class Incoming:
    """A deliver_sm waiting to be made durable, then acknowledged on the session it came on."""

    bind: Bind
    session: Session
    sequence: int
    update: StatusUpdate | None = None
    inbound: InboundMessage | None = None
    part: InboundPart | None = None
    # A user's deliver_sm, followed until the SMSC has surely read our answer.
    seen: MoSeen | None = None


@dataclass(slots=True, eq=False)
class MoSeen:
    """A user's deliver_sm, kept from its arrival until the SMSC has surely read our answer
    (or, when its session ended before that, as a possible re-delivery for a while)."""

    digest: bytes
    # The id a whole message was recorded under ("" for a part).
    provider_id: str
    stored: bool = False
    # The bind's write count at our deliver_sm_resp (see ``Bind.write``).
    answered: int = 0
    doubt_until: float = 0.0


class SubmitRate:
    """At most ``limit`` submit_sm in any window of ``period`` seconds, over all the channel's
    binds: a log of the last ``limit`` sends, a new one waiting until the oldest is ``period``
    old. It holds in every window, the first second and the one after an idle spell included
    (a token bucket lets a refilled burst through there), and counts submit_sm, so each part
    of a long text counts as the SMSC counts it."""

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self.sent: deque[float] = deque(maxlen=limit)

    @classmethod
    def for_rate(cls, rate_per_second: float) -> SubmitRate | None:
        """The limiter for a channel's ``rate_per_second`` (None when unpaced): ⌊R⌋ a second,
        or one every 1/R seconds below 1/s."""
        if rate_per_second <= 0:
            return None
        if rate_per_second >= 1:
            return cls(int(rate_per_second), 1.0 + SUBMIT_RATE_GUARD_SECONDS)
        return cls(1, 1.0 / rate_per_second + SUBMIT_RATE_GUARD_SECONDS)

    async def acquire(self) -> None:
        """Wait until one more submit_sm may go, and count it."""
        while len(self.sent) == self.limit:
            wait = self.sent[0] + self.period - time.monotonic()
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        self.sent.append(time.monotonic())


class Session(asyncio.Protocol):
    """One TCP connection of a bind; events from a connection that is no longer the bind's
    current one are ignored."""

    def __init__(self, bind: Bind) -> None:
        self.bind = bind
        self.reader = pdu.PduReader()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not always an asyncio.Transport subclass: uvloop's (which
        # `pushgate serve` runs on) is not, so no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.bind.on_data(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self.bind.on_connection_lost(self)


class Bind:
    """One bind_transceiver session, re-established for as long as the channel runs."""

    def __init__(self, channel: SmppChannel, index: int) -> None:
        self.channel = channel
        self.config = channel.config
        self.name = f"smpp channel {channel.spec.id} bind {index + 1}"
        self.loop: asyncio.AbstractEventLoop | None = None
        self.session: Session | None = None
        self.bound = False
        self.closing = False
        self.task: asyncio.Task[None] | None = None
        # Set when the first bind attempt has ended, either way (``start()`` waits for it).
        self.attempted = asyncio.Event()
        self.window = asyncio.Semaphore(self.config.window)
        # Submits assigned to this bind: in flight plus waiting for a window slot.
        self.load = 0
        self.pending: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self.last_rx = 0.0
        self.last_error = "not bound yet"
        # The status of a bind refused for its credentials, until a bind succeeds.
        self.refused_status: int | None = None
        # Throttle pauses, on the time.monotonic() clock. ``_pause_epoch`` counts the pauses
        # begun; a submit remembers it when it goes out, so an answer tells whether its submit
        # went out before or after the current pause began.
        self.throttled_until = 0.0
        self._throttle_delay = 0.0
        self._pause_epoch = 0
        # The pauses begun, in seconds, latest last.
        self.pauses: deque[float] = deque(maxlen=PAUSE_LOG)
        self._sequence = 0
        self._out: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        # PDUs written on the current session, and how many of them the SMSC has surely read:
        # all those written before a request it answered. ``_request_writes`` is each pending
        # request's place in that count; ``_answered`` the users' deliver_sm answered on this
        # session and not yet surely read, in order.
        self._writes = 0
        self._read_by_smsc = 0
        self._request_writes: dict[int, int] = {}
        self._answered: deque[MoSeen] = deque()
        self._confirm_handle: asyncio.Handle | None = None
        self._confirming: set[asyncio.Task[Any]] = set()

    # -- writing ------------------------------------------------------------------------------

    def next_sequence(self) -> int:
        self._sequence = self._sequence % 0x7FFFFFFF + 1
        return self._sequence

    def write(self, data: bytes) -> int:
        """Queue a PDU for the current session; returns its place among the session's writes.
        The PDUs written in one loop iteration (a window of submits, a batch of
        deliver_sm_resps) leave in one send() instead of one system call each."""
        self._out.append(data)
        if self._flush_handle is None and self.loop is not None:
            self._flush_handle = self.loop.call_soon(self._flush)
        self._writes += 1
        return self._writes

    def _flush(self) -> None:
        self._flush_handle = None
        out, self._out = self._out, []
        session = self.session
        if out and session is not None and session.transport is not None:
            session.transport.write(b"".join(out))

    def respond(self, session: Session, command_id: int, status: int, sequence: int,
                body: bytes = b"") -> int | None:
        """Answer a request of ``session``, if it is still the current connection: the
        answer's place among the session's writes, else None."""
        if session is self.session:
            return self.write(pdu.pdu(command_id, status, sequence, body))
        return None

    def answered_mo(self, seen: MoSeen, written: int) -> None:
        """A user's deliver_sm was answered (the ``written``-th PDU of this session): followed
        until the SMSC has surely read the answer."""
        seen.answered = written
        self._answered.append(seen)
        if self._confirm_handle is None and self.loop is not None:
            self._confirm_handle = self.loop.call_later(MO_CONFIRM_SECONDS, self._confirm)

    def _confirm(self) -> None:
        """Ask for a word from the SMSC (an enquire_link) when answers wait for one."""
        self._confirm_handle = None
        if not self._answered or not self.bound or self.loop is None:
            return
        last = self._answered[-1].answered
        if any(written > last for written in self._request_writes.values()):
            return  # a request written since then confirms them when answered
        task = self.loop.create_task(self._enquire_quietly())
        self._confirming.add(task)
        task.add_done_callback(self._confirming.discard)

    async def _enquire_quietly(self) -> None:
        with contextlib.suppress(TimeoutError, BindLost):
            await self.request(pdu.ENQUIRE_LINK)

    def _smsc_read_up_to(self, written: int) -> None:
        """The SMSC answered our ``written``-th PDU, so it read every PDU before it: the users'
        deliver_sm answered before that are settled."""
        if written <= self._read_by_smsc:
            return
        self._read_by_smsc = written
        while self._answered and self._answered[0].answered < written:
            self._answered.popleft()

    async def request(self, command_id: int, body: bytes = b"",
                      timeout: float | None = None) -> tuple[int, bytes]:
        sequence = self.next_sequence()
        return await self._exchange(sequence, pdu.pdu(command_id, 0, sequence, body), timeout)

    async def _exchange(self, sequence: int, data: bytes,
                        timeout: float | None = None) -> tuple[int, bytes]:
        """Write a request and wait for its response: (command_status, body)."""
        assert self.loop is not None
        future: asyncio.Future[tuple[int, bytes]] = self.loop.create_future()
        self.pending[sequence] = future
        self._request_writes[sequence] = self.write(data)
        try:
            async with asyncio.timeout(timeout or self.config.response_timeout_seconds):
                return await future
        finally:
            self.pending.pop(sequence, None)
            self._request_writes.pop(sequence, None)

    # -- submitting ---------------------------------------------------------------------------

    async def submit(self, destination: str, esm_class: int, data_coding: int,
                     short_message: bytes) -> tuple[int, str, float | None]:
        """(command_status, message_id, retry_after) of one submit_sm. Raises ``BindLost``
        and ``TimeoutError`` (no answer within ``response_timeout_seconds``)."""
        assert self.loop is not None
        self.load += 1
        try:
            async with self.window:
                await self._wait_turn()
                if not self.bound:
                    raise BindLost(written=False)
                epoch = self._pause_epoch
                sequence = self.next_sequence()
                data = self.channel.template.encode(sequence, destination, esm_class,
                                                    data_coding, short_message)
                status, body = await self._exchange(sequence, data)
        finally:
            self.load -= 1
        if status == pdu.ESME_ROK:
            if self._throttle_delay and epoch == self._pause_epoch:
                # Sent after the current pause (sends wait it out) and accepted: the SMSC is
                # content again, so its next throttle starts from the base pause.
                self._throttle_delay = 0.0
            return status, pdu.c_octets_value(body), None
        if status in THROTTLE_STATUSES:
            return status, "", self.note_throttle(epoch)
        if status == pdu.ESME_RINVBNDSTS:  # the SMSC no longer counts us as bound
            self.drop("submit_sm answered ESME_RINVBNDSTS")
        return status, "", None

    async def _wait_turn(self) -> None:
        """Wait out this bind's throttle pause and the channel's submit rate."""
        rate = self.channel.submit_rate
        while True:
            while (wait := self.throttled_until - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            if rate is None:
                return
            await rate.acquire()
            if self.throttled_until <= time.monotonic():
                return
            # A pause began while this submit waited for the rate: the turn taken is spent
            # (the rate then counts one submit too many, never one too few).

    def note_throttle(self, epoch: int) -> float:
        """Pause this bind after ESME_RTHROTTLED / ESME_RMSGQFUL to a submit that went out
        when ``epoch`` pauses had begun. Only a submit sent after the current pause began (or
        with none yet) starts a pause, doubled while no success came between; the answers to
        submits already in flight when it began say nothing new. Returns how long to wait."""
        cfg = self.config
        now = time.monotonic()
        if epoch == self._pause_epoch:
            self._throttle_delay = min(self._throttle_delay * 2 or cfg.throttle_backoff_seconds,
                                       cfg.throttle_backoff_max_seconds)
            self._pause_epoch += 1
            self.throttled_until = now + self._throttle_delay
            self.pauses.append(self._throttle_delay)
            log.info("%s: throttled by the SMSC; pausing %.2f s", self.name, self._throttle_delay)
            return self._throttle_delay
        return max(self.throttled_until - now, 0.0) or cfg.throttle_backoff_seconds

    # -- the session ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Bind, serve, and bind again after a drop (exponential back-off) until closed."""
        cfg = self.config
        delay = cfg.rebind_min_seconds
        while not self.closing:
            try:
                was_bound = await self._serve()
            except Exception:  # a bug here must not end re-binding for good
                log.exception("%s: session failed", self.name)
                was_bound = False
            self.attempted.set()
            if self.closing:
                break
            if was_bound:
                delay = cfg.rebind_min_seconds
            # Jitter keeps several binds (and gateways) from re-binding in lockstep.
            await asyncio.sleep(delay * random.uniform(1.0, 1.25))
            delay = min(delay * 2, cfg.rebind_max_seconds)

    async def _serve(self) -> bool:
        """Connect, bind and keep the session alive until it ends; True if it was bound."""
        cfg = self.config
        assert self.loop is not None
        try:
            async with asyncio.timeout(cfg.response_timeout_seconds):
                _, session = await self.loop.create_connection(
                    lambda: Session(self), cfg.host, cfg.port)
        except (OSError, TimeoutError) as exc:
            self._failed(f"cannot connect to {cfg.host}:{cfg.port}: "
                         f"{exc or type(exc).__name__}")
            return False
        self.session = session
        self._out.clear()
        self._writes = self._read_by_smsc = 0
        self._request_writes.clear()
        self.last_rx = self.loop.time()
        try:
            try:
                status, _ = await self.request(pdu.BIND_TRANSCEIVER, self.channel.bind_body)
            except TimeoutError:
                self._failed("no bind_transceiver_resp within "
                             f"{cfg.response_timeout_seconds:g} s")
                return False
            except BindLost:
                self._failed("the SMSC closed the connection during bind_transceiver")
                return False
            if status != pdu.ESME_ROK:
                self.refused_status = status if status in CREDENTIAL_STATUSES else None
                self._failed(f"bind_transceiver refused: {pdu.status_text(status)}")
                return False
            self.refused_status = None
            self.bound = True
            self.last_error = ""
            self.attempted.set()
            log.info("%s: bound to %s:%s", self.name, cfg.host, cfg.port)
            self.channel.binds_changed()
            await self._keep_alive(session)
            return True
        finally:
            self._end_session(session)

    async def _keep_alive(self, session: Session) -> None:
        """enquire_link after ``enquire_link_seconds`` without a PDU from the SMSC; no answer
        within the response timeout ends the session (and ``run`` binds again)."""
        assert self.loop is not None
        interval = self.config.enquire_link_seconds
        while not session.lost.done():
            idle = self.loop.time() - self.last_rx
            if idle < interval:
                await asyncio.wait((session.lost,), timeout=interval - idle)
                continue
            try:
                await self.request(pdu.ENQUIRE_LINK)
            except TimeoutError:
                self.drop("enquire_link unanswered")
                return
            except BindLost:
                return

    def _failed(self, reason: str) -> None:
        self.last_error = reason
        log.warning("%s: %s", self.name, reason)

    def drop(self, reason: str) -> None:
        """End the current session at once (``run`` binds again)."""
        session = self.session
        if session is not None and session.transport is not None:
            self._failed(f"{reason}; dropping the session")
            session.transport.abort()

    def _end_session(self, session: Session) -> None:
        if session is not self.session:
            return
        was_bound = self.bound
        self.bound = False
        self.session = None
        self._out.clear()
        # Users' deliver_sm answered on this session that the SMSC may not have read the
        # answer of: it may deliver them again.
        self.channel.mo_in_doubt(self._answered)
        self._answered = deque()
        if self._confirm_handle is not None:
            self._confirm_handle.cancel()
            self._confirm_handle = None
        if session.transport is not None and not session.transport.is_closing():
            session.transport.abort()
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(BindLost(written=True))
        if was_bound:
            self.channel.binds_changed()

    # -- what the SMSC sends --------------------------------------------------------------------

    def on_connection_lost(self, session: Session) -> None:
        if session is self.session:
            if self.bound and not self.closing:
                self._failed("the SMSC closed the connection")
            self._end_session(session)

    def on_data(self, session: Session, data: bytes) -> None:
        if session is not self.session:
            return
        assert self.loop is not None
        self.last_rx = self.loop.time()
        try:
            pdus = session.reader.feed(data)
        except pdu.PduError as exc:
            self.drop(f"unreadable data from the SMSC ({exc})")
            return
        for command_id, status, sequence, body in pdus:
            if command_id & pdu.RESPONSE_BIT:  # includes generic_nack
                written = self._request_writes.pop(sequence, None)
                if written is not None:
                    self._smsc_read_up_to(written)
                future = self.pending.get(sequence)
                if future is not None and not future.done():
                    future.set_result((status, body))
            elif command_id == pdu.DELIVER_SM:
                self.channel.on_deliver_sm(self, session, sequence, body)
            elif command_id == pdu.ENQUIRE_LINK:
                self.write(pdu.pdu(pdu.ENQUIRE_LINK_RESP, pdu.ESME_ROK, sequence))
            elif command_id == pdu.UNBIND:
                self.write(pdu.pdu(pdu.UNBIND_RESP, pdu.ESME_ROK, sequence))
                self._flush()
                self._failed("the SMSC unbound")
                if session.transport is not None:
                    session.transport.close()
                self._end_session(session)
                return
            else:
                self.write(pdu.pdu(pdu.GENERIC_NACK, pdu.ESME_RINVCMDID, sequence))

    async def close(self) -> None:
        """unbind (waiting briefly for unbind_resp), close the connection, stop re-binding."""
        self.closing = True
        session = self.session
        if self.bound and session is not None:
            self.bound = False
            self.channel.binds_changed()
            with contextlib.suppress(TimeoutError, BindLost):
                await self.request(pdu.UNBIND,
                                   timeout=min(self.config.response_timeout_seconds, 2.0))
            self._flush()
            if session.transport is not None:
                session.transport.close()
            self._end_session(session)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
