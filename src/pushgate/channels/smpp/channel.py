"""``SmppChannel``: the channel over its binds — sending parts, picking a bind, receiving
deliver_sm and handing receipts and users' messages to the sink."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import cast

from pushgate.channels.base import (
    Channel,
    ChannelEnv,
    ChannelStatus,
    register,
)
from pushgate.channels.smpp import pdu
from pushgate.channels.smpp.bind import (
    Bind,
    BindLost,
    Failure,
    Incoming,
    MoSeen,
    Session,
    SubmitRate,
    status_failure,
)
from pushgate.channels.smpp.config import (
    MO_DOUBT_LIMIT,
    MO_REDELIVERY_SECONDS,
    SINK_BATCH,
    UDH_CONCAT_8BIT,
    SmppConfig,
)
from pushgate.channels.smpp.receipts import (
    HEX_LETTER,
    PENDING_STATS,
    assembled,
    id_aliases,
    inbound_message,
    inbound_part,
    is_whole,
    mo_digest,
    new_mo_id,
    parts_by_message,
    read_receipt,
    receipt_update,
)
from pushgate.core.channels import ChannelSpec
from pushgate.core.models import (
    InboundPart,
    OutboundMessage,
    Outcome,
    SendResult,
)
from pushgate.core.segments import is_gsm7, split_segments

log = logging.getLogger("pushgate.channels.smpp")

@register
class SmppChannel(Channel):
    kind = "smpp"
    config_model = SmppConfig

    def __init__(self, spec: ChannelSpec, env: ChannelEnv | None = None) -> None:
        super().__init__(spec, env)
        self.config = cfg = cast(SmppConfig, self.stored_config())
        self.template = pdu.SubmitSmTemplate(
            service_type=cfg.service_type, source_ton=cfg.source_ton, source_npi=cfg.source_npi,
            source_addr=cfg.source_addr, dest_ton=cfg.dest_ton, dest_npi=cfg.dest_npi,
            registered_delivery=cfg.registered_delivery)
        self.bind_body = pdu.bind_transceiver_body(cfg.system_id, cfg.password, cfg.system_type)
        self.binds = [Bind(self, i) for i in range(cfg.binds)]
        self._binds_event = asyncio.Event()
        self._udh_ref = random.randrange(256)
        # Whether this SMSC's message ids are hex (one had hex letters): see ``id_aliases``.
        self._hex_ids = False
        self._incoming: list[Incoming] = []
        self._incoming_ready = asyncio.Event()
        self._incoming_idle = asyncio.Event()
        self._incoming_idle.set()
        self._incoming_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        # The channel's submit_sm rate (its ``rate_per_second``), over all binds.
        self.submit_rate = SubmitRate.for_rate(spec.rate_per_second)
        # Users' deliver_sm whose answer may not have reached the SMSC, by ``mo_digest``.
        self._in_doubt: dict[bytes, deque[MoSeen]] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for bind in self.binds:
            bind.loop = loop
            bind.closing = False
            bind.task = loop.create_task(bind.run(), name=bind.name)
        self._incoming_task = loop.create_task(self._deliver_incoming(),
                                               name=f"smpp channel {self.spec.id} receipts")
        self._sweep_task = loop.create_task(self._sweep_parts(),
                                            name=f"smpp channel {self.spec.id} parts")
        # Wait (bounded) for each bind's first attempt, so the first sends find a bind up, or
        # the reason there is none (refused credentials pause the channel at once).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2 * self.config.response_timeout_seconds):
                await asyncio.gather(*(bind.attempted.wait() for bind in self.binds))

    async def stop(self) -> None:
        # What was read is made durable and acknowledged before unbinding; anything the SMSC
        # sends after that, it sends again on the next bind.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.response_timeout_seconds):
                await self._incoming_idle.wait()
        await asyncio.gather(*(bind.close() for bind in self.binds))
        for task in (self._incoming_task, self._sweep_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._incoming_task = self._sweep_task = None

    async def status(self) -> ChannelStatus:
        up = sum(1 for bind in self.binds if bind.bound)
        extra = {"binds": len(self.binds), "bound": up}
        if up:
            return ChannelStatus(connected=True, state="CONNECTED",
                                 detail=f"{up}/{len(self.binds)} binds up", extra=extra)
        errors = [bind.last_error for bind in self.binds if bind.last_error]
        return ChannelStatus(connected=False, state="OFFLINE",
                             detail=errors[-1] if errors else "not bound", extra=extra)

    def binds_changed(self) -> None:
        """Wake the sends waiting for a bind (or for the reason there is none)."""
        self._binds_event.set()
        self._binds_event = asyncio.Event()

    # -- sending --------------------------------------------------------------------------------

    @property
    def in_flight_limit(self) -> int:
        # Each bind keeps up to ``window`` submits unanswered: a paced channel fills them.
        return self.config.binds * self.config.window

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        # All at once: every part waits for a window slot on a bind, so the binds' windows, not
        # a fixed concurrency, bound the submits in flight.
        return list(await asyncio.gather(*(self._safe_send(m) for m in messages)))

    async def send_each(self, messages: Sequence[OutboundMessage],
                        report: Callable[[SendResult], None]) -> None:
        # Each outcome is reported as its last submit_sm_resp arrives, so the dispatcher
        # records the SMSC's answers while the rest of the batch still waits for a window.
        async def one(message: OutboundMessage) -> None:
            report(await self._safe_send(message))

        await asyncio.gather(*(one(m) for m in messages))

    async def send(self, message: OutboundMessage) -> SendResult:
        number = message.number
        if not (number.isdigit() and len(number) <= 20):
            return SendResult.failed(message.id, "invalid-number",
                                     f"not an SMPP destination_addr: {number!r}")
        parts = split_segments(message.text)
        if not parts or len(parts) > 255:
            return SendResult.failed(message.id, "invalid-text",
                                     f"an SMS has 1 to 255 parts, not {len(parts)}")
        if is_gsm7(message.text):
            data_coding, payloads = pdu.DATA_CODING_DEFAULT, [pdu.encode_gsm7(p) for p in parts]
        else:
            data_coding, payloads = pdu.DATA_CODING_UCS2, [pdu.encode_ucs2(p) for p in parts]
        esm_class = 0
        total = len(payloads)
        if total > 1:
            self._udh_ref = ref = (self._udh_ref + 1) & 0xFF
            payloads = [UDH_CONCAT_8BIT + bytes((ref, total, seq)) + payload
                        for seq, payload in enumerate(payloads, 1)]
            esm_class = pdu.ESM_UDHI
        refs: list[tuple[int, str]] = []
        accepted: list[str] = []
        for index, payload in enumerate(payloads):
            outcome = await self._submit_part(number, esm_class, data_coding, payload,
                                              later_part=index > 0)
            if isinstance(outcome, Failure):
                if not accepted:
                    return outcome.result(message.id)
                return self._later_part_failed(message.id, outcome, total, accepted)
            accepted.append(outcome)
            if not outcome:  # accepted without an id: its receipts cannot be matched
                log.warning("smpp channel %s: submit_sm_resp without message_id", self.spec.id,
                            extra={"channel_id": self.spec.id, "message_id": message.id})
                continue
            if not self._hex_ids and HEX_LETTER.search(outcome):
                self._hex_ids = True
            refs.append((index, outcome))
            refs.extend((index, alias) for alias in id_aliases(outcome, self._hex_ids))
        return SendResult.sent(message.id, accepted[0] or None, provider_refs=refs)

    @staticmethod
    def _later_part_failed(message_id: int, failure: Failure, total: int,
                           accepted: list[str]) -> SendResult:
        done = len(accepted)
        ids = ", ".join(accepted)
        if failure.kind is Outcome.FAILED:
            return failure.result(message_id, f"; part {done + 1} of {total} refused after "
                                  f"parts 1-{done} were accepted ({ids})")
        # The whole message is tried again later, so the accepted parts go out a second time
        # (under a new UDH reference; the first, incomplete copy is at worst shown as a
        # fragment). _submit_part has retried this part in place for bind_wait_seconds to
        # avoid exactly that. Parts went out, so this is an attempt even when the bind is gone
        # — unless the SMSC only asked us to slow down.
        if failure.kind is Outcome.DEFER and not failure.throttled:
            failure.kind = Outcome.RETRY
        return failure.result(message_id, f"; parts 1-{done} of {total} were accepted ({ids}) "
                              "and will be sent again with the whole message")

    async def _submit_part(self, number: str, esm_class: int, data_coding: int, payload: bytes,
                           later_part: bool) -> str | Failure:
        """The message_id of one submitted part, or why it was not accepted.

        A later part of a message (earlier parts accepted) is retried in place — same UDH, any
        bind — for up to ``bind_wait_seconds`` after a throttle, a timeout or a drop, so the
        parts already accepted need not go out again with the whole message.
        """
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.config.bind_wait_seconds
        while True:
            bind = await self._pick_bind(give_up)
            if bind is None:
                failure = self._unbound_failure()
            else:
                try:
                    status, message_id, retry_after = await bind.submit(
                        number, esm_class, data_coding, payload)
                except BindLost as exc:
                    if not exc.written:
                        continue  # nothing went out: wait for a bind (bounded by give_up)
                    failure = Failure(Outcome.RETRY, "connection-lost", "the SMPP session ended "
                                      "before submit_sm_resp: the SMSC may have accepted it")
                except TimeoutError:
                    failure = Failure(Outcome.RETRY, "timeout", "no submit_sm_resp within "
                                      f"{self.config.response_timeout_seconds:g} s: the SMSC "
                                      "may have accepted it")
                else:
                    if status == pdu.ESME_ROK:
                        return message_id
                    failure = status_failure(status, retry_after)
            if not later_part or failure.kind in (Outcome.FAILED, Outcome.PAUSE_CHANNEL):
                return failure
            wait = failure.retry_after or 0.0
            if loop.time() + wait >= give_up:
                return failure
            await asyncio.sleep(wait)

    async def _pick_bind(self, give_up: float) -> Bind | None:
        """The least loaded bound bind (unthrottled first), waiting for one until ``give_up``;
        None at once while the SMSC refuses our credentials."""
        loop = asyncio.get_running_loop()
        while True:
            paused_before = time.monotonic()  # the clock of ``throttled_until``
            best: Bind | None = None
            for bind in self.binds:
                if bind.bound and (best is None or (bind.throttled_until > paused_before,
                                                    bind.load)
                                   < (best.throttled_until > paused_before, best.load)):
                    best = bind
            if best is not None:
                return best
            remaining = give_up - loop.time()
            if remaining <= 0 or self._refused_status() is not None:
                return None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._binds_event.wait()

    def _refused_status(self) -> int | None:
        for bind in self.binds:
            if bind.refused_status is not None:
                return bind.refused_status
        return None

    def _unbound_failure(self) -> Failure:
        cfg = self.config
        refused = self._refused_status()
        if refused is not None:
            return Failure(Outcome.PAUSE_CHANNEL, pdu.status_code(refused),
                           f"the SMSC refuses the bind: {pdu.status_text(refused)} (check "
                           "system_id and password)", retry_after=cfg.rebind_max_seconds)
        reasons = "; ".join(dict.fromkeys(b.last_error for b in self.binds if b.last_error))
        return Failure(Outcome.DEFER, "smpp-unbound",
                       f"no SMPP bind up after {cfg.bind_wait_seconds:g} s: {reasons}",
                       retry_after=cfg.rebind_min_seconds)

    # -- receipts and inbound -------------------------------------------------------------------

    def on_deliver_sm(self, bind: Bind, session: Session, sequence: int, body: bytes) -> None:
        at = time.time()
        try:
            deliver = pdu.parse_deliver_sm(body)
        except pdu.PduError as exc:
            # Sending it again would not make it readable: refuse it for good, loudly.
            log.error("%s: unreadable deliver_sm (%s): %s", bind.name, exc, body.hex())
            bind.respond(session, pdu.DELIVER_SM_RESP, 0x65, sequence, b"\0")
            return
        message_type = deliver.esm_class & pdu.ESM_MESSAGE_TYPE
        item: Incoming | None
        if message_type not in (0, pdu.ESM_DELIVERY_RECEIPT, pdu.ESM_INTERMEDIATE_NOTIFICATION):
            # An SME delivery or manual acknowledgement: nothing pushgate tracks.
            bind.respond(session, pdu.DELIVER_SM_RESP, pdu.ESME_ROK, sequence, b"\0")
            return
        if message_type:
            receipt = read_receipt(deliver)
            update = receipt_update(receipt, self.spec.id, at)
            if update is None:
                if receipt.stat not in PENDING_STATS:
                    log.warning("%s: receipt ignored (id %r, stat %r)", bind.name,
                                receipt.message_id, receipt.stat)
                bind.respond(session, pdu.DELIVER_SM_RESP, pdu.ESME_ROK, sequence, b"\0")
                return
            item = Incoming(bind, session, sequence, update=update)
        else:
            item = self._user_message(bind, session, sequence, deliver, at)
            if item is None:
                return
        self._incoming.append(item)
        self._incoming_idle.clear()
        self._incoming_ready.set()

    def _user_message(self, bind: Bind, session: Session, sequence: int,
                      deliver: pdu.DeliverSm, at: float) -> Incoming | None:
        """A user's deliver_sm as the whole message or the part it is; None when it is the
        re-delivery of a part already stored (then answered at once)."""
        digest = mo_digest(deliver)
        earlier = self._redelivery_of(digest)
        concat = pdu.concat_of(deliver)
        if concat is None:
            number = deliver.source_addr.lstrip("+")
            provider_id = earlier.provider_id if earlier else new_mo_id(number)
            seen = MoSeen(digest, provider_id)
            return Incoming(bind, session, sequence, seen=seen,
                             inbound=inbound_message(deliver, self.spec.id, at, provider_id))
        seen = MoSeen(digest, "")
        if earlier is not None and earlier.stored:
            log.info("%s: part %d/%d from %s delivered again after an answer in doubt; "
                     "already stored", bind.name, concat.seq, concat.total, deliver.source_addr)
            seen.stored = True
            self._answered(bind, session, sequence, seen, pdu.ESME_ROK)
            return None
        return Incoming(bind, session, sequence, seen=seen,
                         part=inbound_part(deliver, concat, self.spec.id, at))

    def _answered(self, bind: Bind, session: Session, sequence: int, seen: MoSeen | None,
                  status: int) -> None:
        written = bind.respond(session, pdu.DELIVER_SM_RESP, status, sequence, b"\0")
        if seen is None or not seen.stored:
            return  # nothing stored: a re-delivery is simply a new delivery
        if written is None:  # the session ended before the answer could go
            self.mo_in_doubt([seen])
        else:
            bind.answered_mo(seen, written)

    def mo_in_doubt(self, seen: Sequence[MoSeen]) -> None:
        """Users' deliver_sm stored and answered on a session that ended before the SMSC
        showed it had read the answer: for ``MO_REDELIVERY_SECONDS`` an identical one is their
        re-delivery."""
        if not seen:
            return
        now = time.monotonic()
        for item in seen:
            item.doubt_until = now + MO_REDELIVERY_SECONDS
            self._in_doubt.setdefault(item.digest, deque()).append(item)
        while len(self._in_doubt) > MO_DOUBT_LIMIT:  # the oldest first (insertion order)
            del self._in_doubt[next(iter(self._in_doubt))]

    def _redelivery_of(self, digest: bytes) -> MoSeen | None:
        """The in-doubt deliver_sm this one repeats, if any (each stands for one re-delivery)."""
        waiting = self._in_doubt.get(digest)
        if waiting is None:
            return None
        now = time.monotonic()
        while waiting and waiting[0].doubt_until <= now:
            waiting.popleft()
        earlier = waiting.popleft() if waiting else None
        if not waiting:
            del self._in_doubt[digest]
        return earlier

    async def _deliver_incoming(self) -> None:
        """Hand waiting receipts, inbound messages and parts to the sink in batches, then
        answer their deliver_sm: nothing is acknowledged before it is durable."""
        while True:
            await self._incoming_ready.wait()
            self._incoming_ready.clear()
            while self._incoming:
                batch = self._incoming[:SINK_BATCH]
                del self._incoming[:SINK_BATCH]
                status = pdu.ESME_ROK
                try:
                    await self._record(batch)
                except Exception as exc:  # e.g. the store is down: the SMSC will retry
                    log.warning("smpp channel %s: could not record %d receipts/messages (%s); "
                                "asking the SMSC to deliver them again", self.spec.id,
                                len(batch), exc, extra={"channel_id": self.spec.id})
                    status = pdu.ESME_RX_T_APPN
                for item in batch:
                    if item.seen is not None and status == pdu.ESME_ROK:
                        item.seen.stored = True
                    self._answered(item.bind, item.session, item.sequence, item.seen, status)
            self._incoming_idle.set()

    async def _record(self, batch: Sequence[Incoming]) -> None:
        """Make a batch durable: receipts, whole messages, and parts — a message whose last
        part this is goes to the sink whole, then its parts are dropped."""
        if self.sink is None:
            raise RuntimeError("the channel has no sink")
        updates = [i.update for i in batch if i.update is not None]
        inbound = [i.inbound for i in batch if i.inbound is not None]
        parts = [i.part for i in batch if i.part is not None]
        if updates:
            await self.sink.updates(updates)
        whole: list[InboundPart] = []
        if parts:
            stored = await self.sink.inbound_parts(parts)
            for group in parts_by_message(stored).values():
                if is_whole(group):
                    inbound.append(assembled(group))
                    whole.extend(group)
        if inbound:
            await self.sink.inbound(inbound)
        if whole:
            await self.sink.drop_inbound_parts(whole)

    async def _sweep_parts(self) -> None:
        """Forward the users' messages whose parts stopped coming (see ``sweep_parts``)."""
        timeout = self.config.concat_timeout_seconds
        every = min(max(timeout / 4, 0.05), 30.0)
        while True:
            await asyncio.sleep(every)
            try:
                await self.sweep_parts(time.time())
            except Exception as exc:  # the store is down: the parts wait for the next sweep
                log.warning("smpp channel %s: forwarding overdue message parts failed (%s)",
                            self.spec.id, exc, extra={"channel_id": self.spec.id})

    async def sweep_parts(self, now: float) -> int:
        """Forward, with what arrived and marked incomplete, every message whose first part
        came ``concat_timeout_seconds`` before ``now`` (a whole one left by a crash goes
        whole), then drop its parts; how many messages."""
        if self.sink is None:
            return 0
        due = await self.sink.due_inbound_parts(
            self.spec.id, now - self.config.concat_timeout_seconds, SINK_BATCH)
        if not due:
            return 0
        messages = [assembled(group) for group in parts_by_message(due).values()]
        await self.sink.inbound(messages)
        await self.sink.drop_inbound_parts(due)
        return len(messages)
