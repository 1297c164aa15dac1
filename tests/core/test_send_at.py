"""``core/schedule.py``: reading ``send_at`` and deciding whether a push is scheduled."""

from __future__ import annotations

import pytest

from pushgate.core.errors import ApiError, Code
from pushgate.core.schedule import SEND_NOW_WITHIN_SECONDS, parse_send_at, starts_at

NOW = 1_800_000_000.0   # 2027-01-15T08:00:00Z
YEAR = 366 * 86400.0


@pytest.mark.parametrize(("value", "expected"), [
    ("2027-01-15T09:00:00Z", NOW + 3600),
    ("2027-01-15T14:30:00+05:30", NOW + 3600),
    ("2027-01-15T03:00:00-06:00", NOW + 3600),
    ("2027-01-15T09:00:00.250+00:00", NOW + 3600.25),
    (NOW + 3600, NOW + 3600),
    (int(NOW) + 3600, NOW + 3600),
    (f"{int(NOW) + 3600}", NOW + 3600),
    (f" {NOW + 3600.5} ", NOW + 3600.5),
])
def test_iso_8601_with_an_offset_or_unix_seconds(value: str | int | float,
                                                 expected: float) -> None:
    assert parse_send_at(value, NOW, YEAR) == pytest.approx(expected)


@pytest.mark.parametrize("value", [
    NOW - 86400, NOW, NOW + SEND_NOW_WITHIN_SECONDS, "2020-01-01T00:00:00Z", 1_500_000_000,
])
def test_a_time_not_ahead_sends_now(value: str | float) -> None:
    assert parse_send_at(value, NOW, YEAR) is None


def test_the_horizon_is_inclusive() -> None:
    assert parse_send_at(NOW + YEAR, NOW, YEAR) == NOW + YEAR
    with pytest.raises(ApiError) as refused:
        parse_send_at(NOW + YEAR + 1, NOW, YEAR)
    assert refused.value.code is Code.INVALID_SEND_AT
    assert "ahead" in refused.value.message


@pytest.mark.parametrize(("value", "why"), [
    ("2027-01-15T09:00:00", "offset"),
    ("", "empty"),
    ("   ", "empty"),
    ("next tuesday", "neither"),
    ("2027-02-30T09:00:00Z", "neither"),
    ("1.5e9", "neither"),
    ("-1800000000", "neither"),
    (float("nan"), "plausible"),
    (float("inf"), "plausible"),
    (1_800_000, "plausible"),
    (True, "must be a time"),
    ("9" * 400, "plausible"),
])
def test_unreadable_values_are_refused_with_their_reason(value: str | float, why: str) -> None:
    with pytest.raises(ApiError) as refused:
        parse_send_at(value, NOW, YEAR)
    assert refused.value.code is Code.INVALID_SEND_AT
    assert why in refused.value.message


def test_validity_starts_at_send_at_or_now() -> None:
    assert starts_at(None, NOW) == NOW
    assert starts_at(NOW + 60, NOW) == NOW + 60
    assert starts_at(NOW - 60, NOW) == NOW
