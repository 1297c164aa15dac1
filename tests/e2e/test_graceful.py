"""SIGTERM stops a `pushgate worker` cleanly mid-drain: it exits 0, gives back or records every
message it held, drops its channel leases, and a later worker finishes the rest with no
re-send."""

from __future__ import annotations

import signal

import pytest

from tests.e2e.harness import (
    SHORT_LEASE,
    Harness,
    project_balance,
    queue_messages,
    snapshot,
    wait_mid_drain,
    worker_env,
)

pytestmark = pytest.mark.slow

TOTAL = 3000
LEASE = SHORT_LEASE


def test_sigterm_mid_drain_exits_cleanly_and_gives_everything_back(e2e: Harness) -> None:
    queued = queue_messages(e2e, TOTAL, rate="1000")

    worker = e2e.start("worker-1", "worker", env=worker_env(e2e, "graceful-1"))
    wait_mid_drain(e2e, worker, TOTAL, LEASE)
    before = snapshot(e2e)
    held = before.ids("sending")
    assert held, "the worker held no message when it was told to stop"
    worker.send(signal.SIGTERM)
    code = worker.wait(20)
    assert code is not None, f"the worker ignored SIGTERM for 20 s\n{e2e.logs()}"
    assert code == 0, e2e.logs()

    after = snapshot(e2e)
    assert not e2e.query(
        "SELECT id FROM messages WHERE state = 'sending' OR leased_by IS NOT NULL"
        " OR lease_until IS NOT NULL LIMIT 5"), "the stopped worker kept messages leased"
    assert e2e.query("SELECT * FROM channel_leases WHERE worker_id = 'graceful-1'") == []
    # Each message it held was either recorded as sent, or put back in the queue unsent.
    assert held <= after.ids("queued", "submitted", "delivered")
    assert held & after.ids("queued"), "SIGTERM mid-batch should give unsent messages back"
    assert after.ids("queued") and after.ids("submitted", "delivered")

    second = e2e.start("worker-2", "worker", env=worker_env(e2e, "graceful-2"))
    e2e.wait_until(
        lambda: e2e.query("SELECT count(*) FROM messages WHERE state = 'delivered'")[0][0]
        == TOTAL,
        60, "every message to be delivered by the next worker",
        interval=0.1, describe=lambda: str(e2e.state_counts()))
    # A clean stop leaves nothing in doubt: no message counts as a possible re-send.
    assert e2e.query("SELECT count(*) FROM messages WHERE resends > 0")[0][0] == 0
    assert e2e.query("SELECT count(*) FROM message_events"
                     " WHERE detail LIKE '%possible re-send%'")[0][0] == 0
    assert e2e.query("SELECT count(*) FROM messages")[0][0] == TOTAL
    assert project_balance(e2e, queued.project_name) == queued.credits - TOTAL * queued.price
    assert second.stop() == 0, e2e.logs()
    assert e2e.query("SELECT * FROM channel_leases") == []
