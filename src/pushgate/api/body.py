"""Reading a request body with a size limit: refused as soon as it is known to be too large
(the declared ``Content-Length``, else while streaming), never read into memory past it."""

from __future__ import annotations

from starlette.requests import Request

from pushgate.core.errors import ApiError, Code


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes; more is ``BODY_TOO_LARGE``."""
    declared = request.headers.get("content-length")
    # isascii: str.isdigit() also accepts digits such as "²" that int() refuses; a length
    # of more digits than the limit has is too large without int() (which refuses past
    # 4,300 digits).
    digits = declared.lstrip("0") if declared else ""
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
