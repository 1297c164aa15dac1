"""The dashboard's browser tests: a real ``pushgate serve`` on 127.0.0.1 (SQLite, a sandbox
channel) driven by the system's Chromium through Selenium.

Chromium and its driver come from the system (Debian: ``apt-get install chromium
chromium-driver``); Selenium is told their paths and never downloads anything. Without them
the tests skip, saying so, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Harness, Proc

CHROMIUM = os.environ.get("PUSHGATE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PUSHGATE_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PRICE = "0.01"
DELIVERY_DELAY = 4


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (the dev extra)"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (apt-get install chromium chromium-driver)"
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    missing = _missing()
    if missing:
        if _ci():
            pytest.fail(f"browser tests cannot run under CI: {missing}")
        pytest.skip(f"browser tests skipped: {missing}")
    # Selenium Manager must not look for (or download) a driver: the path is given.
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="pushgate-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--window-size=1100,900", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@dataclass
class Dashboard:
    harness: Harness
    server: Proc
    base_url: str
    token: str
    project_id: int


@pytest.fixture
def dashboard(tmp_path: Path, browser: Any) -> Iterator[Dashboard]:
    """A gateway on a fresh SQLite file: project "shop" with 10 credits, a sandbox channel
    for application 1 and a paused one for application 3; the browser's cookies cleared."""
    harness = Harness(tmp_path)
    try:
        harness.cli("migrate")
        project = harness.cli_json("project", "create", "shop", "--credits", "10")
        # Deliveries reported a few seconds after the send: the push's page sees them come.
        harness.cli_json("channel", "add", "--project", "shop", "--type", "sandbox",
                         "--application", "1", "--price", PRICE,
                         "--config", f'{{"delivery_delay": {DELIVERY_DELAY}}}')
        # A paused channel (application 3, SMS) keeps what is sent to it queued: to cancel.
        paused = harness.cli_json("channel", "add", "--project", "shop", "--type", "sandbox",
                                  "--application", "3", "--price", PRICE)
        harness.cli_json("channel", "pause", str(paused["id"]))
        server = harness.serve(env=harness.env(PUSHGATE_ADMIN_PASSWORD="operator-pass"))
        assert server.base_url is not None
        browser.delete_all_cookies()
        yield Dashboard(harness, server, server.base_url, project["token"],
                        project["project_id"])
    finally:
        harness.stop_all()
