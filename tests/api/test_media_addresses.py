"""The push API with the default settings refuses media URLs at non-public addresses in their
entry (code 212, credit "0", nothing charged or queued for it), resolving host names once per
push through the event loop; DNS answers come from a fake ``getaddrinfo``, no network."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from pushgate.core.errors import Code
from pushgate.core.pricing import parse_credits

NUMBER_A = "919876543210"
NUMBER_B = "14155552671"
NUMBER_C = "919812345678"
NUMBER_D = "919800000001"

DNS = {"cdn.example.com": ["93.184.216.34"],
       "rebind.example": ["93.184.216.35", "10.0.0.7"],   # any private answer refuses
       "meta.example": ["169.254.169.254"],
       "v6.example": ["::ffff:127.0.0.1"]}


@pytest.fixture
async def fake_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Answers for the names in ``DNS``, NXDOMAIN for the rest; returns the names asked."""
    asked: list[str] = []

    async def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        asked.append(host)
        if host not in DNS:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (ip, port)) for ip in DNS[host]]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    return asked


async def _setup(app_client: Any, make: Any, credits: str = "10") -> tuple[Any, Any, str]:
    client, _ = await app_client(allow_private_media=False)   # the production default
    project, token, _ = await make.project(credits=credits)
    await make.channel(project.id, application=1, price="0.5")
    return client, project, token


def _balance(query: Any, project: Any) -> int:
    return query("SELECT balance_micro FROM projects WHERE id = ?", project.id)[0][0]


def _queued(query: Any, project: Any) -> list[tuple[str, str]]:
    return [tuple(r) for r in query("SELECT number, media FROM messages WHERE project_id = ?"
                                    " ORDER BY id", project.id)]


async def test_private_media_entries_are_refused_and_cost_nothing(
        app_client: Any, make: Any, query: Any, fake_dns: list[str]) -> None:
    client, project, token = await _setup(app_client, make)
    response = await client.post("/api/v2/push", json={"token": token, "application": "1",
                                                       "globalmessage": "your bill", "data": [
        {"number": NUMBER_A, "media": "http://127.0.0.1/x.jpg"},
        {"number": NUMBER_B, "media": "http://169.254.169.254/latest/meta-data/x.jpg"},
        {"number": NUMBER_C, "media": "https://rebind.example/x.jpg"},
        {"number": NUMBER_D, "media": "https://cdn.example.com/bill.pdf"}]})
    answer = response.json()
    assert response.status_code == 200 and answer["status"] == 100, answer
    refused = answer["data"][:3]
    assert [(e["number"], e["status"], e["credit"]) for e in refused] == [
        (n, int(Code.MEDIA_ADDRESS_NOT_ALLOWED), "0") for n in (NUMBER_A, NUMBER_B, NUMBER_C)]
    assert all("msg_id" not in e for e in refused)
    assert "10.0.0.7" in refused[2]["message"]
    assert answer["data"][3]["credit"] == "0.5" and "msg_id" in answer["data"][3]
    assert (answer["accepted"], answer["rejected"], answer["credit_total"]) == (1, 3, "0.5")
    assert _queued(query, project) == [(NUMBER_D, "https://cdn.example.com/bill.pdf")]
    assert _balance(query, project) == parse_credits("9.5")
    # Literal addresses are judged without DNS; each name was looked up once.
    assert sorted(fake_dns) == ["cdn.example.com", "rebind.example"]


@pytest.mark.parametrize("media", [
    "http://127.0.0.1/x.jpg", "http://169.254.169.254/latest/meta-data/iam/x.jpg",
    "http://2130706433/x.jpg", "http://0177.0.0.1/x.jpg", "http://0x7f.1/x.jpg",
    "http://127.1/x.jpg", "http://[::ffff:127.0.0.1]/x.jpg", "http://[::1]/x.jpg",
    "http://127.0.0.1./x.jpg", " http://10.0.0.1/x.jpg ", "http://a@192.168.0.1/x.jpg",
    "http://0.0.0.0/x.jpg", "http://[fe80::1%25eth0]/x.jpg", "http://localhost/x.jpg",
    "http://meta.example/x.jpg", "http://v6.example/x.jpg", "http://nxdomain.example/x.jpg",
    "http://cdn.example.com\\@127.0.0.1/x.jpg",
])
async def test_a_push_whose_only_media_is_private_is_refused_whole(
        app_client: Any, make: Any, query: Any, fake_dns: list[str], media: str) -> None:
    client, project, token = await _setup(app_client, make)
    response = await client.post("/api/v2/push", json={
        "token": token, "application": "1", "globalmedia": media,
        "data": [{"number": NUMBER_A}, {"number": NUMBER_B}]})
    answer = response.json()
    assert response.status_code == 422, answer
    assert answer["status"] == int(Code.MEDIA_ADDRESS_NOT_ALLOWED)
    assert [(e["status"], e["credit"]) for e in answer["data"]] == [
        (int(Code.MEDIA_ADDRESS_NOT_ALLOWED), "0")] * 2
    assert _queued(query, project) == []
    assert query("SELECT count(*) FROM pushes WHERE project_id = ?", project.id)[0][0] == 0
    assert _balance(query, project) == parse_credits("10")


async def test_host_verdicts_are_cached_and_text_pushes_ask_no_dns(
        app_client: Any, make: Any, fake_dns: list[str]) -> None:
    client, _, token = await _setup(app_client, make)
    for number in (NUMBER_A, NUMBER_B):
        response = await client.post("/api/v2/push", json={
            "token": token, "application": "1", "globalmedia": "https://cdn.example.com/a.jpg",
            "data": [{"number": number}]})
        assert response.json()["status"] == 100
    response = await client.post("/api/v2/push", json={
        "token": token, "application": "1", "globalmessage": "text only",
        "data": [{"number": NUMBER_C}]})
    assert response.json()["status"] == 100
    assert fake_dns == ["cdn.example.com"]


async def test_allow_private_media_lets_local_media_through(
        app_client: Any, make: Any, query: Any, fake_dns: list[str]) -> None:
    client, _ = await app_client(allow_private_media=True)
    project, token, _ = await make.project(credits="10")
    await make.channel(project.id, application=1, price="0.5")
    response = await client.post("/api/v2/push", json={
        "token": token, "application": "1", "data": [
            {"number": NUMBER_A, "media": "http://127.0.0.1:9000/x.jpg"},
            {"number": NUMBER_B, "media": "http://bridge-files.internal/y.jpg"}]})
    assert response.json()["accepted"] == 2
    assert fake_dns == []   # nothing to decide: no lookup
