"""pushgate.core.numbers must agree with phonenumbers, only faster.

The contract: for every ASCII digit string ``x`` of at most 15 digits,
``number_problem(x) is None`` equals ``is_valid_number(parse("+" + x))`` (a parse error counts as
invalid), and ``region_of(x)`` equals ``region_code_for_number`` for valid numbers, else None.
"""

from __future__ import annotations

import random

import phonenumbers
import pytest
from phonenumbers import PhoneMetadata, PhoneNumberType
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

from pushgate.core import numbers
from pushgate.core.numbers import (
    LEADING_ZERO,
    NOT_DIGITS,
    TOO_LONG,
    UNKNOWN_COUNTRY_CODE,
    number_problem,
    region_of,
)

_TYPES = (
    PhoneNumberType.FIXED_LINE,
    PhoneNumberType.MOBILE,
    PhoneNumberType.FIXED_LINE_OR_MOBILE,
    PhoneNumberType.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE,
    PhoneNumberType.SHARED_COST,
    PhoneNumberType.VOIP,
    PhoneNumberType.PERSONAL_NUMBER,
    PhoneNumberType.PAGER,
    PhoneNumberType.UAN,
    PhoneNumberType.VOICEMAIL,
)
_DIGITS = "0123456789"


def phonenumbers_valid(number: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse("+" + number))
    except phonenumbers.NumberParseException:
        return False


def reference(number: str) -> tuple[bool, str | None]:
    """The contract, from phonenumbers: (valid, region of a valid number). Valid means
    phonenumbers calls it valid AND the digits are already canonical (country code + national
    significant number, no national prefix that parse() had to strip)."""
    try:
        parsed = phonenumbers.parse("+" + number)
    except phonenumbers.NumberParseException:
        return False, None
    if not phonenumbers.is_valid_number(parsed) or _picky(parsed) != number:
        return False, None
    return True, phonenumbers.region_code_for_number(parsed)


def _picky(parsed: phonenumbers.PhoneNumber) -> str:
    return f"{parsed.country_code}{phonenumbers.national_significant_number(parsed)}"


def _example_numbers() -> list[str]:
    """Every example number phonenumbers ships, valid and invalid, in Picky format."""
    found: set[str] = set()
    for region in phonenumbers.SUPPORTED_REGIONS:
        for numtype in _TYPES:
            example = phonenumbers.example_number_for_type(region, numtype)
            if example is not None:
                found.add(_picky(example))
        invalid = phonenumbers.invalid_example_number(region)
        if invalid is not None:
            found.add(_picky(invalid))
    for cc in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        example = phonenumbers.example_number_for_non_geo_entity(cc)
        if example is not None:
            found.add(_picky(example))
    return sorted(found)


EXAMPLES = _example_numbers()


def _mutations(number: str, rng: random.Random) -> set[str]:
    """One digit removed / added / changed, plus the national prefix re-inserted (which
    phonenumbers strips again while parsing, so such numbers can stay valid)."""
    out: set[str] = set()
    for i in range(len(number)):
        out.add(number[:i] + number[i + 1 :])
        out.add(number[:i] + rng.choice(_DIGITS.replace(number[i], "")) + number[i + 1 :])
    for d in _DIGITS:
        out.add(number + d)
        i = rng.randrange(1, len(number) + 1)
        out.add(number[:i] + d + number[i:])
    return out


def _with_national_prefix(number: str) -> set[str]:
    """cc + national prefix + national number, for the calling code's main region."""
    out: set[str] = set()
    for size in (1, 2, 3):
        cc = int(number[:size])
        if cc in COUNTRY_CODE_TO_REGION_CODE:
            meta = PhoneMetadata.metadata_for_region_or_calling_code(
                cc, COUNTRY_CODE_TO_REGION_CODE[cc][0]
            )
            if meta is not None and meta.national_prefix:
                out.add(number[:size] + meta.national_prefix + number[size:])
            break
    return out


def assert_agrees(candidates: set[str] | list[str]) -> int:
    """Compare with phonenumbers; return how many candidates were valid (sanity signal)."""
    disagreements = []
    valid = 0
    for number in sorted(candidates):
        if not number or number[0] == "0" or len(number) > numbers.MAX_DIGITS:
            continue
        expected_valid, expected_region = reference(number)
        valid += expected_valid
        problem = number_problem(number)
        if (problem is None) != expected_valid or region_of(number) != expected_region:
            disagreements.append((number, problem, expected_valid, expected_region))
    assert disagreements == [], disagreements[:20]
    return valid


def test_examples_agree_with_phonenumbers() -> None:
    assert len(EXAMPLES) > 1000
    valid = assert_agrees(EXAMPLES)
    assert valid > 1000  # the invalid examples are a minority


def test_mutated_examples_agree_with_phonenumbers() -> None:
    rng = random.Random(20240601)
    candidates: set[str] = set()
    for number in EXAMPLES:
        candidates |= _mutations(number, rng)
        candidates |= _with_national_prefix(number)
    assert len(candidates) > 40_000
    assert assert_agrees(candidates) > 1000


def test_random_digit_strings_agree_with_phonenumbers() -> None:
    rng = random.Random(12345)
    candidates = {
        rng.choice("123456789") + "".join(rng.choices(_DIGITS, k=rng.randint(6, 14)))
        for _ in range(5000)
    }
    assert_agrees(candidates)


def test_random_national_numbers_of_every_calling_code_agree() -> None:
    """Uniform random strings are mostly junk for small countries; aim at each code's lengths."""
    rng = random.Random(777)
    candidates: set[str] = set()
    for cc, regions in COUNTRY_CODE_TO_REGION_CODE.items():
        lengths = set()
        for region in regions:
            meta = PhoneMetadata.metadata_for_region_or_calling_code(cc, region)
            lengths |= {n for n in meta.general_desc.possible_length if n > 0}
        for length in sorted(lengths | {min(lengths) - 1, max(lengths) + 1}):
            for _ in range(8):
                candidates.add(f"{cc}" + "".join(rng.choices(_DIGITS, k=length)))
    assert_agrees(candidates)


@pytest.mark.parametrize(
    ("number", "region"),
    [
        ("919876543210", "IN"),
        ("14155552671", "US"),
        ("16135550123", "CA"),  # shared +1: the region comes from the area code
        ("5511987654321", "BR"),
        ("447400123456", "GB"),
        ("447781123456", "GG"),
        ("79161234567", "RU"),
        ("4915123456789", "DE"),
        ("80012345678", "001"),  # non-geographic (UIFN) numbers are valid for phonenumbers
    ],
)
def test_hand_picked_valid(number: str, region: str) -> None:
    assert number_problem(number) is None
    assert region_of(number) == region
    assert reference(number) == (True, region)


@pytest.mark.parametrize(
    "number",
    [
        "91987654321",  # Indian mobile missing a digit
        "9198765432100",  # one digit too many
        "12425551234",  # +1 242 is the Bahamas, and 555 is not a valid exchange there
        "5511087654321",
        "999123456789",  # +999 is not assigned
        "123",
    ],
)
def test_hand_picked_invalid(number: str) -> None:
    assert number_problem(number) is not None
    assert region_of(number) is None
    assert reference(number) == (False, None)


def test_12345678901_follows_phonenumbers() -> None:
    """Looks fake, but 234 is a real Ohio area code: phonenumbers calls it valid, and so do we."""
    assert reference("12345678901") == (True, "US")
    assert number_problem("12345678901") is None


def test_national_prefix_after_country_code_is_refused_with_the_fix() -> None:
    """parse() strips a national/trunk prefix even after "+cc", so these are *valid* for
    phonenumbers; they are not the digits a provider delivers to, so we refuse them and name
    the number to send instead."""
    for number, fixed in [
        ("114155552671", "14155552671"),  # +1 1 415 ...
        ("4402079460000", "442079460000"),  # +44 0 20 ...
        ("789161234567", "79161234567"),  # +7 8 916 ...
    ]:
        assert phonenumbers_valid(number)
        assert number_problem(number) == (
            f"has a national prefix after the country code; send it as {fixed}")
        assert region_of(number) is None
        assert number_problem(fixed) is None


@pytest.mark.parametrize(
    "number",
    [
        "",
        " ",
        "+919876543210",
        "91 98765 43210",
        "91-9876543210",
        "91987654321O",
        "abc",
        "٩١٩٨٧٦٥٤٣٢١٠",
        "９１９８７６５４３２１０",
        "¹²³4567890",
        "919876543210\n",
    ],
)
def test_non_digits_refused(number: str) -> None:
    assert number_problem(number) == NOT_DIGITS
    assert region_of(number) is None


def test_leading_zero_refused() -> None:
    assert number_problem("0919876543210") == LEADING_ZERO
    assert number_problem("00919876543210") == LEADING_ZERO
    assert number_problem("0") == LEADING_ZERO


def test_too_long_refused_even_if_phonenumbers_accepts() -> None:
    """E.164 allows 15 digits. phonenumbers knows a few longer ranges; we refuse them."""
    assert number_problem("9198765432101234") == TOO_LONG
    long_examples = [n for n in EXAMPLES if len(n) > numbers.MAX_DIGITS]
    for number in long_examples:
        assert number_problem(number) == TOO_LONG
        assert region_of(number) is None


def test_reasons() -> None:
    assert number_problem("999123456789") == UNKNOWN_COUNTRY_CODE
    assert number_problem("9198765") == "wrong length for IN"
    assert number_problem("5511087654321") == "not a valid number for BR"
    assert number_problem("12425551234") == "not a valid number for BS"
    assert number_problem("80012") == "wrong length for +800"
    assert number_problem("12") == "too short"
    assert number_problem("1") == "too short"


def test_tables_are_built_lazily_and_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(numbers, "_VALID", {})
    monkeypatch.setitem(numbers._TABLES, "91", numbers._Lazy("91", 91))
    number_problem("919876543210")
    table = numbers._TABLES["91"]
    assert isinstance(table, numbers._CallingCode)
    number_problem("919876543211")
    assert numbers._TABLES["91"] is table


def test_no_calling_code_needs_the_slow_fallback() -> None:
    """Every calling code in the current metadata is modelled; if a phonenumbers upgrade
    brings an unmodelled feature the module still works (via _Fallback), and this test says so."""
    for cc in COUNTRY_CODE_TO_REGION_CODE:
        table = numbers._build(str(cc), cc)
        assert isinstance(table, numbers._CallingCode), cc


def test_fallback_agrees_too() -> None:
    rng = random.Random(5)
    for number in EXAMPLES[::7]:
        for candidate in {number, *_mutations(number, rng)}:
            if len(candidate) > numbers.MAX_DIGITS or candidate[0] == "0":
                continue
            for size in (1, 2, 3):
                cc = int(candidate[:size])
                if cc in COUNTRY_CODE_TO_REGION_CODE:
                    break
            else:
                continue
            fallback = numbers._Fallback(cc, "XX").classify(candidate[size:])
            table = numbers._TABLES[str(cc)].classify(candidate[size:])
            assert (fallback[0], fallback[1] is None) == (table[0], table[1] is None), candidate


def test_valid_numbers_are_remembered_and_answer_the_same(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(numbers, "_VALID", {})
    calls: list[str] = []
    classify = numbers._classify

    def counting(number: str) -> tuple[str | None, str | None]:
        calls.append(number)
        return classify(number)

    monkeypatch.setattr(numbers, "_classify", counting)
    for _ in range(3):
        assert number_problem("919876543210") is None
        assert region_of("919876543210") == "IN"
        assert region_of("14165550123") == "CA"
        assert number_problem("9198765") == "wrong length for IN"
        assert number_problem("44020794600001") is not None
    # Valid numbers are validated once; refused ones every time (never remembered).
    assert calls.count("919876543210") == 1
    assert calls.count("14165550123") == 1
    assert calls.count("9198765") == 3
    assert calls.count("44020794600001") == 3
    assert numbers._VALID == {"919876543210": "IN", "14165550123": "CA"}


def test_remembered_numbers_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(numbers, "_VALID", {})
    monkeypatch.setattr(numbers, "VALID_CACHE_SIZE", 50)
    valid = [n for n in (f"9198765{i:05d}" for i in range(200)) if number_problem(n) is None]
    assert len(valid) > 100
    assert 0 < len(numbers._VALID) <= 50
    # Starting over forgets nothing that matters: every answer is still right.
    assert all(number_problem(n) is None for n in valid)
    assert len(numbers._VALID) <= 50


def test_typed_number_as_the_api_stores_it() -> None:
    from pushgate.core.numbers import typed_number

    assert typed_number("919876543210") == "919876543210"
    assert typed_number(" +91 98765-43210 ") == "919876543210"
    assert typed_number("0091 (98765) 43210") == "919876543210"
    assert typed_number("+1.415.555.0100") == "14155550100"
    assert typed_number("ref-42") is None
    assert typed_number("+") is None
    assert typed_number("") is None
    assert typed_number("٩١٩٨") is None      # digits, but not the API's
