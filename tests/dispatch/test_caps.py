"""Hourly and daily caps with the warm-up ramp of a new WhatsApp number."""

from __future__ import annotations

from pushgate.dispatch.pacing import SendCaps

DAY = 86_400.0


def test_no_caps_means_no_allowance_check() -> None:
    assert SendCaps.from_config({}).allowance(10**6, 10**6, 0.0) is None


def test_the_tighter_of_hourly_and_daily_wins() -> None:
    caps = SendCaps.from_config({"hourly_cap": 50, "daily_cap": 200})
    assert caps.allowance(10, 100, 0.0) == 40
    assert caps.allowance(10, 190, 0.0) == 10
    assert caps.allowance(60, 0, 0.0) == 0


def test_warm_up_ramps_the_daily_cap_up_to_it() -> None:
    caps = SendCaps.from_config({"daily_cap": 1000, "warmup_first_day": 20,
                                 "warmup_growth": 2, "warmup_started_at": 0})
    assert [caps.daily_limit(day * DAY + 1) for day in range(8)] == [
        20, 40, 80, 160, 320, 640, 1000, 1000]
    assert caps.allowance(0, 15, 1.0) == 5


def test_warm_up_alone_caps_the_day() -> None:
    caps = SendCaps.from_config({"warmup_first_day": 30, "warmup_started_at": 0})
    assert caps.allowance(0, 30, 10.0) == 0
    assert caps.daily_limit(DAY + 1) == 45
