"""`pushgate optout add|remove|list` and `pushgate project keywords` end to end (the command in
a subprocess), on every store (issue 19.4)."""

from __future__ import annotations

import json
from typing import Any

from pushgate.core.optouts import KeywordSettings
from pushgate.store.base import Store
from tests.test_cli import pushgate


async def test_optout_add_list_remove(store: Store, make: Any, db_url: str) -> None:
    project, _, _ = await make.project(name="clinic")
    added = pushgate("optout", "add", "--project", "clinic", "+91 98765 43210",
                     "919876543211", "0091 98765 43210", "--json", url=db_url)
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout) == {"project_id": project.id, "added": 2,
                                        "numbers": "919876543210, 919876543211"}
    listed = pushgate("optout", "list", "-p", str(project.id), "--json", url=db_url)
    assert [(r["number"], r["source"]) for r in json.loads(listed.stdout)] == [
        ("919876543210", "cli"), ("919876543211", "cli")]
    table = pushgate("optout", "list", "-p", "clinic", url=db_url)
    assert "919876543211" in table.stdout
    bad = pushgate("optout", "add", "-p", "clinic", "12", url=db_url)
    assert bad.returncode == 1 and "not a valid number" in bad.stderr
    removed = pushgate("optout", "remove", "-p", "clinic", "+919876543210", "--json",
                       url=db_url)
    assert json.loads(removed.stdout)["removed"] == 1
    assert [o.number for o in await store.list_optouts(project.id, "", 10)] == ["919876543211"]
    unknown = pushgate("optout", "list", "-p", "nobody", url=db_url)
    assert unknown.returncode == 1


async def test_project_keywords_show_set_and_reset(store: Store, make: Any,
                                                   db_url: str) -> None:
    project, _, _ = await make.project(name="shop")
    shown = json.loads(pushgate("project", "keywords", "shop", "--json", url=db_url).stdout)
    assert shown["stop"].startswith("STOP, UNSUBSCRIBE") and shown["stop_reply"] == ""
    done = pushgate("project", "keywords", "shop", "--stop", "stop, arrêt", "--stop-reply",
                    "Bye!", "--json", url=db_url)
    assert done.returncode == 0, done.stderr
    assert await store.keyword_settings(project.id) == KeywordSettings(
        stop=("STOP", "ARRÊT"), stop_reply="Bye!")
    clash = pushgate("project", "keywords", "shop", "--start", "stop", url=db_url)
    assert clash.returncode == 1
    pushgate("project", "keywords", "shop", "--defaults", url=db_url)
    assert await store.keyword_settings(project.id) == KeywordSettings()
