"""Every dashboard page in a real browser, checked for what a screen reader and a keyboard
need: each field labelled, each button and link named, images and drawings described, one
h1 and the page's language; and Tab from the top of Send and Channels reaching every
navigation link and the page's own actions."""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.harness import indian_mobiles
from tests.ui.browsing import click, exists, signed_in, wait_for
from tests.ui.conftest import Dashboard

# What each page lacks for assistive technology (empty: nothing).
PROBLEMS = """
const named = e => (e.getAttribute('aria-label') || '').trim()
  || (e.getAttribute('aria-labelledby') || '').split(/\\s+/).filter(Boolean)
       .some(id => document.getElementById(id) && document.getElementById(id).textContent.trim());
const problems = [];
if (!(document.documentElement.getAttribute('lang') || '').trim())
  problems.push('no lang attribute on <html>');
const h1 = document.querySelectorAll('h1').length;
if (h1 !== 1) problems.push(h1 + ' h1 elements');
if (!document.title.trim()) problems.push('no <title>');
document.querySelectorAll('input, select, textarea').forEach(e => {
  if (e.type === 'hidden') return;
  if (!(e.labels && e.labels.length) && !named(e)) problems.push('unlabelled ' + e.outerHTML);
});
document.querySelectorAll('button, input[type=submit], input[type=button]').forEach(e => {
  if (!(e.textContent.trim() || e.value) && !named(e)) problems.push('unnamed ' + e.outerHTML);
});
document.querySelectorAll('a[href]').forEach(e => {
  if (!e.textContent.trim() && !named(e) && !e.querySelector('img[alt]:not([alt=""])'))
    problems.push('link without text ' + e.outerHTML);
});
document.querySelectorAll('img').forEach(e => {
  if (!e.hasAttribute('alt')) problems.push('img without alt ' + e.outerHTML);
});
document.querySelectorAll('svg').forEach(e => {
  const title = e.querySelector(':scope > title');
  if (e.getAttribute('aria-hidden') !== 'true' && !(title && title.textContent.trim())
      && !named(e)) problems.push('svg without title ' + e.outerHTML.slice(0, 120));
});
return problems;
"""

# The element that has the focus, described: tag, id, href, type and text.
FOCUSED = """
const e = document.activeElement;
return e ? {tag: e.tagName.toLowerCase(), id: e.id, href: e.getAttribute('href'),
            type: e.getAttribute('type'), text: e.textContent.trim()} : null;
"""

NAV = ["/ui/", "/ui/send", "/ui/pushes", "/ui/messages", "/ui/credits", "/ui/channels",
       "/ui/phones", "/ui/webhooks"]


def _problems(browser: Any, what: str) -> None:
    wait_for(lambda: exists(browser, "main h1"), what)
    assert browser.execute_script(PROBLEMS) == [], what


def test_every_page_is_labelled_for_assistive_technology(browser: Any,
                                                         dashboard: Dashboard) -> None:
    dash = dashboard
    # Something on each page: a phone channel, a failing webhook, a push.
    dash.harness.cli_json("channel", "add", "--project", "shop", "--type", "android",
                          "--application", "2", "--name", "phones")
    dash.harness.cli("project", "webhook", "shop", "http://127.0.0.1:9/hook")
    number = indian_mobiles(1)[0]
    answer = httpx.post(f"{dash.base_url}/api/v2/push", timeout=30, json={
        "token": dash.token, "application": "1", "globalmessage": "Checked",
        "data": [{"number": number}]}).json()
    assert answer["status"] == 100, answer

    browser.get(f"{dash.base_url}/ui/login")
    _problems(browser, "/ui/login")
    signed_in(browser, dash)
    for path in [*NAV, "/ui/send/csv", f"/ui/pushes/{answer['push_id']}",
                 f"/ui/messages?q={number}"]:
        browser.get(f"{dash.base_url}{path}")
        _problems(browser, path)
    # The pairing values and their QR codes.
    browser.get(f"{dash.base_url}/ui/phones")
    click(browser, "#pair")
    wait_for(lambda: exists(browser, "#pairing svg"), "the pairing QR codes")
    _problems(browser, "/ui/phones pairing")


def _tab_through(browser: Any, until: Any, limit: int = 80) -> list[dict[str, Any]]:
    """Press Tab from the top of the page (nothing focused) until ``until(focused)``; every
    element reached, in order."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    browser.execute_script("document.activeElement && document.activeElement.blur();"
                           " window.scrollTo(0, 0)")
    reached: list[dict[str, Any]] = []
    for _ in range(limit):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        focused = browser.execute_script(FOCUSED)
        reached.append(focused)
        if until(focused):
            return reached
    raise AssertionError(f"{limit} presses of Tab did not reach the target: {reached}")


def test_tab_reaches_the_navigation_and_the_actions(browser: Any,
                                                    dashboard: Dashboard) -> None:
    dash = dashboard
    signed_in(browser, dash)
    channels = dash.harness.cli_json("channel", "list", "--project", "shop")
    assert len(channels) == 2

    browser.get(f"{dash.base_url}/ui/send")
    wait_for(lambda: exists(browser, "form.stack button[type=submit]"), "the send form")
    reached = _tab_through(browser, lambda f: f["tag"] == "button" and f["text"] == "Send")
    assert reached[0]["text"] == "Skip to content", reached[0]
    links = [f["href"] for f in reached if f["tag"] == "a"]
    # The main navigation first, in its order (the page may link to some again later).
    assert [href for href in links if href in NAV][:len(NAV)] == NAV, links
    ids = [f["id"] for f in reached]
    assert ids.index("numbers") < ids.index("message") < len(ids) - 1, ids

    browser.get(f"{dash.base_url}/ui/channels")
    wait_for(lambda: exists(browser, "section.channel"), "the channels")
    last = max(c["id"] for c in channels)
    reached = _tab_through(browser, lambda f: f["id"] in (f"pause-{last}", f"resume-{last}"))
    links = [f["href"] for f in reached if f["tag"] == "a"]
    # The main navigation first, in its order (the page may link to some again later).
    assert [href for href in links if href in NAV][:len(NAV)] == NAV, links
    buttons = {f["id"] for f in reached if f["tag"] == "button"}
    for channel in channels:
        action = "resume" if channel["paused"] else "pause"
        assert f"{action}-{channel['id']}" in buttons, (channel, buttons)
    # Enter on the focused button does what a click does.
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_for(lambda: exists(browser, "#flash"), "the note of the keyboard's action")
