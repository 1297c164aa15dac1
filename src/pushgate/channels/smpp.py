"""SMPP v3.4 connector (Picky application 3, SMS): transceiver binds held open to an SMSC.

Sending
    The text is cut by ``core.segments.split_segments`` — the very parts whose count was charged
    at accept — and each part is one submit_sm: GSM-7 (data_coding 0, one octet per septet,
    extension characters as ESC + code) when the whole text is in the GSM 03.38 alphabet, else
    UCS-2 (data_coding 8, UTF-16BE). Several parts carry the concatenation UDH
    ``05 00 03 ref total seq`` with esm_class 0x40. The parts of one message go one after another;
    messages go concurrently, each bind keeping up to ``window`` submit_sm unanswered. Every
    part's message_id, with its other-base spelling (receipts may name either), is returned in
    ``provider_refs``. A channel paced at ``--rate`` R (``rate_per_second``) sends at most R
    submit_sm — parts, as the SMSC counts — in any window of one second, idle or not
    (``SubmitRate``); the dispatcher's own pacing counts messages.

Sessions
    ``binds`` bind_transceiver sessions are opened in ``start()``; an enquire_link goes out after
    ``enquire_link_seconds`` of silence (the SMSC's are answered); a session that drops, or whose
    enquire_link goes unanswered, is bound again with exponential back-off; ``stop()`` unbinds.
    While no bind is up, sends wait up to ``bind_wait_seconds`` and then defer. While the SMSC
    refuses the credentials (0x0D/0x0E/0x0F), sends ask the dispatcher to pause the channel.
    ESME_RTHROTTLED / ESME_RMSGQFUL pause the bind that got them. One burst gives one pause:
    answers to submits sent before the current pause began say nothing new; a throttle to a
    submit sent after it began doubles it (up to ``throttle_backoff_max_seconds``), and a
    success after it began ends the doubling. Each submit carries the number of pauses begun
    when it went out, so the rule does not depend on a clock (uvloop's is cached per loop
    iteration, which made every answer of one burst look "later" and doubled the pause five
    times in one millisecond). A throttled message is not a failed attempt: it goes back to
    the queue for the pause (``defer``), never counted against the retry limit.

Receipts and inbound SMS
    A deliver_sm on any bind becomes a ``StatusUpdate`` (receipt) or an ``InboundMessage``
    (mobile-originated), is handed to ``self.sink`` — in batches: one store write covers all that
    arrived meanwhile — and is acknowledged (deliver_sm_resp) only once the sink has made it
    durable. If the sink fails, the SMSC is answered ESME_RX_T_APPN and delivers it again later.

    A user's SMS in parts (a UDH with an 8-bit or 16-bit concatenation reference, or the SAR
    TLVs) is stored part by part through the sink (acknowledged once its part is durable) and
    forwarded once, whole, when its last part is in; parts stored by an earlier process join
    too. Its text is the parts' octets joined, then decoded by their data_coding (so a UCS-2
    character or a GSM escape split between parts survives). A message still missing parts
    ``concat_timeout_seconds`` after its first arrived is forwarded with what arrived, marked
    incomplete (``raw``: ``incomplete``, ``parts_received``, ``parts_total``).

    Repeats: the same text from the same number is a new message, each forwarded. The only
    deliver_sm dropped is the SMSC's re-delivery of one we stored but whose deliver_sm_resp it
    may not have had: the SMSC has surely read our answer once it answers a request we wrote
    after it (TCP keeps order; an enquire_link goes out ``MO_CONFIRM_SECONDS`` after an answer
    when no other request does); a session that ends before that leaves the answer in doubt,
    and for ``MO_REDELIVERY_SECONDS`` an identical deliver_sm (same sender, destination,
    esm_class, data_coding, octets and TLVs — the sequence number differs on a new session)
    is taken as that re-delivery: a whole message is recorded under the first one's id (the
    store keeps one), a part already stored is acknowledged and dropped. Limits: the doubt is
    kept in memory, so a re-delivery after this process died between storing and answering is
    forwarded again; a user who sends the very same text again within those minutes, after a
    session dropped in the second between our answer and its confirmation, is heard once.

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
``throttle_backoff_seconds``/``throttle_backoff_max_seconds`` (1/30),
``concat_timeout_seconds`` (300: how long a user's multi-part SMS waits for its missing parts).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import re
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
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
from pushgate.core.models import (
    InboundMessage,
    InboundPart,
    OutboundMessage,
    SendResult,
    StatusUpdate,
)
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

# How long a mobile-originated deliver_sm whose acknowledgement is in doubt (its session ended
# before the SMSC showed it had read our answer) may come again as a re-delivery: SMSCs deliver
# again on the next bind or on their retry schedule, within minutes. An identical deliver_sm
# after that is a new message.
MO_REDELIVERY_SECONDS = 600.0
# In-doubt deliver_sm remembered at most (the oldest are forgotten first).
MO_DOUBT_LIMIT = 10_000
# An answer to a user's deliver_sm is confirmed by the SMSC answering a request written after
# it; when no request follows within this many seconds, an enquire_link is sent to get one, so
# an answer stays in doubt only for about this long (plus a round trip).
MO_CONFIRM_SECONDS = 1.0
# Added to each second of the submit rate: a submit is stamped when it is granted, and the SMSC
# counts it when it reads it, a little later and not always equally late.
SUBMIT_RATE_GUARD_SECONDS = 0.02
# Pauses a bind remembers (``Bind.pauses``, for status and tests).
PAUSE_LOG = 100
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
    concat_timeout_seconds: float

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
            concat_timeout_seconds=_number(config, "concat_timeout_seconds", 300.0, 0.01,
                                           86_400),
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


def mo_digest(deliver: pdu.DeliverSm) -> bytes:
    """What a re-delivery of a mobile-originated deliver_sm repeats: every field the connector
    reads and every TLV (the sequence number is the session's, so not part of it)."""
    fields = [deliver.source_addr.encode(), deliver.destination_addr.encode(),
              bytes((deliver.esm_class, deliver.data_coding)), deliver.short_message]
    for tag in sorted(deliver.tlvs):
        fields += [tag.to_bytes(2, "big"), deliver.tlvs[tag]]
    return hashlib.blake2b(b"\0".join(len(f).to_bytes(4, "big") + f for f in fields),
                           digest_size=16).digest()


def new_mo_id(number: str) -> str:
    """A fresh provider id for a user's message: every message is new unless it is a
    re-delivery (``SmppChannel`` reuses the first one's id for those)."""
    return f"mo:{number}:{uuid.uuid4().hex}"


def inbound_message(deliver: pdu.DeliverSm, channel_id: int, at: float,
                    provider_id: str) -> InboundMessage:
    """A mobile-originated SMS in one deliver_sm."""
    data = deliver.short_message or deliver.tlvs.get(pdu.TLV_MESSAGE_PAYLOAD, b"")
    if deliver.esm_class & pdu.ESM_UDHI:
        data = pdu.strip_udh(data)
    return InboundMessage(
        channel_id=channel_id, number=deliver.source_addr.lstrip("+"),
        text=pdu.decode_short_message(data, deliver.data_coding),
        provider_id=provider_id, at=at, type=1,
        raw={"destination_addr": deliver.destination_addr, "data_coding": deliver.data_coding})


def inbound_part(deliver: pdu.DeliverSm, concat: pdu.Concat, channel_id: int,
                 at: float) -> InboundPart:
    return InboundPart(channel_id=channel_id, number=deliver.source_addr.lstrip("+"),
                       destination=deliver.destination_addr, reference=concat.reference,
                       total=concat.total, seq=concat.seq, data_coding=deliver.data_coding,
                       data=concat.data, at=at)


def parts_by_message(parts: Sequence[InboundPart]) -> dict[tuple[int, str, str, int, int],
                                                          list[InboundPart]]:
    """Parts grouped by the message they belong to, each group in part order, one per number."""
    groups: dict[tuple[int, str, str, int, int], dict[int, InboundPart]] = defaultdict(dict)
    for part in parts:
        groups[part.key].setdefault(part.seq, part)
    return {key: [group[seq] for seq in sorted(group)] for key, group in groups.items()}


def is_whole(parts: Sequence[InboundPart]) -> bool:
    return bool(parts) and [p.seq for p in parts] == list(range(1, parts[0].total + 1))


def assembled(parts: Sequence[InboundPart]) -> InboundMessage:
    """One user message from its parts (one group, in part order): the octets of consecutive
    parts of one data_coding joined, then decoded; marked incomplete when parts are missing.
    Its provider id is derived from the parts, so forwarding the same parts again (a crash
    before they were dropped) is recorded once."""
    first = parts[0]
    runs: list[tuple[int, int, bytearray]] = []  # (data_coding, last seq, octets)
    for part in parts:
        if runs and runs[-1][0] == part.data_coding and runs[-1][1] == part.seq - 1:
            coding, _, octets = runs[-1]
            octets += part.data
            runs[-1] = (coding, part.seq, octets)
        else:
            runs.append((part.data_coding, part.seq, bytearray(part.data)))
    text = "".join(pdu.decode_short_message(bytes(octets), coding) for coding, _, octets in runs)
    seqs = [p.seq for p in parts]
    identity = repr((first.key, min(p.at for p in parts), seqs)).encode()
    raw: dict[str, object] = {"destination_addr": first.destination,
                              "data_coding": first.data_coding, "parts_total": first.total}
    if not is_whole(parts):
        raw["incomplete"] = True
        raw["parts_received"] = seqs
    return InboundMessage(
        channel_id=first.channel_id, number=first.number, text=text,
        provider_id=f"mo:{first.number}:parts:"
                    f"{hashlib.blake2b(identity, digest_size=12).hexdigest()}",
        at=max(p.at for p in parts), type=1, raw=raw)


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
    # The SMSC asked us to slow down (0x58 / 0x14): not an attempt.
    throttled: bool = False

    def result(self, message_id: int, note: str = "") -> SendResult:
        return SendResult(message_id, ok=False, retryable=self.retryable,
                          error_code=self.error_code,
                          error_message=f"{self.error_message}{note}",
                          retry_after=self.retry_after, defer=self.defer,
                          pause_channel=self.pause_channel)


def status_failure(status: int, retry_after: float | None = None) -> _Failure:
    """A submit_sm_resp error as a send outcome."""
    text = f"submit_sm refused: {pdu.status_text(status)}"
    if status in THROTTLE_STATUSES:
        # The SMSC asking to slow down, not a failed attempt: back to the queue for the pause.
        return _Failure(True, pdu.status_code(status), text, retry_after, defer=True,
                        throttled=True)
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
    part: InboundPart | None = None
    # A user's deliver_sm, followed until the SMSC has surely read our answer.
    seen: _MoSeen | None = None


@dataclass(slots=True, eq=False)
class _MoSeen:
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
        self._answered: deque[_MoSeen] = deque()
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

    def respond(self, session: _Session, command_id: int, status: int, sequence: int,
                body: bytes = b"") -> int | None:
        """Answer a request of ``session``, if it is still the current connection: the
        answer's place among the session's writes, else None."""
        if session is self.session:
            return self.write(pdu.pdu(command_id, status, sequence, body))
        return None

    def answered_mo(self, seen: _MoSeen, written: int) -> None:
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
                    lambda: _Session(self), cfg.host, cfg.port)
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
        self._sweep_task: asyncio.Task[None] | None = None
        # The channel's submit_sm rate (its ``rate_per_second``), over all binds.
        self.submit_rate = SubmitRate.for_rate(spec.rate_per_second)
        # Users' deliver_sm whose answer may not have reached the SMSC, by ``mo_digest``.
        self._in_doubt: dict[bytes, deque[_MoSeen]] = {}

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
        # avoid exactly that. Parts went out, so this is an attempt even when the bind is gone
        # — unless the SMSC only asked us to slow down.
        failure.defer = failure.pause_channel or failure.throttled
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
            item = self._user_message(bind, session, sequence, deliver, at)
            if item is None:
                return
        self._incoming.append(item)
        self._incoming_idle.clear()
        self._incoming_ready.set()

    def _user_message(self, bind: Bind, session: _Session, sequence: int,
                      deliver: pdu.DeliverSm, at: float) -> _Incoming | None:
        """A user's deliver_sm as the whole message or the part it is; None when it is the
        re-delivery of a part already stored (then answered at once)."""
        digest = mo_digest(deliver)
        earlier = self._redelivery_of(digest)
        concat = pdu.concat_of(deliver)
        if concat is None:
            number = deliver.source_addr.lstrip("+")
            provider_id = earlier.provider_id if earlier else new_mo_id(number)
            seen = _MoSeen(digest, provider_id)
            return _Incoming(bind, session, sequence, seen=seen,
                             inbound=inbound_message(deliver, self.spec.id, at, provider_id))
        seen = _MoSeen(digest, "")
        if earlier is not None and earlier.stored:
            log.info("%s: part %d/%d from %s delivered again after an answer in doubt; "
                     "already stored", bind.name, concat.seq, concat.total, deliver.source_addr)
            seen.stored = True
            self._answered(bind, session, sequence, seen, pdu.ESME_ROK)
            return None
        return _Incoming(bind, session, sequence, seen=seen,
                         part=inbound_part(deliver, concat, self.spec.id, at))

    def _answered(self, bind: Bind, session: _Session, sequence: int, seen: _MoSeen | None,
                  status: int) -> None:
        written = bind.respond(session, pdu.DELIVER_SM_RESP, status, sequence, b"\0")
        if seen is None or not seen.stored:
            return  # nothing stored: a re-delivery is simply a new delivery
        if written is None:  # the session ended before the answer could go
            self.mo_in_doubt([seen])
        else:
            bind.answered_mo(seen, written)

    def mo_in_doubt(self, seen: Sequence[_MoSeen]) -> None:
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

    def _redelivery_of(self, digest: bytes) -> _MoSeen | None:
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
                                len(batch), exc)
                    status = pdu.ESME_RX_T_APPN
                for item in batch:
                    if item.seen is not None and status == pdu.ESME_ROK:
                        item.seen.stored = True
                    self._answered(item.bind, item.session, item.sequence, item.seen, status)
            self._incoming_idle.set()

    async def _record(self, batch: Sequence[_Incoming]) -> None:
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
                            self.spec.id, exc)

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
