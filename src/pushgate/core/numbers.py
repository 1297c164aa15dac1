"""Fast phone-number validation for recipients in Picky Assist format.

Recipients arrive as ASCII digit strings that start with the country calling code, without
``+`` and without a leading ``0`` (``919876543210``). We must refuse numbers that cannot exist,
and the authority on "can exist" is the ``phonenumbers`` library: for every digit string ``x``
of at most 15 digits, ``number_problem(x) is None`` is exactly
``phonenumbers.is_valid_number(phonenumbers.parse("+" + x))``.

Calling ``parse`` + ``is_valid_number`` costs tens of microseconds per number, far too much for
a request carrying 10,000 recipients. Most of that cost is generic parsing (punctuation,
extensions, RFC 3966, alpha characters, IDD prefixes) and re-matching up to eleven per-type
regexes one by one. Our input is already canonical, so we only keep the parts of the algorithm
that can change the answer for a bare digit string, and precompute per calling code:

* one compiled regex per (region, national-number length) that is the union of the patterns of
  every number type allowed at that length, guarded by the region's general pattern - the same
  test ``_number_type_helper`` performs, in a single ``fullmatch``;
* the region-selection rules for calling codes shared by several regions (+1, +7, +44, ...),
  applied in ``phonenumbers``' order, because a number is validated only against the region
  ``region_code_for_number`` picks;
* the national-prefix stripping that ``parse`` applies even to ``+``-prefixed input (so
  ``+1 1 415 555 2671`` and ``+44 0 20 ...`` are *valid* for phonenumbers) — used here to
  recognise such numbers and refuse them (see below).

Tables are built lazily, on the first number of each calling code, and cached for the life of
the process. If a calling code ever uses a metadata feature this module does not model, its
table falls back to calling ``phonenumbers`` itself: correctness first, then speed.

Deliberate differences from ``phonenumbers`` (the API contract, not accidents):

* anything but ASCII digits is refused (``phonenumbers`` happily strips spaces, ``+``, dashes,
  letters and converts Arabic-Indic digits);
* more than 15 digits is refused (ITU-T E.164 maximum), although ``phonenumbers`` accepts a few
  16-19 digit numbers (some German, Japanese, Indonesian, Nigerian toll-free/fixed ranges);
* a number that is valid only once a national (trunk or carrier) prefix after the country code
  is stripped (``4402079460000``, ``789161234567``) is refused with the corrected number in the
  reason: those digits are not the address a provider delivers to, and sending them as written
  would fail later, after the customer was charged.

The module does no I/O and holds no locks: a table built twice by racing threads is harmless.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import phonenumbers
from phonenumbers import REGION_CODE_FOR_NON_GEO_ENTITY, PhoneMetadata
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

__all__ = ["number_problem", "region_of"]

#: E.164 caps a full international number (country code included) at 15 digits.
MAX_DIGITS = 15

# Limits hard-coded in phonenumbers.phonenumberutil (private there, so mirrored here).
_MIN_LENGTH_FOR_NSN = 2
_MAX_LENGTH_FOR_NSN = 17
_MAX_LENGTH_COUNTRY_CODE = 3

NOT_DIGITS = "must contain digits only, with country code and no '+'"
LEADING_ZERO = "must not start with 0"
TOO_LONG = f"too long: at most {MAX_DIGITS} digits including country code"
TOO_SHORT = "too short"
UNKNOWN_COUNTRY_CODE = "unknown country code"

# The order in which phonenumbers' _number_type_helper consults the number types. Mobile is
# dropped when its pattern equals fixed_line's, exactly as _number_type_helper does.
_TYPE_FIELDS = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
    "mobile",
)

# A result is (region, problem): exactly one of the two is None.
_Result = tuple[str | None, str | None]
_Matcher = Callable[[str], object]
# prefix regex, transform rule, general-pattern fullmatch, possible lengths, local-only lengths
_StripArgs = tuple[re.Pattern[str], str | None, _Matcher | None, tuple[int, ...], tuple[int, ...]]

_R_NOT_DIGITS: _Result = (None, NOT_DIGITS)
_R_LEADING_ZERO: _Result = (None, LEADING_ZERO)
_R_TOO_LONG: _Result = (None, TOO_LONG)
_R_TOO_SHORT: _Result = (None, TOO_SHORT)
_R_UNKNOWN_CC: _Result = (None, UNKNOWN_COUNTRY_CODE)


class _Unsupported(Exception):
    """Raised while building a table when the metadata uses something we do not model."""


def _length_test_accepts(length: int, possible: tuple[int, ...], local: tuple[int, ...]) -> bool:
    """Mirror ``_test_number_length(nsn, metadata)`` as used by ``parse`` after stripping a
    national prefix: the stripped number is kept unless the result is TOO_SHORT,
    IS_POSSIBLE_LOCAL_ONLY or INVALID_LENGTH (note that TOO_LONG *is* kept)."""
    if length in local:
        return False
    if possible[0] == length:
        return True
    if possible[0] > length:
        return False
    if possible[-1] < length:
        return True
    return length in possible[1:]


def _label(cc: int, main_region: str) -> str:
    """How reasons name a calling code: its main region, or "+800" for non-geographic codes."""
    return f"+{cc}" if main_region == REGION_CODE_FOR_NON_GEO_ENTITY else main_region


class _Region:
    """Validity test of one region's metadata, keyed by national-number length."""

    __slots__ = ("code", "leading", "by_length")

    def __init__(self, code: str, metadata: PhoneMetadata) -> None:
        self.code = code
        # Only consulted for calling codes shared by several regions (prefix match, like
        # phonenumbers' _region_code_for_number_from_list).
        self.leading: _Matcher | None = (
            re.compile(metadata.leading_digits).match
            if metadata.leading_digits is not None
            else None
        )
        self.by_length: dict[int, _Matcher] = _validators_by_length(metadata)

    def is_valid(self, nsn: str) -> bool:
        """``_number_type_helper(nsn, metadata) != UNKNOWN``, in one regex call."""
        match = self.by_length.get(len(nsn))
        return match is not None and match(nsn) is not None


def _validators_by_length(metadata: PhoneMetadata) -> dict[int, _Matcher]:
    """For each national-number length, one ``fullmatch`` equivalent to
    "general desc matches and at least one number-type desc matches".

    A desc "matches" when the length is among its possible lengths (or it lists none) and its
    pattern matches the whole number; that per-desc length filter is why we build one regex per
    length instead of a single union.
    """
    general = metadata.general_desc
    if general is None or not general.national_number_pattern:
        return {}
    types = []
    for field in _TYPE_FIELDS:
        if field == "mobile" and metadata.same_mobile_and_fixed_line_pattern:
            continue
        desc = getattr(metadata, field)
        if desc is None or not desc.national_number_pattern:
            continue
        types.append((frozenset(desc.possible_length), desc.national_number_pattern))
    for pattern in [general.national_number_pattern] + [p for _, p in types]:
        if re.compile(pattern).groups:  # would break group numbering once combined
            raise _Unsupported("capturing group in number pattern")

    general_lengths = frozenset(general.possible_length)
    out: dict[int, _Matcher] = {}
    for length in range(1, _MAX_LENGTH_FOR_NSN + 1):
        if general_lengths and length not in general_lengths:
            continue
        alternatives: list[str] = []
        for lengths, pattern in types:
            if (not lengths or length in lengths) and pattern not in alternatives:
                alternatives.append(pattern)
        if not alternatives:
            continue
        union = "|".join(f"(?:{p})" for p in alternatives)
        regex = f"(?=(?:{general.national_number_pattern})\\Z)(?:{union})"
        out[length] = re.compile(regex).fullmatch
    return out


class _CallingCode:
    """Everything needed to validate numbers of one country calling code."""

    __slots__ = ("cc", "label", "regions", "single", "lengths", "_prefix", "_strip_args")

    def __init__(self, cc: int, region_codes: tuple[str, ...]) -> None:
        metas = []
        for code in region_codes:
            meta = PhoneMetadata.metadata_for_region_or_calling_code(cc, code)
            if meta is None:
                raise _Unsupported(f"no metadata for {code}")
            metas.append(meta)
        self.cc = str(cc)
        self.regions = tuple(_Region(code, m) for code, m in zip(region_codes, metas, strict=True))
        main = metas[0]  # parse() strips national prefixes with the main region's metadata
        self.label = _label(cc, region_codes[0])
        self.single = self.regions[0] if len(self.regions) == 1 else None
        self.lengths = frozenset(n for r in self.regions for n in r.by_length)

        self._prefix: _Matcher | None = None
        self._strip_args: _StripArgs | None = None
        if main.national_prefix_for_parsing:
            prefix_re = re.compile(main.national_prefix_for_parsing)
            rule = main.national_prefix_transform_rule or None
            if rule is not None and prefix_re.groups == 0:
                raise _Unsupported("transform rule without groups")  # phonenumbers would crash
            general = main.general_desc
            if general is None:
                raise _Unsupported("no general desc")
            possible = tuple(general.possible_length)
            if not possible:
                raise _Unsupported("general desc without possible lengths")
            general_match = (
                re.compile(general.national_number_pattern).fullmatch
                if general.national_number_pattern
                else None
            )
            self._prefix = prefix_re.match
            self._strip_args = (
                prefix_re,
                rule,
                general_match,
                possible,
                tuple(general.possible_length_local_only),
            )

    def _strip_national_prefix(self, nsn: str) -> str:
        """What ``parse`` does with ``_maybe_strip_national_prefix_carrier_code`` and the
        length check that follows it. Only reached when the prefix regex matches."""
        assert self._strip_args is not None
        prefix_re, rule, general_match, possible, local = self._strip_args
        m = prefix_re.match(nsn)
        if m is None:
            return nsn
        viable = general_match is not None and general_match(nsn) is not None
        groups = m.groups()
        if rule is None or groups[-1] is None:
            candidate = nsn[m.end() :]
        else:
            candidate = prefix_re.sub(rule, nsn, count=1)
        if viable and (general_match is None or general_match(candidate) is None):
            return nsn
        if _length_test_accepts(len(candidate), possible, local):
            return candidate
        return nsn

    def classify(self, nsn: str) -> _Result:
        """(region, None) if valid, else (None, reason); ``nsn`` is what follows the code."""
        if len(nsn) < _MIN_LENGTH_FOR_NSN:
            return _R_TOO_SHORT
        stripped_from = None
        if self._prefix is not None and self._prefix(nsn) is not None:
            stripped = self._strip_national_prefix(nsn)
            if stripped != nsn:
                stripped_from, nsn = nsn, stripped
            if len(nsn) > _MAX_LENGTH_FOR_NSN:
                return _R_TOO_LONG
        if stripped_from is not None:
            region, problem = self._classify_national(nsn)
            if problem is None:
                return (None, f"has a national prefix after the country code; "
                              f"send it as {self.cc}{nsn}")
            return (region, problem)
        return self._classify_national(nsn)

    def _classify_national(self, nsn: str) -> _Result:
        single = self.single
        if single is not None:
            match = single.by_length.get(len(nsn))
            if match is not None and match(nsn) is not None:
                return (single.code, None)
            chosen: _Region | None = single
        else:
            # _region_code_for_number_from_list: the first region whose leading digits match
            # (or, lacking leading digits, for which the number is valid) decides alone.
            chosen = None
            for region in self.regions:
                if region.leading is not None:
                    if region.leading(nsn) is not None:
                        if region.is_valid(nsn):
                            return (region.code, None)
                        chosen = region
                        break
                elif region.is_valid(nsn):
                    return (region.code, None)
        if len(nsn) not in self.lengths:
            return (None, f"wrong length for {self.label}")
        label = self.label if chosen is None or chosen is self.single else chosen.code
        return (None, f"not a valid number for {label}")


class _Fallback:
    """Ask phonenumbers directly; used only for calling codes we could not model."""

    __slots__ = ("cc", "label")

    def __init__(self, cc: int, label: str) -> None:
        self.cc = cc
        self.label = label

    def classify(self, nsn: str) -> _Result:
        try:
            parsed = phonenumbers.parse(f"+{self.cc}{nsn}")
        except phonenumbers.NumberParseException:
            return (None, f"not a valid number for {self.label}")
        if phonenumbers.is_valid_number(parsed):
            canonical = phonenumbers.national_significant_number(parsed)
            if canonical != nsn:
                return (None, f"has a national prefix after the country code; "
                              f"send it as {self.cc}{canonical}")
            return (phonenumbers.region_code_for_number(parsed), None)
        return (None, f"not a valid number for {self.label}")


class _Lazy:
    """Placeholder that builds its calling code's table on first use and replaces itself."""

    __slots__ = ("prefix", "cc")

    def __init__(self, prefix: str, cc: int) -> None:
        self.prefix = prefix
        self.cc = cc

    def classify(self, nsn: str) -> _Result:
        return _build(self.prefix, self.cc).classify(nsn)


def _build(prefix: str, cc: int) -> _CallingCode | _Fallback:
    regions = tuple(COUNTRY_CODE_TO_REGION_CODE[cc])
    table: _CallingCode | _Fallback
    try:
        table = _CallingCode(cc, regions)
    except (_Unsupported, re.error):
        table = _Fallback(cc, _label(cc, regions[0]))
    _TABLES[prefix] = table
    return table


#: Country-code digits -> table (or lazy placeholder). Keyed by the string prefix so that the
#: hot path never converts to int.
_TABLES: dict[str, _CallingCode | _Fallback | _Lazy] = {
    str(cc): _Lazy(str(cc), cc) for cc in COUNTRY_CODE_TO_REGION_CODE
}


def _classify(number: str) -> _Result:
    if not (number.isdigit() and number.isascii()):  # "" is not isdigit()
        return _R_NOT_DIGITS
    if number[0] == "0":
        return _R_LEADING_ZERO
    if len(number) > MAX_DIGITS:
        return _R_TOO_LONG
    if len(number) <= _MIN_LENGTH_FOR_NSN:  # parse(): TOO_SHORT_AFTER_IDD
        return _R_TOO_SHORT
    # _extract_country_code: the shortest prefix that is a known code wins.
    for size in range(1, _MAX_LENGTH_COUNTRY_CODE + 1):
        table = _TABLES.get(number[:size])
        if table is not None:
            return table.classify(number[size:])
    return _R_UNKNOWN_CC


#: How many valid numbers ``_VALID`` remembers: ~110 bytes each, so ~11 MB when full.
VALID_CACHE_SIZE = 100_000

# Valid numbers seen lately and their regions. Businesses push to the same customers again and
# again (a school's parents, a utility's account holders), and a dict lookup costs a small
# fraction of a validation, the largest share of the accept path's per-message work
# (docs/benchmarks.md). Only valid numbers are kept, so a push of junk cannot fill it with
# long strings; when full it starts over, which costs one validation per number, not more.
_VALID: dict[str, str] = {}


def _classify_remembered(number: str) -> _Result:
    region = _VALID.get(number)
    if region is not None:
        return (region, None)
    result = _classify(number)
    region = result[0]
    if region is not None:
        if len(_VALID) >= VALID_CACHE_SIZE:
            _VALID.clear()
        _VALID[number] = region
    return result


def number_problem(number: str) -> str | None:
    """None if `number` is a valid international number in Picky format, else a short human reason
    such as "must contain digits only, with country code and no '+'", "must not start with 0",
    "unknown country code", "wrong length for IN", "not a valid number for BR".

    Agrees with ``phonenumbers.is_valid_number(phonenumbers.parse("+" + number))`` for every
    ASCII digit string of at most 15 digits; see the module docstring for the deliberate
    differences outside that domain.
    """
    return _classify_remembered(number)[1]


def region_of(number: str) -> str | None:
    """ISO region code (e.g. "IN") of a valid number, else None.

    Same answer as ``phonenumbers.region_code_for_number`` for valid numbers, which for shared
    calling codes is the specific region (``CA`` rather than ``US``, ``GG`` rather than ``GB``)
    and for non-geographic codes (+800, +882, +979, ...) is ``"001"``, the UN M.49 code for
    "World" that phonenumbers uses for them.
    """
    return _classify_remembered(number)[0]


_TYPED_NUMBER_SEPARATORS = str.maketrans("", "", " \t-.()/\u00a0")


def typed_number(text: str) -> str | None:
    """A number as a person types it (``+91 98765-43210``, ``0091 (98765) 43210``) in the form
    the API takes and stores (``919876543210``: digits with the country code, no ``+``), or
    None when it is no number (a letter, nothing left)."""
    digits = text.strip().translate(_TYPED_NUMBER_SEPARATORS)
    if digits.startswith("+"):
        digits = digits[1:]
    elif digits.startswith("00"):
        digits = digits[2:]
    return digits if digits and digits.isascii() and digits.isdigit() else None
