"""Decoding and integer fields on hostile input: every problem is an ``ApiError`` (a 4xx),
never a ValueError or RecursionError that the API would turn into a 500."""

from __future__ import annotations

import pytest

from pushgate.core.channels import ChannelSpec, default_rules
from pushgate.core.errors import ApiError, Code
from pushgate.core.push import (
    MAX_ID,
    Limits,
    decode_push,
    decode_token_body,
    parse_int_field,
    parse_priority,
    plan_push,
)

PAST_INT_LIMIT = "9" * 5000          # int() refuses more than 4,300 digits


@pytest.mark.parametrize("value", [
    PAST_INT_LIMIT, "0" * 5000 + PAST_INT_LIMIT, " " + PAST_INT_LIMIT + " ", str(MAX_ID + 1),
    "1" + "0" * 19, 2**64, -(2**64),
])
def test_integer_field_out_of_range_is_invalid_field(value: str | int) -> None:
    with pytest.raises(ApiError) as caught:
        parse_int_field("push_id", value)
    assert caught.value.code is Code.INVALID_FIELD
    assert "out of range" in caught.value.message
    assert len(caught.value.message) < 200, "the error quotes megabytes of digits"


@pytest.mark.parametrize(("value", "expected"), [
    ("0" * 5000 + "7", 7),                # leading zeros do not count towards the bound
    (str(MAX_ID), MAX_ID), ("  42 ", 42), (0, 0),
])
def test_integer_field_in_range_still_parses(value: str | int, expected: int) -> None:
    assert parse_int_field("push_id", value) == expected


def test_application_has_a_32_bit_bound() -> None:
    with pytest.raises(ApiError) as caught:
        parse_int_field("application", str(2**31), maximum=2**31 - 1)
    assert caught.value.code is Code.INVALID_FIELD


@pytest.mark.parametrize("value", ["²", "١٢", "1e3", "-1", "0x10"])
def test_integer_field_refuses_what_is_not_ascii_digits(value: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_int_field("application", value)
    assert caught.value.code is Code.INVALID_FIELD


def test_priority_of_thousands_of_digits_is_invalid_field() -> None:
    body = decode_push(b'{"priority": "%s"}' % PAST_INT_LIMIT.encode())
    with pytest.raises(ApiError) as caught:
        parse_priority(body)
    assert caught.value.code is Code.INVALID_FIELD


@pytest.mark.parametrize("decode", [decode_push, decode_token_body])
@pytest.mark.parametrize("raw", [
    b'{"unknown": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",    # skipped key, still recursed
    b"[" * 50_000 + b"]" * 50_000,
    b'{"data": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
])
def test_json_nested_50000_deep_is_malformed_body(decode, raw: bytes) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as caught:
        decode(raw)
    assert caught.value.code in (Code.MALFORMED_BODY, Code.INVALID_FIELD)
    if raw.startswith(b'{"unknown"'):
        assert caught.value.code is Code.MALFORMED_BODY
        assert "nested too deeply" in caught.value.message


def test_text_with_a_lone_surrogate_is_malformed_body() -> None:
    # A form field or query parameter arrives as text; msgspec must encode it first.
    with pytest.raises(ApiError) as caught:
        decode_push('{"token": "\ud800"}')
    assert caught.value.code is Code.MALFORMED_BODY


def _official_channel() -> ChannelSpec:
    return ChannelSpec(id=1, project_id=1, kind="whatsapp_cloud", application=101,
                       price_micro=1000, **default_rules(101))


def test_template_id_with_nul_is_invalid_field() -> None:
    body = decode_push(b'{"template_id": "a\\u0000", "language": "en", '
                       b'"data": [{"number": "919876543210"}]}')
    with pytest.raises(ApiError) as caught:
        plan_push(body, _official_channel(), Limits())
    assert caught.value.code is Code.INVALID_FIELD


def test_template_language_with_nul_refuses_the_entry() -> None:
    body = decode_push(b'{"template_id": "hello", "language": "en", "data": ['
                       b'{"number": "919876543210", "language": "e\\u0000n"},'
                       b'{"number": "14155552671"}]}')
    plan = plan_push(body, _official_channel(), Limits())
    assert [r.code for r in plan.refused] == [Code.INVALID_TEMPLATE]
    assert len(plan.accepted) == 1
