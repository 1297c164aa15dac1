"""Webhook POSTs are counted by result: a receiver's 2xx is ``delivered``, anything else
(an error status, a refused target) ``failed``."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tests.fakes.server import serve_app
from tests.store.contract.test_store_outbox import queue, send

from pushgate.webhooks.deliverer import WebhookDeliverer


def deliveries(result: str) -> float:
    return REGISTRY.get_sample_value("pushgate_webhook_deliveries_total",
                                     {"result": result}) or 0.0


async def test_webhook_posts_are_counted_by_result(store: Any, make: Any) -> None:
    answers = [500, 200]

    async def hook(request: Request) -> Response:
        return Response("", status_code=answers.pop(0))

    with serve_app(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as url:
        project, _, _ = await make.project(webhook_url=f"{url}/hook")
        channel = await make.channel(project.id)
        now = time.time()
        await queue(store, channel, 2, now)
        await send(store, channel, now)   # two reports, one POST
        deliverer = WebhookDeliverer(store, "w", timeout=5, schedule=[0.0], allow_private=True)
        before = {r: deliveries(r) for r in ("delivered", "failed")}
        try:
            assert await deliverer.deliver_once() == 2   # answered 500: retried
            assert await deliverer.deliver_once() == 2   # answered 200
        finally:
            await deliverer.client.aclose()
    assert {r: deliveries(r) - before[r] for r in before} == {"delivered": 1, "failed": 1}
