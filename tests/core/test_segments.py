"""SMS segment counting: worked examples from 3GPP TS 23.038 rules, plus a brute-force oracle."""

from __future__ import annotations

import random

import pytest

from pushgate.core.segments import (
    GSM_BASIC,
    GSM_EXTENSION,
    SegmentCount,
    count_segments,
    is_gsm7,
    split_segments,
)

EMOJI = "\N{GRINNING FACE}"  # outside the BMP: a surrogate pair, 2 UTF-16 units


def _units(text: str, gsm: bool) -> int:
    if gsm:
        return sum(2 if c in GSM_EXTENSION else 1 for c in text)
    return sum(2 if ord(c) > 0xFFFF else 1 for c in text)


def oracle_split(text: str) -> tuple[str, list[str]]:
    """The rules written the slow, obvious way: character by character."""
    gsm = all(c in GSM_BASIC or c in GSM_EXTENSION for c in text)
    single, part = (160, 153) if gsm else (70, 67)
    if _units(text, gsm) <= single:
        return ("GSM-7" if gsm else "UCS-2"), ([text] if text else [])
    parts: list[str] = []
    current: list[str] = []
    used = 0
    for c in text:
        cost = _units(c, gsm)
        if used + cost > part:
            parts.append("".join(current))
            current, used = [], 0
        current.append(c)
        used += cost
    parts.append("".join(current))
    return ("GSM-7" if gsm else "UCS-2"), parts


def check(text: str) -> SegmentCount:
    """count_segments and split_segments agree with each other and with the oracle."""
    result = count_segments(text)
    parts = split_segments(text)
    encoding, expected_parts = oracle_split(text)
    assert result.encoding == encoding
    assert result.units == _units(text, encoding == "GSM-7")
    assert parts == expected_parts
    assert result.segments == len(parts)
    assert "".join(parts) == text
    limit = {"GSM-7": (160, 153), "UCS-2": (70, 67)}[encoding][len(parts) > 1]
    for part in parts:
        assert _units(part, encoding == "GSM-7") <= limit
    return result


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("", "GSM-7", 0, 0),
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),
        ("€" * 81, "GSM-7", 162, 2),
        ("Price 10€", "GSM-7", 10, 1),
        ("{[~]}|\\^\f", "GSM-7", 18, 1),
        ("ж" * 70, "UCS-2", 70, 1),
        ("ж" * 71, "UCS-2", 71, 2),
        ("ж" * 134, "UCS-2", 134, 2),
        ("ж" * 135, "UCS-2", 135, 3),
        (f"Hi {EMOJI}", "UCS-2", 5, 1),
        (EMOJI * 35, "UCS-2", 70, 1),
        (EMOJI * 36, "UCS-2", 72, 2),
        ("a" * 149 + "ç", "UCS-2", 150, 3),
    ],
)
def test_worked_examples(text: str, encoding: str, units: int, segments: int) -> None:
    assert count_segments(text) == SegmentCount(encoding, units, segments)
    check(text)


def test_36_emoji_first_part_is_33_emoji() -> None:
    parts = split_segments(EMOJI * 36)
    assert parts == [EMOJI * 33, EMOJI * 3]  # 66 units: a 34th would need 68 > 67


def test_escape_pair_is_not_split_across_parts() -> None:
    text = "a" * 152 + "€" + "a" * 10
    assert count_segments(text) == SegmentCount("GSM-7", 164, 2)
    parts = split_segments(text)
    assert parts == ["a" * 152, "€" + "a" * 10]


def test_surrogate_pair_is_not_split_across_parts() -> None:
    text = "ж" * 66 + EMOJI + "ж" * 10
    parts = split_segments(text)
    assert parts == ["ж" * 66, EMOJI + "ж" * 10]
    assert count_segments(text) == SegmentCount("UCS-2", 78, 2)


def test_one_non_gsm_character_switches_the_whole_text() -> None:
    assert count_segments("a" * 150) == SegmentCount("GSM-7", 150, 1)
    assert count_segments("a" * 149 + "ç") == SegmentCount("UCS-2", 150, 3)
    # and the extension table loses its 2-septet cost: in UCS-2 "€" is one unit
    assert count_segments("€ж") == SegmentCount("UCS-2", 2, 1)


@pytest.mark.parametrize(
    "char",
    ["\n", "\r", " ", "@", "$", "_", "¤", "£", "¥", "§", "¡", "¿", "Ä", "Å", "Æ", "Ç", "É", "Ñ"]
    + ["Ö", "Ø", "Ü", "ß", "à", "ä", "å", "æ", "è", "é", "ì", "ñ", "ò", "ö", "ø", "ù", "ü"]
    + list("ΓΔΘΛΞΠΣΦΨΩ")
    + list("!\"#%&'()*+,-./:;<=>?09AZaz"),
)
def test_basic_characters_are_one_septet(char: str) -> None:
    assert is_gsm7(char)
    assert count_segments(char) == SegmentCount("GSM-7", 1, 1)


@pytest.mark.parametrize("char", list("\f^{}\\[~]|€"))
def test_extension_characters_are_two_septets(char: str) -> None:
    assert is_gsm7(char)
    assert count_segments(char) == SegmentCount("GSM-7", 2, 1)


@pytest.mark.parametrize(
    "char",
    ["`", "ç", "á", "í", "ó", "ú", "â", "ê", "\u2018", "\u2019", "\u201c", "\u201d", "\t"]
    + ["\x1b", "\x00", "\x7f", "\u00a0", "α", "Α", EMOJI],
)
def test_non_gsm_characters(char: str) -> None:
    assert not is_gsm7(char)
    assert not is_gsm7("hello " + char)
    assert count_segments(char).encoding == "UCS-2"


def test_is_gsm7() -> None:
    assert is_gsm7("")
    assert is_gsm7("Hello, World! Price: 10€ {ok}")
    assert is_gsm7("Ünicode Øre")
    assert not is_gsm7("café ça va")


def test_every_gsm_character_in_long_texts() -> None:
    rng = random.Random(3)
    alphabet = sorted(GSM_BASIC | GSM_EXTENSION)
    for length in (159, 160, 161, 200, 305, 306, 307, 459, 460, 1000):
        check("".join(rng.choices(alphabet, k=length)))


def test_random_texts_match_the_oracle() -> None:
    """Mixes chosen to hit the greedy boundaries: dense and sparse 2-unit characters."""
    rng = random.Random(42)
    pools = [
        "abc def",
        "abc€{}",
        "€",
        "ab€" * 3 + "ж",
        "жж" + EMOJI,
        EMOJI,
        "aé\n" + EMOJI + "ж€",
        "abc" * 20 + "`",
    ]
    for _ in range(3000):
        pool = rng.choice(pools)
        text = "".join(rng.choices(pool, k=rng.randint(0, 700)))
        check(text)


def test_lone_surrogates_count_as_one_unit_and_do_not_crash() -> None:
    """json.loads('"\\ud83d"') yields a lone surrogate; it must not take the handler down."""
    assert count_segments("hi \ud83d") == SegmentCount("UCS-2", 4, 1)
    check("\ud83d" * 70 + EMOJI * 10 + "\udc00" * 3)
    check(("ab\ud83d" + EMOJI) * 40)


def test_split_of_short_and_empty_text() -> None:
    assert split_segments("") == []
    assert split_segments("hello") == ["hello"]
    assert split_segments("a" * 161) == ["a" * 153, "a" * 8]


def test_segment_count_is_frozen() -> None:
    result = count_segments("hi")
    with pytest.raises(AttributeError):
        result.units = 3  # type: ignore[misc]
