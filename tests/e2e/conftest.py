"""Fixtures for the multi-process end-to-end tests (helpers live in ``harness.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Harness, WebhookReceiver


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def e2e(tmp_path: Path, db_url: str, request: pytest.FixtureRequest) -> Iterator[Harness]:
    """A ``Harness`` in this test's temporary directory, on this test's database (every e2e
    test runs once per backend, see ``tests/conftest.py``). Every subprocess it started is
    stopped (SIGTERM, then SIGKILL) at the end; if the test failed, their logs are printed."""
    harness = Harness(tmp_path, db_url)
    try:
        yield harness
    finally:
        harness.stop_all()
        report = getattr(request.node, "rep_call", None)
        if report is None or report.failed:
            print(harness.logs())


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as r:
        yield r


@pytest.fixture
def flaky_receiver() -> Iterator[WebhookReceiver]:
    """Answers 500 to its first three well-signed POSTs, then 200."""
    with WebhookReceiver(fail_first=3) as r:
        yield r
