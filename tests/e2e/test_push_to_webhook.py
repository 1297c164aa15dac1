"""End to end over real processes: the CLI sets up a project with a webhook, `pushgate serve`
accepts a 1,000-recipient dynamic push, the sandbox delivers, and a real HTTP receiver on
127.0.0.1 gets every report, signed with the project's webhook secret."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.e2e.harness import (
    Harness,
    WebhookReceiver,
    indian_mobiles,
    project_balance,
)

pytestmark = pytest.mark.slow

PRICE = Decimal("0.005")
CREDITS = Decimal("100")


def set_up(e2e: Harness, receiver: WebhookReceiver, **env: str) -> tuple[dict[str, Any],
                                                                          dict[str, Any], str]:
    """Migrate, create the project and its sandbox channel through the CLI, start `serve`."""
    e2e.cli("migrate")
    e2e.cli("migrate")   # safe to run twice
    project = e2e.cli_json("project", "create", "shop", "--credits", str(CREDITS),
                           "--webhook", receiver.url)
    assert project["webhook_url"] == receiver.url
    assert project["token"] and project["webhook_secret"]
    receiver.secret = project["webhook_secret"]
    channel = e2e.cli_json("channel", "add", "--project", "shop", "--type", "sandbox",
                           "--application", "1", "--price", str(PRICE))
    assert channel["project_id"] == project["project_id"]
    assert channel["type"] == "sandbox" and channel["application"] == 1
    server = e2e.serve(env=e2e.env(**env))
    assert server.base_url is not None
    return project, channel, server.base_url


def entries_for(count: int) -> list[dict[str, str]]:
    """Distinct numbers, each with its own text (some not GSM-7) and its own reference."""
    texts = ["Hello #{i}, your code is {code}", "नमस्ते #{i}, कोड {code}",
             "Olá #{i} — código {code}", "#{i}: pickup at 9:{code}"]
    return [{"number": number,
             "message": texts[i % len(texts)].format(i=i, code=f"{(i * 7919) % 100000:05d}"),
             "reference_number": f"order-{i:04d}"}
            for i, number in enumerate(indian_mobiles(count))]


def push(base_url: str, token: str, entries: list[dict[str, str]]) -> dict[str, Any]:
    response = httpx.post(f"{base_url}/api/v2/push", timeout=60, json={
        "token": token, "application": "1", "globalmessage": "", "priority ": "0",
        "data": entries})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == 100 and body["message"] == "Success", body
    assert [e["number"] for e in body["data"]] == [e["number"] for e in entries]
    assert all("msg_id" in e and e["credit"] == str(PRICE) for e in body["data"]), [
        e for e in body["data"] if "msg_id" not in e or e["credit"] != str(PRICE)][:5]
    return body


def forged_post(receiver: WebhookReceiver, secret: str) -> None:
    """Bad signatures must be refused, or the signature check below would prove nothing."""
    body = b'{"project_id":1,"event_id":1,"data":[]}'
    t = int(time.time())
    wrong_key = hmac.new(b"not-the-secret", f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    right_key = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    for content, header in [(body, f"t={t},v1={wrong_key}"),
                            (body.replace(b"[]", b"[1]"), f"t={t},v1={right_key}"),
                            (body, f"t={t - 3600},v1={right_key}"),
                            (body, "")]:
        answer = httpx.post(receiver.url, content=content, timeout=5,
                            headers={"X-Pushgate-Signature": header})
        assert answer.status_code == 401, (header, answer.status_code)


def check_reports(receiver: WebhookReceiver, project: dict[str, Any], channel: dict[str, Any],
                  answer: dict[str, Any], entries: list[dict[str, str]]) -> dict[str, list[int]]:
    """Every accepted report matches what was pushed; returns the statuses seen per msg_id."""
    expected = {item["msg_id"]: entry for item, entry in zip(answer["data"], entries,
                                                             strict=True)}
    statuses: dict[str, list[int]] = defaultdict(list)
    for post in receiver.accepted_posts():
        assert post.signature_valid
        assert post.body is not None
        assert post.body["project_id"] == project["project_id"]
        assert post.body["event_id"] == 1
        assert post.body["data"], "a webhook POST without reports"
    for report in receiver.accepted_reports():
        entry = expected.get(report["msg_id"])
        assert entry is not None, f"a report for a message nobody pushed: {report}"
        assert report["push_id"] == answer["push_id"]
        assert report["number"] == entry["number"]
        assert report["reference_number"] == entry["reference_number"]
        assert report["message"] == entry["message"]
        assert report["channel_id"] == channel["id"]
        assert report["error_code"] is None and report["error_message"] == ""
        assert (report["status"], report["state"]) in ((4, "submitted"), (1, "delivered")), report
        assert isinstance(report["time"], float | int)
        statuses[report["msg_id"]].append(report["status"])
    return statuses


def check_delivery_report_api(base_url: str, token: str, answer: dict[str, Any],
                              entries: list[dict[str, str]]) -> None:
    response = httpx.post(f"{base_url}/api/v2/delivery-report", timeout=30,
                          json={"token": token, "push_id": answer["push_id"]})
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["status"] == 100 and report["push_id"] == answer["push_id"]
    items = report["data"]
    assert [i["msg_id"] for i in items] == [e["msg_id"] for e in answer["data"]]
    assert Counter(i["status"] for i in items) == {1: len(entries)}
    assert [i["reference_number"] for i in items] == [e["reference_number"] for e in entries]


def test_thousand_recipient_push_reports_every_message_to_a_signed_webhook(
        e2e: Harness, receiver: WebhookReceiver) -> None:
    project, channel, base_url = set_up(e2e, receiver)
    forged_post(receiver, project["webhook_secret"])
    controls = len(receiver.all_posts())
    entries = entries_for(1000)

    answer = push(base_url, project["token"], entries)
    assert answer["accepted"] == 1000 and answer["rejected"] == 0
    assert Decimal(answer["credit_total"]) == 1000 * PRICE
    msg_ids = {e["msg_id"] for e in answer["data"]}
    assert len(msg_ids) == 1000

    e2e.wait_until(lambda: msg_ids <= receiver.delivered_ids(), 60,
                   "a `delivered` report for every message",
                   describe=lambda: f"{len(msg_ids & receiver.delivered_ids())}/1000 delivered "
                                    f"reports; states {e2e.state_counts()}")

    posts = receiver.all_posts()[controls:]
    assert all(p.signature_valid and p.answered == 200 for p in posts), [
        (p.answered, p.signature_valid) for p in posts if not p.signature_valid][:5]
    statuses = check_reports(receiver, project, channel, answer, entries)
    assert set(statuses) == msg_ids
    # Nothing failed, so nothing was retried: each message reported once submitted, once
    # delivered, and in many reports per POST.
    assert all(sorted(s) == [1, 4] for s in statuses.values()), [
        (m, s) for m, s in statuses.items() if sorted(s) != [1, 4]][:5]
    reports = sum(len(p.body["data"]) for p in posts if p.body)
    assert reports == 2000
    assert len(posts) < reports

    check_delivery_report_api(base_url, project["token"], answer, entries)
    assert project_balance(e2e, "shop") == CREDITS - 1000 * PRICE
    assert Decimal(answer["balance"]) == CREDITS - 1000 * PRICE


def test_reports_survive_a_receiver_that_fails_at_first(
        e2e: Harness, flaky_receiver: WebhookReceiver) -> None:
    receiver = flaky_receiver
    project, channel, base_url = set_up(
        e2e, receiver, PUSHGATE_WEBHOOK_RETRY_SCHEDULE="0.2,0.2,0.2,0.2")
    entries = entries_for(200)
    answer = push(base_url, project["token"], entries)
    msg_ids = {e["msg_id"] for e in answer["data"]}

    def all_reported() -> bool:
        statuses = check_reports(receiver, project, channel, answer, entries)
        return set(statuses) == msg_ids and all({1, 4} <= set(s) for s in statuses.values())

    e2e.wait_until(all_reported, 60, "a submitted and a delivered report for every message",
                   interval=0.2,
                   describe=lambda: f"{len(msg_ids & receiver.delivered_ids())}/200 delivered;"
                                    f" POSTs answered {[p.answered for p in receiver.posts]}")
    posts = receiver.all_posts()
    assert [p.answered for p in posts[:3]] == [500, 500, 500]
    assert all(p.signature_valid for p in posts)
    # The reports the receiver refused came again: each refused POST's reports are in some
    # later accepted POST.
    accepted = {(r["msg_id"], r["status"]) for r in receiver.accepted_reports()}
    refused = {(r["msg_id"], r["status"]) for p in posts[:3] if p.body for r in p.body["data"]}
    assert refused and refused <= accepted
    e2e.wait_until(lambda: e2e.query("SELECT count(*) FROM outbox")[0][0] == 0, 30,
                   "the outbox to empty",
                   describe=lambda: str(e2e.query("SELECT attempts, dead, count(*) FROM outbox"
                                                  " GROUP BY attempts, dead")))
    check_delivery_report_api(base_url, project["token"], answer, entries)
    assert project_balance(e2e, "shop") == CREDITS - 200 * PRICE
