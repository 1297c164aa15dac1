"""plan_push refuses, in their entry, media URLs that point at non-public addresses (code 212),
and lists the host names it needs verdicts for."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from pushgate.core.channels import ChannelSpec, default_rules
from pushgate.core.errors import Code
from pushgate.core.push import Limits, MediaHosts, PushPlan, decode_push, plan_push

N1, N2, N3 = "919876543210", "14155552671", "447911123456"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def whatsapp() -> ChannelSpec:
    return ChannelSpec(id=7, project_id=1, kind="sandbox", application=10, price_micro=5_000,
                       **default_rules(10))


def plan(body: dict[str, Any], hosts: MediaHosts | None = None) -> PushPlan:
    return plan_push(decode_push(json.dumps(body)), whatsapp(), Limits(), hosts)


def refusals(p: PushPlan) -> list[tuple[str, Code]]:
    return [(r.number, r.code) for r in p.refused]


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x.jpg", "http://169.254.169.254/latest/meta-data/x.jpg",
    "http://2130706433/x.jpg", "http://0x7f.1/x.jpg", "http://[::ffff:127.0.0.1]/x.jpg",
    "http://a@10.0.0.1/x.jpg", "http://localhost./x.jpg", "http://evil.com\\@127.0.0.1/x.jpg",
])
def test_entry_media_at_a_non_public_address_is_refused_in_its_entry(url: str) -> None:
    p = plan({"globalmessage": "hi", "data": [
        {"number": N1, "media": url}, {"number": N2, "media": "https://8.8.8.8/ok.jpg"}]})
    assert refusals(p) == [(N1, Code.MEDIA_ADDRESS_NOT_ALLOWED)]
    assert [row[1] for row in p.accepted] == [N2]
    assert p.credit_total == 5_000   # only the accepted entry is priced
    assert p.media_hosts_to_resolve is None


def test_global_media_at_a_private_address_refuses_every_entry_that_uses_it() -> None:
    p = plan({"globalmessage": "hi", "globalmedia": "http://192.168.1.1/a.jpg", "data": [
        {"number": N1}, {"number": N2, "media": "https://8.8.4.4/own.jpg"}, {"number": N3}]})
    assert refusals(p) == [(N1, Code.MEDIA_ADDRESS_NOT_ALLOWED),
                           (N3, Code.MEDIA_ADDRESS_NOT_ALLOWED)]
    assert [row[1] for row in p.accepted] == [N2]
    assert "192.168.1.1" in p.refused[0].message
    # Every entry refused for the same reason: the push answers with that code.
    alone = plan({"globalmedia": "http://169.254.169.254/latest/", "data": [{"number": N1}]})
    assert alone.accepted == []
    assert alone.refusal_only_error().code is Code.MEDIA_ADDRESS_NOT_ALLOWED


def test_an_unused_global_media_url_beside_inline_media_refuses_nothing() -> None:
    p = plan({"globalmedia": "http://127.0.0.1/a.jpg",
              "globalmedia_code": base64.b64encode(PNG).decode(), "data": [{"number": N1}]})
    assert p.refused == [] and len(p.accepted) == 1


def test_host_names_are_listed_for_resolution_then_judged_by_their_verdicts() -> None:
    body = {"globalmessage": "hi", "globalmedia": "https://cdn.example.com/a.jpg", "data": [
        {"number": N1}, {"number": N2, "media": "https://Rebind.Example./b.jpg"},
        {"number": N3, "media": "https://rebind.example/c.jpg"}]}
    first = plan(body)
    assert first.media_hosts_to_resolve == {"cdn.example.com", "rebind.example"}
    verdicts = {"cdn.example.com": None,
                "rebind.example": "'rebind.example' resolves to non-public address 10.0.0.7"}
    second = plan(body, MediaHosts(verdicts=verdicts))
    assert second.media_hosts_to_resolve is None
    assert [row[1] for row in second.accepted] == [N1]
    assert refusals(second) == [(N2, Code.MEDIA_ADDRESS_NOT_ALLOWED),
                                (N3, Code.MEDIA_ADDRESS_NOT_ALLOWED)]
    assert "10.0.0.7" in second.refused[0].message


def test_allow_private_lets_private_media_through_without_any_lookup() -> None:
    p = plan({"globalmessage": "hi", "data": [
        {"number": N1, "media": "http://127.0.0.1:8000/x.jpg"},
        {"number": N2, "media": "http://fake-bridge.internal/y.jpg"}]},
        MediaHosts(allow_private=True))
    assert p.refused == [] and p.media_hosts_to_resolve is None


def test_ambiguous_hosts_are_refused_even_when_private_ones_are_allowed() -> None:
    p = plan({"globalmessage": "hi", "data": [
        {"number": N1, "media": "http://example.com\\@127.0.0.1/x.jpg"}]},
        MediaHosts(allow_private=True))
    assert refusals(p) == [(N1, Code.MEDIA_ADDRESS_NOT_ALLOWED)]


def test_a_malformed_media_host_is_invalid_media() -> None:
    p = plan({"globalmessage": "hi", "data": [
        {"number": N1, "media": "http://example.com:99999/x.jpg"},
        {"number": N2, "media": "http:///"}]})
    assert [code for _, code in refusals(p)] == [Code.INVALID_MEDIA,
                                                 Code.MEDIA_ADDRESS_NOT_ALLOWED]
