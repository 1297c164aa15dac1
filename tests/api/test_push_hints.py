"""An API-only process with ``PUSHGATE_WAKE_SOCKET`` (``serve --workers``' other children)
hints the dispatcher's process once a push is accepted (``dispatch/hints.py``)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from pushgate.dispatch.hints import HintListener


async def test_an_accepted_push_hints_the_dispatchers_process(
        app_client: Any, make: Any, tmp_path: Path) -> None:
    heard: list[int] = []
    listener = HintListener(str(tmp_path / "wake.sock"), heard.append)
    assert listener.open()
    try:
        project, token, _ = await make.project()
        channel = await make.channel(project.id)
        client, gateway = await app_client(wake_socket=listener.path)
        assert gateway.dispatcher is None
        answer = await client.post("/api/v2/push", json={
            "token": token, "application": "1",
            "data": [{"number": "919876543210", "message": "hello"}]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == 100, answer.text
        deadline = time.monotonic() + 10
        while not heard and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert heard == [channel.id]
    finally:
        listener.close()


async def test_a_refused_push_hints_nothing(app_client: Any, make: Any, tmp_path: Path) -> None:
    project, token, _ = await make.project()
    await make.channel(project.id)
    client, gateway = await app_client(wake_socket=str(tmp_path / "wake.sock"))
    answer = await client.post("/api/v2/push", json={
        "token": token, "application": "1", "data": [{"number": "12", "message": "hello"}]})
    assert answer.json()["status"] != 100, answer.text
    await asyncio.sleep(0)
    assert gateway.hints is not None and (gateway.hints.sent, gateway.hints.dropped) == (0, 0)


@pytest.mark.parametrize("api_only", [False, True])
def test_serve_workers_gives_its_children_one_wake_socket(
        monkeypatch: pytest.MonkeyPatch, api_only: bool) -> None:
    from pushgate.cli import processes

    envs: list[dict[str, str]] = []

    class Child:
        pid = 4242
        returncode = 0

        def __init__(self, _args: list[str], **kwargs: Any) -> None:
            envs.append(kwargs["env"])

        def poll(self) -> int:
            return 0

    monkeypatch.delenv("PUSHGATE_WAKE_SOCKET", raising=False)
    monkeypatch.setattr(processes.subprocess, "Popen", Child)
    assert processes.serve_processes("127.0.0.1", 1, 2, api_only=api_only, share=True) == 0
    sockets = {env.get("PUSHGATE_WAKE_SOCKET") for env in envs}
    assert len(envs) == 2 and len(sockets) == 1
    path = sockets.pop()
    if api_only:   # no dispatcher among them: nothing to hint
        assert path is None
    else:
        assert path is not None and path.endswith("dispatcher.sock")
        assert not Path(path).parent.exists()   # the private folder goes with the parent
