"""The dashboard's channels, phones and webhooks pages in a real browser: pausing a channel
keeps a push to it queued and resuming sends it; pairing a phone shows the API URL and the
private token with their QR codes, a phone registers with exactly those and is revoked from
the page; a failing event webhook's report is listed and "retry now" has it tried again at
once; no page asks another host."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx

from tests.e2e.harness import indian_mobiles
from tests.ui.browsing import (
    attr,
    click,
    exists,
    fill,
    hosts_asked,
    shot,
    signed_in,
    text,
    wait_for,
)
from tests.ui.conftest import Dashboard


def _click(browser: Any, element_id: str) -> None:
    click(browser, f"#{element_id}")


def _push(dash: Dashboard, application: str, count: int) -> int:
    answer = httpx.post(f"{dash.base_url}/api/v2/push", timeout=30, json={
        "token": dash.token, "application": application, "globalmessage": "From the test",
        "data": [{"number": n} for n in indian_mobiles(count, start=50)]}).json()
    assert answer["status"] == 100, answer
    return int(answer["push_id"])


def _states(dash: Dashboard, push_id: int) -> dict[str, int]:
    rows = dash.harness.query("SELECT state, count(*) FROM messages WHERE push_id = ?"
                              " GROUP BY state", push_id)
    return {str(state): int(n) for state, n in rows}


def _closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_pause_a_channel_from_the_page_and_resume_it(browser: Any,
                                                     dashboard: Dashboard) -> None:
    dash = dashboard
    sandbox = dash.harness.cli_json("channel", "list", "--project", "shop")[0]
    assert sandbox["application"] == 1 and not sandbox["paused"]
    channel_id = sandbox["id"]
    signed_in(browser, dash)
    browser.get(f"{dash.base_url}/ui/channels")
    wait_for(lambda: exists(browser, f"#pause-{channel_id}"), "the pause button")
    callback = attr(browser, f"#callback-{channel_id}", "value")
    assert callback is not None and callback.endswith(f"/channels/{channel_id}/callback")
    _click(browser, f"pause-{channel_id}")
    wait_for(lambda: exists(browser, "#flash"), "the pause's note")
    assert "paused" in text(browser, "#flash")
    assert text(browser, f"#state-{channel_id}").startswith("paused")
    assert exists(browser, f"#resume-{channel_id}")

    def released() -> bool:
        browser.refresh()
        return "worker" not in text(browser, f"#state-{channel_id}")

    wait_for(released, "the dispatcher leaving the channel")
    # A push to the paused channel is accepted and stays queued.
    push_id = _push(dash, "1", 2)
    browser.refresh()
    assert text(browser, f"#queued-{channel_id}").startswith("2")
    assert _states(dash, push_id) == {"queued": 2}
    assert hosts_asked(browser) == {"127.0.0.1"}
    shot(browser, "channels")
    _click(browser, f"resume-{channel_id}")
    wait_for(lambda: exists(browser, "#flash") and "resumed" in text(browser, "#flash"),
             "the resume's note")
    wait_for(lambda: not _states(dash, push_id).get("queued"), "the push sent once resumed")
    assert set(_states(dash, push_id)) <= {"sending", "submitted", "delivered"}
    assert exists(browser, f"#pause-{channel_id}")


def test_pair_a_phone_with_the_qr_codes_and_revoke_it(browser: Any,
                                                      dashboard: Dashboard) -> None:
    dash = dashboard
    signed_in(browser, dash)
    browser.get(f"{dash.base_url}/ui/phones")
    assert "no phone channel" in text(browser, "main")
    phones = dash.harness.cli_json("channel", "add", "--project", "shop", "--type", "android",
                                   "--application", "3", "--name", "phones")
    browser.refresh()
    wait_for(lambda: exists(browser, f"#no-phones-{phones['id']}"), "the empty state")
    assert "No phones yet — pair one below" in text(browser, f"#no-phones-{phones['id']}")
    fill(browser, "server-url", dash.base_url)
    _click(browser, "pair")
    wait_for(lambda: exists(browser, "#pairing"), "the pairing values")
    api_url = text(browser, "#pair-url")
    token = text(browser, "#pair-token")
    assert api_url == f"{dash.base_url}/api/mobile/v1" and len(token) >= 24
    codes = browser.execute_script(
        "return Array.from(document.querySelectorAll('#pairing svg.qr')).map(s =>"
        " [s.getBoundingClientRect().width, s.querySelector('path').getAttribute('d').length])")
    assert len(codes) == 2 and all(width > 50 and d > 100 for width, d in codes), codes
    assert hosts_asked(browser) == {"127.0.0.1"}
    shot(browser, "phones")
    # The app registers with exactly what the page showed.
    registered = httpx.post(f"{api_url}/device", timeout=30, json={"name": "Pixel 7"},
                            headers={"Authorization": f"Bearer {token}",
                                     "User-Agent": "SMSGateway/1.31.0"})
    assert registered.status_code == 201, registered.text
    device_id = registered.json()["id"]
    browser.get(f"{dash.base_url}/ui/phones")
    wait_for(lambda: exists(browser, f"#device-{device_id}"), "the paired phone")
    assert "online" in text(browser, f"#device-{device_id}")
    assert not exists(browser, "#pairing")          # the token was shown once
    assert token not in browser.page_source
    click(browser, f"#device-{device_id} button")
    wait_for(lambda: exists(browser, "#flash"), "the revocation's note")
    assert "revoked" in text(browser, "#flash")
    assert "revoked" in text(browser, f"#device-{device_id}")
    again = httpx.get(f"{api_url}/message", timeout=30,
                      headers={"Authorization": f"Bearer {registered.json()['token']}"})
    assert again.status_code == 401


def test_a_failing_webhook_is_listed_and_retried_now(browser: Any,
                                                     dashboard: Dashboard) -> None:
    dash = dashboard
    hook = f"http://127.0.0.1:{_closed_port()}/hook"
    dash.harness.cli("project", "webhook", "shop", hook)
    push_id = _push(dash, "1", 1)

    def outbox() -> list[tuple[Any, ...]]:
        return dash.harness.query("SELECT attempts, next_attempt_at, dead FROM outbox"
                                  " WHERE attempts > 0")

    # Both reports (submitted, then delivered a few seconds later) failed once.
    wait_for(lambda: _states(dash, push_id) == {"delivered": 1} and len(outbox()) == 2,
             "the message delivered and both its reports failed", timeout=60)
    before = outbox()
    assert all(attempts == 1 and next_at > time.time() + 30 and not dead
               for attempts, next_at, dead in before)    # next tries: a minute on
    signed_in(browser, dash)
    browser.get(f"{dash.base_url}/ui/webhooks")
    assert text(browser, "#event-url") == hook
    wait_for(lambda: exists(browser, "#retry-all"), "the retry button")
    rows = text(browser, "tbody")
    assert "failed" in rows and "message " in rows
    # Why: the deliverer's reason (nothing listens on that port).
    assert all(cell.strip() for cell in browser.execute_script(
        "return Array.from(document.querySelectorAll('td.last-error')).map(e => e.textContent)"))
    assert hosts_asked(browser) == {"127.0.0.1"}
    shot(browser, "webhooks")
    _click(browser, "retry-all")
    wait_for(lambda: exists(browser, "#flash"), "the retry's note")
    assert "will be tried again now" in text(browser, "#flash")
    # Tried again at once (long before the schedule's next try), and failed again.
    wait_for(lambda: [row[0] for row in outbox()] == [2, 2], "another try of both")
    browser.refresh()
    assert text(browser, "tbody").count("2 failed") == 2


def test_the_pages_fit_a_phone_screen(browser: Any, dashboard: Dashboard) -> None:
    """At a phone's width no page scrolls sideways (wide tables scroll in their own box)."""
    dash = dashboard
    dash.harness.cli_json("channel", "add", "--project", "shop", "--type", "android",
                          "--application", "3", "--name", "phones")
    dash.harness.cli("project", "webhook", "shop", f"http://127.0.0.1:{_closed_port()}/hook")
    _push(dash, "1", 1)
    signed_in(browser, dash)
    size = browser.get_window_size()
    browser.set_window_size(390, 844)
    try:
        wait_for(lambda: browser.execute_script("return window.innerWidth") <= 400,
                 "the phone-size window")
        for path in ("/ui/channels", "/ui/phones", "/ui/webhooks"):
            browser.get(f"{dash.base_url}{path}")
            wait_for(lambda: exists(browser, "h1"), path)
            wide = browser.execute_script(
                "return [document.documentElement.scrollWidth, window.innerWidth]")
            culprits = browser.execute_script(
                "return Array.from(document.querySelectorAll('body *')).filter(e =>"
                " e.getBoundingClientRect().right > window.innerWidth).slice(0, 5).map(e =>"
                " e.tagName + '.' + e.className + ' ' + e.getBoundingClientRect().right)")
            assert wide[0] <= wide[1], (path, wide, culprits)
        browser.get(f"{dash.base_url}/ui/phones")
        _click(browser, "pair")
        wait_for(lambda: exists(browser, "#pairing"), "the pairing values")
        wide = browser.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]")
        assert wide[0] <= wide[1], ("pairing", wide)
    finally:
        browser.set_window_size(size["width"], size["height"])
