"""The fast path of ``POST /api/v2/push``: the commonest push, handled before FastAPI and
Starlette see the request.

``PushApp`` is the FastAPI application with one thing added in front: a POST to a push path
(``/api/v2/push`` and its Picky aliases) that the fast path handles is read straight from the
ASGI messages and answered with two ASGI messages; nothing else changes. Even with
``FastRoutes`` (``api/routing.py``) such a request went through FastAPI's and Starlette's
outer layers (exception telemetry, body limit, server errors), a ``Request`` and its header
and body stream objects, and a ``Response`` object sending itself: a large share of the
event loop's time per single-recipient push (``bench/single.py``, docs/benchmarks.md).

The rule: the fast path handles a request only when it carries nothing the route reads
besides the JSON body and the ``Authorization`` header. It falls back to the normal route
(before reading the body, so the route gets the request untouched) for

- any query string (Picky's ``?data=`` and ``?token=``);
- any content type other than ``application/json`` (forms, multipart, none at all);
- any header in ``FALLBACK_HEADERS`` (e.g. ``Idempotency-Key``): a feature that reads a new
  header adds it there, or reads it here too.

Everything after the body is decoded is shared: both paths call ``push.answer_push``, so a
new body field (``send_at`` …) handled there is handled by both, and validation, the store
transaction (committed before the answer) and the answer's bytes are the same code.
``serve`` answers most such pushes even earlier, at the HTTP protocol
(``api/pushproto.py``, through ``push_response`` here); this path serves the rest (a push
pipelined behind another request, other ASGI servers, the tests' in-process client).
Errors are answered by ``error_response`` as ``FastRoutes`` answers them; any other exception
is logged and answered as Starlette's last resort would (``_internal_error``: Picky's
envelope with ``INTERNAL_ERROR``, HTTP 500).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI
from starlette.responses import Response

from pushgate.api.answers import error_answer, error_response
from pushgate.api.auth import token_given
from pushgate.api.push import answer_push
from pushgate.api.state import Gateway
from pushgate.core.errors import ApiError, Code
from pushgate.core.push import decode_push

log = logging.getLogger("pushgate.api")

#: Request headers some part of the push route reads besides the body, Content-Type,
#: Content-Length and Authorization: a request carrying one takes the normal route.
FALLBACK_HEADERS = frozenset({b"idempotency-key"})


class _Fallback(Exception):
    """The request is the normal route's."""


class PushApp(FastAPI):
    """pushgate's FastAPI application, with the push fast path in front (module docstring)."""

    push_paths: frozenset[str] = frozenset()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (scope["type"] == "http" and scope["method"] == "POST"
                and scope["path"] in self.push_paths and not scope["query_string"]):
            authorization = _plain_json(scope["headers"])
            if authorization is not None:
                await self._fast_push(scope, receive, send, authorization)
                return
        await super().__call__(scope, receive, send)

    async def _fast_push(self, scope: Any, receive: Any, send: Any,
                         authorization: str) -> None:
        started = time.perf_counter()
        gateway: Gateway = self.state.gateway
        try:
            raw = await _read_body(scope, receive, gateway.settings.max_body_bytes)
        except ApiError as exc:
            response = error_answer(exc, gateway.settings.always_http_200)
        else:
            if raw is None:   # the client went away
                return
            client = scope.get("client")
            response = await push_response(gateway, raw, client[0] if client else None,
                                           authorization, started)
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


async def push_response(gateway: Gateway, raw: bytes, client_ip: str | None,
                        authorization: str, started: float) -> Response:
    """The answer to a push whose JSON body is ``raw``: the fast path's here and the
    protocol's (``api/pushproto.py``), both ending in the route's ``answer_push``."""
    try:
        if not raw.strip():
            raise ApiError(Code.MALFORMED_BODY, "empty body")
        body = decode_push(raw)
        return await answer_push(gateway, body, client_ip,
                                 token_given(body.token, authorization), started)
    except Exception as exc:
        mapped = error_response(exc, gateway.settings.always_http_200, gateway.store)
        if mapped is None:
            log.exception("Exception in the push fast path")
            mapped = error_answer(ApiError(Code.INTERNAL_ERROR),
                                  gateway.settings.always_http_200)
        return mapped


def _plain_json(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The ``Authorization`` header ("" if none) of a request the fast path takes: JSON
    content, no header of ``FALLBACK_HEADERS``; None for any other request."""
    json = False
    authorization = ""
    for name, value in headers:
        if name == b"content-type":
            json = value.split(b";", 1)[0].strip().lower() == b"application/json"
        elif name == b"authorization":
            authorization = value.decode("latin-1")
        elif name in FALLBACK_HEADERS:
            return None
    return authorization if json else None


async def _read_body(scope: Any, receive: Any, limit: int) -> bytes | None:
    """The body, as ``body.read_body`` reads it (refused past ``limit``, by the declared
    length first); None if the client disconnected."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            digits = value.decode("latin-1").lstrip("0")
            if digits.isascii() and digits.isdigit() and (
                    len(digits) > len(str(limit)) or int(digits) > limit):
                raise ApiError(Code.BODY_TOO_LARGE,
                               f"{value.decode('latin-1')[:30]} bytes, at most {limit}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(Code.BODY_TOO_LARGE, f"more than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
