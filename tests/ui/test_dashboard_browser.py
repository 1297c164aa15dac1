"""The dashboard in a real browser: sign-in (wrong and right token), sending from the form,
a push reaching delivered on its page, cancelling, and no page asking another host."""

from __future__ import annotations

from typing import Any

from tests.e2e.harness import indian_mobiles
from tests.ui.browsing import (
    attr,
    click,
    exists,
    fill,
    hosts_asked,
    shot,
    sign_in,
    signed_in,
    submit,
    text,
    wait_for,
)
from tests.ui.conftest import Dashboard


def test_sign_in_send_and_watch_delivery(browser: Any, dashboard: Dashboard) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    dash = dashboard
    # `/` leads to the dashboard, which asks to sign in.
    browser.get(f"{dash.base_url}/")
    wait_for(lambda: browser.current_url.endswith("/ui/login"), "the sign-in page")
    shot(browser, "login")

    sign_in(browser, dash, "not-a-token")
    # The click returns before the answer's page is loaded: wait for it.
    wait_for(lambda: exists(browser, "#login-error"), "the sign-in refusal")
    assert "not valid" in text(browser, "#login-error")
    assert "shop" not in browser.page_source     # nothing of any project
    assert not exists(browser, "nav")

    sign_in(browser, dash, dash.token)
    wait_for(lambda: exists(browser, "#balance"), "the overview")
    assert text(browser, "#balance") == "10"
    assert hosts_asked(browser) == {"127.0.0.1"}
    shot(browser, "overview")

    # Send to two good numbers and a bad one: the bad one is refused with its reason. To the
    # paused channel: the push's page is then sure to show it still on its way, whatever
    # the machine's speed, until the test resumes the channel.
    browser.get(f"{dash.base_url}/ui/send")
    good = indian_mobiles(2)
    fill(browser, "numbers", "\n".join([*good, "12345"]))
    fill(browser, "message", "Hello from the dashboard")
    shot(browser, "send")
    Select(browser.find_element(By.ID, "application")).select_by_value("3")
    submit(browser, "numbers")
    # Post/redirect/get: the push's page, saying what was accepted and refused.
    wait_for(lambda: exists(browser, "#send-result"), "the push's acceptance")
    assert "2 messages" in text(browser, "#send-result")
    refused = text(browser, "#refused")
    assert "12345 201 wrong length" in refused
    assert hosts_asked(browser) == {"127.0.0.1"}

    # Its page shows the messages reach delivered without a reload (htmx polling).
    wait_for(lambda: exists(browser, "#live"), "the push's page")
    assert attr(browser, "#live", "data-live") == "yes"
    assert "queued 2" in text(browser, "#counts")
    assert "delivered" not in text(browser, "#counts")
    browser.execute_script("window.sameDocument = true")
    dash.harness.cli("channel", "pause", str(dash.paused_channel_id), "--resume")
    # The dispatcher takes the resumed channel up at its next lease renewal, then sends.
    wait_for(lambda: "delivered 2" in text(browser, "#counts"), "both messages delivered")
    assert browser.execute_script("return window.sameDocument === true")    # no reload
    rows = text(browser, "#messages")
    assert all(number in rows for number in good) and rows.count("delivered") == 2
    assert text(browser, "#live") and attr(browser, "#live", "data-live") == "no"
    assert hosts_asked(browser) == {"127.0.0.1"}
    shot(browser, "push")

    # The CSV export is the report's rows.
    csv_href = attr(browser, "#csv", "href")
    csv_text = browser.execute_script(
        "const r = new XMLHttpRequest(); r.open('GET', arguments[0], false); r.send();"
        " return r.responseText;", csv_href)
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("msg_id,number,status,state") and len(lines) == 3
    assert all(",delivered," in line for line in lines[1:])

    browser.get(f"{dash.base_url}/ui/pushes")
    wait_for(lambda: exists(browser, "#pushes"), "the list of pushes")
    assert "delivered 2" in text(browser, "#pushes")
    shot(browser, "pushes")

    # The API docs pages work from the package's assets alone.
    for path, ready in (("/docs", ".swagger-ui .info"), ("/redoc", "[role=search], .menu-content")):
        browser.get(f"{dash.base_url}{path}")
        wait_for(lambda ready=ready: exists(browser, ready), f"{path} rendered")
        assert hosts_asked(browser) == {"127.0.0.1"}, path

    # Signing out ends the session.
    browser.get(f"{dash.base_url}/ui/")
    wait_for(lambda: browser.find_element(By.XPATH, "//button[text()='Sign out']"),
             "the sign-out button").click()
    wait_for(lambda: browser.current_url.endswith("/ui/login"), "the sign-in page")
    browser.get(f"{dash.base_url}/ui/pushes")
    assert browser.current_url.endswith("/ui/login")


def test_cancel_a_queued_push(browser: Any, dashboard: Dashboard) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    dash = dashboard
    signed_in(browser, dash)
    browser.get(f"{dash.base_url}/ui/send")
    Select(browser.find_element(By.ID, "application")).select_by_value("3")
    fill(browser, "numbers", "\n".join(indian_mobiles(3)))
    fill(browser, "message", "Waits on a paused channel")
    submit(browser, "numbers")
    wait_for(lambda: exists(browser, "#send-result"), "the push's acceptance")
    wait_for(lambda: exists(browser, "#cancel"), "the cancel button")
    assert "queued 3" in text(browser, "#counts")
    click(browser, "#cancel")
    wait_for(lambda: exists(browser, "#flash"), "the cancellation's note")
    assert "3 messages cancelled" in text(browser, "#flash")
    assert "cancelled 3" in text(browser, "#counts")
    assert not exists(browser, "#cancel")
    browser.get(f"{dash.base_url}/ui/")
    assert text(browser, "#balance") == "10"    # refunded in full
