"""core/campaign.py: reading CSV bytes, placeholders, row columns winning, chunks and keys."""

from __future__ import annotations

import pytest

from pushgate.core.campaign import (
    Options,
    placeholders,
    plan_campaign,
    read_table,
    render,
)
from pushgate.core.errors import ApiError, Code

OPTIONS = Options(application="1", message="Hi {name}, {amount} is due")


def test_bom_and_semicolons_are_read() -> None:
    data = "\ufeffnumber;name;amount\n919876543210;Ana;12,50\n".encode()
    table = read_table(data)
    assert table.columns == ["number", "name", "amount"]
    assert table.rows == [{"number": "919876543210", "name": "Ana", "amount": "12,50"}]


def test_commas_quotes_and_blank_lines() -> None:
    data = b'number,name\r\n919876543210,"Doe, Jane"\r\n\r\n919876543211,Bo\r\n'
    table = read_table(data)
    assert [r["name"] for r in table.rows] == ["Doe, Jane", "Bo"]


def test_placeholders_filled_from_the_row() -> None:
    data = b"number,name,amount\n919876543210,Ana,12\n919876543211,Bo,7\n"
    campaign = plan_campaign(data, OPTIONS, 100)
    (chunk,) = campaign.chunks
    assert chunk.body.data is not None
    assert [e.message for e in chunk.body.data] == ["Hi Ana, 12 is due", "Hi Bo, 7 is due"]
    assert chunk.rows == [0, 1]
    assert chunk.body.application == "1"


def test_a_rows_message_column_wins() -> None:
    data = b"number,name,amount,message\n919876543210,Ana,12,\n919876543211,Bo,7,Own {text}\n"
    (chunk,) = plan_campaign(data, OPTIONS, 100).chunks
    assert chunk.body.data is not None
    assert [e.message for e in chunk.body.data] == ["Hi Ana, 12 is due", "Own {text}"]


def test_unknown_placeholder_is_refused_before_anything() -> None:
    data = b"number,name\n919876543210,Ana\n"
    with pytest.raises(ApiError) as caught:
        plan_campaign(data, OPTIONS, 100)
    assert caught.value.code is Code.UNKNOWN_PLACEHOLDER
    assert "{amount}" in caught.value.message


def test_missing_number_column() -> None:
    with pytest.raises(ApiError) as caught:
        plan_campaign(b"phone,name,amount\n1,Ana,2\n", OPTIONS, 100)
    assert caught.value.code is Code.NUMBER_COLUMN_MISSING
    campaign = plan_campaign(b"phone,name,amount\n919876543210,Ana,2\n",
                             Options(application="1", message="Hi {name}",
                                     number_column="phone"), 100)
    assert campaign.chunks[0].body.data is not None
    assert campaign.chunks[0].body.data[0].number == "919876543210"


def test_rows_without_number_are_refused_here() -> None:
    data = b"number,name,amount\n,Ana,1\n919876543211,Bo,2\n"
    campaign = plan_campaign(data, OPTIONS, 100)
    assert [(r.row, r.code) for r in campaign.refused] == [(0, Code.INVALID_NUMBER)]
    assert campaign.chunks[0].rows == [1]


def test_not_utf8_and_no_header() -> None:
    for data in (b"number\n\xff\xfe91\n", b"", b"\n\n"):
        with pytest.raises(ApiError) as caught:
            read_table(data)
        assert caught.value.code is Code.INVALID_CSV


def test_braces() -> None:
    assert placeholders("{{x}} {a} { b }") == ["a", "b"]
    assert render("{{x}} {a}", {"a": "1"}) == "{x} 1"
    with pytest.raises(ApiError):
        placeholders("50% {off")


def test_chunks_and_keys() -> None:
    lines = "".join(f"9198765432{i:02d},n{i},{i}\n" for i in range(7))
    data = ("number,name,amount\n" + lines).encode()
    campaign = plan_campaign(data, OPTIONS, 3)
    assert [c.rows for c in campaign.chunks] == [[0, 1, 2], [3, 4, 5], [6]]
    keys = [c.key for c in campaign.chunks]
    assert len(set(keys)) == 3
    # Same bytes and options: same keys; anything shaping the messages: other keys.
    assert [c.key for c in plan_campaign(data, OPTIONS, 3).chunks] == keys
    other = Options(application="1", message="Hello {name}, {amount} is due")
    assert not set(keys) & {c.key for c in plan_campaign(data, other, 3).chunks}
    assert not set(keys) & {c.key for c in plan_campaign(data, OPTIONS, 4).chunks}
    assert not set(keys) & {c.key for c in plan_campaign(data + b"919876543299,z,1\n",
                                                         OPTIONS, 3).chunks}
