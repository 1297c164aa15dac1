"""``GET/POST/DELETE /api/v2/optouts``: the project's opt-out list, the numbers every push
entry to which is refused in its place (code 213, credit "0").

pushgate's own endpoint, not Picky's, so it answers only under ``/api/v2``. Numbers are taken
in any usual spelling (``+``, spaces, dashes) and kept normalised (``core.optouts``); the list
is paged in number order (``after`` the last number of the page before). ``pushgate optout``
does the same from the command line.
"""

from __future__ import annotations

import time

import msgspec
from fastapi import APIRouter, Request
from starlette.responses import Response

from pushgate.api.answers import iso_time, success
from pushgate.api.auth import authenticate, token_from
from pushgate.api.body import json_payload
from pushgate.api.routing import raw_post
from pushgate.api.state import gateway_of
from pushgate.core.errors import ApiError, Code
from pushgate.core.optouts import checked_number, normal_number

router = APIRouter()

#: Numbers one request may add or remove.
MAX_NUMBERS = 10_000
MAX_PAGE = 1000


class OptoutsBody(msgspec.Struct):
    token: str | int | None = None
    numbers: list[str | int] | None = None
    number: str | int | None = None


_decoder = msgspec.json.Decoder(OptoutsBody)


async def _numbers_of(request: Request) -> tuple[int, list[str | int]]:
    """The project and the request's numbers (a list, or one ``number``), checked; for a
    DELETE, ``?number=`` works too."""
    gateway = gateway_of(request)
    limit = gateway.settings.max_body_bytes
    # A DELETE may name its numbers in the query alone (``?number=``), with no body.
    bare = (request.method == "DELETE"
            and request.headers.get("content-length", "0").strip() in ("", "0")
            and "transfer-encoding" not in request.headers)
    body = OptoutsBody() if bare else _decoder.decode(await json_payload(request, limit))
    token = await authenticate(gateway.lookups, request, token_from(request, body.token))
    given: list[str | int] = list(body.numbers or [])
    if body.number is not None:
        given.append(body.number)
    given += request.query_params.getlist("number")
    if not given:
        raise ApiError(Code.INVALID_FIELD, "`numbers` must list at least one number")
    if len(given) > MAX_NUMBERS:
        raise ApiError(Code.INVALID_FIELD, f"at most {MAX_NUMBERS} numbers per request")
    return token.project_id, given


@raw_post(router, "/api/v2/optouts", tags=["Opt-outs"],
          summary="Opt numbers out: nothing is sent to them any more")
async def add_optouts(request: Request) -> Response:
    project_id, given = await _checked(request)
    numbers = _valid(given)
    added = await gateway_of(request).store.add_optouts(project_id, numbers, time.time(), "api")
    return success(added=added, numbers=list(dict.fromkeys(numbers)))


@router.delete("/api/v2/optouts", tags=["Opt-outs"], summary="Opt numbers back in")
async def remove_optouts(request: Request) -> Response:
    project_id, given = await _checked(request)
    numbers = list(dict.fromkeys(normal_number(n) for n in given))
    removed = await gateway_of(request).store.remove_optouts(project_id, numbers)
    return success(removed=removed, numbers=numbers)


@router.get("/api/v2/optouts", tags=["Opt-outs"],
            summary="The project's opt-outs in number order, a page at a time")
async def list_optouts(request: Request, after: str = "", limit: int = 100) -> Response:
    gateway = gateway_of(request)
    token = await authenticate(gateway.lookups, request, token_from(request, None))
    limit = max(1, min(limit, MAX_PAGE))
    page = await gateway.store.list_optouts(token.project_id, normal_number(after) if after
                                            else "", limit)
    return success(
        total=await gateway.store.count_optouts(token.project_id),
        data=[{"number": o.number, "at": iso_time(o.at), "source": o.source} for o in page],
        next=page[-1].number if len(page) == limit else None)


async def _checked(request: Request) -> tuple[int, list[str | int]]:
    try:
        return await _numbers_of(request)
    except msgspec.ValidationError as exc:
        raise ApiError(Code.INVALID_FIELD, str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ApiError(Code.MALFORMED_BODY, f"invalid JSON ({exc})") from None


def _valid(given: list[str | int]) -> list[str]:
    numbers, problems = [], []
    for raw in given:
        try:
            numbers.append(checked_number(raw))
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ApiError(Code.INVALID_FIELD, "; ".join(problems[:5])
                       + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
    return numbers

