"""A fake SMSC: an SMPP v3.4 server on 127.0.0.1 for the SMPP connector's tests and benchmark.

It answers as channel-wire-formats.md §2 describes: bind_transceiver checked against
system_id/password (0x0F / 0x0E, 0x05 when bound twice, or any status forced with
``bind_status``); enquire_link answered; submit_sm only when bound (else 0x04), with message ids
in hex or decimal, a window of outstanding submits beyond which it answers ESME_RTHROTTLED, and
no body on error answers; delivery receipts as deliver_sm (esm_class 0x04) with the Appendix B
text and the receipted_message_id / message_state / network_error_code TLVs, redelivered when the
ESME answers with an error; mobile-originated deliver_sm (esm_class 0); unbind; generic_nack for
unknown commands.

Knobs for tests: receipt delay, UNDELIV for chosen numbers, the receipt id in the other base,
receipts without TLVs or with upper-case keys, a receipt sent (and acknowledged) before the
submit_sm_resp, receipts on another bind, responses held back or delayed, 0x58 every N submits,
a TPS limit (0x58 to a submit beyond ``tps`` accepted in the last second, as SMSCs enforce an
account's rate), statuses queued for the next submits or per number, dropped connections, MO
messages (whole, or in parts with an 8-bit or 16-bit UDH reference or SAR TLVs) and an MO whose
deliver_sm_resp is lost (the connection drops as it arrives; the same deliver_sm comes again on
the next bind).
Everything it received is recorded (``submits``, with UDH and decoded text) so tests can check
reassembly and count duplicates.

submit_sm and deliver_sm go through smpp34's codec (a Rust implementation, independent of the
connector's ``struct`` codec, so each checks the other); the small fixed PDUs are packed here.

Run standalone (the benchmark does): ``python -m tests.fakes.smsc [--id-base 10] [--no-receipts]``
prints ``port N`` and serves until its standard input closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import struct
import sys
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import smpp34

HEADER = struct.Struct(">IIII")

BIND_RECEIVER, BIND_TRANSMITTER, BIND_TRANSCEIVER = 0x01, 0x02, 0x09
SUBMIT_SM, DELIVER_SM, UNBIND, ENQUIRE_LINK = 0x04, 0x05, 0x06, 0x15
GENERIC_NACK = 0x80000000
RESP = 0x80000000

ESME_ROK = 0x00
ESME_RINVMSGLEN = 0x01
ESME_RINVCMDID = 0x03
ESME_RINVBNDSTS = 0x04
ESME_RALYBND = 0x05
ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F
ESME_RTHROTTLED = 0x58

TLV_SC_INTERFACE_VERSION = 0x0210
TLV_RECEIPTED_MESSAGE_ID = 0x001E
TLV_MESSAGE_STATE = 0x0427
TLV_NETWORK_ERROR_CODE = 0x0423
TLV_SAR_MSG_REF_NUM = 0x020C
TLV_SAR_TOTAL_SEGMENTS = 0x020E
TLV_SAR_SEGMENT_SEQNUM = 0x020F
MESSAGE_STATE = {"DELIVRD": 2, "EXPIRED": 3, "DELETED": 4, "UNDELIV": 5, "ACCEPTD": 6,
                 "UNKNOWN": 7, "REJECTD": 8, "ENROUTE": 1}

# GSM 03.38 default alphabet by code, as printed in the reference (0x1B: escape).
GSM_ROWS = (
    "@£$¥èéùìòÇ\nØø\rÅå", "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ", " !\"#¤%&'()*+,-./", "0123456789:;<=>?",
    "¡ABCDEFGHIJKLMNO", "PQRSTUVWXYZÄÖÑÜ§", "¿abcdefghijklmno", "pqrstuvwxyzäöñüà",
)
GSM_BASIC = "".join(GSM_ROWS)
GSM_EXTENSION = {0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\", 0x3C: "[",
                 0x3D: "~", 0x3E: "]", 0x40: "|", 0x65: "€"}


def gsm_decode(data: bytes) -> str:
    """Unpacked GSM 03.38 octets (ESC + code for the extension table) to text."""
    out, escaped = [], False
    for octet in data:
        if escaped:
            out.append(GSM_EXTENSION[octet])
            escaped = False
        elif octet == 0x1B:
            escaped = True
        else:
            out.append(GSM_BASIC[octet])
    if escaped:
        raise ValueError("short_message ends inside an escape pair")
    return "".join(out)


def gsm_encode(text: str) -> bytes | None:
    """Unpacked GSM 03.38 octets, or None when the text needs UCS-2."""
    reverse = {c: i for i, c in enumerate(GSM_BASIC) if i != 0x1B}
    extension = {c: code for code, c in GSM_EXTENSION.items()}
    out = bytearray()
    for char in text:
        if char in reverse:
            out.append(reverse[char])
        elif char in extension:
            out += bytes((0x1B, extension[char]))
        else:
            return None
    return bytes(out)


def c_string(value: str) -> bytes:
    return value.encode("ascii") + b"\0"


@dataclass
class Submit:
    """One submit_sm as received, with its concatenation header and text decoded."""

    session: int
    sequence: int
    source_addr: str
    source_addr_ton: int
    source_addr_npi: int
    destination_addr: str
    dest_addr_ton: int
    dest_addr_npi: int
    esm_class: int
    data_coding: int
    registered_delivery: int
    short_message: bytes
    udh: tuple[int, int, int] | None  # (reference, total, sequence) of a concatenated part
    text: str
    received_at: float
    status: int = ESME_ROK
    message_id: str | None = None
    answered_at: float | None = None


@dataclass
class ReceiptSent:
    message_id: str  # as the receipt names it
    stat: str
    session: int
    ack_status: int | None = None


@dataclass
class _HeldResponse:
    session: _SmscSession
    submit: Submit


def _udh_of(short_message: bytes) -> tuple[tuple[int, int, int] | None, bytes]:
    """The concatenation IE of a UDH (8- or 16-bit reference) and the user data after it."""
    length = short_message[0]
    header, rest = short_message[1:1 + length], short_message[1 + length:]
    pos = 0
    while pos + 2 <= len(header):
        iei, size = header[pos], header[pos + 1]
        value = header[pos + 2:pos + 2 + size]
        if iei == 0x00 and size == 3:
            return (value[0], value[1], value[2]), rest
        if iei == 0x08 and size == 4:
            return ((value[0] << 8) | value[1], value[2], value[3]), rest
        pos += 2 + size
    return None, rest


class _SmscSession(asyncio.Protocol):
    def __init__(self, smsc: FakeSmsc, number: int) -> None:
        self.smsc = smsc
        self.number = number
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.bound = False
        self.system_id = ""
        self.outstanding = 0
        self.sequence = 0
        self.waiting: dict[int, asyncio.Future[int]] = {}
        self.out: list[bytes] = []
        self.flush_handle: asyncio.Handle | None = None

    # -- plumbing -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are stream transports without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        self.smsc.sessions.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        with contextlib.suppress(ValueError):
            self.smsc.sessions.remove(self)
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(ConnectionError("ESME gone"))
        self.waiting.clear()

    def write(self, data: bytes) -> None:
        self.out.append(data)
        if self.flush_handle is None:
            self.flush_handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.flush_handle = None
        if self.out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def respond(self, command_id: int, status: int, sequence: int, body: bytes = b"") -> None:
        self.write(HEADER.pack(16 + len(body), command_id | RESP, status, sequence) + body)

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence

    async def request(self, data: bytes, sequence: int) -> int:
        """Send a request PDU and wait for the ESME's answer: its command_status."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiting[sequence] = future
        self.write(data)
        try:
            async with asyncio.timeout(self.smsc.esme_response_timeout):
                return await future
        finally:
            self.waiting.pop(sequence, None)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 16:
            length, command_id, status, sequence = HEADER.unpack_from(self.buffer)
            if len(self.buffer) < length:
                break
            raw = bytes(self.buffer[:length])
            del self.buffer[:length]
            self.smsc.handle(self, raw, command_id, status, sequence)


class FakeSmsc:
    """``async with FakeSmsc(...) as smsc:`` serves on ``smsc.port``; the knobs are attributes
    that tests may change at any time."""

    def __init__(self, *, system_id: str = "pushgate", password: str = "secret",
                 smsc_system_id: str = "FAKESMSC", id_base: int = 16, id_start: int | None = None,
                 receipts: bool = True, receipt_delay: float = 0.0,
                 undeliverable: Iterable[str] = (), receipt_id_other_base: bool = False,
                 receipt_tlvs: bool = True, receipt_upper_keys: bool = False,
                 receipt_before_resp: bool = False, receipt_other_bind: bool = False,
                 resp_delay: float = 0.0, window: int = 100, throttle_every: int = 0,
                 tps: int = 0, record: bool = True) -> None:
        self.system_id = system_id
        self.password = password
        self.smsc_system_id = smsc_system_id
        self.id_base = id_base
        self._next_id = id_start if id_start is not None else (
            0x3A000000 if id_base == 16 else 100_000_000)
        self.receipts = receipts
        self.receipt_delay = receipt_delay
        self.undeliverable = set(undeliverable)
        self.receipt_id_other_base = receipt_id_other_base
        self.receipt_tlvs = receipt_tlvs
        self.receipt_upper_keys = receipt_upper_keys
        self.receipt_before_resp = receipt_before_resp
        self.receipt_other_bind = receipt_other_bind
        self.resp_delay = resp_delay
        self.window = window
        self.throttle_every = throttle_every
        # At most this many submits accepted in any second (0: no limit); the next is 0x58.
        self.tps = tps
        self._accepted_at: deque[float] = deque()
        self.record = record
        # Forced outcomes: a bind status for every bind, statuses for the next submits (in
        # order), a status per destination number.
        self.bind_status = ESME_ROK
        self.next_statuses: list[int] = []
        self.number_statuses: dict[str, int] = {}
        self.answer_enquire_link = True
        self.hold_responses = False
        self.esme_response_timeout = 5.0
        self.receipt_retry_delay = 0.05
        # What happened.
        self.sessions: list[_SmscSession] = []
        self.submits: list[Submit] = []
        self.submit_count = 0
        self.accepted_count = 0
        self.bind_attempts: list[tuple[str, int]] = []  # (system_id, status answered)
        self.enquire_links = 0
        self.unbinds = 0
        self.peak_outstanding = 0
        self.receipts_sent: list[ReceiptSent] = []
        self.receipts_acked = 0
        self.mo_acks: list[int] = []
        self.errors: list[str] = []
        self._held: list[_HeldResponse] = []
        self._undelivered_receipts: list[tuple[Submit, int]] = []
        self._session_numbers = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, port: int = 0) -> int:
        def session() -> _SmscSession:
            self._session_numbers += 1
            return _SmscSession(self, self._session_numbers)

        self._server = await asyncio.get_running_loop().create_server(
            session, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for s in list(self.sessions):
            if s.transport is not None:
                s.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> FakeSmsc:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- controls -------------------------------------------------------------------------------

    def drop(self) -> None:
        """Cut every connection at once (no unbind), as a network failure would."""
        for s in list(self.sessions):
            if s.transport is not None:
                s.transport.abort()

    def release(self) -> None:
        """Answer the held-back submit_sm (``hold_responses``)."""
        held, self._held = self._held, []
        for item in held:
            self._answer_submit(item.session, item.submit)

    @property
    def bound_sessions(self) -> list[_SmscSession]:
        return [s for s in self.sessions if s.bound]

    @property
    def outstanding(self) -> int:
        return sum(s.outstanding for s in self.sessions)

    async def send_mo(self, source: str, text: str, destination: str = "PUSHGATE",
                      lose_ack: bool = False) -> int:
        """A mobile-originated SMS to the first bound ESME; returns its deliver_sm_resp status.
        ``lose_ack``: the ESME's answer is lost (the connection drops as it arrives) and the
        same deliver_sm comes again on the next bind; returns the status of that delivery."""
        gsm = gsm_encode(text)
        data, coding = (gsm, 0) if gsm is not None else (text.encode("utf-16-be"), 8)
        return await self.send_mo_pdu(source, data, coding, destination, lose_ack=lose_ack)

    async def send_mo_parts(self, source: str, text: str, parts: int, scheme: str = "udh8",
                            reference: int = 0x2A, destination: str = "PUSHGATE",
                            order: Sequence[int] | None = None) -> list[int]:
        """``text`` as a concatenated MO of ``parts`` parts, as a handset sends it: a UDH with
        an 8-bit (``udh8``) or 16-bit (``udh16``) reference, or SAR TLVs (``sar``). ``order``:
        the part numbers (1-based) to send, in that order (default all, in order); returns
        each deliver_sm_resp status."""
        gsm = gsm_encode(text)
        data, coding = (gsm, 0) if gsm is not None else (text.encode("utf-16-be"), 8)
        size = -(-len(data) // parts)
        if coding == 8 and size % 2:
            size += 1  # UCS-2 parts hold whole characters
        chunks = [data[i * size:(i + 1) * size] for i in range(parts)]
        statuses = []
        for seq in order or range(1, parts + 1):
            chunk = chunks[seq - 1]
            if scheme == "sar":
                tlvs = [(TLV_SAR_MSG_REF_NUM, struct.pack(">H", reference)),
                        (TLV_SAR_TOTAL_SEGMENTS, bytes((parts,))),
                        (TLV_SAR_SEGMENT_SEQNUM, bytes((seq,)))]
                statuses.append(await self.send_mo_pdu(source, chunk, coding, destination,
                                                       tlvs=tlvs))
                continue
            if scheme == "udh8":
                udh = bytes((5, 0x00, 3, reference & 0xFF, parts, seq))
            else:
                udh = bytes((6, 0x08, 4, reference >> 8, reference & 0xFF, parts, seq))
            statuses.append(await self.send_mo_pdu(source, udh + chunk, coding, destination,
                                                   esm_class=0x40))
        return statuses

    async def send_mo_pdu(self, source: str, short_message: bytes, data_coding: int,
                          destination: str = "PUSHGATE", esm_class: int = 0,
                          tlvs: Sequence[tuple[int, bytes]] = (), lose_ack: bool = False) -> int:
        """One MO deliver_sm to the first bound ESME; its deliver_sm_resp status."""
        def encode(sequence: int) -> bytes:
            return smpp34.DeliverSm(
                source, destination, short_message, source_addr_ton=1, source_addr_npi=1,
                esm_class=esm_class, data_coding=data_coding,
                tlvs=[smpp34.Tlv(tag, value) for tag, value in tlvs],
                sequence_number=sequence).encode()

        session = self.bound_sessions[0]
        sequence = session.next_sequence()
        status = await session.request(encode(sequence), sequence)
        if lose_ack:
            # The answer never reached us: the link dies, and the SMSC, which keeps what it
            # could not hand over, delivers the same message again once bound anew.
            if session.transport is not None:
                session.transport.abort()
            deadline = time.monotonic() + 5
            while not [s for s in self.bound_sessions if s is not session]:
                if time.monotonic() > deadline:
                    raise TimeoutError("the ESME did not bind again")
                await asyncio.sleep(0.005)
            session = [s for s in self.bound_sessions if s is not session][0]
            sequence = session.next_sequence()
            status = await session.request(encode(sequence), sequence)
        self.mo_acks.append(status)
        return status

    async def enquire_link(self) -> int:
        """An enquire_link from the SMSC's side; returns the ESME's answer status."""
        session = self.bound_sessions[0]
        sequence = session.next_sequence()
        return await session.request(HEADER.pack(16, ENQUIRE_LINK, 0, sequence), sequence)

    # -- observations ---------------------------------------------------------------------------

    def accepted(self, number: str | None = None) -> list[Submit]:
        return [s for s in self.submits if s.status == ESME_ROK and s.message_id is not None
                and (number is None or s.destination_addr == number)]

    def texts_to(self, number: str) -> list[str]:
        """Whole texts handed over for ``number``: parts reassembled by UDH reference, in the
        order they became complete."""
        texts: list[str] = []
        partial: dict[tuple[int, int], dict[int, str]] = {}
        for submit in self.accepted(number):
            if submit.udh is None:
                texts.append(submit.text)
                continue
            ref, total, seq = submit.udh
            parts = partial.setdefault((ref, total), {})
            parts[seq] = submit.text
            if len(parts) == total:
                texts.append("".join(parts[i] for i in range(1, total + 1)))
                del partial[(ref, total)]
        return texts

    def most_submits_in_a_window(self, seconds: float = 1.0) -> int:
        """The most submit_sm received (accepted or not) in any window of ``seconds``, as the
        SMSC counts an account's rate: every window, not only whole seconds."""
        times = sorted(s.received_at for s in self.submits)
        most, first = 0, 0
        for last, at in enumerate(times):
            while at - times[first] >= seconds:
                first += 1
            most = max(most, last - first + 1)
        return most

    def duplicate_parts(self) -> int:
        """Accepted submits that repeat one already accepted (same number, UDH and content)."""
        seen = Counter((s.destination_addr, s.udh, s.short_message) for s in self.accepted())
        return sum(count - 1 for count in seen.values())

    # -- protocol -------------------------------------------------------------------------------

    def handle(self, session: _SmscSession, raw: bytes, command_id: int, status: int,
               sequence: int) -> None:
        if command_id & RESP:
            future = session.waiting.get(sequence)
            if future is not None and not future.done():
                future.set_result(status)
            return
        if command_id in (BIND_TRANSCEIVER, BIND_TRANSMITTER, BIND_RECEIVER):
            self._bind(session, command_id, raw, sequence)
        elif command_id == SUBMIT_SM:
            self._submit(session, raw, sequence)
        elif command_id == ENQUIRE_LINK:
            self.enquire_links += 1
            if self.answer_enquire_link:
                session.respond(ENQUIRE_LINK, ESME_ROK, sequence)
        elif command_id == UNBIND:
            self.unbinds += 1
            session.bound = False
            session.respond(UNBIND, ESME_ROK, sequence)
            session.flush()
            if session.transport is not None:
                session.transport.close()
        else:
            session.write(HEADER.pack(16, GENERIC_NACK, ESME_RINVCMDID, sequence))

    def _bind(self, session: _SmscSession, command_id: int, raw: bytes, sequence: int) -> None:
        fields = raw[16:].split(b"\0", 3)
        system_id = fields[0].decode("ascii", "replace")
        password = fields[1].decode("ascii", "replace")
        if session.bound:
            status = ESME_RALYBND
        elif self.bind_status:
            status = self.bind_status
        elif system_id != self.system_id:
            status = ESME_RINVSYSID
        elif password != self.password:
            status = ESME_RINVPASWD
        else:
            status = ESME_ROK
        self.bind_attempts.append((system_id, status))
        if status != ESME_ROK:
            session.respond(command_id, status, sequence)
            return
        session.bound = True
        session.system_id = system_id
        body = c_string(self.smsc_system_id) + struct.pack(">HHB", TLV_SC_INTERFACE_VERSION, 1,
                                                           0x34)
        session.respond(command_id, ESME_ROK, sequence, body)
        # Store and forward: receipts that found no ESME bound go out now.
        waiting, self._undelivered_receipts = self._undelivered_receipts, []
        for submit, _attempt in waiting:
            self._spawn(self._send_receipt(submit))

    def _submit(self, session: _SmscSession, raw: bytes, sequence: int) -> None:
        if not session.bound:
            session.respond(SUBMIT_SM, ESME_RINVBNDSTS, sequence)
            return
        try:
            pdu = smpp34.decode(raw)
            assert isinstance(pdu, smpp34.SubmitSm)
            data = pdu.short_message
            udh = None
            if pdu.esm_class & 0x40:
                udh, data = _udh_of(data)
            if pdu.data_coding == 0:
                text = gsm_decode(data)
            elif pdu.data_coding == 8:
                text = data.decode("utf-16-be")
            else:
                text = data.decode("latin-1")
        except (smpp34.SmppError, AssertionError, ValueError, KeyError, IndexError) as exc:
            # Tests assert that this stays empty: the connector sent something unreadable.
            self.errors.append(f"submit_sm {raw.hex()}: {exc!r}")
            session.respond(SUBMIT_SM, ESME_RINVMSGLEN, sequence)
            return
        submit = Submit(
            session.number, sequence, pdu.source_addr, pdu.source_addr_ton, pdu.source_addr_npi,
            pdu.destination_addr, pdu.dest_addr_ton, pdu.dest_addr_npi, pdu.esm_class,
            pdu.data_coding, pdu.registered_delivery, pdu.short_message, udh, text,
            time.monotonic())
        if self.record:
            self.submits.append(submit)
        self.submit_count += 1
        session.outstanding += 1
        self.peak_outstanding = max(self.peak_outstanding, session.outstanding)
        if self.number_statuses.get(pdu.destination_addr):
            submit.status = self.number_statuses[pdu.destination_addr]
        elif self.next_statuses:
            submit.status = self.next_statuses.pop(0)
        elif (self.throttle_every and self.submit_count % self.throttle_every == 0
              or session.outstanding > self.window  # a real SMSC's window is enforced so
              or self._over_tps(submit.received_at)):
            submit.status = ESME_RTHROTTLED
        if submit.status != ESME_ROK:
            self._answer_submit(session, submit)  # an error answer carries no body
            return
        submit.message_id = self._new_id()
        self.accepted_count += 1
        if self.tps:
            self._accepted_at.append(submit.received_at)
        if self.receipt_before_resp:
            self._spawn(self._receipt_then_answer(session, submit))
        elif self.hold_responses:
            self._held.append(_HeldResponse(session, submit))
        elif self.resp_delay:
            asyncio.get_running_loop().call_later(self.resp_delay, self._answer_submit,
                                                  session, submit)
        else:
            self._answer_submit(session, submit)

    def _over_tps(self, now: float) -> bool:
        """Whether ``tps`` submits were accepted in the second before ``now``."""
        if not self.tps:
            return False
        while self._accepted_at and now - self._accepted_at[0] >= 1.0:
            self._accepted_at.popleft()
        return len(self._accepted_at) >= self.tps

    def _new_id(self) -> str:
        value = self._next_id
        self._next_id += 1
        return f"{value:08X}" if self.id_base == 16 else str(value)

    def _answer_submit(self, session: _SmscSession, submit: Submit) -> None:
        session.outstanding -= 1
        submit.answered_at = time.monotonic()
        if submit.status != ESME_ROK:
            session.respond(SUBMIT_SM, submit.status, submit.sequence)
            return
        assert submit.message_id is not None
        session.respond(SUBMIT_SM, ESME_ROK, submit.sequence, c_string(submit.message_id))
        if self.receipts and submit.registered_delivery & 0x03 and not self.receipt_before_resp:
            if self.receipt_delay:
                asyncio.get_running_loop().call_later(
                    self.receipt_delay, self._spawn, self._send_receipt(submit))
            else:
                self._spawn(self._send_receipt(submit))

    async def _receipt_then_answer(self, session: _SmscSession, submit: Submit) -> None:
        await self._send_receipt(submit, prefer=session)
        self._answer_submit(session, submit)

    def _receipt_id(self, message_id: str) -> str:
        if not self.receipt_id_other_base:
            return message_id
        if self.id_base == 16:
            return str(int(message_id, 16))
        return format(int(message_id), "X")

    async def _send_receipt(self, submit: Submit, prefer: _SmscSession | None = None) -> None:
        assert submit.message_id is not None
        sessions = self.bound_sessions
        if not sessions:
            self._undelivered_receipts.append((submit, 0))
            return
        own = [s for s in sessions if s.number == submit.session]
        others = [s for s in sessions if s.number != submit.session]
        if prefer is not None and prefer.bound:
            session = prefer
        elif self.receipt_other_bind and others:
            session = others[0]
        else:
            session = (own or sessions)[0]
        failed = submit.destination_addr in self.undeliverable
        stat, err = ("UNDELIV", "001") if failed else ("DELIVRD", "000")
        receipt_id = self._receipt_id(submit.message_id)
        stamp = time.strftime("%y%m%d%H%M%S" if self.receipt_upper_keys else "%y%m%d%H%M")
        keys = ("ID", "SUB", "DLVRD", "SUBMIT DATE", "DONE DATE", "STAT", "ERR", "Text") \
            if self.receipt_upper_keys else \
            ("id", "sub", "dlvrd", "submit date", "done date", "stat", "err", "text")
        values = (receipt_id, "001", "000" if failed else "001", stamp, stamp, stat, err,
                  submit.text[:20])
        text = " ".join(f"{k}:{v}" for k, v in zip(keys, values, strict=True))
        tlvs = []
        if self.receipt_tlvs:
            tlvs = [smpp34.Tlv(TLV_RECEIPTED_MESSAGE_ID, c_string(receipt_id)),
                    smpp34.Tlv(TLV_MESSAGE_STATE, bytes((MESSAGE_STATE[stat],)))]
            if failed:
                tlvs.append(smpp34.Tlv(TLV_NETWORK_ERROR_CODE, b"\x03\x00\x01"))
        sequence = session.next_sequence()
        pdu = smpp34.DeliverSm(
            submit.destination_addr, submit.source_addr,
            text.encode("latin-1", "replace"), source_addr_ton=submit.dest_addr_ton,
            source_addr_npi=submit.dest_addr_npi, dest_addr_ton=submit.source_addr_ton,
            dest_addr_npi=submit.source_addr_npi, esm_class=0x04, tlvs=tlvs,
            sequence_number=sequence).encode()
        record = ReceiptSent(receipt_id, stat, session.number)
        if self.record:
            self.receipts_sent.append(record)
        try:
            record.ack_status = await session.request(pdu, sequence)
        except (ConnectionError, TimeoutError):
            record.ack_status = None
        if record.ack_status == ESME_ROK:
            self.receipts_acked += 1
            return
        # Not acknowledged: a real SMSC keeps the receipt and delivers it again later.
        await asyncio.sleep(self.receipt_retry_delay)
        await self._send_receipt(submit)


async def _serve_until_stdin_closes(options: dict[str, Any]) -> None:
    async with FakeSmsc(**options) as smsc:
        print(f"port {smsc.port}", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)
        print(f"submits {smsc.submit_count} receipts_acked {smsc.receipts_acked}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake SMSC on 127.0.0.1 (tests, benchmark)")
    parser.add_argument("--id-base", type=int, default=16, choices=(10, 16))
    parser.add_argument("--no-receipts", action="store_true")
    parser.add_argument("--window", type=int, default=1000)
    args = parser.parse_args(argv)
    options: dict[str, Any] = {"id_base": args.id_base, "receipts": not args.no_receipts,
                               "window": args.window, "record": False}
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_stdin_closes(options))


if __name__ == "__main__":
    main()
