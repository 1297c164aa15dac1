"""plan_push for WhatsApp template sends and per-channel country allow-lists."""

from __future__ import annotations

import json

import pytest
from tests.core.test_push_plan import N1, N2, N3, channel, plan, rows

from pushgate.core.channels import parse_country_codes
from pushgate.core.errors import ApiError, Code

CLOUD = 101


def test_template_values_per_entry_or_global_and_one_unit_each() -> None:
    p = plan({"template_id": "bill_due", "language": "en", "template_header": "Invoice",
              "template_globalmessage": ["Asha", 12],
              "data": [{"number": N1}, {"number": N2, "template_message": ["Ravi"],
                                        "language": "hi"}]}, channel(CLOUD))
    assert [json.loads(e or "null") for e in p.extras or []] == [
        {"template": {"name": "bill_due", "language": "en", "header": "Invoice",
                      "values": ["Asha", "12"]}},
        {"template": {"name": "bill_due", "language": "hi", "header": "Invoice",
                      "values": ["Ravi"]}}]
    assert [r["parts"] for r in rows(p)] == [1, 1]
    assert p.credit_total == 10_000


def test_template_with_an_audio_and_text_is_still_one_message() -> None:
    p = plan({"template_id": "t", "language": "en", "globalmessage": "ignored beside audio",
              "globalmedia": "https://example.com/a.mp3", "data": [{"number": N1}]},
             channel(CLOUD))
    assert rows(p)[0]["parts"] == 1


def test_same_number_with_other_template_values_is_not_a_duplicate() -> None:
    p = plan({"template_id": "t", "language": "en",
              "data": [{"number": N1, "template_message": ["a"]},
                       {"number": N1, "template_message": ["b"]},
                       {"number": N1, "template_message": ["a"]}]}, channel(CLOUD))
    assert len(p.accepted) == 2
    assert [r.code for r in p.refused] == [Code.DUPLICATE]


def test_overlong_template_header_is_refused_for_that_entry() -> None:
    p = plan({"template_id": "t", "language": "en",
              "data": [{"number": N1, "template_header": "h" * 61}, {"number": N2}]},
             channel(CLOUD))
    assert [r["number"] for r in rows(p)] == [N2]
    assert p.refused[0].code is Code.INVALID_TEMPLATE
    assert "longer than 60" in p.refused[0].message


@pytest.mark.parametrize("value", [{"x": 1}, True, None])
def test_template_values_must_be_strings_or_numbers(value: object) -> None:
    # The typed decoder refuses the body: nothing is half-accepted.
    with pytest.raises(ApiError) as info:
        plan({"template_id": "t", "language": "en",
              "data": [{"number": N1, "template_message": [value]}]}, channel(CLOUD))
    assert info.value.code is Code.INVALID_FIELD
    assert "template_message" in info.value.message


def test_template_without_language_refuses_every_entry() -> None:
    p = plan({"template_id": "t", "data": [{"number": N1}]}, channel(CLOUD))
    assert p.accepted == []
    assert [(r.code, r.message) for r in p.refused] == [
        (Code.INVALID_TEMPLATE, "template sends need `language`")]
    assert p.refusal_only_error().code is Code.INVALID_TEMPLATE


def test_template_on_a_channel_without_templates_is_refused_whole() -> None:
    with pytest.raises(ApiError) as info:
        plan({"template_id": "t", "language": "en", "data": [{"number": N1}]}, channel(1))
    assert info.value.code is Code.INVALID_FIELD
    assert "official WhatsApp channel" in info.value.message


def test_plain_pushes_carry_no_channel_data() -> None:
    assert plan({"globalmessage": "hi", "data": [{"number": N1}]}).extras is None


def test_country_allow_list_refuses_other_countries() -> None:
    sms = channel(3, config={"allowed_country_codes": ["91", "44"]})
    p = plan({"globalmessage": "hi", "data": [{"number": N1}, {"number": N2}, {"number": N3}]},
             sms)
    assert [r["number"] for r in rows(p)] == [N1, N3]
    [refusal] = p.refused
    assert (refusal.number, refusal.code) == (N2, Code.COUNTRY_NOT_ALLOWED)
    assert refusal.message == "channel 7 sends only to country codes 91, 44"


def test_country_codes_are_normalised_and_checked() -> None:
    assert parse_country_codes(["+91", 44, " 1 "]) == ["91", "44", "1"]
    for bad in ("91", [], ["999"], ["91", "abc"]):
        with pytest.raises(ValueError, match="allowed_country_codes"):
            parse_country_codes(bad)
