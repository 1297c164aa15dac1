"""Webhook signatures: ``X-Pushgate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>``."""

from __future__ import annotations

import hashlib
import hmac

from pushgate.webhooks.signing import HEADER, sign, verify

SECRET = "whsec_test_0123456789"
BODY = b'{"project_id":1,"event_id":1,"data":[{"msg_id":"1","status":1}]}'
T = 1_764_000_000


def test_header_name() -> None:
    assert HEADER == "X-Pushgate-Signature"


def test_known_vector() -> None:
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY, T) == f"t={T},v1={expected}"
    # A fixed literal too (from `printf '1700000000.{}' | openssl dgst -sha256 -hmac secret`),
    # so a change in both the code and the recipe above cannot pass.
    assert sign("secret", b"{}", 1_700_000_000) == (
        "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163")


def test_round_trip() -> None:
    header = sign(SECRET, BODY, T)
    assert verify(SECRET, header, BODY, now=T)
    assert verify(SECRET, header, BODY, now=T + 299)
    assert verify(SECRET, header, BODY, now=T - 299)


def test_default_timestamp_is_now() -> None:
    header = sign(SECRET, BODY)
    assert verify(SECRET, header, BODY)


def test_tampered_body_fails() -> None:
    header = sign(SECRET, BODY, T)
    assert not verify(SECRET, header, BODY.replace(b'"status":1', b'"status":2'), now=T)
    assert not verify(SECRET, header, BODY + b" ", now=T)


def test_wrong_secret_fails() -> None:
    assert not verify("other", sign(SECRET, BODY, T), BODY, now=T)


def test_old_or_future_timestamp_fails() -> None:
    header = sign(SECRET, BODY, T)
    assert not verify(SECRET, header, BODY, now=T + 301)
    assert not verify(SECRET, header, BODY, now=T - 301)
    assert verify(SECRET, header, BODY, tolerance=1000, now=T + 900)


def test_timestamp_is_part_of_what_is_signed() -> None:
    digest = sign(SECRET, BODY, T).split("v1=", 1)[1]
    # The same digest under a fresher timestamp is a replay: refused.
    assert not verify(SECRET, f"t={T + 100},v1={digest}", BODY, now=T + 100)


def test_malformed_headers_fail() -> None:
    for header in ("", "garbage", "t=abc,v1=00", f"v1={'0' * 64}", f"t={T}", f"t={T},v1="):
        assert not verify(SECRET, header, BODY, now=T)


def test_any_of_several_v1_values_may_match() -> None:
    # Receivers rotating secrets may see more than one v1; one valid one is enough.
    good = sign(SECRET, BODY, T).split("v1=", 1)[1]
    assert verify(SECRET, f"t={T},v1={'0' * 64},v1={good}", BODY, now=T)
