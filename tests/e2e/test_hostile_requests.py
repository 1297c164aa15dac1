"""Hostile requests against a real `pushgate serve` (uvicorn, its HTTP parser, the real
middleware stack): each class that used to be a 500 is a 4xx in pushgate's shape, nothing is
queued or charged, the server keeps answering, and its log holds no traceback."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.harness import Harness

pytestmark = pytest.mark.slow

PAST_INT_LIMIT = "9" * 5000


def _setup(e2e: Harness) -> tuple[str, str]:
    e2e.cli("migrate")
    project = e2e.cli_json("project", "create", "shop", "--credits", "10")
    e2e.cli_json("channel", "add", "--project", "shop", "--type", "sandbox",
                 "--application", "1", "--price", "0.01")
    server = e2e.serve()
    assert server.base_url is not None
    return server.base_url, project["token"]


def _refused(response: httpx.Response, status: int, http: int) -> dict[str, Any]:
    assert response.status_code == http, (response.status_code, response.text[:300])
    body = response.json()
    assert body["status"] == status and isinstance(body["message"], str), body
    return body


def test_each_class_of_hostile_request_is_a_4xx_and_harmless(e2e: Harness) -> None:
    base, token = _setup(e2e)
    with httpx.Client(base_url=base, timeout=30) as client:
        tried = 0
        # Digit strings past Python's int() limit, in each integer field.
        for route, field in [("/api/v2/push", "application"), ("/api/v2/push", "priority"),
                             ("/api/v2/delivery-report", "push_id"),
                             ("/api/v2/device-status", "application"),
                             ("/api/v2/device-action", "application")]:
            body = {"token": token, "application": "1", "push_id": "1", "globalmessage": "hi",
                    "command": "stop-message-queue", "data": [{"number": "919876543210"}],
                    field: PAST_INT_LIMIT}
            _refused(client.post(route, json=body), 406, 422)
            tried += 1
        # JSON nested 50,000 deep, in a key no route reads.
        deep = b'{"unknown": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
        for route in ("/api/v2/push", "/api/v2/delivery-report", "/api/v2/device-status"):
            answer = _refused(client.post(route, content=deep,
                                          headers={"content-type": "application/json"}),
                              400, 400)
            assert "nested too deeply" in answer["message"]
            tried += 1
        # Multipart without a boundary, and with more than 1,000 fields.
        _refused(client.post("/api/v2/push", content=b"--B\r\n",
                             headers={"content-type": "multipart/form-data"}), 400, 400)
        many = b"".join(b'--B\r\nContent-Disposition: form-data; name="f%d"\r\n\r\n1\r\n' % i
                        for i in range(1001)) + b"--B--\r\n"
        _refused(client.post("/api/v2/push", content=many,
                             headers={"content-type": "multipart/form-data; boundary=B"}),
                 400, 400)
        tried += 2
        # The router's own refusals.
        _refused(client.get("/api/v2/push"), 414, 405)
        _refused(client.get("/api/v2/nowhere"), 404, 404)
        tried += 2
        assert tried == 12
        # Still serving: a good push goes through.
        ok = client.post("/api/v2/push", json={"token": token, "application": "1",
                                               "globalmessage": "hi",
                                               "data": [{"number": "919876543210"}]})
        assert ok.json()["status"] == 100, ok.text
    assert e2e.query("SELECT count(*) FROM messages") == [(1,)]
    assert "Traceback" not in e2e.logs()
