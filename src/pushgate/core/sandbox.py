"""``POST /api/v2/sandbox/inbound``: a user's message played on a sandbox channel, decoded and
checked here (no I/O); the API hands the result to the same recording path as a provider's
callback."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from pushgate.core.addresses import UrlError, url_host
from pushgate.core.errors import ApiError, Code
from pushgate.core.numbers import number_problem
from pushgate.core.push import decode_body

#: A WhatsApp profile name is at most 25 characters; a little room for other channels.
MAX_NAME_LENGTH = 256
#: Longer than any media URL a provider hands over; a link is kept, never fetched.
MAX_MEDIA_URL_LENGTH = 2048


class SandboxInboundBody(msgspec.Struct):
    token: str | int | None = None
    application: str | int | None = None
    number: str | int | None = None
    message: str | int | None = None
    media: str | None = None
    # The sender's profile name, as WhatsApp channels pass it on (optional).
    name: str | None = None


_decoder = msgspec.json.Decoder(SandboxInboundBody)


def decode_sandbox_inbound(raw: bytes | str) -> SandboxInboundBody:
    return decode_body(_decoder, raw)


@dataclass(frozen=True, slots=True)
class SandboxUserMessage:
    """What the user wrote, checked."""

    number: str
    text: str
    media_url: str | None
    name: str | None


def _text(value: str | int | None) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def check_user_message(body: SandboxInboundBody, max_chars: int) -> SandboxUserMessage:
    """The user's message in ``body``, or the ``ApiError`` that says what is wrong with it.
    ``max_chars`` is the channel's own limit, the longest text its users can send."""
    number = _text(body.number).strip()
    if not number:
        raise ApiError(Code.INVALID_NUMBER, "`number` is required: the user who writes")
    problem = number_problem(number)
    if problem is not None:
        raise ApiError(Code.INVALID_NUMBER, f"`number` {problem}")
    text = _text(body.message)
    media = (body.media or "").strip() or None
    if not text.strip() and media is None:
        raise ApiError(Code.EMPTY_MESSAGE, "`message` (or `media`) is required")
    if "\x00" in text:
        raise ApiError(Code.INVALID_TEXT, "`message` holds a NUL character")
    if len(text) > max_chars:
        raise ApiError(Code.MESSAGE_TOO_LONG,
                       f"`message` has {len(text)} characters; the channel takes {max_chars}")
    if media is not None:
        if len(media) > MAX_MEDIA_URL_LENGTH or "\x00" in media:
            raise ApiError(Code.INVALID_MEDIA,
                           f"`media` must be an http(s) URL of at most {MAX_MEDIA_URL_LENGTH}"
                           " characters")
        try:
            url_host(media)
        except UrlError as exc:
            raise ApiError(Code.INVALID_MEDIA, f"`media`: {exc.reason}") from None
    name = (body.name or "").strip() or None
    if name is not None and (len(name) > MAX_NAME_LENGTH or "\x00" in name):
        raise ApiError(Code.INVALID_FIELD,
                       f"`name` must be at most {MAX_NAME_LENGTH} characters, without NUL")
    return SandboxUserMessage(number=number, text=text, media_url=media, name=name)
