"""SIGKILL a `pushgate worker` in the middle of a drain, start another, and check that every
message reaches a final state, none is lost, credits add up, and every possible re-send is
recorded on exactly the messages that were out for sending when the worker died."""

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


def test_sigkill_mid_drain_loses_nothing_and_records_resends(e2e: Harness) -> None:
    # 3,000 messages at 1,000/s: about three seconds of draining, one second per claimed batch.
    queued = queue_messages(e2e, TOTAL, rate="1000")

    first = e2e.start("worker-1", "worker", env=worker_env(e2e, "crash-1"))
    wait_mid_drain(e2e, first, TOTAL, LEASE)
    first.send(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL

    at_kill = snapshot(e2e)
    sending = at_kill.ids("sending")
    done = at_kill.ids("submitted", "delivered")
    waiting = at_kill.ids("queued")
    # Otherwise the kill proved nothing: it must catch messages out for sending, and others
    # already finished.
    assert sending, f"no message was being sent at the kill: {e2e.state_counts()}"
    assert done, f"no message was finished at the kill: {e2e.state_counts()}"
    assert len(done) < TOTAL
    assert sending | done | waiting == set(queued.msg_ids)
    leased_by = {r[0] for r in e2e.query(
        "SELECT DISTINCT leased_by FROM messages WHERE state = 'sending'")}
    assert leased_by == {"crash-1"}
    assert e2e.query("SELECT count(*) FROM messages WHERE resends > 0")[0][0] == 0

    second = e2e.start("worker-2", "worker", env=worker_env(e2e, "crash-2"))
    e2e.wait_until(
        lambda: e2e.query("SELECT count(*) FROM messages WHERE state = 'delivered'")[0][0]
        == TOTAL,
        60, "every message to be delivered after the restart",
        interval=0.1, describe=lambda: str(e2e.state_counts()))
    assert second.alive

    # None lost, none doubled in the store.
    rows = e2e.query("SELECT id, state, resends, attempts FROM messages ORDER BY id")
    assert [r[0] for r in rows] == sorted(queued.msg_ids)
    assert {r[1] for r in rows} == {"delivered"}

    # Re-sends: exactly the messages that were `sending` when the worker died.
    resent = {r[0] for r in rows if r[2] >= 1}
    assert resent == sending, (
        f"{len(resent - sending)} re-sent but not sending at the kill, "
        f"{len(sending - resent)} sending at the kill but not counted as re-sends")
    assert all(r[2] == 1 for r in rows if r[0] in sending)
    flagged = {r[0] for r in e2e.query(
        "SELECT DISTINCT message_id FROM message_events WHERE state = 'sending'"
        " AND detail LIKE '%possible re-send%'")}
    assert flagged == sending
    reclaimed_by = {r[0] for r in e2e.query(
        "SELECT DISTINCT detail FROM message_events WHERE detail LIKE '%possible re-send%'")}
    assert all(d.startswith("worker crash-2,") for d in reclaimed_by), reclaimed_by
    # Messages that never left the queue, or were finished before the kill, were sent once.
    assert all(r[2] == 0 for r in rows if r[0] in waiting | done)
    assert all(r[3] == 1 for r in rows if r[0] in waiting | done)

    # Credits: everything delivered, nothing refunded, the ledger explains the balance.
    expected = queued.credits - TOTAL * queued.price
    assert project_balance(e2e, queued.project_name) == expected
    ledger, balance = e2e.query(
        "SELECT (SELECT sum(delta_micro) FROM credit_ledger WHERE project_id = ?),"
        " (SELECT balance_micro FROM projects WHERE id = ?)",
        queued.project_id, queued.project_id)[0]
    assert ledger == balance
    assert e2e.query("SELECT count(*) FROM credit_ledger WHERE reason LIKE 'refund%'")[0][0] == 0

    # The dead worker's channel lease was taken over.
    assert e2e.query("SELECT worker_id FROM channel_leases") == [("crash-2",)]
    assert second.stop() == 0, e2e.logs()
