"""The dashboard's CSV send, message search and credits pages in a real browser; every page
usable on a phone-size screen (no sideways scrolling) and from the keyboard (Tab reaches the
send form's fields and its button; every field has a label)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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

PAGES = ["/ui/", "/ui/send", "/ui/send/csv", "/ui/pushes", "/ui/messages", "/ui/credits"]

# Every visible form field without a <label> naming it nor an aria-label.
UNLABELLED = """
return Array.from(document.querySelectorAll('input, select, textarea'))
  .filter(e => e.type !== 'hidden')
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
  .map(e => e.outerHTML);
"""


# What sticks out past the screen's right edge (to say what to fix).
TOO_WIDE = """
return Array.from(document.querySelectorAll('body *'))
  .filter(e => e.getBoundingClientRect().right > window.innerWidth)
  .map(e => e.tagName + '#' + e.id + '.' + e.className + ' ' + e.getBoundingClientRect().right);
"""


def send_campaign(browser: Any, dash: Dashboard, tmp_path: Path) -> list[str]:
    """Upload a CSV on the Send page, check its preview, confirm; the numbers sent."""
    from selenium.webdriver.common.by import By

    numbers = indian_mobiles(3)
    csv_file = tmp_path / "campaign.csv"
    csv_file.write_text("name,phone,reference_number\n"
                        f"Asha,{numbers[0]},order-7\n"
                        "Bad,12345,order-8\n"
                        f"Ravi,{numbers[1]},order-9\n"
                        f"Mina,{numbers[2]},\n", encoding="utf-8")
    browser.get(f"{dash.base_url}/ui/send")
    click(browser, "a[href='/ui/send/csv']")
    wait_for(lambda: exists(browser, "#csv-file"), "the CSV form")
    browser.find_element(By.ID, "csv-file").send_keys(str(csv_file))
    fill(browser, "csv-message", "Hello {name}, your order is on its way")
    fill(browser, "csv-number-column", "phone")
    shot(browser, "send_csv")
    click(browser, "#csv-form button[type=submit]")
    wait_for(lambda: exists(browser, "#preview"), "the preview")
    rows = text(browser, "#preview-rows")
    assert "Hello Asha, your order is on its way" in rows
    assert "Hello Mina, your order is on its way" in rows
    assert "wrong length" in rows
    assert text(browser, "#preview-summary").startswith("4 rows in 1 push: 3 to send, 1 refused")
    assert hosts_asked(browser) == {"127.0.0.1"}
    shot(browser, "send_csv_preview")
    click(browser, "#confirm")
    wait_for(lambda: exists(browser, "#csv-result"), "the campaign's result")
    assert text(browser, "#csv-result").startswith("3 messages accepted, 1 refused")
    assert "12345" in text(browser, "#refused")
    assert (attr(browser, "#rejects", "href") or "").endswith("rejects.csv")
    shot(browser, "send_csv_result")
    # A reload of the result sends nothing again (post/redirect/get).
    browser.refresh()
    wait_for(lambda: exists(browser, "#csv-pushes"), "the result again")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#csv-pushes a")) == 1
    click(browser, "#csv-pushes a")
    wait_for(lambda: exists(browser, "#live"), "the campaign's push")
    assert "3 of 4 entries" in browser.page_source
    return numbers


def test_csv_send_search_and_credits(browser: Any, dashboard: Dashboard,
                                     tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    dash = dashboard
    signed_in(browser, dash)
    numbers = send_campaign(browser, dash, tmp_path)

    # Messages: by number as a person types it, then by reference; each links to its push.
    browser.get(f"{dash.base_url}/ui/messages")
    n = numbers[1]
    fill(browser, "q", f"+{n[:2]} {n[2:7]}-{n[7:]}")
    click(browser, "form.search button")
    found = wait_for(lambda: exists(browser, "#found") and text(browser, "#found"),
                     "the messages found")
    assert n in found and "Hello Ravi" in found and numbers[0] not in found
    shot(browser, "messages")
    fill(browser, "q", "order-7")
    Select(browser.find_element(By.ID, "by")).select_by_value("reference")
    click(browser, "form.search button")
    # The answer's page, not the one before it (that one has a #found too).
    wait_for(lambda: "order-7" in browser.current_url
             and numbers[0] in text(browser, "#found"), "the reference search")
    found = text(browser, "#found")
    assert numbers[0] in found and "Hello Asha" in found and n not in found
    click(browser, "#found a")
    wait_for(lambda: exists(browser, "#live"), "the message's push")

    # Credits: 10 to start, 3 messages at 0.01 charged on the campaign's push.
    browser.get(f"{dash.base_url}/ui/credits")
    wait_for(lambda: exists(browser, "#ledger"), "the credit history")
    assert text(browser, "#credit-balance") == "9.97"
    ledger = text(browser, "#ledger")
    assert "-0.03 push" in ledger and "+10 initial credit" in ledger
    assert browser.find_elements(By.CSS_SELECTOR, "#ledger a[href^='/ui/pushes/']")
    assert hosts_asked(browser) == {"127.0.0.1"}
    shot(browser, "credits")


def test_phone_screen_and_keyboard(browser: Any, dashboard: Dashboard) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    dash = dashboard
    signed_in(browser, dash)
    browser.get(f"{dash.base_url}/ui/messages?q={indian_mobiles(1)[0]}")
    browser.set_window_size(375, 740)
    try:
        wait_for(lambda: browser.execute_script("return window.innerWidth") <= 400,
                 "the phone-size window")
        for path in PAGES:
            browser.get(f"{dash.base_url}{path}")
            wait_for(lambda: exists(browser, "main h1"), path)
            wide, inner = browser.execute_script(
                "return [document.scrollingElement.scrollWidth, window.innerWidth]")
            assert wide <= inner, (f"{path} scrolls sideways on a phone: {wide} > {inner}",
                                   browser.execute_script(TOO_WIDE))
            # The navigation is there to use: every entry visible and inside the screen.
            for link in browser.find_elements(By.CSS_SELECTOR, "nav[aria-label=Main] a"):
                assert link.is_displayed(), (path, link.text)
                box = link.rect
                assert box["x"] >= 0 and box["x"] + box["width"] <= inner, (path, link.text)
            assert browser.execute_script(UNLABELLED) == [], path
            if path == "/ui/send":
                shot(browser, "phone_send")
    finally:
        browser.set_window_size(1100, 900)

    # The keyboard alone reaches every field of the send form and its button, in order.
    browser.get(f"{dash.base_url}/ui/send")
    wait_for(lambda: exists(browser, "#numbers"), "the send form")
    # From the last link before the form (the "CSV file" tab), Tab after Tab.
    browser.execute_script("document.querySelector(\"a[href='/ui/send/csv']\").focus()")
    reached = []
    for _ in range(12):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        active = browser.switch_to.active_element
        reached.append(active.get_attribute("id") or active.tag_name)
        if active.tag_name == "button" and active.get_attribute("type") == "submit":
            break
    assert reached == ["application", "numbers", "message", "media", "priority", "send_at",
                       "button"], reached
    # Typing and Enter on the button sends.
    browser.find_element(By.ID, "numbers").send_keys("\n".join(indian_mobiles(1)))
    browser.find_element(By.ID, "message").send_keys("From the keyboard")
    browser.find_element(By.CSS_SELECTOR, "form.stack button[type=submit]").send_keys(Keys.ENTER)
    wait_for(lambda: exists(browser, "#send-result"), "the push sent from the keyboard")
    assert "1 message" in text(browser, "#send-result")
