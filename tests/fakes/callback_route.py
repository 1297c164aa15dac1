"""A stand-in for pushgate's callback route for connector tests: hands every POST to one
channel's ``handle_callback`` and keeps what it returned, over real HTTP like the gateway."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pushgate.channels.base import CallbackRejected, CallbackRequest, Channel
from pushgate.core.models import InboundMessage, StatusUpdate


class CallbackRoute:
    def __init__(self) -> None:
        self.channel: Channel | None = None
        self.updates: list[StatusUpdate] = []
        self.inbound: list[InboundMessage] = []
        self.app = Starlette(routes=[Route("/channels/{cid}/callback", self._callback,
                                           methods=["POST"])])

    async def _callback(self, request: Request) -> Response:
        assert self.channel is not None
        callback = CallbackRequest(request.method, str(request.url), dict(request.headers),
                                   dict(request.query_params), await request.body())
        try:
            result = await self.channel.handle_callback(callback)
        except CallbackRejected as exc:
            return Response(exc.reason, status_code=exc.status_code)
        self.updates += result.updates
        self.inbound += result.inbound
        return Response(result.body, status_code=result.status_code,
                        media_type=result.content_type)
