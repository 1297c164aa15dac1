"""SMPP v3.4 connector (Picky application 3, SMS): transceiver binds held open to an SMSC.

Sending
    The text is cut by ``core.segments.split_segments`` — the very parts whose count was charged
    at accept — and each part is one submit_sm: GSM-7 (data_coding 0, one octet per septet,
    extension characters as ESC + code) when the whole text is in the GSM 03.38 alphabet, else
    UCS-2 (data_coding 8, UTF-16BE). Several parts carry the concatenation UDH
    ``05 00 03 ref total seq`` with esm_class 0x40. The parts of one message go one after another;
    messages go concurrently, each bind keeping up to ``window`` submit_sm unanswered. Every
    part's message_id, with its other-base spelling (receipts may name either), is returned in
    ``provider_refs``.

Sessions
    ``binds`` bind_transceiver sessions are opened in ``start()``; an enquire_link goes out after
    ``enquire_link_seconds`` of silence (the SMSC's are answered); a session that drops, or whose
    enquire_link goes unanswered, is bound again with exponential back-off; ``stop()`` unbinds.
    While no bind is up, sends wait up to ``bind_wait_seconds`` and then defer. While the SMSC
    refuses the credentials (0x0D/0x0E/0x0F), sends ask the dispatcher to pause the channel.
    ESME_RTHROTTLED / ESME_RMSGQFUL pause the bind that got them (doubling while they persist).

Receipts and inbound SMS
    A deliver_sm on any bind becomes a ``StatusUpdate`` (receipt) or an ``InboundMessage``
    (mobile-originated), is handed to ``self.sink`` — in batches: one store write covers all that
    arrived meanwhile — and is acknowledged (deliver_sm_resp) only once the sink has made it
    durable. If the sink fails, the SMSC is answered ESME_RX_T_APPN and delivers it again later.

Why the PDU layer is our own (``smpp_pdu``, ``struct``): of the Python SMPP libraries, smpp34
1.5 (asyncio, Rust core) acknowledges each deliver_sm inside its core before Python reads it (the
SMSC had its deliver_sm_resp while the client had not taken the event), so a receipt could be
acknowledged and then lost in a crash; smpplib is synchronous (threads); aiosmpplib sends
fire-and-forget through a broker, segments with its own splitter (SAR TLVs) rather than the
parts we charged for, keeps no submit window and correlates in memory; naz is unmaintained;
smppy is a server; jasmin is a whole gateway. An ESME needs only a handful of PDUs.

Config keys (``channel add --config``): ``host`` and ``system_id`` (required), ``port`` (2775),
``password``, ``system_type`` (""), ``service_type`` (""), ``source_addr`` (sender; "" lets the
SMSC choose), ``source_ton``/``source_npi`` (5/0 for an alphanumeric sender, 1/1 for digits),
``dest_ton``/``dest_npi`` (1/1), ``binds`` (1), ``window`` (10), ``enquire_link_seconds`` (30),
``response_timeout_seconds`` (10), ``registered_delivery`` (1: receipt on final outcome),
``bind_wait_seconds`` (10), ``rebind_min_seconds``/``rebind_max_seconds`` (1/60),
``throttle_backoff_seconds``/``throttle_backoff_max_seconds`` (1/30).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, cast

from pushgate.channels import smpp_pdu as pdu
from pushgate.channels.base import (
    Channel,
    ChannelConfigError,
    ChannelEnv,
    ChannelStatus,
    register,
)
from pushgate.core.channels import ChannelSpec
from pushgate.core.lifecycle import State
from pushgate.core.models import InboundMessage, OutboundMessage, SendResult, StatusUpdate
from pushgate.core.segments import is_gsm7, split_segments

log = logging.getLogger("pushgate.channels.smpp")

THROTTLE_STATUSES = frozenset({pdu.ESME_RTHROTTLED, pdu.ESME_RMSGQFUL})
# The SMSC's trouble rather than the message's: worth another attempt later.
RETRYABLE_STATUSES = THROTTLE_STATUSES | {
    pdu.ESME_RSYSERR, pdu.ESME_RSUBMITFAIL, pdu.ESME_RUNKNOWNERR, pdu.ESME_RINVBNDSTS}
CREDENTIAL_STATUSES = frozenset({pdu.ESME_RBINDFAIL, pdu.ESME_RINVPASWD, pdu.ESME_RINVSYSID})

# Receipt ``stat`` values (message_state TLV numbers in MESSAGE_STATES).
MESSAGE_STATES = {1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIV",
                  6: "ACCEPTD", 7: "UNKNOWN", 8: "REJECTD"}
FAILED_STATS = frozenset({"UNDELIV", "EXPIRED", "REJECTD", "DELETED", "UNKNOWN"})
PENDING_STATS = frozenset({"ENROUTE", "ACCEPTD"})
# Spelled out by some SMSCs.
_STAT_SPELLINGS = {"DELIVERED": "DELIVRD", "UNDELIVERABLE": "UNDELIV", "REJECTED": "REJECTD",
                   "ACCEPTED": "ACCEPTD"}
_RECEIPT_TEXT = re.compile(r"\btext:", re.IGNORECASE)
_RECEIPT_FIELD = re.compile(r"\b(id|stat|err)\s*:\s*(\S+)", re.IGNORECASE)
_HEX_ID = re.compile(r"[0-9A-Fa-f]{1,32}")
_HEX_LETTER = re.compile(r"[A-Fa-f]")

# Repeats of one inbound SMS (the SMSC delivering it again after a failed acknowledgement) are
# recognised by content within this many seconds; the same text sent again later is a new one.
MO_REPEAT_WINDOW = 3600
# Receipts and inbound messages handed to the sink in one call at most.
SINK_BATCH = 1000
UDH_CONCAT_8BIT = b"\x05\x00\x03"


@dataclass(frozen=True, slots=True)
class SmppConfig:
    host: str
    port: int
    system_id: str
    password: str
    system_type: str
    service_type: str
    source_addr: str
    source_ton: int
    source_npi: int
    dest_ton: int
    dest_npi: int
    binds: int
    window: int
    enquire_link_seconds: float
    response_timeout_seconds: float
    registered_delivery: int
    bind_wait_seconds: float
    rebind_min_seconds: float
    rebind_max_seconds: float
    throttle_backoff_seconds: float
    throttle_backoff_max_seconds: float

    @classmethod
    def parse(cls, config: dict[str, Any]) -> SmppConfig:
        """Checked, with defaults filled; ``ChannelConfigError`` names the bad key."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ChannelConfigError(f"smpp: unknown config key {unknown[0]!r}")
        source = _text(config, "source_addr", "", 20)
        if source and not source.isdigit():
            if len(source) > 11:
                raise ChannelConfigError("smpp: source_addr: an alphanumeric sender has at most "
                                         "11 characters")
            ton, npi = 5, 0
        else:
            ton, npi = (1, 1) if source else (0, 0)
        rebind_min = _number(config, "rebind_min_seconds", 1.0, 0.001, 3600)
        throttle_min = _number(config, "throttle_backoff_seconds", 1.0, 0.001, 3600)
        return cls(
            host=_text(config, "host", None, 253),
            port=int(_number(config, "port", 2775, 1, 65535, integer=True)),
            system_id=_text(config, "system_id", None, 15),
            # v3.4 allows 8 characters; some SMSCs take longer ones, so they are sent as given.
            password=_text(config, "password", "", 64),
            system_type=_text(config, "system_type", "", 12),
            service_type=_text(config, "service_type", "", 5),
            source_addr=source,
            source_ton=int(_number(config, "source_ton", ton, 0, 6, integer=True)),
            source_npi=int(_number(config, "source_npi", npi, 0, 18, integer=True)),
            dest_ton=int(_number(config, "dest_ton", 1, 0, 6, integer=True)),
            dest_npi=int(_number(config, "dest_npi", 1, 0, 18, integer=True)),
            binds=int(_number(config, "binds", 1, 1, 32, integer=True)),
            window=int(_number(config, "window", 10, 1, 1000, integer=True)),
            enquire_link_seconds=_number(config, "enquire_link_seconds", 30.0, 0.01, 3600),
            response_timeout_seconds=_number(config, "response_timeout_seconds", 10.0, 0.01, 600),
            registered_delivery=int(_number(config, "registered_delivery", 1, 0, 255,
                                            integer=True)),
            bind_wait_seconds=_number(config, "bind_wait_seconds", 10.0, 0.0, 600),
            rebind_min_seconds=rebind_min,
            rebind_max_seconds=_number(config, "rebind_max_seconds", max(60.0, rebind_min),
                                       rebind_min, 3600),
            throttle_backoff_seconds=throttle_min,
            throttle_backoff_max_seconds=_number(config, "throttle_backoff_max_seconds",
                                                 max(30.0, throttle_min), throttle_min, 3600),
        )


def _text(config: dict[str, Any], key: str, default: str | None, max_len: int) -> str:
    value = config.get(key, default)
    if value is None:
        raise ChannelConfigError(f"smpp: {key} is required")
    if not isinstance(value, str) or not value.isascii() or "\0" in value:
        raise ChannelConfigError(f"smpp: {key} must be an ASCII string")
    if len(value) > max_len:
        raise ChannelConfigError(f"smpp: {key} has at most {max_len} characters")
    return value


def _number(config: dict[str, Any], key: str, default: float, low: float, high: float,
            integer: bool = False) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            integer and value != int(value)):
        raise ChannelConfigError(f"smpp: {key} must be {'an integer' if integer else 'a number'}")
    if not low <= value <= high:
        raise ChannelConfigError(f"smpp: {key} must be between {low:g} and {high:g}")
    return float(value)


def id_aliases(message_id: str, hex_ids: bool) -> list[str]:
    """Other spellings of an SMSC message id that its receipts may use.

    An id with hex letters is hex: its decimal form. An all-digit id is read in the base the
    SMSC has shown (``hex_ids``: some id of this channel had hex letters): from hex, its decimal
    form; from decimal, its hex form in both cases. Reading a decimal id as hex would give the
    spelling of a *later* id of the same SMSC, which would then be matched to this message.
    """
    if not _HEX_ID.fullmatch(message_id):
        return []
    if hex_ids or not message_id.isdigit():
        forms = [str(int(message_id, 16))]
    else:
        value = int(message_id)
        forms = [format(value, "x"), format(value, "X")]
    return [form for form in dict.fromkeys(forms) if form != message_id]


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a delivery receipt says (TLVs preferred over the text)."""

    message_id: str
    stat: str
    err: str
    network_error: str


def read_receipt(deliver: pdu.DeliverSm) -> Receipt:
    """The message id, ``stat``, ``err`` and network error of a receipt deliver_sm: from the
    receipted_message_id / message_state TLVs when present, else from the Appendix B text
    (``id:… sub:… dlvrd:… submit date:… done date:… stat:… err:… text:…``, keys in any case)."""
    if deliver.data_coding == pdu.DATA_CODING_UCS2:
        text = deliver.short_message.decode("utf-16-be", "replace")
    else:
        text = deliver.short_message.decode("latin-1")
    cut = _RECEIPT_TEXT.search(text)
    if cut:  # the quoted message text could hold anything, even "stat:"
        text = text[:cut.start()]
    found: dict[str, str] = {}
    for key, value in _RECEIPT_FIELD.findall(text):
        found.setdefault(key.lower(), value)
    tlv_id = deliver.tlvs.get(pdu.TLV_RECEIPTED_MESSAGE_ID)
    message_id = (pdu.c_octets_value(tlv_id) if tlv_id else "") or found.get("id", "")
    tlv_state = deliver.tlvs.get(pdu.TLV_MESSAGE_STATE)
    stat = MESSAGE_STATES.get(tlv_state[0], "") if tlv_state else ""
    if not stat:
        stat = found.get("stat", "").upper()
        stat = _STAT_SPELLINGS.get(stat, stat)
    network = deliver.tlvs.get(pdu.TLV_NETWORK_ERROR_CODE)
    network_error = (f"{network[0]}:{int.from_bytes(network[1:3], 'big')}"
                     if network and len(network) == 3 else "")
    return Receipt(message_id, stat, found.get("err", ""), network_error)


def receipt_update(receipt: Receipt, channel_id: int, at: float) -> StatusUpdate | None:
    """The status update a receipt reports; None for intermediate states (ENROUTE, ACCEPTD),
    unknown ones and receipts without an id."""
    if not receipt.message_id:
        return None
    if receipt.stat == "DELIVRD":
        return StatusUpdate(State.DELIVERED, at, channel_id=channel_id,
                            provider_id=receipt.message_id)
    if receipt.stat in FAILED_STATS:
        detail = f"{receipt.stat} err:{receipt.err or '-'}"
        if receipt.network_error:
            detail += f" network_error_code:{receipt.network_error}"
        return StatusUpdate(State.FAILED, at, channel_id=channel_id,
                            provider_id=receipt.message_id, error_code=receipt.stat,
                            error_message=detail)
    return None


def inbound_message(deliver: pdu.DeliverSm, channel_id: int, at: float) -> InboundMessage:
    """A mobile-originated SMS. Its provider id is derived from its content (and the hour), so
    the SMSC delivering it again, on another session or bind, is recognised as a repeat."""
    data = deliver.short_message or deliver.tlvs.get(pdu.TLV_MESSAGE_PAYLOAD, b"")
    if deliver.esm_class & pdu.ESM_UDHI:
        data = pdu.strip_udh(data)
    number = deliver.source_addr.lstrip("+")
    digest = hashlib.blake2b(
        b"\0".join((deliver.destination_addr.encode(), bytes((deliver.data_coding,)),
                    deliver.short_message, deliver.tlvs.get(pdu.TLV_MESSAGE_PAYLOAD, b""))),
        digest_size=10).hexdigest()
    return InboundMessage(
        channel_id=channel_id, number=number,
        text=pdu.decode_short_message(data, deliver.data_coding),
        provider_id=f"mo:{number}:{int(at // MO_REPEAT_WINDOW)}:{digest}", at=at, type=1,
        raw={"destination_addr": deliver.destination_addr, "data_coding": deliver.data_coding})


class BindLost(Exception):
    """The session ended before the SMSC answered; ``written`` says whether the request may
    have reached it."""

    def __init__(self, written: bool) -> None:
        super().__init__("the SMPP session ended")
        self.written = written


@dataclass(slots=True)
class _Failure:
    retryable: bool
    error_code: str
    error_message: str
    retry_after: float | None = None
    defer: bool = False
    pause_channel: bool = False

    def result(self, message_id: int, note: str = "") -> SendResult:
        return SendResult(message_id, ok=False, retryable=self.retryable,
                          error_code=self.error_code,
                          error_message=f"{self.error_message}{note}",
                          retry_after=self.retry_after, defer=self.defer,
                          pause_channel=self.pause_channel)


def status_failure(status: int, retry_after: float | None = None) -> _Failure:
    """A submit_sm_resp error as a send outcome."""
    text = f"submit_sm refused: {pdu.status_text(status)}"
    if status in RETRYABLE_STATUSES:
        return _Failure(True, pdu.status_code(status), text, retry_after)
    return _Failure(False, pdu.status_code(status), text)


@dataclass(slots=True)
class _Incoming:
    """A deliver_sm waiting to be made durable, then acknowledged on the session it came on."""

    bind: Bind
    session: _Session
    sequence: int
    update: StatusUpdate | None = None
    inbound: InboundMessage | None = None


class _Session(asyncio.Protocol):
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
        self.session: _Session | None = None
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
        self.throttled_until = 0.0
        self._throttle_delay = 0.0
        self._throttle_set_at = 0.0
        self._sequence = 0
        self._out: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None

    # -- writing ------------------------------------------------------------------------------

    def next_sequence(self) -> int:
        self._sequence = self._sequence % 0x7FFFFFFF + 1
        return self._sequence

    def write(self, data: bytes) -> None:
        # The PDUs written in one loop iteration (a window of submits, a batch of
        # deliver_sm_resps) leave in one send() instead of one system call each.
        self._out.append(data)
        if self._flush_handle is None and self.loop is not None:
            self._flush_handle = self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        out, self._out = self._out, []
        session = self.session
        if out and session is not None and session.transport is not None:
            session.transport.write(b"".join(out))

    def respond(self, session: _Session, command_id: int, status: int, sequence: int,
                body: bytes = b"") -> None:
        """Answer a request of ``session``, if it is still the current connection."""
        if session is self.session:
            self.write(pdu.pdu(command_id, status, sequence, body))

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
        self.write(data)
        try:
            async with asyncio.timeout(timeout or self.config.response_timeout_seconds):
                return await future
        finally:
            self.pending.pop(sequence, None)

    # -- submitting ---------------------------------------------------------------------------

    async def submit(self, destination: str, esm_class: int, data_coding: int,
                     short_message: bytes) -> tuple[int, str, float | None]:
        """(command_status, message_id, retry_after) of one submit_sm. Raises ``BindLost``
        and ``TimeoutError`` (no answer within ``response_timeout_seconds``)."""
        assert self.loop is not None
        self.load += 1
        try:
            async with self.window:
                while (wait := self.throttled_until - self.loop.time()) > 0:
                    await asyncio.sleep(wait)
                if not self.bound:
                    raise BindLost(written=False)
                sent_at = self.loop.time()
                sequence = self.next_sequence()
                data = self.channel.template.encode(sequence, destination, esm_class,
                                                    data_coding, short_message)
                status, body = await self._exchange(sequence, data)
        finally:
            self.load -= 1
        if status == pdu.ESME_ROK:
            if self._throttle_delay and sent_at >= self.throttled_until:
                self._throttle_delay = 0.0
            return status, pdu.c_octets_value(body), None
        if status in THROTTLE_STATUSES:
            return status, "", self.note_throttle(sent_at)
        if status == pdu.ESME_RINVBNDSTS:  # the SMSC no longer counts us as bound
            self.drop("submit_sm answered ESME_RINVBNDSTS")
        return status, "", None

    def note_throttle(self, sent_at: float) -> float:
        """Pause this bind after ESME_RTHROTTLED / ESME_RMSGQFUL; the pause doubles when a
        submit sent after the last pause began is throttled too (the answers to submits already
        in flight when it began say nothing new). Returns the pause."""
        assert self.loop is not None
        cfg = self.config
        now = self.loop.time()
        if not self._throttle_delay or sent_at >= self._throttle_set_at:
            self._throttle_delay = min(self._throttle_delay * 2 or cfg.throttle_backoff_seconds,
                                       cfg.throttle_backoff_max_seconds)
            self._throttle_set_at = now
            self.throttled_until = now + self._throttle_delay
            log.info("%s: throttled by the SMSC; pausing %.2f s", self.name, self._throttle_delay)
        return self._throttle_delay

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
                    lambda: _Session(self), cfg.host, cfg.port)
        except (OSError, TimeoutError) as exc:
            self._failed(f"cannot connect to {cfg.host}:{cfg.port}: "
                         f"{exc or type(exc).__name__}")
            return False
        self.session = session
        self._out.clear()
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

    async def _keep_alive(self, session: _Session) -> None:
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

    def _end_session(self, session: _Session) -> None:
        if session is not self.session:
            return
        was_bound = self.bound
        self.bound = False
        self.session = None
        self._out.clear()
        if session.transport is not None and not session.transport.is_closing():
            session.transport.abort()
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(BindLost(written=True))
        if was_bound:
            self.channel.binds_changed()

    # -- what the SMSC sends --------------------------------------------------------------------

    def on_connection_lost(self, session: _Session) -> None:
        if session is self.session:
            if self.bound and not self.closing:
                self._failed("the SMSC closed the connection")
            self._end_session(session)

    def on_data(self, session: _Session, data: bytes) -> None:
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


@register
class SmppChannel(Channel):
    kind = "smpp"

    def __init__(self, spec: ChannelSpec, env: ChannelEnv | None = None) -> None:
        super().__init__(spec, env)
        self.config = cfg = SmppConfig.parse(spec.config)
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
        self._incoming: list[_Incoming] = []
        self._incoming_ready = asyncio.Event()
        self._incoming_idle = asyncio.Event()
        self._incoming_idle.set()
        self._incoming_task: asyncio.Task[None] | None = None

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        return asdict(SmppConfig.parse(config))

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for bind in self.binds:
            bind.loop = loop
            bind.closing = False
            bind.task = loop.create_task(bind.run(), name=bind.name)
        self._incoming_task = loop.create_task(self._deliver_incoming(),
                                               name=f"smpp channel {self.spec.id} receipts")
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
        if self._incoming_task is not None:
            self._incoming_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._incoming_task
            self._incoming_task = None

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

    async def send(self, message: OutboundMessage) -> SendResult:
        number = message.number
        if not (number.isdigit() and len(number) <= 20):
            return SendResult(message.id, ok=False, error_code="invalid-number",
                              error_message=f"not an SMPP destination_addr: {number!r}")
        parts = split_segments(message.text)
        if not parts or len(parts) > 255:
            return SendResult(message.id, ok=False, error_code="invalid-text",
                              error_message=f"an SMS has 1 to 255 parts, not {len(parts)}")
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
            if isinstance(outcome, _Failure):
                if not accepted:
                    return outcome.result(message.id)
                return self._later_part_failed(message.id, outcome, total, accepted)
            accepted.append(outcome)
            if not outcome:  # accepted without an id: its receipts cannot be matched
                log.warning("smpp channel %s: submit_sm_resp without message_id", self.spec.id)
                continue
            if not self._hex_ids and _HEX_LETTER.search(outcome):
                self._hex_ids = True
            refs.append((index, outcome))
            refs.extend((index, alias) for alias in id_aliases(outcome, self._hex_ids))
        return SendResult(message.id, ok=True, provider_id=accepted[0] or None,
                          provider_refs=refs)

    @staticmethod
    def _later_part_failed(message_id: int, failure: _Failure, total: int,
                           accepted: list[str]) -> SendResult:
        done = len(accepted)
        ids = ", ".join(accepted)
        if not failure.retryable:
            return failure.result(message_id, f"; part {done + 1} of {total} refused after "
                                  f"parts 1-{done} were accepted ({ids})")
        # The whole message is tried again later, so the accepted parts go out a second time
        # (under a new UDH reference; the first, incomplete copy is at worst shown as a
        # fragment). _submit_part has retried this part in place for bind_wait_seconds to
        # avoid exactly that. Parts went out, so this is an attempt even when the bind is gone.
        failure.defer = failure.pause_channel
        return failure.result(message_id, f"; parts 1-{done} of {total} were accepted ({ids}) "
                              "and will be sent again with the whole message")

    async def _submit_part(self, number: str, esm_class: int, data_coding: int, payload: bytes,
                           later_part: bool) -> str | _Failure:
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
                    failure = _Failure(True, "connection-lost", "the SMPP session ended before "
                                       "submit_sm_resp: the SMSC may have accepted it")
                except TimeoutError:
                    failure = _Failure(True, "timeout", "no submit_sm_resp within "
                                       f"{self.config.response_timeout_seconds:g} s: the SMSC "
                                       "may have accepted it")
                else:
                    if status == pdu.ESME_ROK:
                        return message_id
                    failure = status_failure(status, retry_after)
            if not later_part or not failure.retryable or failure.pause_channel:
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
            now = loop.time()
            best: Bind | None = None
            for bind in self.binds:
                if bind.bound and (best is None or (bind.throttled_until > now, bind.load)
                                   < (best.throttled_until > now, best.load)):
                    best = bind
            if best is not None:
                return best
            remaining = give_up - now
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

    def _unbound_failure(self) -> _Failure:
        cfg = self.config
        refused = self._refused_status()
        if refused is not None:
            return _Failure(True, pdu.status_code(refused),
                            f"the SMSC refuses the bind: {pdu.status_text(refused)} (check "
                            "system_id and password)", retry_after=cfg.rebind_max_seconds,
                            defer=True, pause_channel=True)
        reasons = "; ".join(dict.fromkeys(b.last_error for b in self.binds if b.last_error))
        return _Failure(True, "smpp-unbound",
                        f"no SMPP bind up after {cfg.bind_wait_seconds:g} s: {reasons}",
                        retry_after=cfg.rebind_min_seconds, defer=True)

    # -- receipts and inbound -------------------------------------------------------------------

    def on_deliver_sm(self, bind: Bind, session: _Session, sequence: int, body: bytes) -> None:
        at = time.time()
        try:
            deliver = pdu.parse_deliver_sm(body)
        except pdu.PduError as exc:
            # Sending it again would not make it readable: refuse it for good, loudly.
            log.error("%s: unreadable deliver_sm (%s): %s", bind.name, exc, body.hex())
            bind.respond(session, pdu.DELIVER_SM_RESP, 0x65, sequence, b"\0")
            return
        message_type = deliver.esm_class & pdu.ESM_MESSAGE_TYPE
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
            item = _Incoming(bind, session, sequence, update=update)
        else:
            item = _Incoming(bind, session, sequence,
                             inbound=inbound_message(deliver, self.spec.id, at))
        self._incoming.append(item)
        self._incoming_idle.clear()
        self._incoming_ready.set()

    async def _deliver_incoming(self) -> None:
        """Hand waiting receipts and inbound messages to the sink in batches, then answer
        their deliver_sm: a receipt is never acknowledged before it is durable."""
        while True:
            await self._incoming_ready.wait()
            self._incoming_ready.clear()
            while self._incoming:
                batch = self._incoming[:SINK_BATCH]
                del self._incoming[:SINK_BATCH]
                status = pdu.ESME_ROK
                try:
                    if self.sink is None:
                        raise RuntimeError("the channel has no sink")
                    updates = [i.update for i in batch if i.update is not None]
                    inbound = [i.inbound for i in batch if i.inbound is not None]
                    if updates:
                        await self.sink.updates(updates)
                    if inbound:
                        await self.sink.inbound(inbound)
                except Exception as exc:  # e.g. the store is down: the SMSC will retry
                    log.warning("smpp channel %s: could not record %d receipts/messages (%s); "
                                "asking the SMSC to deliver them again", self.spec.id,
                                len(batch), exc)
                    status = pdu.ESME_RX_T_APPN
                for item in batch:
                    item.bind.respond(item.session, pdu.DELIVER_SM_RESP, status, item.sequence,
                                      b"\0")
            self._incoming_idle.set()
