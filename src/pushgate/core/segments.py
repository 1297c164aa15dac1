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
from collections.abc import Callable
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
_EXTENSION = re.compile("[" + "".join(re.escape(c) for c in sorted(GSM_EXTENSION)) + "]")
_NON_BMP = re.compile("[\U00010000-\U0010ffff]")
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


def is_gsm7(text: str) -> bool:
    """True if `text` can be sent in the GSM 7-bit alphabet (basic set plus extension table)."""
    return _encoding_and_units(text)[0] == GSM7


def _extension_count(text: str) -> int:
    """Number of extension characters (2 septets each) in a GSM-7 text."""
    if text.isascii():
        return len(text) - len(text.encode("ascii").translate(None, _ASCII_EXTENSION))
    return len(_EXTENSION.findall(text))


def _non_bmp_count(text: str) -> int:
    """Number of characters outside the BMP (a surrogate pair, 2 units, each) in `text`."""
    return (len(text.encode("utf-16-le")) >> 1) - len(text)


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
        return GSM7, len(text) + len(_EXTENSION.findall(text))
    return UCS2, len(text) + _non_bmp_count(text)


def _greedy_cuts(text: str, limit: int, wide_count: Callable[[str], int]) -> list[int]:
    """Start indices of every part after the first, when parts hold at most `limit` units and
    the characters counted by `wide_count` cost 2 units (an escape or a surrogate pair).

    Python strings index by code point, so a cut between indices can never split a surrogate
    pair or an escape pair; the 2-unit cost is what keeps each part within `limit`.

    Greedy means each part ends at the largest index whose units fit. Instead of walking
    character by character, start from a window of `limit` characters (at least `limit`
    units) and drop ceil(excess / 2) characters at a time: that never removes more than one
    unit too many, and only when all dropped characters were wide, in which case the first of
    them could not have fitted anyway. So the loop ends on the greedy cut after a few C-level
    counts per part.
    """
    n = len(text)
    cuts: list[int] = []
    start = 0
    while True:
        end = min(start + limit, n)
        units = end - start + wide_count(text[start:end])
        while units > limit:
            drop = (units - limit + 1) // 2
            units -= drop + wide_count(text[end - drop : end])
            end -= drop
        if end >= n:
            return cuts
        cuts.append(end)
        start = end


def _cuts(text: str, encoding: str, units: int) -> list[int] | None:
    """Cut indices for a text of known encoding and length; None when it fits one SMS."""
    if encoding == GSM7:
        single, part, wide_count = GSM7_SINGLE, GSM7_PART, _extension_count
    else:
        single, part, wide_count = UCS2_SINGLE, UCS2_PART, _non_bmp_count
    if units <= single:
        return None
    if units == len(text):  # every character costs 1: fixed-size parts
        return list(range(part, len(text), part))
    return _greedy_cuts(text, part, wide_count)


def count_segments(text: str) -> SegmentCount:
    """Encoding, length in that encoding and number of SMS parts of `text`."""
    encoding, units = _encoding_and_units(text)
    if encoding == GSM7:
        single, part = GSM7_SINGLE, GSM7_PART
    else:
        single, part = UCS2_SINGLE, UCS2_PART
    if units <= single:
        return SegmentCount(encoding, units, 1 if units else 0)
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
