"""Moving from SQLite to PostgreSQL: `pushgate migrate-data` keeps queued messages, balances,
tokens and pending reports, and the copy keeps working as a store."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pushgate.core.channels import ChannelSpec, default_rules
from pushgate.core.models import SendResult
from pushgate.core.policy import RetryPolicy
from pushgate.core.push import Limits, decode_push, plan_push
from pushgate.core.tokens import hash_token
from pushgate.store.factory import store_for_url
from pushgate.store.sqlite import SQLiteStore

pytestmark = pytest.mark.postgres_only


async def test_migrate_data_moves_a_live_queue(
    db_url: str, migrated_template: Path, tmp_path: Path
) -> None:
    # The source: a SQLite gateway with a project, a channel and a half-drained push.
    source_path = tmp_path / "source.db"
    source_path.write_bytes(migrated_template.read_bytes())
    source_url = f"sqlite:///{source_path}"
    source = SQLiteStore(source_url)
    await source.open()
    project = await source.create_project("shop", 10_000_000, "http://127.0.0.1:9/h", "sec")
    await source.create_token(project.id, hash_token("tok-1"), "t", [])
    channel = await source.add_channel(ChannelSpec(
        id=0, project_id=project.id, kind="sandbox", application=1, price_micro=5_000,
        **default_rules(1)))
    data = [{"number": f"91987654{i:04d}", "message": f"m {i}"} for i in range(30)]
    plan = plan_push(decode_push(json.dumps({"data": data})), channel, Limits())
    pushed = await source.accept_push(project.id, channel, plan, time.time(), None)
    claimed = await source.claim_messages(channel.id, "w", 10, time.time(), 60)
    await source.record_outcomes("w", [SendResult.sent(m.id, f"p{m.id}")
                                       for m in claimed], time.time(), RetryPolicy())
    await source.close()

    # db_url is a freshly migrated, empty PostgreSQL database.
    result = subprocess.run(
        [sys.executable, "-c", "from pushgate.cli import app; app()", "migrate-data",
         "--from", source_url, "--to", db_url, "--json"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    copied = json.loads(result.stdout)["copied"]
    assert copied["messages"] == 30
    assert copied["outbox"] == 10

    target = store_for_url(db_url)
    await target.open()
    try:
        info = await target.authenticate(hash_token("tok-1"))
        assert info is not None and info.project_id == project.id
        moved = await target.get_project(project.id)
        assert moved is not None and moved.balance_micro == 10_000_000 - 30 * 5_000
        push = await target.get_push(project.id, pushed.push_id)
        assert push is not None and push.counts == {"submitted": 10, "queued": 20}
        # The queue resumes on the new database: the 20 queued messages are claimable, in order.
        rest = await target.claim_messages(channel.id, "w2", 100, time.time(), 60)
        assert [m.id for m in rest] == pushed.message_ids[10:]
        # New rows get ids after the copied ones (sequences moved past them).
        again = await target.accept_push(project.id, channel, plan, time.time(), None)
        assert again.push_id > pushed.push_id
        assert min(again.message_ids) > max(pushed.message_ids)
    finally:
        await target.close()

    # A second copy into the now non-empty database is refused, nothing written.
    result = subprocess.run(
        [sys.executable, "-c", "from pushgate.cli import app; app()", "migrate-data",
         "--from", source_url, "--to", db_url],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "not empty" in result.stderr
