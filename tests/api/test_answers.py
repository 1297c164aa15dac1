"""``answer`` builds its ``Response`` directly (``JsonAnswer``): the status, headers and body
must be the ones Starlette's own ``Response`` builds, for every status an answer takes."""

from __future__ import annotations

import orjson
import pytest
from starlette.responses import Response

from pushgate.api.answers import JSON, JsonAnswer, accepted_answer, answer
from pushgate.core.errors import CODES


def starlette(payload: object, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=JSON,
                    headers=headers)


STATUSES = sorted({info.http_status for info in CODES.values()} | {200, 201, 204, 304, 101})
PAYLOADS = [{}, {"status": 100, "message": "Success", "data": [{"n": "é", "x": 1}]},
            {"big": "x" * 100_000}]


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("payload", PAYLOADS)
def test_an_answer_is_what_starlette_builds(status: int, payload: dict[str, object]) -> None:
    got, want = answer(payload, status), starlette(payload, status)
    assert (got.status_code, got.raw_headers, bytes(got.body)) == (
        want.status_code, want.raw_headers, bytes(want.body))
    assert (got.media_type, got.background, dict(got.headers)) == (
        want.media_type, want.background, dict(want.headers))
    assert isinstance(got, Response)


def test_json_answer_matches_starlette_directly() -> None:
    body = orjson.dumps({"a": 1})
    got, want = JsonAnswer(body, 402), Response(body, status_code=402, media_type=JSON)
    assert vars(want) == {name: getattr(got, name) for name in vars(want)}
    got.headers["Retry-After"] = "3"   # its headers stay its own, as a Response's
    assert JsonAnswer(body).raw_headers == Response(body, media_type=JSON).raw_headers


def test_headers_and_always_200_answer_as_before() -> None:
    got = answer({"s": 1}, 429, {"Retry-After": "5"})
    want = starlette({"s": 1}, 429, {"Retry-After": "5"})
    assert (got.status_code, got.raw_headers, got.body) == (
        want.status_code, want.raw_headers, want.body)
    got = answer({"s": 1}, 429, always_200=True)
    assert (got.status_code, got.raw_headers) == (200, starlette({"s": 1}, 200).raw_headers)


def test_the_accepted_answer_bytes() -> None:
    data = [{"msg_id": "9", "number": "919876543210", "credit": "0.005"}]
    got = accepted_answer(77, data, 1, 0, 5000, 9_995_000_000)
    assert got.body == (b'{"status":100,"push_id":"77","message":"Success","data":[{"msg_id":"9",'
                        b'"number":"919876543210","credit":"0.005"}],"accepted":1,"rejected":0,'
                        b'"credit_total":"0.005","balance":"9995"}')
    assert got.raw_headers == [(b"content-length", b"%d" % len(got.body)),
                               (b"content-type", b"application/json")]
