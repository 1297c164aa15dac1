"""The dashboard's browser tests: a real ``pushgate serve`` on 127.0.0.1 (SQLite, a sandbox
channel) driven by the system's Chromium through Selenium.

Chromium and its driver come from the system (Debian: ``apt-get install chromium
chromium-driver``); Selenium is told their paths and never downloads anything. Without them
the tests skip, saying so, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Harness, Proc

CHROMIUM = os.environ.get("PUSHGATE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PUSHGATE_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
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
def chromium() -> str:
    """Skip (or under CI fail) once for the whole run when the browser cannot run."""
    missing = _missing()
    if missing:
        if _ci():
            pytest.fail(f"browser tests cannot run under CI: {missing}")
        pytest.skip(f"browser tests skipped: {missing}")
    return CHROMIUM


@pytest.fixture
def browser(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A fresh headless Chromium for each test (a test that fails, or a browser that
    crashed, leaves nothing behind for the next one); quit even when the test fails."""
    # Selenium Manager must not look for (or download) a driver: the path is given.
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tmp_path_factory.mktemp("chromium-profile")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--window-size=1100,900", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.set_script_timeout(30)
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
    paused_channel_id: int


@pytest.fixture
def dashboard(tmp_path: Path, chromium: str) -> Iterator[Dashboard]:
    """A gateway on a fresh SQLite file: project "shop" with 10 credits, a sandbox channel
    for application 1 and a paused one for application 3."""
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
        yield Dashboard(harness, server, server.base_url, project["token"],
                        project["project_id"], paused["id"])
    finally:
        harness.stop_all()
