"""Reading an SMSC's deliver_sm: delivery receipts into ``StatusUpdate``s, users' messages
(whole or in parts) into ``InboundMessage``/``InboundPart``, and the id spellings receipts use."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from pushgate.channels.smpp import pdu
from pushgate.core.lifecycle import State
from pushgate.core.models import (
    InboundMessage,
    InboundPart,
    StatusUpdate,
)

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
HEX_LETTER = re.compile(r"[A-Fa-f]")


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
