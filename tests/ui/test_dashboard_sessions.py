"""The dashboard's sessions and forms over an in-process app (every backend): CSRF on every
POST, the wrong-token throttle, cookie attributes, the operator's sign-in and switcher, one
project never seeing another's pushes, the session key kept across restarts, and nothing of
the dashboard on API requests."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import httpx

from pushgate.config import Settings
from pushgate.ui.session import _session_key, key_file, session_key

NUMBERS = ["919876543210", "919812345678"]
# PostgreSQL has no file to keep a generated key beside: a key of the test's own.
KEY = "ui-test-secret-key"


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, token: str = "", password: str = "") -> httpx.Response:
    form = await client.get("/ui/login")
    return await client.post("/ui/login", data={"csrf": csrf_of(form.text), "token": token,
                                                "password": password})


async def test_sign_in_sets_a_strict_http_only_cookie_and_api_gets_none(app_client: Any,
                                                                        make: Any) -> None:
    project, token, _ = await make.project(name="acme")
    await make.channel(project.id)
    client, _ = await app_client(secret_key=KEY)
    answer = await sign_in(client, token)
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
    overview = await client.get("/ui/")
    assert overview.status_code == 200 and "acme" in overview.text
    assert "default-src 'self'" in overview.headers["content-security-policy"]
    # The API knows nothing of the dashboard's session.
    pushed = await client.post("/api/v2/push", json={
        "token": token, "application": "1", "globalmessage": "hi",
        "data": [{"number": NUMBERS[0]}]})
    assert pushed.json()["status"] == 100 and "set-cookie" not in pushed.headers
    assert "set-cookie" not in (await client.get("/healthz")).headers
    assert (await client.get("/", follow_redirects=False)).headers["location"] == "/ui/"


async def test_every_post_needs_the_session_csrf_token(app_client: Any, make: Any) -> None:
    project, token, _ = await make.project()
    await make.channel(project.id)
    client, gateway = await app_client(secret_key=KEY)
    refused = await client.post("/ui/login", data={"token": token})
    assert refused.status_code == 403 and "expired" in refused.text
    assert (await client.get("/ui/", follow_redirects=False)).status_code == 303
    await sign_in(client, token)
    form = {"application": "1", "numbers": "\n".join(NUMBERS), "message": "hi",
            "priority": "0"}
    for csrf in (None, "forged"):
        sent = await client.post("/ui/send", data={**form, **({"csrf": csrf} if csrf else {})})
        assert sent.status_code == 403
    assert await gateway.store.list_pushes(project.id, None, 10) == []
    page = await client.get("/ui/send")
    sent = await client.post("/ui/send", data={**form, "csrf": csrf_of(page.text)})
    pushed = await gateway.store.list_pushes(project.id, None, 10)
    assert [p.accepted for p in pushed] == [2]
    # Post/redirect/get: to the push's page, which says what was accepted once.
    assert sent.status_code == 303 and sent.headers["location"] == f"/ui/pushes/{pushed[0].id}"
    shown = await client.get(sent.headers["location"])
    assert "2 messages" in shown.text and 'id="send-result"' in shown.text
    assert 'id="send-result"' not in (await client.get(sent.headers["location"])).text
    # Signing out is a POST with the token too.
    assert (await client.post("/ui/logout", data={})).status_code == 403
    out = await client.post("/ui/logout", data={"csrf": csrf_of(page.text)})
    assert out.status_code == 303
    assert (await client.get("/ui/send", follow_redirects=False)).status_code == 303


async def test_refusals_only_show_each_number_and_reason(app_client: Any, make: Any) -> None:
    project, token, _ = await make.project()
    await make.channel(project.id)
    client, gateway = await app_client(secret_key=KEY)
    await sign_in(client, token)
    page = await client.get("/ui/send")
    sent = await client.post("/ui/send", data={
        "csrf": csrf_of(page.text), "application": "1", "numbers": "12345\n99",
        "message": "hi", "priority": "0"})
    assert sent.status_code == 422
    assert "12345" in sent.text and "99" in sent.text and "wrong length" in sent.text
    assert await gateway.store.list_pushes(project.id, None, 10) == []


async def test_wrong_tokens_are_throttled_like_the_api(app_client: Any, make: Any) -> None:
    project, token, _ = await make.project(name="secretive")
    client, _ = await app_client(secret_key=KEY, auth_failure_limit=2)
    for _ in range(2):
        wrong = await sign_in(client, "guess")
        assert wrong.status_code == 401 and "not valid" in wrong.text
        assert "secretive" not in wrong.text
    blocked = await sign_in(client, token)     # even the right one, from this address
    assert blocked.status_code == 401 and "Too many" in blocked.text
    api = await client.post("/api/v2/push", json={"token": token, "application": "1",
                                                  "data": [{"number": NUMBERS[0]}]})
    assert api.json()["status"] == 429     # one throttle for both


async def test_a_token_sees_only_its_projects_pushes(app_client: Any, make: Any) -> None:
    mine, token, _ = await make.project()
    theirs, their_token, _ = await make.project()
    await make.channel(theirs.id)
    client, _ = await app_client(secret_key=KEY)
    pushed = (await client.post("/api/v2/push", json={
        "token": their_token, "application": "1", "globalmessage": "x",
        "data": [{"number": NUMBERS[0]}]})).json()
    await sign_in(client, token)
    push_id = pushed["push_id"]
    assert (await client.get(f"/ui/pushes/{push_id}")).status_code == 404
    assert (await client.get(f"/ui/pushes/{push_id}/report.csv")).status_code == 404
    assert "No pushes yet" in (await client.get("/ui/pushes")).text
    page = await client.get("/ui/")
    cancel = await client.post(f"/ui/pushes/{push_id}/cancel", data={"csrf": csrf_of(page.text)})
    assert cancel.status_code == 303
    report = await client.post("/api/v2/push-cancel", json={"token": their_token,
                                                           "push_id": push_id})
    assert report.json()["cancelled"] == 1      # still there to cancel: untouched


async def test_operator_signs_in_with_the_password_and_switches(app_client: Any,
                                                                make: Any) -> None:
    first, _, _ = await make.project(name="first-co")
    second, _, _ = await make.project(name="second-co")
    client, _ = await app_client(secret_key=KEY, admin_password="s3cret-operator")
    assert (await sign_in(client, password="wrong")).status_code == 401
    answer = await sign_in(client, password="s3cret-operator")
    assert answer.status_code == 303
    overview = await client.get("/ui/")
    assert "Choose a project" in overview.text
    assert "first-co" in overview.text and "second-co" in overview.text
    switched = await client.post("/ui/project", data={"csrf": csrf_of(overview.text),
                                                      "project": str(second.id)})
    assert switched.status_code == 303
    page = await client.get("/ui/")
    assert 'id="balance"' in page.text and "<h2 id=\"balance-h\">second-co</h2>" in page.text
    del first


async def test_no_operator_sign_in_without_a_password(app_client: Any) -> None:
    client, _ = await app_client(secret_key=KEY)
    form = await client.get("/ui/login")
    assert 'name="password"' not in form.text
    assert (await sign_in(client, password="")).status_code == 401


def test_session_key_is_kept_beside_the_database(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/db/pushgate.db")
    key = session_key(settings)
    assert key_file(settings) == tmp_path / "db" / "pushgate-session-key"
    assert stat.S_IMODE(os.stat(key_file(settings)).st_mode) == 0o600
    _session_key.cache_clear()      # as a restarted process
    assert session_key(settings) == key and len(key) == 64
    chosen = Settings(database_url=settings.database_url, secret_key="operator-chosen")
    derived = session_key(chosen)
    assert derived not in (key, "operator-chosen")
    assert session_key(Settings(secret_key="operator-chosen")) == derived    # every node alike
