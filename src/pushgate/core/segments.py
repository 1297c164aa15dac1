"""SMS segment counting and splitting (3GPP TS 23.038 / 23.040).

Operators bill per segment, so the count shown to API clients and the parts later handed to
SMPP (with a concatenation UDH) must come from one implementation. Rules:

* A text is GSM-7 when every character is in the GSM 03.38 default alphabet or its extension
  table. Basic characters cost one septet; extension characters (``\\f ^ { } \\ [ ~ ] | €``)
  are sent as ESC + char and cost two.
* Otherwise the *whole* text is sent as UCS-2 (really UTF-16): its length is the number of
  UTF-16 code units, so characters outside the BMP (emoji) cost two.
* One segment holds 160 septets / 70 units. Longer texts are split into parts of at most
  153 septets / 67 units (the 6-byte concatenation UDH eats the rest), filled greedily; an
  escape pair or a surrogate pair is never split, so a part may carry 152 / 66.

Everything here is pure and allocation-light: the common case (short ASCII text) costs a couple
of C-level string scans.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise

__all__ = ["SegmentCount", "count_segments", "split_segments", "is_gsm7"]

GSM7 = "GSM-7"
UCS2 = "UCS-2"

GSM7_SINGLE = 160
GSM7_PART = 153
UCS2_SINGLE = 70
UCS2_PART = 67

#: GSM 03.38 default alphabet (ESC, 0x1B, is deliberately absent: it is not a character).
GSM_BASIC = frozenset(
    "\n\r !\"#%&'()*+,-./0123456789:;<=>?@"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_$"
    "\u00a4£¥§¡¿ÄÅÆÇÉÑÖØÜßàäåæèéìñòöøùü"
    "ΓΔΘΛΞΠΣΦΨΩ"
)
#: Extension table: each costs an escape septet plus itself.
GSM_EXTENSION = frozenset("\f^{}\\[~]|€")

_GSM_ALL = GSM_BASIC | GSM_EXTENSION
# Character classes are scanned in C; far cheaper than a per-character set lookup in Python.
_NOT_GSM = re.compile("[^" + "".join(re.escape(c) for c in sorted(_GSM_ALL)) + "]")
_EXTENSION_RE = re.compile("[" + "".join(re.escape(c) for c in sorted(GSM_EXTENSION)) + "]")
_EXTENSION_CHARS = "".join(sorted(GSM_EXTENSION))
_ESC = "\x1b"
_HIGH_SURROGATE_BYTES = bytes(range(0xD8, 0xDC))
# For ASCII texts a single bytes.translate() both validates and counts: delete the basic
# characters and whatever is left must be extension characters (2 septets each).
_ASCII_BASIC = bytes(sorted(ord(c) for c in GSM_BASIC if c.isascii()))
_ASCII_EXTENSION = bytes(sorted(ord(c) for c in GSM_EXTENSION if c.isascii()))


@dataclass(frozen=True, slots=True)
class SegmentCount:
    """How an SMS text will travel: its encoding, its length in that encoding, its parts."""

    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int  # number of SMS parts; 0 for the empty string


# Frozen-dataclass construction costs about as much as classifying a short text, and results are
# immutable, so the single-segment ones (the vast majority) are built once and shared.
_GSM7_ONE = tuple(SegmentCount(GSM7, n, 1 if n else 0) for n in range(GSM7_SINGLE + 1))
_UCS2_ONE = tuple(SegmentCount(UCS2, n, 1) for n in range(UCS2_SINGLE + 1))


def is_gsm7(text: str) -> bool:
    """True if `text` can be sent in the GSM 7-bit alphabet (basic set plus extension table)."""
    return _encoding_and_units(text)[0] == GSM7


def _encoding_and_units(text: str) -> tuple[str, int]:
    """("GSM-7", septets) or ("UCS-2", UTF-16 code units)."""
    if text.isascii():
        rest = text.encode("ascii").translate(None, _ASCII_BASIC)
        if not rest:
            return GSM7, len(text)
        if not rest.translate(None, _ASCII_EXTENSION):
            return GSM7, len(text) + len(rest)
        return UCS2, len(text)
    if _NOT_GSM.search(text) is None:
        return GSM7, len(text) + len(_EXTENSION_RE.findall(text))
    # surrogatepass: a lone surrogate (possible in a str decoded from JSON "\\ud83d") counts as
    # the one code unit it is, instead of raising deep inside a request handler.
    return UCS2, len(text.encode("utf-16-le", "surrogatepass")) >> 1


# Greedy splitting is done in unit space, where a part is simply the next `limit` units unless
# that would end in the middle of a 2-unit character, in which case the part is one unit shorter.
# That makes the loop per part, not per character; the unit offsets are then mapped back to
# indices into the Python string (which indexes by code point, so cuts there can never split a
# surrogate pair or an escape pair).


def _gsm7_cuts(text: str) -> list[int]:
    """String indices where parts 2.. start, for a multi-part GSM-7 text."""
    septets = text  # every extension character preceded by ESC, which a GSM text never holds
    for char in _EXTENSION_CHARS:
        if char in septets:
            septets = septets.replace(char, _ESC + char)
    cuts: list[int] = []
    start = escapes = 0
    while len(septets) - start > GSM7_PART:
        end = start + GSM7_PART
        if septets[end - 1] == _ESC:  # the part would end between ESC and its character
            end -= 1
        escapes += septets.count(_ESC, start, end)
        cuts.append(end - escapes)
        start = end
    return cuts


def _ucs2_cuts(text: str) -> list[int]:
    """String indices where parts 2.. start, for a multi-part UCS-2 text."""
    try:
        encoded = text.encode("utf-16-le")
    except UnicodeEncodeError:  # lone surrogates: pairs in the bytes would not be characters
        return _ucs2_cuts_per_char(text)
    high_bytes = encoded[1::2]  # one byte per unit: D8-DB high surrogate, DC-DF low surrogate
    total = len(high_bytes)
    cuts: list[int] = []
    start = pairs = 0
    while total - start > UCS2_PART:
        end = start + UCS2_PART
        if 0xDC <= high_bytes[end] <= 0xDF:  # unit `end` is a low surrogate: keep the pair
            end -= 1
        part = high_bytes[start:end]
        pairs += len(part) - len(part.translate(None, _HIGH_SURROGATE_BYTES))
        cuts.append(end - pairs)  # each surrogate pair is 2 units but 1 Python character
        start = end
    return cuts


def _ucs2_cuts_per_char(text: str) -> list[int]:
    """Slow but obvious greedy split, only for malformed text with lone surrogates."""
    cuts: list[int] = []
    used = 0
    for index, char in enumerate(text):
        cost = 2 if ord(char) > 0xFFFF else 1
        if used + cost > UCS2_PART:
            cuts.append(index)
            used = 0
        used += cost
    return cuts


def _cuts(text: str, encoding: str, units: int) -> list[int] | None:
    """Cut indices for a text of known encoding and length; None when it fits one SMS."""
    single, part = (GSM7_SINGLE, GSM7_PART) if encoding == GSM7 else (UCS2_SINGLE, UCS2_PART)
    if units <= single:
        return None
    if units == len(text):  # every character costs 1: fixed-size parts
        return list(range(part, len(text), part))
    return _gsm7_cuts(text) if encoding == GSM7 else _ucs2_cuts(text)


def count_segments(text: str) -> SegmentCount:
    """Encoding, length in that encoding and number of SMS parts of `text`."""
    encoding, units = _encoding_and_units(text)
    if encoding == GSM7:
        single, part = GSM7_SINGLE, GSM7_PART
    else:
        single, part = UCS2_SINGLE, UCS2_PART
    if units <= single:
        return (_GSM7_ONE if encoding == GSM7 else _UCS2_ONE)[units]
    if units == len(text):  # no 2-unit characters: plain ceiling division
        return SegmentCount(encoding, units, -(-units // part))
    cuts = _cuts(text, encoding, units)
    assert cuts is not None
    return SegmentCount(encoding, units, len(cuts) + 1)


def split_segments(text: str) -> list[str]:
    """The text cut into the parts count_segments counted (for SMPP UDH concatenation later).

    The parts join back to `text` exactly; the empty string has no parts.
    """
    if not text:
        return []
    cuts = _cuts(text, *_encoding_and_units(text))
    if cuts is None:
        return [text]
    return [text[a:b] for a, b in pairwise([0, *cuts, len(text)])]
