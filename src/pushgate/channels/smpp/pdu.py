"""SMPP v3.4 PDUs and the GSM 03.38 alphabet, encoded with ``struct`` (no I/O).

Only what an ESME transceiver needs: building bind_transceiver, submit_sm, enquire_link,
unbind and the responses it owes the SMSC; splitting a byte stream into PDUs; reading
deliver_sm (receipts and mobile-originated messages) with its optional TLVs. Why the connector
carries its own codec instead of a library's: the docstring of ``pushgate.channels.smpp``.

GSM-7 goes over SMPP unpacked, one octet per septet, extension characters as ESC (0x1B) + code
(the SMSC packs). The table below is GSM 03.38's; smpplib's has a backtick at 0x5F where ``§``
belongs, so it is not used.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = struct.Struct(">IIII")
HEADER_SIZE = 16
# Far above any legal PDU (message_payload may carry 64 KB): a bigger length means the stream
# is corrupt, not that a huge PDU is coming.
MAX_PDU_SIZE = 70_000

# command_id
GENERIC_NACK = 0x80000000
BIND_TRANSCEIVER = 0x00000009
BIND_TRANSCEIVER_RESP = 0x80000009
SUBMIT_SM = 0x00000004
SUBMIT_SM_RESP = 0x80000004
DELIVER_SM = 0x00000005
DELIVER_SM_RESP = 0x80000005
UNBIND = 0x00000006
UNBIND_RESP = 0x80000006
ENQUIRE_LINK = 0x00000015
ENQUIRE_LINK_RESP = 0x80000015
RESPONSE_BIT = 0x80000000

# command_status
ESME_ROK = 0x00
ESME_RINVMSGLEN = 0x01
ESME_RINVCMDID = 0x03
ESME_RINVBNDSTS = 0x04
ESME_RALYBND = 0x05
ESME_RSYSERR = 0x08
ESME_RINVSRCADR = 0x0A
ESME_RINVDSTADR = 0x0B
ESME_RBINDFAIL = 0x0D
ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F
ESME_RMSGQFUL = 0x14
ESME_RSUBMITFAIL = 0x45
ESME_RTHROTTLED = 0x58
ESME_RX_T_APPN = 0x64
ESME_RUNKNOWNERR = 0xFF

STATUS_NAMES: dict[int, str] = {
    ESME_ROK: "ESME_ROK", ESME_RINVMSGLEN: "ESME_RINVMSGLEN", ESME_RINVCMDID: "ESME_RINVCMDID",
    ESME_RINVBNDSTS: "ESME_RINVBNDSTS", ESME_RALYBND: "ESME_RALYBND",
    ESME_RSYSERR: "ESME_RSYSERR", ESME_RINVSRCADR: "ESME_RINVSRCADR",
    ESME_RINVDSTADR: "ESME_RINVDSTADR", ESME_RBINDFAIL: "ESME_RBINDFAIL",
    ESME_RINVPASWD: "ESME_RINVPASWD", ESME_RINVSYSID: "ESME_RINVSYSID",
    ESME_RMSGQFUL: "ESME_RMSGQFUL", ESME_RSUBMITFAIL: "ESME_RSUBMITFAIL",
    0x48: "ESME_RINVSRCTON", 0x49: "ESME_RINVSRCNPI", 0x50: "ESME_RINVDSTTON",
    0x51: "ESME_RINVDSTNPI", ESME_RTHROTTLED: "ESME_RTHROTTLED", 0x61: "ESME_RINVSCHED",
    0x62: "ESME_RINVEXPIRY", ESME_RX_T_APPN: "ESME_RX_T_APPN", 0x65: "ESME_RX_P_APPN",
    0x66: "ESME_RX_R_APPN", ESME_RUNKNOWNERR: "ESME_RUNKNOWNERR",
}

# Optional parameter (TLV) tags.
TLV_RECEIPTED_MESSAGE_ID = 0x001E
TLV_SAR_MSG_REF_NUM = 0x020C
TLV_SAR_TOTAL_SEGMENTS = 0x020E
TLV_SAR_SEGMENT_SEQNUM = 0x020F
TLV_NETWORK_ERROR_CODE = 0x0423
TLV_MESSAGE_PAYLOAD = 0x0424
TLV_MESSAGE_STATE = 0x0427

# data_coding
DATA_CODING_DEFAULT = 0x00  # SMSC default alphabet: GSM 03.38
DATA_CODING_IA5 = 0x01
DATA_CODING_LATIN1 = 0x03
DATA_CODING_UCS2 = 0x08

# esm_class: bits 2-5 give the message type of a deliver_sm (0 = a mobile-originated message).
ESM_UDHI = 0x40
ESM_MESSAGE_TYPE = 0x3C
ESM_DELIVERY_RECEIPT = 0x04
ESM_INTERMEDIATE_NOTIFICATION = 0x20

INTERFACE_VERSION = 0x34


class PduError(ValueError):
    """A malformed PDU or byte stream."""


def status_text(status: int) -> str:
    """``0x0000000B ESME_RINVDSTADR``-style text for logs and error messages."""
    name = STATUS_NAMES.get(status)
    return f"{status_code(status)} {name}" if name else status_code(status)


def status_code(status: int) -> str:
    """The status as our ``error_code``: eight hex digits, as the spec prints them."""
    return f"0x{status:08X}"


def pdu(command_id: int, status: int, sequence: int, body: bytes = b"") -> bytes:
    return HEADER.pack(HEADER_SIZE + len(body), command_id, status, sequence) + body


def c_octets(value: str, size: int, name: str) -> bytes:
    """A C-Octet string field of at most ``size`` octets including its NUL."""
    data = value.encode("ascii")
    if len(data) >= size or b"\0" in data:
        raise ValueError(f"{name} must be at most {size - 1} ASCII characters")
    return data + b"\0"


def bind_transceiver_body(system_id: str, password: str, system_type: str,
                          addr_ton: int = 0, addr_npi: int = 0, address_range: str = "") -> bytes:
    return (c_octets(system_id, 16, "system_id") + password.encode("ascii") + b"\0"
            + c_octets(system_type, 13, "system_type")
            + bytes((INTERFACE_VERSION, addr_ton, addr_npi))
            + c_octets(address_range, 41, "address_range"))


class SubmitSmTemplate:
    """Builds submit_sm PDUs whose source, TONs/NPIs and receipt request never change: those
    octets are joined once, so each PDU costs a few concatenations."""

    __slots__ = ("_head", "_dest_npi_ton", "_tail_flags")

    def __init__(self, *, service_type: str, source_ton: int, source_npi: int, source_addr: str,
                 dest_ton: int, dest_npi: int, registered_delivery: int) -> None:
        self._head = (c_octets(service_type, 6, "service_type") + bytes((source_ton, source_npi))
                      + c_octets(source_addr, 21, "source_addr") + bytes((dest_ton, dest_npi)))
        # After esm_class: protocol_id, priority_flag, schedule_delivery_time "",
        # validity_period "", registered_delivery, replace_if_present_flag.
        self._tail_flags = bytes((0, 0, 0, 0, registered_delivery, 0))
        self._dest_npi_ton = (dest_ton, dest_npi)

    def encode(self, sequence: int, destination: str, esm_class: int, data_coding: int,
               short_message: bytes) -> bytes:
        if len(short_message) > 254:
            raise ValueError("short_message is limited to 254 octets")
        body = b"".join((
            self._head, destination.encode("ascii"), b"\0", bytes((esm_class,)),
            self._tail_flags, bytes((data_coding, 0, len(short_message))), short_message))
        return HEADER.pack(HEADER_SIZE + len(body), SUBMIT_SM, 0, sequence) + body


class PduReader:
    """Cuts a TCP byte stream into PDUs: (command_id, command_status, sequence, body)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, int, bytes]]:
        buffer = self._buffer
        buffer += data
        out: list[tuple[int, int, int, bytes]] = []
        pos = 0
        size = len(buffer)
        while size - pos >= HEADER_SIZE:
            length, command_id, status, sequence = HEADER.unpack_from(buffer, pos)
            if length < HEADER_SIZE or length > MAX_PDU_SIZE:
                raise PduError(f"impossible command_length {length}")
            if size - pos < length:
                break
            body = bytes(buffer[pos + HEADER_SIZE:pos + length])
            out.append((command_id, status, sequence, body))
            pos += length
        if pos:
            del buffer[:pos]
        return out


@dataclass(slots=True)
class DeliverSm:
    """The fields of a deliver_sm the connector reads."""

    source_addr: str
    destination_addr: str
    esm_class: int
    data_coding: int
    short_message: bytes
    tlvs: dict[int, bytes]


def _c_string(body: bytes, pos: int) -> tuple[str, int]:
    end = body.index(0, pos)  # ValueError when the NUL is missing
    return body[pos:end].decode("ascii", "replace"), end + 1


def parse_tlvs(body: bytes, pos: int) -> dict[int, bytes]:
    tlvs: dict[int, bytes] = {}
    size = len(body)
    while pos < size:
        if size - pos < 4:
            raise PduError("truncated TLV header")
        tag, length = struct.unpack_from(">HH", body, pos)
        pos += 4
        if size - pos < length:
            raise PduError(f"TLV 0x{tag:04X} longer than the PDU")
        tlvs[tag] = body[pos:pos + length]
        pos += length
    return tlvs


def parse_deliver_sm(body: bytes) -> DeliverSm:
    """The mandatory fields (same layout as submit_sm) and TLVs of a deliver_sm body."""
    try:
        _, pos = _c_string(body, 0)  # service_type
        pos += 2  # source_addr_ton, source_addr_npi
        source_addr, pos = _c_string(body, pos)
        pos += 2  # dest_addr_ton, dest_addr_npi
        destination_addr, pos = _c_string(body, pos)
        esm_class = body[pos]
        pos += 3  # esm_class, protocol_id, priority_flag
        _, pos = _c_string(body, pos)  # schedule_delivery_time
        _, pos = _c_string(body, pos)  # validity_period
        data_coding = body[pos + 2]  # after registered_delivery, replace_if_present_flag
        sm_length = body[pos + 4]  # after sm_default_msg_id
        pos += 5
        short_message = body[pos:pos + sm_length]
        if len(short_message) != sm_length:
            raise PduError("short_message shorter than sm_length")
        tlvs = parse_tlvs(body, pos + sm_length)
    except (IndexError, ValueError) as exc:
        raise PduError(f"malformed deliver_sm: {exc}") from None
    return DeliverSm(source_addr, destination_addr, esm_class, data_coding, short_message, tlvs)


def c_octets_value(value: bytes) -> str:
    """A TLV holding a C-Octet string (receipted_message_id), without its NUL."""
    end = value.find(b"\0")
    return (value if end < 0 else value[:end]).decode("ascii", "replace")


# GSM 03.38 default alphabet, by code (0x1B, ESC, is the escape to the extension table).
GSM_BASIC_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION_TABLE: dict[str, int] = {
    "\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F,
    "[": 0x3C, "~": 0x3D, "]": 0x3E, "|": 0x40, "€": 0x65,
}
_ESC = 0x1B
assert len(GSM_BASIC_TABLE) == 128


class _StrictTable(dict[int, str]):
    """A ``str.translate`` table that refuses characters outside it instead of passing them
    through (a backtick would otherwise go out as 0x60, which is ``¿``)."""

    def __missing__(self, code_point: int) -> str:
        raise ValueError(f"{chr(code_point)!r} is not in the GSM 03.38 alphabet")


_GSM_ENCODE = _StrictTable({ord(c): chr(i) for i, c in enumerate(GSM_BASIC_TABLE) if i != _ESC})
_GSM_ENCODE.update({ord(c): "\x1b" + chr(code) for c, code in GSM_EXTENSION_TABLE.items()})
_GSM_DECODE = {i: c for i, c in enumerate(GSM_BASIC_TABLE) if i != _ESC}
_GSM_DECODE_EXTENSION = {code: c for c, code in GSM_EXTENSION_TABLE.items()}


def encode_gsm7(text: str) -> bytes:
    """GSM 03.38 text, unpacked (one octet per septet; extension characters ESC + code)."""
    return text.translate(_GSM_ENCODE).encode("ascii")


def decode_gsm7(data: bytes) -> str:
    """Unpacked GSM 03.38 octets to text (for mobile-originated messages). An unknown escape
    shows its basic character, as 03.38 asks; octets above 0x7F become U+FFFD."""
    out: list[str] = []
    escaped = False
    for octet in data:
        if escaped:
            escaped = False
            out.append(_GSM_DECODE_EXTENSION.get(octet) or _GSM_DECODE.get(octet, "\ufffd"))
        elif octet == _ESC:
            escaped = True
        else:
            out.append(_GSM_DECODE.get(octet, "\ufffd"))
    return "".join(out)


def encode_ucs2(text: str) -> bytes:
    """UCS-2 as SMSCs take it today: UTF-16BE (characters outside the BMP as surrogate pairs)."""
    return text.encode("utf-16-be", "surrogatepass")


def decode_short_message(data: bytes, data_coding: int) -> str:
    """Text of a deliver_sm's short_message by its data_coding."""
    if data_coding == DATA_CODING_UCS2:
        return data.decode("utf-16-be", "replace")
    if data_coding in (DATA_CODING_LATIN1, DATA_CODING_IA5):
        return data.decode("latin-1")
    if data_coding == DATA_CODING_DEFAULT or data_coding & 0xF4 == 0xF0:  # 0xF0-0xF3: GSM class
        return decode_gsm7(data)
    return data.decode("latin-1")  # 8-bit data or an unknown scheme: show the octets


@dataclass(frozen=True, slots=True)
class Concat:
    """Where a deliver_sm sits in a concatenated message: its reference, the number of parts,
    its own number (1-based), and its user data without the header."""

    reference: int
    total: int
    seq: int
    data: bytes


# Concatenation information elements of a UDH: IEI -> length of its value.
_IEI_CONCAT_8BIT = 0x00
_IEI_CONCAT_16BIT = 0x08


def concat_of(deliver: DeliverSm) -> Concat | None:
    """The concatenation of a mobile-originated deliver_sm, from its UDH (8-bit reference,
    IEI 0x00, or 16-bit, IEI 0x08) or its SAR TLVs (sar_msg_ref_num, sar_total_segments,
    sar_segment_seqnum); None for a whole message, or for numbers that make no sense
    (0 parts, a part number beyond the total), which is then taken as a whole message."""
    data = deliver.short_message or deliver.tlvs.get(TLV_MESSAGE_PAYLOAD, b"")
    found: tuple[int, int, int] | None = None
    if deliver.esm_class & ESM_UDHI and data:
        header = data[1:1 + data[0]]
        pos = 0
        while pos + 2 <= len(header):
            iei, size = header[pos], header[pos + 1]
            value = header[pos + 2:pos + 2 + size]
            if len(value) == size == 3 and iei == _IEI_CONCAT_8BIT:
                found = (value[0], value[1], value[2])
            elif len(value) == size == 4 and iei == _IEI_CONCAT_16BIT:
                found = ((value[0] << 8) | value[1], value[2], value[3])
            pos += 2 + size
        data = strip_udh(data)
    else:
        ref = deliver.tlvs.get(TLV_SAR_MSG_REF_NUM)
        total = deliver.tlvs.get(TLV_SAR_TOTAL_SEGMENTS)
        seq = deliver.tlvs.get(TLV_SAR_SEGMENT_SEQNUM)
        if ref and len(ref) == 2 and total and seq:
            found = (int.from_bytes(ref, "big"), total[0], seq[0])
    if found is None or found[1] < 2 or not 1 <= found[2] <= found[1]:
        return None
    return Concat(found[0], found[1], found[2], data)


def strip_udh(short_message: bytes) -> bytes:
    """short_message without its user data header (esm_class UDHI set)."""
    if not short_message:
        return short_message
    return short_message[1 + short_message[0]:]
