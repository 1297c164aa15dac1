"""plan_push without the API: pricing, caption parts, duplicates, per-entry refusals."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from pushgate.core.channels import ChannelSpec, MediaKind, PriceUnit, default_rules
from pushgate.core.errors import ApiError, Code
from pushgate.core.push import Limits, PushPlan, decode_push, plan_push

N1, N2, N3 = "919876543210", "14155552671", "447911123456"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def channel(application: int = 1, price_micro: int = 5_000, **overrides: Any) -> ChannelSpec:
    fields = {**default_rules(application), **overrides}
    return ChannelSpec(id=7, project_id=1, kind="sandbox", application=application,
                       price_micro=price_micro, **fields)


def plan(body: dict[str, Any], spec: ChannelSpec | None = None,
         limits: Limits | None = None) -> PushPlan:
    return plan_push(decode_push(json.dumps(body)), spec or channel(), limits or Limits())


def rows(p: PushPlan) -> list[dict[str, Any]]:
    names = ("index", "number", "body", "media", "kind", "reference", "parts", "segments",
             "credit")
    return [dict(zip(names, r, strict=True)) for r in p.accepted]


def test_bulk_message_goes_to_every_entry() -> None:
    p = plan({"globalmessage": "Hello", "data": [{"number": N1}, {"number": N2}]})
    assert [(r["number"], r["body"]) for r in rows(p)] == [(N1, "Hello"), (N2, "Hello")]
    assert p.refused == []
    assert p.credit_total == 10_000
    assert p.total_entries == 2
    assert p.priority == 0


def test_entry_message_wins_over_global_one() -> None:
    p = plan({"globalmessage": "global", "data": [
        {"number": N1, "message": "own"}, {"number": N2, "message": ""}, {"number": N3}]})
    assert [r["body"] for r in rows(p)] == ["own", "global", "global"]


def test_dynamic_push_and_numbers_as_numbers() -> None:
    p = plan({"globalmessage": "", "application": 1, "data": [
        {"number": int(N1), "message": 123, "reference_number": 42}]})
    [row] = rows(p)
    assert (row["number"], row["body"], row["reference"]) == (N1, "123", "42")


@pytest.mark.parametrize(("body", "priority"), [
    ({"priority": "1"}, 1), ({"priority": 1}, 1), ({"priority ": "1"}, 1),
    ({"priority ": 0}, 0), ({}, 0), ({"priority": ""}, 0), ({"priority": "0"}, 0),
    ({"priority": 0}, 0), ({"priority": " 1 "}, 1), ({"priority": "01"}, 1),
    ({"priority": None, "priority ": "1"}, 1),
])
def test_priority(body: dict[str, Any], priority: int) -> None:
    assert plan({**body, "globalmessage": "x", "data": [{"number": N1}]}).priority == priority


@pytest.mark.parametrize("value", ["2", 5, "high", "-1"])
def test_bad_priority_is_refused(value: Any) -> None:
    with pytest.raises(ApiError) as info:
        plan({"priority": value, "globalmessage": "x", "data": [{"number": N1}]})
    assert info.value.code is Code.INVALID_FIELD


def test_empty_and_oversized_data() -> None:
    for body in ({"globalmessage": "x"}, {"globalmessage": "x", "data": []}):
        with pytest.raises(ApiError) as info:
            plan(body)
        assert info.value.code is Code.EMPTY_DATA
    with pytest.raises(ApiError) as info:
        plan({"globalmessage": "x", "data": [{"number": N1}, {"number": N2}, {"number": N3}]},
             limits=Limits(max_recipients=2))
    assert info.value.code is Code.TOO_MANY_RECIPIENTS
    ok = plan({"globalmessage": "x", "data": [{"number": N1}, {"number": N2}]},
              limits=Limits(max_recipients=2))
    assert len(ok.accepted) == 2


def test_per_message_price_and_total() -> None:
    p = plan({"globalmessage": "x" * 4000, "data": [{"number": N1}, {"number": N2}]},
             channel(price_micro=12_345))
    assert [r["credit"] for r in rows(p)] == [12_345, 12_345]
    assert [r["segments"] for r in rows(p)] == [0, 0]
    assert p.credit_total == 24_690


@pytest.mark.parametrize(("text", "segments"), [
    ("a", 1),
    ("a" * 160, 1),
    ("a" * 161, 2),
    ("a" * 306, 2),
    ("a" * 307, 3),
    ("€" * 80, 1),        # an extension character counts twice: 160 septets
    ("€" * 81, 2),
    ("é" * 160, 1),       # é is in the GSM-7 basic table
    ("ж" * 70, 1),        # UCS-2
    ("ж" * 71, 2),
    ("ж" * 134, 2),
    ("ж" * 135, 3),
])
def test_sms_charges_per_segment(text: str, segments: int) -> None:
    p = plan({"globalmessage": text, "application": 3, "data": [{"number": N1}]},
             channel(application=3, price_micro=10_000))
    [row] = rows(p)
    assert (row["segments"], row["parts"], row["credit"]) == (segments, 1, segments * 10_000)
    assert p.credit_total == segments * 10_000


def test_sms_with_too_many_segments_is_refused_per_entry() -> None:
    sms = channel(application=3, max_segments=2)
    p = plan({"data": [{"number": N1, "message": "a" * 306}, {"number": N2, "message": "a" * 307}]},
             sms)
    assert [r["number"] for r in rows(p)] == [N1]
    [refusal] = p.refused
    assert (refusal.index, refusal.number, refusal.code) == (1, N2, Code.MESSAGE_TOO_LONG)
    assert p.credit_total == 2 * 5_000


def test_text_longer_than_channel_allows() -> None:
    p = plan({"data": [{"number": N1, "message": "a" * 11}, {"number": N2, "message": "a" * 10}]},
             channel(max_chars=10))
    assert [r["index"] for r in rows(p)] == [1]
    assert p.refused[0].code is Code.MESSAGE_TOO_LONG
    assert "11 characters" in p.refused[0].message


@pytest.mark.parametrize(("url", "kind", "parts"), [
    ("https://example.com/a.jpg", MediaKind.IMAGE, 1),
    ("https://example.com/a.PNG?x=1", MediaKind.IMAGE, 1),
    ("https://example.com/v.mp4", MediaKind.VIDEO, 1),
    ("https://example.com/a.mp3", MediaKind.AUDIO, 2),     # audio takes no caption
    ("https://example.com/doc.pdf", MediaKind.DOCUMENT, 1),   # captioned, with a filename
])
def test_caption_or_separate_text(url: str, kind: MediaKind, parts: int) -> None:
    p = plan({"globalmessage": "caption", "globalmedia": url, "data": [{"number": N1}]})
    [row] = rows(p)
    assert (row["media"], row["kind"], row["parts"]) == (url, kind, parts)
    assert row["credit"] == parts * 5_000


def test_media_alone_is_one_part_and_per_entry_media_overrides_global() -> None:
    p = plan({"globalmedia": "https://example.com/a.mp3", "data": [
        {"number": N1}, {"number": N2, "media": "https://example.com/b.jpg", "message": "hi"}]})
    first, second = rows(p)
    assert (first["body"], first["kind"], first["parts"]) == ("", MediaKind.AUDIO, 1)
    assert (second["media"], second["kind"], second["parts"]) == (
        "https://example.com/b.jpg", MediaKind.IMAGE, 1)


def test_media_refusals() -> None:
    sms = channel(application=3)
    with pytest.raises(ApiError) as info:
        plan({"globalmessage": "x", "globalmedia": "https://e.com/a.jpg",
              "data": [{"number": N1}]}, sms)
    assert info.value.code is Code.MEDIA_NOT_ALLOWED
    with pytest.raises(ApiError) as info:
        plan({"globalmessage": "x", "globalmedia": "ftp://e.com/a.jpg", "data": [{"number": N1}]})
    assert info.value.code is Code.INVALID_MEDIA
    p = plan({"globalmessage": "x", "data": [
        {"number": N1, "media": "https://e.com/a.jpg"}, {"number": N2, "media": "file:///etc"},
        {"number": N3}]}, channel())
    assert [r["index"] for r in rows(p)] == [0, 2]
    assert [(r.index, r.code) for r in p.refused] == [(1, Code.INVALID_MEDIA)]
    p = plan({"globalmessage": "x", "data": [
        {"number": N1, "media": "https://e.com/a.jpg"}, {"number": N2}]}, sms)
    assert [(r.index, r.code) for r in p.refused] == [(0, Code.MEDIA_NOT_ALLOWED)]


def test_inline_media() -> None:
    code = base64.b64encode(PNG).decode()
    p = plan({"globalmessage": "look", "globalmedia_code": code, "data": [{"number": N1}]})
    assert p.inline_media is not None
    assert (p.inline_media.kind, p.inline_media.content_type, p.inline_media.data) == (
        MediaKind.IMAGE, "image/png", PNG)
    [row] = rows(p)
    assert (row["media"], row["kind"], row["parts"]) == (None, MediaKind.IMAGE, 1)
    # Inline media alone, without text, is a message to send.
    [row] = rows(plan({"globalmedia_code": code, "data": [{"number": N1}]}))
    assert (row["body"], row["media"], row["kind"]) == ("", None, MediaKind.IMAGE)
    with pytest.raises(ApiError) as info:
        plan({"globalmessage": "x", "globalmedia_code": "***", "data": [{"number": N1}]})
    assert info.value.code is Code.INVALID_MEDIA


def test_inline_media_over_the_type_limit() -> None:
    big = b"\x89PNG\r\n\x1a\n" + b"\x00" * (5 * 1024 * 1024)
    with pytest.raises(ApiError) as info:
        plan({"globalmessage": "x", "globalmedia_code": base64.b64encode(big).decode(),
              "data": [{"number": N1}]})
    assert info.value.code is Code.MEDIA_TOO_LARGE


def test_duplicates_are_sent_once_and_not_charged() -> None:
    p = plan({"globalmessage": "same", "data": [
        {"number": N1}, {"number": N2}, {"number": N1}, {"number": N1, "message": "other"},
        {"number": N2, "message": "same"}]})
    assert [(r["index"], r["number"], r["body"]) for r in rows(p)] == [
        (0, N1, "same"), (1, N2, "same"), (3, N1, "other")]
    assert [(r.index, r.code, r.duplicate_of) for r in p.refused] == [
        (2, Code.DUPLICATE, 0), (4, Code.DUPLICATE, 1)]
    assert p.credit_total == 3 * 5_000


def test_same_text_with_different_media_is_not_a_duplicate() -> None:
    p = plan({"globalmessage": "x", "data": [
        {"number": N1, "media": "https://e.com/a.jpg"},
        {"number": N1, "media": "https://e.com/b.jpg"}]})
    assert len(p.accepted) == 2 and p.refused == []


def test_invalid_entries_keep_their_place() -> None:
    p = plan({"globalmessage": "", "data": [
        {"number": N1, "message": "ok"},
        {"number": "+919876543210", "message": "plus"},
        {"number": "0919876543210", "message": "leading zero"},
        {"number": N2, "message": ""},
        {"number": "999", "message": "too short"},
        {"number": N3, "message": "ok", "reference_number": "r" * 256},
        {"number": N3, "message": "fine"},
    ]})
    assert [r["index"] for r in rows(p)] == [0, 6]
    assert [(r.index, r.code) for r in p.refused] == [
        (1, Code.INVALID_NUMBER), (2, Code.INVALID_NUMBER), (3, Code.EMPTY_MESSAGE),
        (4, Code.INVALID_NUMBER), (5, Code.INVALID_REFERENCE)]
    assert all(r.message for r in p.refused)
    assert p.credit_total == 2 * 5_000


def test_all_refused_error() -> None:
    one_reason = plan({"globalmessage": "x", "data": [{"number": "1"}, {"number": "2"}]})
    assert one_reason.accepted == []
    assert one_reason.refusal_only_error().code is Code.INVALID_NUMBER
    mixed = plan({"globalmessage": "", "data": [{"number": "1"}, {"number": N1}]})
    assert mixed.refusal_only_error().code is Code.NO_VALID_ENTRIES


def test_price_unit_of_call_channel_is_per_message() -> None:
    call = channel(application=4, price_micro=50_000)
    assert call.price_unit is PriceUnit.CALL
    p = plan({"globalmessage": "a" * 500, "data": [{"number": N1}]}, call)
    assert rows(p)[0]["credit"] == 50_000


def test_nul_characters_are_refused_per_entry() -> None:
    """No channel can send U+0000 and PostgreSQL text cannot store it: refused at accept,
    the same on every backend."""
    p = plan({"globalmessage": "", "data": [
        {"number": N1, "message": "a\x00b"},
        {"number": N2, "message": "fine", "reference_number": "ref\x00"},
        {"number": N3, "message": "fine", "media": "https://x.example/a\x00.png"},
        {"number": N1, "message": "ok"},
    ]})
    assert [(r.index, r.code) for r in p.refused] == [
        (0, Code.INVALID_TEXT), (1, Code.INVALID_REFERENCE), (2, Code.INVALID_MEDIA)]
    assert [r["index"] for r in rows(p)] == [3]
