"""What `make run` does, in a fresh directory with no configuration: `pushgate migrate`,
`pushgate demo`, `pushgate serve`; the printed curl line then works when "pasted" (its request
is replayed with httpx), and the sandbox inbox shows both demo messages delivered."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import Harness, clean_env, free_port

pytestmark = [pytest.mark.slow, pytest.mark.sqlite_only]  # make run is SQLite by design


def curl_request(line: str) -> tuple[str, str, dict[str, str], str | None]:
    """(method, url, headers, body) of a printed ``curl`` command line."""
    words = shlex.split(line)
    assert words[0] == "curl", line
    method, url, headers, body = "GET", None, {}, None
    i = 1
    while i < len(words):
        word = words[i]
        if word in ("-H", "--header"):
            name, value = words[i + 1].split(":", 1)
            headers[name.strip()] = value.strip()
            i += 2
        elif word in ("-d", "--data", "--data-raw"):
            body, method = words[i + 1], "POST"
            i += 2
        elif word in ("-X", "--request"):
            method = words[i + 1]
            i += 2
        elif word.startswith("-"):
            i += 1   # -s and friends
        else:
            url = word
            i += 1
    assert url is not None, line
    return method, url, headers, body


def replay(line: str) -> httpx.Response:
    method, url, headers, body = curl_request(line)
    return httpx.request(method, url, headers=headers, content=body, timeout=30)


def test_make_run_demo_curl_line_works(e2e: Harness, tmp_path: Path) -> None:
    home = tmp_path / "fresh-clone"
    home.mkdir()
    port = free_port()
    env = clean_env(PUSHGATE_PORT=str(port))   # no database URL: the default ./data/ file

    e2e.cli("migrate", env=env, cwd=home)
    assert (home / "data" / "pushgate.db").exists()
    printed = e2e.cli("demo", env=env, cwd=home)
    as_json: dict[str, Any] = json.loads(e2e.cli("demo", "--json", env=env, cwd=home))
    token = as_json["token"]
    assert token in printed, "the human output must show the token"
    assert (home / "data" / "demo-token").read_text().strip() == token

    lines = [line.strip() for line in printed.splitlines()]
    push_lines = [line for line in lines if line.startswith("curl") and "/api/v2/push" in line]
    inbox_lines = [line for line in lines if line.startswith("curl") and "/sandbox/inbox" in line]
    assert len(push_lines) == 1 and len(inbox_lines) == 1, printed
    assert push_lines[0] == as_json["curl"]
    assert f"127.0.0.1:{port}" in push_lines[0]

    server = e2e.serve(env=env, cwd=home, port=port)
    assert server.base_url == as_json["base_url"]

    answer = replay(push_lines[0])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == 100, body
    assert len(body["data"]) == 2 and all("msg_id" in e for e in body["data"]), body
    sent = {e["msg_id"]: e["number"] for e in body["data"]}
    _, _, _, request_body = curl_request(push_lines[0])
    assert request_body is not None
    texts = {e["number"]: e["message"] for e in json.loads(request_body)["data"]}

    inbox: list[dict[str, Any]] = []

    def both_delivered() -> bool:
        nonlocal inbox
        response = replay(inbox_lines[0])
        assert response.status_code == 200, response.text
        assert response.json()["status"] == 100
        inbox = response.json()["data"]
        mine = [m for m in inbox if str(m["msg_id"]) in sent]
        return len(mine) == 2 and all(m["state"] == "delivered" and m["status"] == 1
                                      for m in mine)

    e2e.wait_until(both_delivered, 30, "the sandbox inbox to list both demo messages delivered",
                   interval=0.2, describe=lambda: json.dumps(inbox))
    for message in inbox:
        assert sent[str(message["msg_id"])] == message["number"]
        assert texts[message["number"]] == message["message"]
    assert len(inbox) == 2
