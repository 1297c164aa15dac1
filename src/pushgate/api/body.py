"""Reading a request body with a size limit: refused as soon as it is known to be too large
(the declared ``Content-Length``, else while streaming), never read into memory past it; and
the JSON of a Picky request, which may come as the body or in a form's ``data`` field."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request

from pushgate.core.errors import ApiError, Code


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes; more is ``BODY_TOO_LARGE``."""
    declared = request.headers.get("content-length") or ""
    # isascii: str.isdigit() also accepts digits such as "²" that int() refuses; a length
    # of more digits than the limit has is too large without int() (which refuses past
    # 4,300 digits).
    digits = declared.lstrip("0")
    if digits.isascii() and digits.isdigit() and (
            len(digits) > len(str(limit)) or int(digits) > limit):
        raise ApiError(Code.BODY_TOO_LARGE, f"{declared[:30]} bytes, at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(Code.BODY_TOO_LARGE, f"more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def json_payload(request: Request, limit: int) -> bytes | str:
    """The JSON of a request: the body, or Picky's "normal POST" ``data`` field (form or
    query string) for tools that cannot send JSON."""
    body = await read_body(request, limit)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        if body.lstrip().startswith(b"{"):
            return body   # JSON sent with curl's default form content type
        values = parse_qs(body.decode("utf-8", "replace")).get("data")
        if values:
            return values[0]
    elif content_type == "multipart/form-data":
        value = (await multipart_fields(request, body)).get("data") if body.strip() else None
        if isinstance(value, str):
            return value
    else:
        if not body.strip() and "data" in request.query_params:
            return request.query_params["data"]
        if not body.strip():
            raise ApiError(Code.MALFORMED_BODY, "empty body")
        return body
    # Picky's own example puts the JSON in the URL (`push?data=JSON`); form tools may add
    # their content type to that with no `data` field in the form.
    if "data" in request.query_params:
        return request.query_params["data"]
    raise ApiError(Code.MALFORMED_BODY, "form posts carry the JSON in a `data` field")


async def multipart_fields(request: Request, body: bytes) -> dict[str, Any]:
    """Parse a multipart form from an already-read body; a form that cannot be parsed (no
    boundary, more than 1,000 fields or files, a broken part) is ``MALFORMED_BODY``."""
    fields, _files = await multipart_form(request, body)
    return fields


async def multipart_form(request: Request,
                         body: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A multipart form's text fields and its files' contents, by field name, from an
    already-read body (``multipart_fields``' refusals)."""
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException
    from starlette.formparsers import MultiPartException

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    replay = Request(request.scope, receive)
    try:
        # The body is already within PUSHGATE_MAX_BODY_BYTES: a `data` field may take all of
        # it (Starlette's own default stops fields at 1 MB).
        form = await replay.form(max_part_size=max(len(body), 1))
    except MultiPartException as exc:
        raise ApiError(Code.MALFORMED_BODY, f"multipart form: {exc.message}") from None
    except HTTPException as exc:   # Starlette's wrapping of the same, inside an app
        raise ApiError(Code.MALFORMED_BODY, f"multipart form: {exc.detail}") from None
    try:
        files = {key: await value.read() for key, value in form.items()
                 if isinstance(value, UploadFile)}
        return {key: value for key, value in form.items() if isinstance(value, str)}, files
    finally:
        await form.close()   # file parts spool to temporary files
