"""The dashboard's pages with a 10,000-message push: server-side time of ``GET
/ui/pushes/{id}`` (the push's page: counts and its first page of messages), its live part, a
message search and the credits page, over the in-process app on a fresh SQLite file (httpx's
ASGI transport: no socket, the page's own work). Prints the median of ``--repeat`` and the
spread, in milliseconds.

    python bench/ui_pages.py [--messages 10000] [--repeat 21]
    python bench/ui_pages.py --accept-ab    # 10,000-message accepts, schema 0016 vs head

``--accept-ab`` times ``POST /api/v2/push`` with 10,000 recipients on schema 0016 (before
revision 0017's indexes) and on head, alternating (median of 8 after a warm-up each). Each
push goes into a fresh database, so it cannot show what an index costs as the table grows:
``bench/accept.py`` can (docs/benchmarks.md, "Found by measuring, fixed").
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from pathlib import Path

import httpx

from pushgate.api.gateway import create_app
from pushgate.api.state import Gateway
from pushgate.config import Settings
from pushgate.core.channels import ChannelSpec, default_rules
from pushgate.core.pricing import parse_credits
from pushgate.core.tokens import hash_token, new_token
from pushgate.store.migrate import upgrade

sys.path.insert(0, str(Path(__file__).parent))
from common import median_spread  # noqa: E402


async def run(messages: int, repeat: int) -> dict[str, tuple[float, float, float]]:
    folder = tempfile.mkdtemp(prefix="pushgate-bench-ui-")
    url = f"sqlite:///{folder}/bench.db"
    upgrade(url)
    settings = Settings(database_url=url, secret_key="bench-ui-key", max_recipients=messages)
    app = create_app(settings, run_workers=False)
    async with app.router.lifespan_context(app):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                   base_url="http://bench")
        gateway: Gateway = app.state.gateway
        project = await gateway.store.create_project("bench", parse_credits("1000000"),
                                                     None, None)
        token = new_token()
        await gateway.store.create_token(project.id, hash_token(token), "bench", [])
        await gateway.store.add_channel(ChannelSpec(
            id=0, project_id=project.id, kind="sandbox", application=1,
            price_micro=parse_credits("0.001"), **default_rules(1)))
        data = [{"number": f"9198765{i:05d}", "reference_number": f"r{i}"}
                for i in range(messages)]
        answer = await client.post("/api/v2/push", json={
            "token": token, "application": "1", "globalmessage": "hello", "data": data})
        push_id = answer.json()["push_id"]
        assert answer.json()["accepted"] == messages, answer.json()["message"]
        login = await client.get("/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)
        assert csrf
        await client.post("/ui/login", data={"csrf": csrf.group(1), "token": token})
        pages = {"push page": f"/ui/pushes/{push_id}",
                 "push live part": f"/ui/pushes/{push_id}/live",
                 "messages search (number)": f"/ui/messages?q=9198765{messages // 2:05d}",
                 "credits": "/ui/credits"}
        found = await client.get(pages["messages search (number)"])
        assert f"/ui/pushes/{push_id}" in found.text
        figures = {}
        for name, path in pages.items():
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                page = await client.get(path)
                times.append((time.perf_counter() - started) * 1000)
                assert page.status_code == 200, (path, page.status_code)
            figures[name] = median_spread(times)
        await client.aclose()
    return figures


async def accept_ms(revision: str, pushes: int = 9) -> float:
    """Median ms of a 10,000-recipient ``POST /api/v2/push`` on a schema at ``revision``."""
    folder = tempfile.mkdtemp(prefix="pushgate-bench-ab-")
    url = f"sqlite:///{folder}/bench.db"
    upgrade(url, revision)
    app = create_app(Settings(database_url=url, max_recipients=10_000), run_workers=False)
    async with app.router.lifespan_context(app):
        gateway: Gateway = app.state.gateway
        project = await gateway.store.create_project("ab", parse_credits("1000000"), None, None)
        token = new_token()
        await gateway.store.create_token(project.id, hash_token(token), "ab", [])
        await gateway.store.add_channel(ChannelSpec(
            id=0, project_id=project.id, kind="sandbox", application=1,
            price_micro=parse_credits("0.001"), **default_rules(1)))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://bench") as client:
            times = []
            for k in range(pushes):
                data = [{"number": f"919876{k}{i:05d}"} for i in range(10_000)]
                started = time.perf_counter()
                answer = await client.post("/api/v2/push", json={
                    "token": token, "application": "1", "globalmessage": "hi", "data": data})
                times.append((time.perf_counter() - started) * 1000)
                assert answer.json()["status"] == 100
    return median_spread(times[1:])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--accept-ab", action="store_true")
    args = parser.parse_args()
    if args.accept_ab:
        for revision in ("0016", "head", "0016", "head"):
            print(f"schema {revision:4}: {asyncio.run(accept_ms(revision)):.1f} ms a "
                  "10,000-recipient push (median of 8)")
        return
    figures = asyncio.run(run(args.messages, args.repeat))
    print(f"{args.messages:,}-message push, median of {args.repeat} (min-max), ms:")
    for name, (median, low, high) in figures.items():
        print(f"  {name:28} {median:7.1f}  [{low:.1f}-{high:.1f}]")


if __name__ == "__main__":
    main()
