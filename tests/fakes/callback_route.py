"""pushgate's callback route for connector tests, without a store: the real route's hand-over
to one channel's ``handle_callback`` and its answers (``pushgate.api.callbacks``), over real
HTTP like the gateway, keeping what the connector returned instead of recording it."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pushgate.api.callbacks import connector_answer, hand_to_connector, rejection
from pushgate.channels.base import CallbackRejected, Channel
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
        public_url = f"{request.url.scheme}://{request.url.netloc}"
        try:
            result = await hand_to_connector(self.channel, request, public_url,
                                             await request.body())
        except CallbackRejected as exc:
            return rejection(exc)
        self.updates += result.updates
        self.inbound += result.inbound
        return connector_answer(result)
