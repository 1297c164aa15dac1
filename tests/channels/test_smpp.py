"""The SMPP connector against the fake SMSC over real TCP on 127.0.0.1.

The fake decodes what the connector sends with smpp34's codec and builds what it receives with
it, so the connector's own PDU codec is checked against an independent one on every test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from pushgate.channels.base import ChannelConfigError
from pushgate.channels.smpp import (
    SmppChannel,
    id_aliases,
    read_receipt,
    receipt_update,
)
from pushgate.channels.smpp import pdu as smpp_pdu
from pushgate.core.channels import ChannelSpec, PriceUnit
from pushgate.core.lifecycle import State
from pushgate.core.models import (
    InboundMessage,
    InboundPart,
    OutboundMessage,
    Outcome,
    SendResult,
    StatusUpdate,
)
from pushgate.core.policy import RetryPolicy
from pushgate.core.push import Limits, decode_push, plan_push
from pushgate.core.segments import GSM_BASIC, GSM_EXTENSION, count_segments, split_segments
from pushgate.dispatch.worker import Dispatcher
from pushgate.store.base import Store
from pushgate.webhooks.payloads import inbound_payload
from tests.fakes.smsc import FakeSmsc

NUMBER = "919876543210"
CHANNEL_ID = 7


class RecordingSink:
    """A sink that keeps what it is given; ``gate`` (when set) holds each call until opened,
    ``failures`` makes the next calls raise (a store that is down)."""

    def __init__(self) -> None:
        self.updates_seen: list[StatusUpdate] = []
        self.inbound_seen: list[InboundMessage] = []
        self.gate: asyncio.Event | None = None
        self.failures = 0
        self.calls = 0
        self.on_update: Callable[[StatusUpdate], None] | None = None
        self.parts: dict[tuple[int, str, str, int, int, int], InboundPart] = {}

    async def _enter(self) -> None:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise RuntimeError("store unavailable")

    async def updates(self, updates: list[StatusUpdate]) -> None:
        await self._enter()
        for update in updates:
            if self.on_update is not None:
                self.on_update(update)
        self.updates_seen.extend(updates)

    async def inbound(self, messages: list[InboundMessage]) -> None:
        await self._enter()
        self.inbound_seen.extend(messages)

    async def inbound_parts(self, parts: list[InboundPart]) -> list[InboundPart]:
        await self._enter()
        for part in parts:
            self.parts.setdefault((*part.key, part.seq), part)
        keys = {p.key for p in parts}
        return [p for p in self.parts.values() if p.key in keys]

    async def due_inbound_parts(self, channel_id: int, before: float,
                                limit: int) -> list[InboundPart]:
        first: dict[tuple[int, str, str, int, int], float] = {}
        for part in self.parts.values():
            first[part.key] = min(part.at, first.get(part.key, part.at))
        due = [key for key, at in sorted(first.items(), key=lambda i: i[1]) if at < before]
        return [p for p in self.parts.values() if p.key in due[:limit]]

    async def drop_inbound_parts(self, parts: list[InboundPart]) -> None:
        for part in parts:
            self.parts.pop((*part.key, part.seq), None)


def config_for(smsc: FakeSmsc, **overrides: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": smsc.port, "system_id": "pushgate",
            "password": "secret", "source_addr": "PUSHGATE", "rebind_min_seconds": 0.02,
            "rebind_max_seconds": 0.2, "response_timeout_seconds": 2, "bind_wait_seconds": 2,
            "throttle_backoff_seconds": 0.05, **overrides}


def make_channel(smsc: FakeSmsc, **overrides: Any) -> SmppChannel:
    spec = ChannelSpec(id=CHANNEL_ID, project_id=1, kind="smpp", application=3,
                       price_micro=1000, price_unit=PriceUnit.SEGMENT,
                       config=SmppChannel.validate_config(config_for(smsc, **overrides)))
    channel = SmppChannel(spec)
    channel.sink = RecordingSink()
    return channel


def sink_of(channel: SmppChannel) -> RecordingSink:
    assert isinstance(channel.sink, RecordingSink)
    return channel.sink


@contextlib.asynccontextmanager
async def running(channel: SmppChannel) -> AsyncIterator[SmppChannel]:
    await channel.start()
    try:
        yield channel
    finally:
        await channel.stop()


_ids = iter(range(1, 1_000_000))


def message(text: str, number: str = NUMBER) -> OutboundMessage:
    return OutboundMessage(id=next(_ids), push_id=1, project_id=1, channel_id=CHANNEL_ID,
                           number=number, text=text, media_url=None, media_kind=None, parts=1,
                           priority=0, attempts=0)


async def eventually(predicate: Callable[[], bool], what: str, limit: float = 5.0) -> None:
    """Wait (bounded) until ``predicate()`` holds."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.005)


@pytest.fixture
async def smsc() -> AsyncIterator[FakeSmsc]:
    async with FakeSmsc() as fake:
        yield fake
        assert fake.errors == []


def refs_by_part(result: SendResult) -> dict[int, set[str]]:
    parts: dict[int, set[str]] = {}
    for part, pid in result.provider_refs:
        parts.setdefault(part, set()).add(pid)
    return parts


# -- encoding ---------------------------------------------------------------------------------


async def test_gsm7_text_goes_unpacked_with_escapes(smsc: FakeSmsc) -> None:
    text = "Bill @ $5 § _ {ok} €"
    async with running(make_channel(smsc)) as channel:
        result = await channel.send(message(text))
    assert result.kind is Outcome.SENT, result
    [submit] = smsc.submits
    assert (submit.data_coding, submit.esm_class, submit.udh) == (0, 0, None)
    assert submit.text == text
    # GSM 03.38: @ 0x00, $ 0x02, § 0x5F, _ 0x11, { ESC 0x28, } ESC 0x29, € ESC 0x65.
    assert submit.short_message == (b"Bill \x00 \x025 \x5f \x11 \x1b\x28ok\x1b\x29 \x1b\x65")
    assert (submit.source_addr, submit.source_addr_ton, submit.source_addr_npi) == (
        "PUSHGATE", 5, 0)
    assert (submit.destination_addr, submit.dest_addr_ton, submit.dest_addr_npi) == (
        NUMBER, 1, 1)
    assert submit.registered_delivery == 1
    assert result.provider_id == submit.message_id
    assert (0, submit.message_id) in result.provider_refs


async def test_ucs2_text_goes_as_utf16be(smsc: FakeSmsc) -> None:
    text = "Привет, ваш код 1234 😀"
    async with running(make_channel(smsc)) as channel:
        result = await channel.send(message(text))
    assert result.kind is Outcome.SENT
    [submit] = smsc.submits
    assert (submit.data_coding, submit.esm_class) == (8, 0)
    assert submit.short_message == text.encode("utf-16-be")
    assert submit.text == text


@pytest.mark.parametrize(("text", "parts", "coding"), [
    ("".join(f"Line {i:03d} of the bill. " for i in range(20))[:400], 3, 0),
    ("Счёт за электричество: " * 5, 2, 8),
])
async def test_long_text_goes_as_concatenated_parts(smsc: FakeSmsc, text: str, parts: int,
                                                    coding: int) -> None:
    assert count_segments(text).segments == parts
    async with running(make_channel(smsc)) as channel:
        result = await channel.send(message(text))
    assert result.kind is Outcome.SENT
    submits = smsc.submits
    assert len(submits) == parts
    assert [s.text for s in submits] == split_segments(text)
    [ref] = {s.udh[0] for s in submits if s.udh}
    assert [s.udh for s in submits] == [(ref, parts, i) for i in range(1, parts + 1)]
    assert all(s.esm_class == 0x40 and s.data_coding == coding for s in submits)
    assert all(s.short_message[:3] == b"\x05\x00\x03" for s in submits)
    assert smsc.texts_to(NUMBER) == [text]
    by_part = refs_by_part(result)
    assert sorted(by_part) == list(range(parts))
    for index, submit in enumerate(submits):
        assert submit.message_id in by_part[index]
    assert result.provider_id == submits[0].message_id


async def test_escape_pair_is_never_split_across_parts(smsc: FakeSmsc) -> None:
    text = "a" * 152 + "€" + "b" * 20  # the € would straddle septets 153/154
    async with running(make_channel(smsc)) as channel:
        result = await channel.send(message(text))
    assert result.kind is Outcome.SENT
    first, second = smsc.submits
    assert first.text == "a" * 152 and not first.short_message.endswith(b"\x1b")
    assert second.short_message[6:8] == b"\x1b\x65"
    assert len(smsc.submits) == count_segments(text).segments
    assert smsc.texts_to(NUMBER) == [text]


# -- windowing --------------------------------------------------------------------------------


async def test_one_bind_keeps_a_window_of_submits_in_flight(smsc: FakeSmsc) -> None:
    smsc.hold_responses = True
    async with running(make_channel(smsc, window=4)) as channel:
        batch = asyncio.create_task(channel.send_batch(
            [message(f"code {i}", f"9198765432{i:02d}") for i in range(10)]))
        await eventually(lambda: smsc.outstanding == 4, "4 submits in flight")
        await asyncio.sleep(0.05)  # nothing more may arrive while the window is full
        assert smsc.submit_count == 4
        while not batch.done():
            await eventually(lambda: smsc.outstanding > 0 or batch.done(), "next submits")
            smsc.release()
            await asyncio.sleep(0)
        results = await batch
    assert all(r.kind is Outcome.SENT for r in results)
    assert smsc.peak_outstanding == 4
    assert len({r.provider_id for r in results}) == 10


# -- receipts ---------------------------------------------------------------------------------


async def test_receipts_with_tlvs_are_reported_then_acknowledged() -> None:
    async with FakeSmsc(undeliverable={"919800000002"}) as smsc:
        channel = make_channel(smsc)
        sink = sink_of(channel)
        async with running(channel):
            ok = await channel.send(message("hello", "919800000001"))
            bad = await channel.send(message("hello", "919800000002"))
            await eventually(lambda: smsc.receipts_acked == 2, "both receipts acknowledged")
        delivered, failed = sorted(sink.updates_seen, key=lambda u: u.state != State.DELIVERED)
        assert (delivered.state, delivered.provider_id, delivered.channel_id) == (
            State.DELIVERED, ok.provider_id, CHANNEL_ID)
        assert (failed.state, failed.provider_id, failed.error_code) == (
            State.FAILED, bad.provider_id, "UNDELIV")
        assert failed.error_message is not None and "err:001" in failed.error_message
        assert "network_error_code:3:1" in failed.error_message


async def test_text_only_receipts_with_upper_case_keys_are_read() -> None:
    async with FakeSmsc(receipt_tlvs=False, receipt_upper_keys=True,
                        undeliverable={"919800000002"}) as smsc:
        channel = make_channel(smsc)
        async with running(channel):
            ok = await channel.send(message("hi", "919800000001"))
            bad = await channel.send(message("hi", "919800000002"))
            await eventually(lambda: smsc.receipts_acked == 2, "receipts acknowledged")
        states = {u.provider_id: (u.state, u.error_code) for u in sink_of(channel).updates_seen}
        assert states == {ok.provider_id: (State.DELIVERED, None),
                          bad.provider_id: (State.FAILED, "UNDELIV")}


@pytest.mark.parametrize("id_base", [16, 10])
async def test_receipt_naming_the_id_in_the_other_base_matches_an_alias(id_base: int) -> None:
    async with FakeSmsc(id_base=id_base, receipt_id_other_base=True) as smsc:
        channel = make_channel(smsc)
        async with running(channel):
            result = await channel.send(message("hi " * 80))  # 2 parts
            await eventually(lambda: smsc.receipts_acked == 2, "receipts acknowledged")
        by_part = refs_by_part(result)
        for index, submit in enumerate(smsc.submits):
            assert submit.message_id in by_part[index]
        named = {u.provider_id for u in sink_of(channel).updates_seen}
        assert named == {r.message_id for r in smsc.receipts_sent}
        assert named.isdisjoint({s.message_id for s in smsc.submits})  # really the other base
        for index in by_part:
            assert len(named & by_part[index]) == 1


async def test_receipt_before_submit_resp_is_reported() -> None:
    async with FakeSmsc(receipt_before_resp=True) as smsc:
        channel = make_channel(smsc)
        sink = sink_of(channel)
        send_done = False
        seen_before_result: list[bool] = []
        sink.on_update = lambda update: seen_before_result.append(not send_done)
        async with running(channel):
            result = await channel.send(message("code 1234"))
            send_done = True
        assert result.kind is Outcome.SENT
        assert seen_before_result == [True]
        assert sink.updates_seen[0].provider_id == result.provider_id
        assert smsc.receipts_acked == 1


async def test_receipt_is_acknowledged_only_after_the_sink_returns(smsc: FakeSmsc) -> None:
    channel = make_channel(smsc)
    sink = sink_of(channel)
    sink.gate = asyncio.Event()
    async with running(channel):
        assert (await channel.send(message("hi"))).kind is Outcome.SENT
        await eventually(lambda: sink.calls == 1, "the sink is called")
        await asyncio.sleep(0.05)
        assert smsc.receipts_acked == 0 and smsc.receipts_sent[0].ack_status is None
        sink.gate.set()
        await eventually(lambda: smsc.receipts_acked == 1, "acknowledged once durable")
    assert smsc.receipts_sent[0].ack_status == 0


async def test_receipt_the_sink_cannot_record_is_refused_and_comes_again(
        smsc: FakeSmsc) -> None:
    channel = make_channel(smsc)
    sink = sink_of(channel)
    sink.failures = 1
    async with running(channel):
        result = await channel.send(message("hi"))
        await eventually(lambda: smsc.receipts_acked == 1, "the second delivery acknowledged")
    assert [r.ack_status for r in smsc.receipts_sent] == [smpp_pdu.ESME_RX_T_APPN, 0]
    assert [u.provider_id for u in sink.updates_seen] == [result.provider_id]


async def test_receipts_on_another_bind_are_reported() -> None:
    async with FakeSmsc(receipt_other_bind=True) as smsc:
        channel = make_channel(smsc, binds=2)
        async with running(channel):
            await eventually(lambda: len(smsc.bound_sessions) == 2, "two binds")
            results = await channel.send_batch([message(f"m{i}") for i in range(6)])
            await eventually(lambda: smsc.receipts_acked == 6, "receipts acknowledged")
        assert {s.session for s in smsc.submits} == {r.session for r in smsc.receipts_sent} \
            == {1, 2}  # both binds carried submits and receipts
        assert {u.provider_id for u in sink_of(channel).updates_seen} == {
            r.provider_id for r in results}


# -- throttling and errors --------------------------------------------------------------------


@pytest.mark.parametrize("status", [0x58, 0x14])
async def test_throttle_waits_without_an_attempt_and_slows_the_bind_down(
        smsc: FakeSmsc, status: int) -> None:
    smsc.next_statuses = [status]
    async with running(make_channel(smsc, throttle_backoff_seconds=0.2)) as channel:
        throttled = await channel.send(message("one"))
        retried = await channel.send(message("one"))
        assert list(channel.binds[0].pauses) == [0.2]
    # The SMSC asking to slow down is not a failed attempt: the message waits out the pause.
    assert throttled.kind is Outcome.DEFER
    assert throttled.error_code == f"0x{status:08X}" and throttled.retry_after == 0.2
    assert retried.kind is Outcome.SENT
    first, second = smsc.submits
    assert first.answered_at is not None
    assert second.received_at - first.answered_at >= 0.2 * 0.9  # monotonic clock granularity


def test_one_throttled_burst_gives_one_pause_on_uvloop() -> None:
    """On uvloop (what ``pushgate serve`` runs), whose clock is cached per loop iteration:
    40 messages through an SMSC taking 12 a second. Every burst past 12/s is answered 0x58
    for all the submits in flight; each burst pauses the bind once, for the base pause (a
    success came in between), instead of doubling once per answer of the burst."""
    import uvloop

    async def run() -> list[float]:
        async with FakeSmsc(tps=12) as smsc:
            channel = make_channel(smsc, throttle_backoff_seconds=0.5)
            async with running(channel):
                waiting = [message(f"code {i}", f"9198000{i:05d}") for i in range(40)]
                async with asyncio.timeout(30):
                    while waiting:
                        results = await channel.send_batch(waiting)
                        assert all(r.kind in (Outcome.SENT, Outcome.DEFER)
                                   for r in results), results
                        waiting = [m for m, r in zip(waiting, results, strict=True)
                                   if r.kind is not Outcome.SENT]
                assert len(smsc.accepted()) == 40
                return list(channel.binds[0].pauses)

    pauses = asyncio.Runner(loop_factory=uvloop.new_event_loop).run(run())
    assert pauses and max(pauses) <= 1.0, pauses  # at most one doubling (0.5 s, then a 1 s)
    assert len(pauses) <= 8, pauses


async def test_throttled_later_part_is_retried_in_place(smsc: FakeSmsc) -> None:
    text = "x" * 400  # 3 parts
    smsc.next_statuses = [0, 0x58, 0x58]
    async with running(make_channel(smsc)) as channel:
        result = await channel.send(message(text))
    assert result.kind is Outcome.SENT, result
    assert [s.status for s in smsc.submits] == [0, 0x58, 0x58, 0, 0]
    assert smsc.texts_to(NUMBER) == [text]
    assert smsc.duplicate_parts() == 0
    assert sorted(refs_by_part(result)) == [0, 1, 2]


async def test_later_part_refused_fails_the_message_naming_the_sent_parts(
        smsc: FakeSmsc) -> None:
    smsc.next_statuses = [0, 0x0B]
    async with running(make_channel(smsc)) as channel:
        result = await channel.send(message("y" * 200))
    assert (result.kind, result.error_code) == (Outcome.FAILED, "0x0000000B")
    first = smsc.submits[0].message_id
    assert result.error_message is not None and first is not None
    assert first in result.error_message and "part 2 of 2" in result.error_message


async def test_invalid_destination_is_permanent(smsc: FakeSmsc) -> None:
    smsc.number_statuses["919800000099"] = 0x0B
    async with running(make_channel(smsc)) as channel:
        result = await channel.send(message("hi", "919800000099"))
    assert (result.kind, result.error_code) == (Outcome.FAILED, "0x0000000B")
    assert result.error_message is not None and "ESME_RINVDSTADR" in result.error_message


async def test_system_error_is_retryable(smsc: FakeSmsc) -> None:
    smsc.next_statuses = [0x08]
    async with running(make_channel(smsc)) as channel:
        result = await channel.send(message("hi"))
    assert (result.kind, result.error_code) == (Outcome.RETRY, "0x00000008")


# -- sessions ---------------------------------------------------------------------------------


async def test_sends_continue_after_a_drop_and_rebind(smsc: FakeSmsc) -> None:
    async with running(make_channel(smsc)) as channel:
        assert (await channel.send(message("before"))).kind is Outcome.SENT
        smsc.drop()
        await eventually(lambda: not channel.binds[0].bound, "the drop noticed")
        after = await channel.send_batch([message(f"after {i}") for i in range(5)])
        assert all(r.kind is Outcome.SENT for r in after)
        assert (await channel.status()).state == "CONNECTED"
    assert [status for _, status in smsc.bind_attempts] == [0, 0]
    assert len(smsc.accepted()) == 6


async def test_drop_with_a_submit_in_flight_is_retryable(smsc: FakeSmsc) -> None:
    smsc.hold_responses = True
    async with running(make_channel(smsc)) as channel:
        sending = asyncio.create_task(channel.send(message("code 1234")))
        await eventually(lambda: smsc.outstanding == 1, "the submit arrived")
        smsc.drop()
        result = await sending
    assert result.kind is Outcome.RETRY
    assert result.error_code == "connection-lost"
    assert result.error_message is not None and "may have accepted" in result.error_message


async def test_no_bind_within_the_wait_defers(smsc: FakeSmsc) -> None:
    async with running(make_channel(smsc, bind_wait_seconds=0.2)) as channel:
        smsc.bind_status = 0x08
        smsc.drop()
        await eventually(lambda: not channel.binds[0].bound, "the drop noticed")
        result = await channel.send(message("hi"))
        status = await channel.status()
    assert result.kind is Outcome.DEFER
    assert result.error_code == "smpp-unbound"
    assert (status.connected, status.state) == (False, "OFFLINE")
    assert "ESME_RSYSERR" in status.detail


@pytest.mark.parametrize(("overrides", "status"), [
    ({"password": "wrong"}, "0x0000000E"), ({"system_id": "nobody"}, "0x0000000F")])
async def test_refused_credentials_pause_the_channel(smsc: FakeSmsc, overrides: dict[str, str],
                                                     status: str) -> None:
    async with running(make_channel(smsc, **overrides)) as channel:
        result = await channel.send(message("hi"))
        state = await channel.status()
    assert result.kind is Outcome.PAUSE_CHANNEL
    assert result.error_code == status
    assert state.state == "OFFLINE" and status in state.detail
    assert "wrong" not in state.detail and "wrong" not in (result.error_message or "")
    assert smsc.submit_count == 0


async def test_enquire_link_both_ways(smsc: FakeSmsc) -> None:
    async with running(make_channel(smsc, enquire_link_seconds=0.05)):
        await eventually(lambda: smsc.enquire_links >= 2, "enquire_link while idle")
        assert await smsc.enquire_link() == 0


async def test_unanswered_enquire_link_rebinds(smsc: FakeSmsc) -> None:
    smsc.answer_enquire_link = False
    async with running(make_channel(smsc, enquire_link_seconds=0.05,
                                    response_timeout_seconds=0.1)) as channel:
        await eventually(lambda: len(smsc.bind_attempts) >= 2, "a second bind")
        smsc.answer_enquire_link = True
        await eventually(lambda: bool(smsc.bound_sessions), "bound again")
        assert (await channel.send(message("hi"))).kind is Outcome.SENT


async def test_stop_unbinds_every_bind(smsc: FakeSmsc) -> None:
    channel = make_channel(smsc, binds=2)
    async with running(channel):
        await eventually(lambda: len(smsc.bound_sessions) == 2, "two binds")
    assert smsc.unbinds == 2
    await eventually(lambda: not smsc.sessions, "connections closed")


# -- inbound ----------------------------------------------------------------------------------


async def test_mobile_originated_sms_is_reported_then_acknowledged(smsc: FakeSmsc) -> None:
    channel = make_channel(smsc)
    sink = sink_of(channel)
    async with running(channel):
        assert await smsc.send_mo("919800000005", "STOP") == 0
        assert await smsc.send_mo("919800000005", "Стоп €") == 0
    first, second = sink.inbound_seen
    assert (first.number, first.text, first.type, first.channel_id) == (
        "919800000005", "STOP", 1, CHANNEL_ID)
    assert second.text == "Стоп €"
    assert first.provider_id.startswith("mo:919800000005:")
    assert first.provider_id != second.provider_id


async def test_a_users_repeated_reply_is_heard_each_time(smsc: FakeSmsc) -> None:
    """The same text from the same number, answered each time, is a new message each time
    (a user answering YES twice), not a repeat to drop."""
    channel = make_channel(smsc)
    sink = sink_of(channel)
    async with running(channel):
        assert await smsc.send_mo("919800000005", "YES") == 0
        assert await smsc.send_mo("919800000005", "YES") == 0
        assert await smsc.send_mo("919800000005", "YES") == 0
    assert [m.text for m in sink.inbound_seen] == ["YES"] * 3
    assert len({m.provider_id for m in sink.inbound_seen}) == 3


async def test_redelivery_after_a_lost_answer_is_recorded_once(smsc: FakeSmsc) -> None:
    """The SMSC never got our deliver_sm_resp (the link died with it) and delivers the same
    deliver_sm again on the next bind: recorded under the first one's id (the store keeps
    one); a later YES, once the SMSC has shown it read our answer, is new."""
    channel = make_channel(smsc)
    sink = sink_of(channel)
    async with running(channel):
        assert await smsc.send_mo("919800000005", "YES", lose_ack=True) == 0
        # Our answer to the re-delivery is confirmed by the enquire_link that follows it.
        await eventually(lambda: smsc.enquire_links >= 1, "an enquire_link to confirm")
        await eventually(lambda: not channel.binds[0]._answered, "the answer confirmed")
        assert await smsc.send_mo("919800000005", "YES") == 0
        await eventually(lambda: not channel.binds[0]._answered, "that answer confirmed")
        smsc.drop()   # the session ends, but the SMSC surely had our answers
        await eventually(lambda: len(smsc.bind_attempts) == 3 and bool(smsc.bound_sessions),
                         "bound again")
        assert await smsc.send_mo("919800000005", "YES") == 0
    first, again, later, last = sink.inbound_seen
    assert first.provider_id == again.provider_id
    assert len({again.provider_id, later.provider_id, last.provider_id}) == 3
    assert [s for _, s in smsc.bind_attempts] == [0, 0, 0]


# -- users' messages in parts ----------------------------------------------------------------

LONG_GSM = ("Yes, please deliver the parcel to the back door; the front gate is locked "
            "until six. Call me at 98765 43210 if anything is unclear. Thanks {a lot}!")
LONG_UCS2 = "Да, доставьте посылку к задней двери 😀, ворота закрыты до шести. Спасибо!"


@pytest.mark.parametrize("scheme", ["udh8", "udh16", "sar"])
@pytest.mark.parametrize("text", [LONG_GSM, LONG_UCS2], ids=["gsm7", "ucs2"])
async def test_multipart_mo_is_reassembled_before_it_is_forwarded(
        smsc: FakeSmsc, scheme: str, text: str) -> None:
    channel = make_channel(smsc)
    sink = sink_of(channel)
    async with running(channel):
        # Out of order, one part twice (the SMSC delivering it again), cut so that the
        # parts split a GSM escape / a UTF-16 surrogate pair only when joined as octets.
        assert await smsc.send_mo_parts("919800000005", text, 3, scheme, reference=0x1A2,
                                        order=[2, 1, 2, 3]) == [0, 0, 0, 0]
        assert await smsc.send_mo("919800000005", "and one more") == 0
    [message, other] = sink.inbound_seen
    assert (message.number, message.text, message.type) == ("919800000005", text, 1)
    assert "incomplete" not in message.raw and message.raw["parts_total"] == 3
    assert other.text == "and one more"
    assert sink.parts == {}


async def test_a_part_is_acknowledged_only_once_stored(smsc: FakeSmsc) -> None:
    channel = make_channel(smsc)
    sink = sink_of(channel)
    sink.gate = asyncio.Event()
    async with running(channel):
        sending = asyncio.create_task(smsc.send_mo_parts("919800000005", LONG_GSM, 2,
                                                         order=[1]))
        await eventually(lambda: sink.calls == 1, "the part handed to the sink")
        await asyncio.sleep(0.05)
        assert not sending.done() and smsc.mo_acks == []
        sink.gate.set()
        assert await sending == [0]
        assert len(sink.parts) == 1 and sink.inbound_seen == []


async def test_incomplete_message_is_forwarded_after_its_wait(smsc: FakeSmsc) -> None:
    channel = make_channel(smsc, concat_timeout_seconds=0.2)
    sink = sink_of(channel)
    async with running(channel):
        assert await smsc.send_mo_parts("919800000005", LONG_GSM, 3, "udh8",
                                        order=[1, 3]) == [0, 0]
        await eventually(lambda: bool(sink.inbound_seen), "the incomplete message forwarded")
    [message] = sink.inbound_seen
    assert message.raw["incomplete"] is True
    assert (message.raw["parts_received"], message.raw["parts_total"]) == ([1, 3], 3)
    octets = smpp_pdu.encode_gsm7(LONG_GSM)
    third = -(-len(octets) // 3)  # the fake's cut
    assert message.text == smpp_pdu.decode_gsm7(octets[:third] + octets[2 * third:])
    assert message.text.startswith(LONG_GSM[:40]) and message.text.endswith("{a lot}!")
    assert sink.parts == {}


async def test_parts_join_across_a_restart_and_incomplete_ones_say_so(
        store: Store, make: Any, query: Any) -> None:
    """Part 1 reaches one process, part 2 the next (after a restart): they join in the
    store into one message; a message still missing parts after its wait reaches the
    incoming webhook marked incomplete."""
    project, _, _ = await make.project()
    await store.set_incoming_webhook(project.id, "http://127.0.0.1:9/in")
    async with FakeSmsc() as smsc:
        spec = await make.channel(project.id, application=3, kind="smpp", price="0.01",
                                  config=config_for(smsc, concat_timeout_seconds=30))
        for order in ([1], [2]):
            async with dispatching(store) as d:
                await eventually(lambda d=d: spec.id in d.runners
                                 and bool(smsc.bound_sessions), "bound")
                assert await smsc.send_mo_parts("919800000007", LONG_UCS2, 2,
                                                order=order) == [0]
            await eventually(lambda: not smsc.bound_sessions, "unbound")
        assert query("SELECT number, body FROM inbound_messages") == [
            ("919800000007", LONG_UCS2)]
        assert query("SELECT count(*) FROM inbound_parts") == [(0,)]
        async with dispatching(store) as d:
            await eventually(lambda: spec.id in d.runners and bool(smsc.bound_sessions),
                             "bound")
            assert await smsc.send_mo_parts("919800000008", LONG_GSM, 3, reference=9,
                                            order=[2]) == [0]
            channel = smpp_channel_of(d, spec.id)
            assert await channel.sweep_parts(time.time() + 60) == 1
    assert query("SELECT count(*) FROM inbound_parts") == [(0,)]
    items = {i.message.number: inbound_payload(i.message) for i in await store.claim_inbound(
        10, time.time(), 30)}
    assert "incomplete" not in items["919800000007"]
    assert items["919800000007"]["message_in_raw"] == LONG_UCS2
    late = items["919800000008"]
    assert (late["incomplete"], late["parts_received"], late["parts_total"]) == (True, [2], 3)


# -- end to end ------------------------------------------------------------------------------


async def test_dispatcher_to_fake_smsc_and_receipts_back(store: Store, make: Any,
                                                         query: Any) -> None:
    """Queued through the store, sent by the dispatcher, receipts (naming ids in the other
    base, one before its submit_sm_resp) and an inbound SMS recorded by the store."""
    texts = {"919800000001": "Your code is 4821", "919800000002": "Bill " * 70,
             "919800000003": "Ваш счёт готов. " * 6, "919800000004": "Sorry"}
    async with FakeSmsc(receipt_id_other_base=True,
                        undeliverable={"919800000004"}) as smsc:
        project, _, _ = await make.project(credits="10")
        channel = await make.channel(project.id, application=3, kind="smpp", price="0.01",
                                     config=config_for(smsc))
        plan = plan_push(decode_push(json.dumps({"data": [
            {"number": n, "message": t} for n, t in texts.items()]})), channel, Limits())
        await store.accept_push(project.id, channel, plan, time.time(), None)
        dispatcher = Dispatcher(store, idle_poll=0.02, retry_policy=RetryPolicy(0.01))
        task = asyncio.create_task(dispatcher.run())
        try:
            deadline = time.monotonic() + 20
            while query("SELECT count(*) FROM messages WHERE state IN ('delivered',"
                        " 'failed', 'refunded')")[0][0] < len(texts):
                assert time.monotonic() < deadline, query("SELECT number, state FROM messages")
                await asyncio.sleep(0.02)
            assert await smsc.send_mo("919800000001", "STOP") == 0
        finally:
            dispatcher.stop()
            await asyncio.wait_for(task, 10)
        states = dict(query("SELECT number, state FROM messages"))
        assert states == {"919800000001": "delivered", "919800000002": "delivered",
                          "919800000003": "delivered", "919800000004": "failed"}
        assert [number for number in texts if smsc.texts_to(number) != [texts[number]]] == []
        parts = sum(count_segments(t).segments for t in texts.values())
        assert smsc.receipts_acked == len(smsc.submits) == parts == 7
        assert query("SELECT number, body FROM inbound_messages") == [("919800000001", "STOP")]
        assert smsc.unbinds == 1


# -- pure parts -------------------------------------------------------------------------------


def test_gsm_table_matches_the_segment_counter() -> None:
    assert set(smpp_pdu.GSM_BASIC_TABLE) - {"\x1b"} == GSM_BASIC
    assert set(smpp_pdu.GSM_EXTENSION_TABLE) == GSM_EXTENSION
    assert smpp_pdu.encode_gsm7("§") == b"\x5f"
    with pytest.raises(ValueError):
        smpp_pdu.encode_gsm7("`")
    every = "".join(sorted(GSM_BASIC | GSM_EXTENSION))
    assert smpp_pdu.decode_gsm7(smpp_pdu.encode_gsm7(every)) == every


def test_id_aliases() -> None:
    assert id_aliases("3A00001F", hex_ids=True) == [str(0x3A00001F)]
    assert id_aliases("3a00001f", hex_ids=False) == [str(0x3A00001F)]
    assert id_aliases("100000031", hex_ids=False) == ["5f5e11f", "5F5E11F"]
    assert id_aliases("12345", hex_ids=False) == ["3039"]
    assert id_aliases("12345", hex_ids=True) == [str(0x12345)]
    assert id_aliases("msg-7f3a", hex_ids=True) == []


def _receipt(text: str, tlvs: dict[int, bytes] | None = None) -> smpp_pdu.DeliverSm:
    return smpp_pdu.DeliverSm("919800000001", "PUSHGATE", 0x04, 0, text.encode(), tlvs or {})


@pytest.mark.parametrize(("text", "expected"), [
    ("id:0123456789 sub:001 dlvrd:001 submit date:2405171230 done date:2405171231 "
     "stat:DELIVRD err:000 text:Hello stat:UNDELIV", ("0123456789", "DELIVRD", "000")),
    ("id:ab12 sub:1 dlvrd:0 submit date:240517123059 done date:240517123100 stat:UNDELIV "
     "err:1 Text:", ("ab12", "UNDELIV", "1")),
    ("ID:77 SUB:001 DLVRD:000 SUBMIT DATE:2405171230 DONE DATE:2405171231 STAT:EXPIRED "
     "ERR:0000000 TEXT:x", ("77", "EXPIRED", "0000000")),
    ("id:5 stat:DELIVERED err:0", ("5", "DELIVRD", "0")),
])
def test_receipt_text_forms(text: str, expected: tuple[str, str, str]) -> None:
    receipt = read_receipt(_receipt(text))
    assert (receipt.message_id, receipt.stat, receipt.err) == expected


def test_receipt_tlvs_win_over_text() -> None:
    receipt = read_receipt(_receipt("id:999 stat:DELIVRD err:000", {
        smpp_pdu.TLV_RECEIPTED_MESSAGE_ID: b"3E7\0", smpp_pdu.TLV_MESSAGE_STATE: b"\x08"}))
    assert (receipt.message_id, receipt.stat) == ("3E7", "REJECTD")
    update = receipt_update(receipt, CHANNEL_ID, 1.0)
    assert update is not None and (update.state, update.error_code) == (State.FAILED, "REJECTD")


@pytest.mark.parametrize("stat", ["ENROUTE", "ACCEPTD"])
def test_intermediate_receipts_are_ignored(stat: str) -> None:
    assert receipt_update(read_receipt(_receipt(f"id:1 stat:{stat} err:0")), 1, 1.0) is None


@pytest.mark.parametrize(("config", "key"), [
    ({"system_id": "x"}, "host"),
    ({"host": "h"}, "system_id"),
    ({"host": "h", "system_id": "x", "window": 0}, "window"),
    ({"host": "h", "system_id": "x", "binds": 1.5}, "binds"),
    ({"host": "h", "system_id": "x", "windows": 5}, "windows"),
    ({"host": "h", "system_id": "x", "source_addr": "ALONGSENDERNAME"}, "source_addr"),
])
def test_config_errors_name_the_key(config: dict[str, Any], key: str) -> None:
    with pytest.raises(ChannelConfigError, match=key):
        SmppChannel.validate_config(config)


def test_config_defaults() -> None:
    config = SmppChannel.validate_config({"host": "smsc.example", "system_id": "acme",
                                          "source_addr": "919800000000"})
    assert (config["port"], config["binds"], config["window"], config["dest_ton"],
            config["dest_npi"], config["source_ton"], config["source_npi"],
            config["registered_delivery"], config["enquire_link_seconds"]) == (
        2775, 1, 10, 1, 1, 1, 1, 1, 30.0)


# -- pacing, throttling and results as they come, through the dispatcher ---------------------


async def queue_texts(store: Store, make: Any, texts: list[tuple[str, str]],
                      **channel: Any) -> tuple[int, int]:
    """(project id, channel id) of a new SMPP channel with ``texts`` (number, text) queued."""
    project, _, _ = await make.project(credits="100")
    spec = await make.channel(project.id, application=3, kind="smpp", price="0.01", **channel)
    await queue_more(store, spec, project.id, texts)
    return project.id, spec.id


async def queue_more(store: Store, spec: ChannelSpec, project_id: int,
                     texts: list[tuple[str, str]]) -> None:
    plan = plan_push(decode_push(json.dumps({"data": [
        {"number": n, "message": t} for n, t in texts]})), spec, Limits())
    await store.accept_push(project_id, spec, plan, time.time(), None)


@contextlib.asynccontextmanager
async def dispatching(store: Store, **options: Any) -> AsyncIterator[Dispatcher]:
    options = {"retry_policy": RetryPolicy(base_seconds=0.01), **options}
    dispatcher = Dispatcher(store, idle_poll=0.02, **options)
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        dispatcher.stop()
        await asyncio.wait_for(task, 10)


def smpp_channel_of(dispatcher: Dispatcher, channel_id: int) -> SmppChannel:
    channel = dispatcher.runners[channel_id][0].channel
    assert isinstance(channel, SmppChannel)
    return channel


async def test_throttled_burst_pauses_once_and_costs_no_attempt(store: Store, make: Any,
                                                              query: Any) -> None:
    """40 messages through an SMSC that takes 12 a second and answers 0x58 beyond: one burst
    answered with 0x58 gives one pause (the answers to submits already in flight do not double
    it), the pause after a success starts again from the base, and throttling is not an
    attempt: with a single attempt allowed, nothing is refunded."""
    numbers = [f"9198000{i:05d}" for i in range(40)]
    async with FakeSmsc(tps=12) as smsc:
        _, channel_id = await queue_texts(
            store, make, [(n, f"code {i}") for i, n in enumerate(numbers)],
            config=config_for(smsc, throttle_backoff_seconds=1.0))
        once = RetryPolicy(max_attempts=1, base_seconds=0.01)
        async with dispatching(store, retry_policy=once) as d:
            await eventually(lambda: channel_id in d.runners, "the runner started")
            channel = smpp_channel_of(d, channel_id)
            await eventually(lambda: query("SELECT count(*) FROM messages WHERE state NOT IN"
                                           " ('queued', 'sending')")[0][0] == 40,
                             "every message settled", limit=30)
            pauses = list(channel.binds[0].pauses)
        states = dict(query("SELECT state, count(*) FROM messages GROUP BY state"))
        assert states.get("refunded", 0) == 0, states
        assert sorted({s.destination_addr for s in smsc.accepted()}) == numbers
        assert any(s.status == 0x58 for s in smsc.submits)
        # Each burst past 12/s paused the bind once, for the base pause: 40 messages need at
        # most 3 such pauses after the first 12.
        assert pauses and set(pauses) == {1.0}, pauses
        assert len(pauses) <= 4, pauses


async def test_submits_never_exceed_the_channel_rate_in_any_second(store: Store, make: Any,
                                                                  query: Any) -> None:
    """A channel paced at 10/s: at the SMSC, no window of one second holds more than 10
    submit_sm, counting every part of multi-part texts, in the first second and in the first
    second after an idle spell."""
    first = [(f"9198100{i:05d}", f"Hello {i}" if i % 3 else "Bill " * 40) for i in range(24)]
    later = [(f"9198200{i:05d}", f"Again {i}") for i in range(12)]
    async with FakeSmsc() as smsc:
        project_id, channel_id = await queue_texts(store, make, first,
                                                   config=config_for(smsc), rate_per_second=10)
        spec = next(s for s in await store.list_channels() if s.id == channel_id)
        parts = sum(count_segments(t).segments for _, t in first)
        async with dispatching(store):
            await eventually(lambda: smsc.accepted_count == parts, "the first texts sent",
                             limit=30)
            await asyncio.sleep(1.5)   # idle: a naive bucket would have refilled a burst
            await queue_more(store, spec, project_id, later)
            await eventually(lambda: smsc.accepted_count == parts + len(later),
                             "the later texts sent", limit=30)
        assert smsc.most_submits_in_a_window(1.0) <= 10
        assert all(s.status == 0 for s in smsc.submits)


async def test_send_outcomes_are_recorded_as_the_smsc_answers(store: Store, make: Any,
                                                             query: Any) -> None:
    """An unpaced batch of 30 behind an SMSC that answers slowly: the messages it has
    answered are `submitted` in the store while the rest of the batch still waits."""
    answered = "SELECT count(*) FROM messages WHERE state IN ('submitted', 'delivered')"
    async with FakeSmsc() as smsc:
        smsc.hold_responses = True
        _, channel_id = await queue_texts(
            store, make, [(f"9198300{i:05d}", f"note {i}") for i in range(30)],
            config=config_for(smsc, window=10))
        async with dispatching(store):
            await eventually(lambda: smsc.outstanding == 10, "a window of submits")
            smsc.release()
            await eventually(lambda: smsc.outstanding == 10 and smsc.accepted_count == 20,
                             "the next window")
            try:
                await eventually(lambda: query(answered)[0][0] >= 10,
                                 "the answered submits recorded", limit=3)
                assert query("SELECT count(*) FROM messages WHERE state = 'sending'")[0][0] > 0
            finally:
                smsc.hold_responses = False
                smsc.release()
            await eventually(lambda: query(answered)[0][0] == 30, "all recorded")
