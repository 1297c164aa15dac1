"""core/optouts.py: numbers as opt-outs match them, keywords, and a plan without the entries
to opted-out numbers."""

from __future__ import annotations

import pytest

from pushgate.core.channels import ChannelSpec, default_rules
from pushgate.core.errors import Code
from pushgate.core.optouts import (
    DEFAULT_STOP_KEYWORDS,
    Action,
    KeywordSettings,
    checked_number,
    keyword_action,
    normal_number,
    parse_keywords,
    without_opted_out,
)
from pushgate.core.push import Limits, decode_push, plan_push


@pytest.mark.parametrize("raw", ["919876543210", "+919876543210", " +91 98765 43210 ",
                                 "0091-98765-43210", "+91 (98765) 43210", 919876543210,
                                 "91.98765.43210"])
def test_every_spelling_of_a_number_is_the_same(raw: str | int) -> None:
    assert normal_number(raw) == "919876543210"


def test_a_checked_number_must_be_valid() -> None:
    assert checked_number("+91 98765 43210") == "919876543210"
    with pytest.raises(ValueError, match="12"):
        checked_number("12")
    with pytest.raises(ValueError):
        checked_number("call me")


def test_keywords_are_whole_messages_trimmed_and_case_insensitive() -> None:
    settings = KeywordSettings()
    assert settings.stop == DEFAULT_STOP_KEYWORDS
    for text in ("STOP", " stop ", "Unsubscribe\n", "stopall", "cancel", "End", "quit"):
        assert keyword_action(text, settings) is Action.STOP, text
    for text in ("start", " UNSTOP "):
        assert keyword_action(text, settings) is Action.START, text
    for text in ("", "   ", "please stop", "stop!", "STOP " * 20, "starting"):
        assert keyword_action(text, settings) is None, text


def test_a_projects_own_keywords_replace_the_defaults() -> None:
    settings = KeywordSettings.from_columns("arrêt, Halt ,,halt", "go on", "Bye", "")
    assert settings.stop == ("ARRÊT", "HALT") and settings.start == ("GO ON",)
    assert keyword_action("Arrêt", settings) is Action.STOP
    assert keyword_action("go   on", settings) is Action.START
    assert keyword_action("stop", settings) is None
    assert settings.reply_for(Action.STOP) == "Bye" and settings.reply_for(Action.START) is None
    assert KeywordSettings.from_columns(None, None, None, None) == KeywordSettings()
    assert parse_keywords(["a", " A", "b "]) == ("A", "B")


def _plan(numbers: list[str]):
    channel = ChannelSpec(id=1, project_id=1, kind="sandbox", application=1, price_micro=5000,
                          **default_rules(1))
    body = decode_push(b'{"globalmessage": "hi", "data": [%s]}' % b", ".join(
        b'{"number": "%s"}' % n.encode() for n in numbers))
    return plan_push(body, channel, Limits())


def test_opted_out_entries_are_refused_in_place_without_credit() -> None:
    plan = _plan(["919876543210", "12", "919876543211", "919876543210", "919876543212"])
    assert [r.code for r in plan.refused] == [Code.INVALID_NUMBER, Code.DUPLICATE]
    out = without_opted_out(plan, {"919876543211", "919876543210"})
    assert [row[0] for row in out.accepted] == [4]
    assert [(r.index, r.code) for r in out.refused] == [
        (0, Code.OPTED_OUT), (1, Code.INVALID_NUMBER), (2, Code.OPTED_OUT),
        (3, Code.DUPLICATE)]
    assert out.credit_total == 5000 and plan.credit_total == 15000
    assert without_opted_out(plan, set()) is plan
    assert without_opted_out(plan, {"919999999999"}) is plan
    everything = without_opted_out(plan, {"919876543210", "919876543211", "919876543212"})
    assert everything.accepted == [] and everything.credit_total == 0
    assert everything.refusal_only_error().code is Code.NO_VALID_ENTRIES
    single = without_opted_out(_plan(["919876543210"]), {"919876543210"})
    assert single.refusal_only_error().code is Code.OPTED_OUT
