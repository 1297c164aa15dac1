"""Migrations that change what existing rows mean: upgrading keeps a live database's history
and caps right, and every step down and up again works. Runs on every backend."""

from __future__ import annotations

import time
from typing import Any

from alembic import command
from alembic.script import ScriptDirectory

from pushgate.store.factory import store_for_url
from pushgate.store.migrate import alembic_config, current_revision, upgrade


def test_down_to_before_the_routine_steps_and_up_again(db_url: str) -> None:
    config = alembic_config(db_url)
    command.downgrade(config, "0004")
    assert current_revision(db_url) == "0004"
    upgrade(db_url)
    assert current_revision(db_url) == ScriptDirectory.from_config(config).get_current_head()


async def test_a_send_recorded_before_0006_still_counts_for_caps_and_shows_once(
        db_url: str, query: Any) -> None:
    command.downgrade(alembic_config(db_url), "0005")
    now = time.time()
    sent_at = now - 600
    query("INSERT INTO projects (id, name, balance_micro, created_at) VALUES (1, 'p', 0, ?)",
          now)
    # A message submitted ten minutes ago and delivered since, as an earlier release recorded
    # it: its steps as event rows, its columns empty.
    query("INSERT INTO messages (id, push_id, project_id, channel_id, number, body, priority,"
          " state, parts, segments, credit_micro, next_attempt_at, created_at, updated_at,"
          " provider_id) VALUES (7, 1, 1, 3, '919876543210', 'hi', 0, 'delivered', 1, 1, 5000,"
          " ?, ?, ?, 'wamid.7')", now - 700, now - 700, now - 60)
    for state, at, detail in [("sending", now - 650, "worker w, attempt 1"),
                              ("submitted", sent_at, "provider id wamid.7"),
                              ("delivered", now - 60, None)]:
        query("INSERT INTO message_events (message_id, state, at, detail) VALUES (?, ?, ?, ?)",
              7, state, at, detail)
    upgrade(db_url)
    assert query("SELECT submitted_at FROM messages WHERE id = 7") == [(sent_at,)]

    store = store_for_url(db_url)
    await store.open()
    try:
        assert await store.sent_since(3, now - 3600) == 1
        assert await store.sent_since(3, now - 60) == 0
        message = await store.get_message(1, 7)
        assert message is not None
        assert [e["state"] for e in message.events] == [
            "queued", "sending", "submitted", "delivered"]
    finally:
        await store.close()


async def test_messages_queued_before_0007_still_expire(db_url: str, query: Any) -> None:
    command.downgrade(alembic_config(db_url), "0006")
    now = time.time()
    query("INSERT INTO projects (id, name, balance_micro, created_at) VALUES (1, 'p', 0, ?)",
          now)
    # Push 1: one message queued, one delivered, both past their validity. Push 2: sent in
    # full, so it has nothing left to expire.
    query("INSERT INTO pushes (id, project_id, channel_id, priority, entries, accepted,"
          " credit_micro, created_at) VALUES (1, 1, 3, 0, 2, 2, 10000, ?),"
          " (2, 1, 3, 0, 1, 1, 5000, ?)", now - 700, now - 700)
    for message_id, push_id, state in [(7, 1, "queued"), (8, 1, "delivered"),
                                       (9, 2, "submitted")]:
        query("INSERT INTO messages (id, push_id, project_id, channel_id, number, body,"
              " priority, state, parts, segments, credit_micro, next_attempt_at, created_at,"
              " updated_at, expires_at) VALUES (?, ?, 1, 3, '919876543210', 'hi', 0, ?, 1, 1,"
              " 5000, ?, ?, ?, ?)", message_id, push_id, state, now - 700, now - 700,
              now - 700, now - 100)
    upgrade(db_url)
    assert query("SELECT id, expiry_due FROM pushes ORDER BY id") == [(1, now - 100),
                                                                      (2, None)]
    store = store_for_url(db_url)
    await store.open()
    try:
        assert await store.expire_due(now, 10) == 1
    finally:
        await store.close()
    assert query("SELECT id, state FROM messages ORDER BY id") == [
        (7, "expired"), (8, "delivered"), (9, "submitted")]
    assert query("SELECT balance_micro FROM projects") == [(5000,)]


async def test_inline_media_queued_before_0009_is_sent_from_the_column(
        db_url: str, query: Any) -> None:
    command.downgrade(alembic_config(db_url), "0008")
    now = time.time()
    query("INSERT INTO projects (id, name, balance_micro, created_at) VALUES (1, 'p', 0, ?)",
          now)
    query("INSERT INTO channels (id, project_id, kind, application, price_micro, price_unit,"
          " max_chars, max_segments, media_allowed, rate_per_second, delay_ms, jitter_ms,"
          " paused, name, config, created_at) VALUES (3, 1, 'sandbox', 1, 5000, 'message',"
          " 1000, 1, ?, 10, 0, 0, ?, 'c', '{}', ?)", True, False, now)
    # Message 7 sends the push's inline media (the marker an earlier release wrote), 8 a URL.
    for message_id, media in [(7, "media:5"), (8, "https://example.invalid/a.png")]:
        query("INSERT INTO messages (id, push_id, project_id, channel_id, number, body, media,"
              " media_kind, priority, state, parts, segments, credit_micro, next_attempt_at,"
              " created_at, updated_at) VALUES (?, 1, 1, 3, '919876543210', 'hi', ?, 'image',"
              " 0, 'queued', 1, 0, 5000, ?, ?, ?)", message_id, media, now - 10, now - 10,
              now - 10)
    upgrade(db_url)
    assert query("SELECT id, media, media_id FROM messages ORDER BY id") == [
        (7, None, 5), (8, "https://example.invalid/a.png", None)]
    store = store_for_url(db_url)
    await store.open()
    try:
        claimed = await store.claim_messages(3, "w", 10, now, 30.0)
    finally:
        await store.close()
    assert [(m.id, m.media_url, m.media_id) for m in claimed] == [
        (7, None, 5), (8, "https://example.invalid/a.png", None)]
