"""What the dashboard's browser tests share: waiting (Selenium's WebDriverWait, never a
sleep), reads that survive htmx swapping the element out, form filling, sign-in and
screenshots.

Every read goes through ``find``: htmx replaces the live section (``outerHTML``) while a
test reads it, so an element found a moment ago may be stale; the read is then done again on
the element found anew, the way a person would look again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from tests.ui.conftest import Dashboard

T = TypeVar("T")

# Long enough for a busy two-core machine: what waits on the dispatcher (a send, a delivery
# report, a webhook's retry) or on a page load under load gets this long.
WAIT = 30.0
# Retries of one read when the element went stale under it (htmx swapped it meanwhile).
STALE_RETRIES = 20

ROOT = Path(__file__).resolve().parents[2]
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"
BUILD_SCREENSHOTS = ROOT / "build" / "screenshots"


def screenshots_dir() -> Path:
    """Where the tests' screenshots go: build/screenshots/ (not tracked), or with
    ``PUSHGATE_UPDATE_SCREENSHOTS=1`` the committed docs/screenshots/."""
    update = os.environ.get("PUSHGATE_UPDATE_SCREENSHOTS", "").strip().lower()
    return DOCS_SCREENSHOTS if update in ("1", "true", "yes") else BUILD_SCREENSHOTS


def wait_for(condition: Callable[[], T], what: str, timeout: float = WAIT) -> T:
    """Wait until ``condition()`` is truthy and return it. A condition that reads the page
    may hit an element htmx swapped or a page still loading: that counts as not yet."""
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
        TimeoutException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(None, timeout, poll_frequency=0.1,  # type: ignore[arg-type]
                         ignored_exceptions=(NoSuchElementException,
                                             StaleElementReferenceException))
    try:
        return wait.until(lambda _driver: condition())
    except TimeoutException as exc:
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}") from exc


def read(browser: Any, css: str, how: Callable[[Any], T]) -> T:
    """``how(element)`` on the element ``css`` finds, found again if htmx swapped it."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _ in range(STALE_RETRIES):
        try:
            return how(browser.find_element(By.CSS_SELECTOR, css))
        except StaleElementReferenceException:
            continue
    return how(browser.find_element(By.CSS_SELECTOR, css))


def text(browser: Any, css: str) -> str:
    return read(browser, css, lambda e: str(e.text))


def attr(browser: Any, css: str, name: str) -> str | None:
    return read(browser, css, lambda e: e.get_attribute(name))


def exists(browser: Any, css: str) -> bool:
    from selenium.webdriver.common.by import By

    return bool(browser.find_elements(By.CSS_SELECTOR, css))


def visible(browser: Any, css: str) -> Any:
    """Wait for ``css`` to be on the page and displayed; the element."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    return wait_for(lambda: ec.visibility_of_element_located((By.CSS_SELECTOR, css))(browser),
                    f"{css} shown")


def fill(browser: Any, field: str, value: str) -> None:
    element = visible(browser, f"#{field}")
    element.clear()
    element.send_keys(value)


def click(browser: Any, css: str) -> None:
    """Click ``css`` once it can be clicked."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    wait_for(lambda: ec.element_to_be_clickable((By.CSS_SELECTOR, css))(browser),
             f"{css} clickable").click()


def submit(browser: Any, form_of: str) -> None:
    """Submit the form holding the element with id ``form_of`` with its submit button."""
    from selenium.webdriver.common.by import By

    element = browser.find_element(By.ID, form_of)
    element.find_element(By.XPATH, "./ancestor::form//button[@type='submit']").click()


def hosts_asked(browser: Any) -> set[str]:
    """Every host the page and its resources came from (the browser's own record)."""
    urls = browser.execute_script(
        "return [location.href].concat(performance.getEntriesByType('resource')"
        ".map(e => e.name))")
    return {urlsplit(u).hostname or "" for u in urls if not u.startswith(("data:", "blob:"))}


def shot(browser: Any, name: str) -> None:
    folder = screenshots_dir()
    folder.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(folder / f"{name}.png"))


def sign_in(browser: Any, dash: Dashboard, token: str) -> None:
    browser.get(f"{dash.base_url}/ui/login")
    fill(browser, "token", token)
    submit(browser, "token")


def signed_in(browser: Any, dash: Dashboard) -> None:
    """Sign in with the project's token and wait for the overview."""
    sign_in(browser, dash, dash.token)
    wait_for(lambda: exists(browser, "#balance"), "the overview")
