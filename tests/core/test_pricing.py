"""Credits are integer micro-credits inside; strings only at the edges."""

from __future__ import annotations

import pytest

from pushgate.core import pricing
from pushgate.core.pricing import MICRO, credit_text, format_credits, parse_credits


@pytest.mark.parametrize(("text", "micro"), [
    ("0.005", 5_000),
    ("1", MICRO),
    ("2.5", 2_500_000),
    ("0", 0),
    ("0.000001", 1),
    (" 10.25 ", 10_250_000),
    ("1e-3", 1_000),
    (3, 3 * MICRO),
    (0.1, 100_000),      # a float goes through its repr, never through binary arithmetic
    (0.3, 300_000),
    ("123456789.123456", 123_456_789_123_456),
])
def test_parse_credits(text: str | int | float, micro: int) -> None:
    assert parse_credits(text) == micro


@pytest.mark.parametrize("text", [
    "-1", "-0.005", "abc", "", "1,5", "nan", "inf", "-inf", "0.0000001", "0.0050001",
])
def test_parse_credits_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_credits(text)


@pytest.mark.parametrize(("micro", "text"), [
    (5_000, "0.005"),
    (0, "0"),
    (2_500_000, "2.5"),
    (MICRO, "1"),
    (10 * MICRO, "10"),
    (1, "0.000001"),
    (1_000_010, "1.00001"),
    (-5_000, "-0.005"),
    (-3 * MICRO, "-3"),
    (123_456_789_123_456, "123456789.123456"),
])
def test_format_credits(micro: int, text: str) -> None:
    assert format_credits(micro) == text
    assert credit_text(micro) == text
    assert credit_text(micro) == text   # kept


def test_credit_text_keeps_a_bounded_number_of_amounts() -> None:
    for micro in range(3 * pricing.CREDIT_TEXTS_KEPT):
        assert credit_text(micro) == format_credits(micro)
        assert len(pricing._credit_texts) <= pricing.CREDIT_TEXTS_KEPT


@pytest.mark.parametrize("micro", [0, 1, 7, 999_999, MICRO, 5_000, 1_234_567, 10**15 + 3])
def test_round_trip(micro: int) -> None:
    assert parse_credits(format_credits(micro)) == micro


def test_many_small_prices_add_up_exactly() -> None:
    # The float sum of a million 0.005s is not 5000; the micro-credit sum is.
    price = parse_credits("0.005")
    assert format_credits(price * 1_000_000) == "5000"
    assert format_credits(parse_credits("0.1") + parse_credits("0.2")) == "0.3"
