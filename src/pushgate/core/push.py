"""Decoding and planning a push: from request bytes to priced rows, with no I/O.

``decode_push`` turns the body into typed structs (msgspec: the fastest typed decoder we
measured, see docs/benchmarks.md); ``plan_push`` validates every entry against the channel's
rules, prices it, spots duplicates, and returns plain tuples for the store's bulk insert. The
order of ``PushPlan.outcomes`` is the order of ``data`` in the request, so the answer can be
built in place.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar

import msgspec

from pushgate.core.addresses import UrlError, literal_problem, url_host
from pushgate.core.channels import (
    APP_WHATSAPP_CLOUD,
    APP_WHATSAPP_MANAGED,
    APP_WHATSAPP_OFFICIAL,
    MEDIA_MAX_BYTES,
    ChannelSpec,
    MediaKind,
    PriceUnit,
    media_kind_from_bytes,
    media_kind_from_url,
)
from pushgate.core.errors import ApiError, Code
from pushgate.core.numbers import number_problem
from pushgate.core.segments import count_segments

MAX_REFERENCE_LENGTH = 255


# gc=False: these structs hold only strings and numbers, never cycles, and untracked objects
# spare the collector thousands of allocations per push (faster decoding, docs/benchmarks.md).
class PushEntry(msgspec.Struct, omit_defaults=True, gc=False):
    number: str | int | None = None
    message: str | int | None = None
    media: str | None = None
    reference_number: str | int | None = None
    # WhatsApp template sends: this recipient's variable values and optional overrides.
    template_message: list[str | int | float] | None = None
    language: str | int | None = None
    template_header: str | int | None = None


class PushBody(msgspec.Struct, omit_defaults=True, gc=False):
    """The Push API v2 body. Numbers may arrive as strings or numbers, as Picky clients send
    both; Picky's own samples spell ``"priority "`` with a trailing space, so both keys count.
    Media URLs and base64 stay strings: no number is one."""

    token: str | int | None = None
    application: str | int | None = None
    # pushgate's own: one channel of the project by id (Picky's `application` is a code).
    channel_id: str | int | None = None
    globalmessage: str | int | None = None
    globalmedia: str | None = None
    globalmedia_code: str | None = None
    priority: str | int | None = None
    priority_spaced: str | int | None = msgspec.field(default=None, name="priority ")
    data: list[PushEntry] | None = None
    # WhatsApp template sends (official channels): the approved template's id (its name at
    # the provider), its language, the variable values for every entry, a header text.
    template_id: str | int | None = None
    language: str | int | None = None
    template_globalmessage: list[str | int | float] | None = None
    template_header: str | int | None = None
    # Picky's 1: the WhatsApp number filter (core/checks.py): nothing is sent.
    action: str | int | None = None
    # Picky lists it per entry; some clients send it beside `data`: it then counts for every
    # entry without its own.
    reference_number: str | int | None = None
    # pushgate's own: when to send (core/schedule.py); absent, now.
    send_at: str | int | float | None = None


class TokenBody(msgspec.Struct):
    """Bodies of the small endpoints (delivery-report and friends)."""

    token: str | int | None = None
    push_id: str | int | None = None
    application: str | int | None = None


_push_decoder = msgspec.json.Decoder(PushBody)
_token_decoder = msgspec.json.Decoder(TokenBody)


_Decoded = TypeVar("_Decoded")


def decode_body(decoder: msgspec.json.Decoder[_Decoded], raw: bytes | str) -> _Decoded:
    """``raw`` decoded by ``decoder``; anything wrong with it is an ``ApiError``."""
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if "Expected `object`" in text and "at `$" not in text:
            raise ApiError(Code.MALFORMED_BODY, "the body must be a JSON object") from None
        raise ApiError(Code.INVALID_FIELD, text) from None
    except msgspec.DecodeError as exc:
        raise ApiError(Code.MALFORMED_BODY, f"invalid JSON ({exc})") from None
    except RecursionError:
        # msgspec recurses once per level of nesting, even inside a key it skips; Python's
        # recursion limit (~1,000 levels) ends it cleanly with this error.
        raise ApiError(Code.MALFORMED_BODY, "JSON nested too deeply") from None
    except UnicodeEncodeError:
        # Text (a form field, the `data` query parameter) holding a lone surrogate.
        raise ApiError(Code.MALFORMED_BODY, "the JSON text is not valid Unicode") from None


def decode_push(raw: bytes | str) -> PushBody:
    return decode_body(_push_decoder, raw)


def decode_token_body(raw: bytes | str) -> TokenBody:
    return decode_body(_token_decoder, raw)


#: Ids are signed 64-bit in both databases; a larger value would fail inside the driver.
MAX_ID = 2**63 - 1


def parse_int_field(name: str, value: str | int | None, default: int | None = None,
                    maximum: int = MAX_ID) -> int:
    if value is None or value == "":
        if default is None:
            raise ApiError(Code.INVALID_FIELD, f"`{name}` is required")
        return default
    if isinstance(value, int):
        number = value
    else:
        text = value.strip()
        # isascii: str.isdigit() also accepts digits such as "²" that int() refuses.
        if not (text.isascii() and text.isdigit()):
            raise ApiError(Code.INVALID_FIELD,
                           f"`{name}` must be a whole number, got {_shown(value)}")
        # More digits than the maximum has cannot be in range; int() would refuse past
        # 4,300 digits (leading zeros count) with a ValueError.
        digits = text.lstrip("0") or "0"
        if len(digits) > len(str(maximum)):
            raise ApiError(Code.INVALID_FIELD, f"`{name}` is out of range, got {_shown(value)}")
        number = int(digits)
    if not -maximum <= number <= maximum:
        raise ApiError(Code.INVALID_FIELD, f"`{name}` is out of range, got {_shown(value)}")
    return number


def _shown(value: object, limit: int = 40) -> str:
    """``value`` as an error message quotes it: cut short, as a body may hold megabytes."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


#: The priorities as clients mostly send them, read without parsing.
_PRIORITIES: Final[dict[str | int | None, int]] = {None: 0, "0": 0, "1": 1, 0: 0, 1: 1}


def parse_priority(body: PushBody) -> int:
    raw = body.priority if body.priority is not None else body.priority_spaced
    known = _PRIORITIES.get(raw)
    if known is not None:
        return known
    value = parse_int_field("priority", raw, default=0)
    if value not in (0, 1):
        raise ApiError(Code.INVALID_FIELD, f"`priority` must be 0 (low) or 1 (high), got {raw!r}")
    return value


@dataclass(frozen=True, slots=True)
class InlineMedia:
    data: bytes
    kind: MediaKind
    content_type: str


@dataclass(frozen=True, slots=True)
class Limits:
    max_recipients: int = 10_000


# One accepted entry, as the store inserts it: a plain tuple, as thousands are built per push
# and a tuple is the cheapest record to build and to bind; its fields are read by the
# ``ROW_*`` positions below.
AcceptedRow = tuple[int, str, str, str | None, str | None, str | None, int, int, int]
ROW_INDEX: Final = 0      # the entry's index in the request's ``data``
ROW_NUMBER: Final = 1
ROW_BODY: Final = 2
ROW_MEDIA_URL: Final = 3  # None with a media kind: the push's ``inline_media``
ROW_MEDIA_KIND: Final = 4
ROW_REFERENCE: Final = 5
ROW_PARTS: Final = 6
ROW_SEGMENTS: Final = 7
ROW_CREDIT: Final = 8     # micro-credits

#: Channels that send approved WhatsApp templates.
TEMPLATE_APPLICATIONS = frozenset({APP_WHATSAPP_OFFICIAL, APP_WHATSAPP_CLOUD,
                                   APP_WHATSAPP_MANAGED})
MAX_TEMPLATE_HEADER = 60


@dataclass(slots=True)
class EntryRefusal:
    index: int
    number: str
    code: Code
    message: str
    duplicate_of: int | None = None   # index of the accepted entry it repeats


@dataclass(slots=True)
class PushPlan:
    priority: int
    accepted: list[AcceptedRow]
    refused: list[EntryRefusal]
    credit_total: int
    inline_media: InlineMedia | None
    total_entries: int
    # Channel data per accepted row (same order as ``accepted``) as JSON text, e.g. a
    # WhatsApp template; None when no entry has any (the common case costs nothing).
    extras: list[str | None] | None = None
    # Media host names with no verdict in ``MediaHosts.verdicts``: their entries were let
    # through provisionally. Resolve them and plan again before accepting (None: none).
    media_hosts_to_resolve: set[str] | None = None

    def refusal_only_error(self) -> ApiError:
        """The error for a push none of whose entries was accepted."""
        codes = {r.code for r in self.refused if r.code is not Code.DUPLICATE}
        code = codes.pop() if len(codes) == 1 else Code.NO_VALID_ENTRIES
        return ApiError(code, "no entry of the push can be sent")


def plan_digest(plan: PushPlan, send_at: float | None) -> str:
    """What an idempotency key is stored with, to tell a replay from another push under a
    reused key: the accepted entries' numbers, texts and media, and the push's ``send_at``
    (its instant, ``schedule.send_at_instant``: not "now" for a time since past). Computed
    only for a push with a key."""
    digest = hashlib.sha256(b"%r\x00" % (send_at,))
    for row in plan.accepted:
        digest.update(json.dumps([row[ROW_NUMBER], row[ROW_BODY], row[ROW_MEDIA_URL],
                                  row[ROW_MEDIA_KIND]]).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class MediaHosts:
    """What ``plan_push`` knows about the hosts of media URLs, to refuse entries whose media
    would make a client (a bridge, a provider, pushgate itself) connect to a non-public address.

    IP literals and ``localhost`` are judged here; DNS names by ``verdicts`` (name → the reason
    it is refused, or None when all its addresses are public), which the caller fills by
    resolving ``PushPlan.media_hosts_to_resolve``. ``allow_private`` lets every host through
    (local development, tests).
    """

    allow_private: bool = False
    verdicts: Mapping[str, str | None] = field(default_factory=dict)


_NO_VERDICT = "\x00no verdict"


def _media_url_problem(url: str, hosts: MediaHosts,
                       unresolved: set[str]) -> tuple[Code, str] | None:
    """Why an entry with media ``url`` (an http(s) URL) is refused, or None. A DNS name with
    no verdict yet is added to ``unresolved`` and passes for now."""
    try:
        host = url_host(url)
    except UrlError as exc:
        code = Code.MEDIA_ADDRESS_NOT_ALLOWED if exc.ambiguous else Code.INVALID_MEDIA
        return code, f"media URL: {exc.reason}"
    if hosts.allow_private:
        return None
    problem = literal_problem(host)
    if problem is not None:
        return Code.MEDIA_ADDRESS_NOT_ALLOWED, f"media URL host {problem}"
    if host.name is None:
        return None
    verdict = hosts.verdicts.get(host.name, _NO_VERDICT)
    if verdict is None:
        return None
    if verdict is _NO_VERDICT:
        unresolved.add(host.name)
        return None
    return Code.MEDIA_ADDRESS_NOT_ALLOWED, f"media URL host {verdict}"


def _decode_inline_media(code: str) -> InlineMedia:
    text = code.strip()
    if text.startswith("data:") and "," in text:   # tolerate data: URLs
        text = text.split(",", 1)[1]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(Code.INVALID_MEDIA, "`globalmedia_code` is not valid base64") from None
    if not data:
        raise ApiError(Code.INVALID_MEDIA, "`globalmedia_code` is empty")
    kind, content_type = media_kind_from_bytes(data)
    if len(data) > MEDIA_MAX_BYTES[kind]:
        raise ApiError(
            Code.MEDIA_TOO_LARGE,
            f"{kind} of {len(data)} bytes exceeds {MEDIA_MAX_BYTES[kind]} bytes",
        )
    return InlineMedia(data=data, kind=kind, content_type=content_type)


def _text(value: str | int | None) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _template_values(values: list[str | int | float] | None, field: str) -> list[str]:
    if values is None:
        return []
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"`{field}` holds {value!r}; values are strings or numbers")
        text = value if isinstance(value, str) else str(value)
        if "\x00" in text:
            raise ValueError(f"`{field}` holds a NUL character")
        out.append(text)
    return out


def _template_extra(body: PushBody, entry: PushEntry, template_id: str) -> str:
    """The message's channel data for a template send, as JSON; ``ValueError`` says what is
    wrong with the entry."""
    language = (_text(entry.language) or _text(body.language)).strip()
    if not language:
        raise ValueError("template sends need `language`")
    raw_header = (entry.template_header if entry.template_header is not None
                  else body.template_header)
    header = None if raw_header is None else _text(raw_header)
    if header is not None and len(header) > MAX_TEMPLATE_HEADER:
        raise ValueError(f"`template_header` is longer than {MAX_TEMPLATE_HEADER} characters")
    # The message's channel data is a text column: PostgreSQL refuses NUL there.
    if "\x00" in language or (header is not None and "\x00" in header):
        raise ValueError("`language` or `template_header` holds a NUL character")
    if entry.template_message is not None:
        values = _template_values(entry.template_message, "template_message")
    else:
        values = _template_values(body.template_globalmessage, "template_globalmessage")
    return json.dumps({"template": {"name": template_id, "language": language,
                                    "header": header or None, "values": values}},
                      ensure_ascii=False, separators=(",", ":"))


def plan_push(body: PushBody, channel: ChannelSpec, limits: Limits,
              media_hosts: MediaHosts | None = None) -> PushPlan:
    """Validate and price every entry of ``body`` for ``channel``.

    Raises ``ApiError`` for request-level problems (empty data, too many recipients, a bad
    global field). Per-entry problems become ``EntryRefusal``s in the plan; the caller decides
    what a plan without accepted entries means. Media URLs are judged by ``media_hosts`` (by
    default: no private address allowed, no DNS name known); when the plan lists
    ``media_hosts_to_resolve``, it is provisional.
    """
    hosts = media_hosts or MediaHosts()
    unresolved: set[str] = set()
    entries = _checked_entries(body, limits)
    priority = parse_priority(body)
    shared = _shared_fields(body, channel, hosts, unresolved)
    accepted, refused, credit_total, extras = _plan_entries(body, entries, channel, shared,
                                                            hosts, unresolved)
    return PushPlan(
        priority=priority,
        accepted=accepted,
        refused=refused,
        credit_total=credit_total,
        inline_media=shared.inline,
        total_entries=len(entries),
        extras=extras,
        media_hosts_to_resolve=unresolved or None,
    )


def _checked_entries(body: PushBody, limits: Limits) -> list[PushEntry]:
    entries = body.data
    if not entries:
        raise ApiError(Code.EMPTY_DATA, "`data` must list at least one recipient")
    if len(entries) > limits.max_recipients:
        raise ApiError(
            Code.TOO_MANY_RECIPIENTS,
            f"{len(entries)} entries, at most {limits.max_recipients} per push",
        )
    return entries


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, three
# times the cost of this one's for every push; nothing changes it after it is built.
@dataclass(slots=True)
class _Shared:
    """What every entry of the push starts from, decided once per push: its global fields,
    the channel's countries."""

    text: str
    inline: InlineMedia | None
    # Inline media is stored once per push: its entries carry its kind and no URL, and the
    # store points their messages at the stored copy.
    media_url: str | None
    media_kind: MediaKind | None
    media_problem: tuple[Code, str] | None
    template_id: str | None
    allowed_countries: tuple[str, ...]
    country_refusal: str


def _shared_fields(body: PushBody, channel: ChannelSpec, hosts: MediaHosts,
                   unresolved: set[str]) -> _Shared:
    """The push's global text, media and template, the channel's countries; ``ApiError`` for
    a bad global field."""
    inline: InlineMedia | None = None
    global_media = (body.globalmedia or "").strip() or None
    if body.globalmedia_code:
        inline = _decode_inline_media(body.globalmedia_code)
    if (global_media or inline) and not channel.media_allowed:
        raise ApiError(Code.MEDIA_NOT_ALLOWED, f"channel {channel.id} sends text only")
    if global_media and (not global_media.startswith(("http://", "https://"))
                         or "\x00" in global_media):
        raise ApiError(Code.INVALID_MEDIA, "`globalmedia` must be an http(s) URL")
    global_kind = inline.kind if inline else (
        media_kind_from_url(global_media) if global_media else None
    )
    global_media_problem = (_media_url_problem(global_media, hosts, unresolved)
                            if global_media and not inline else None)
    codes = channel.config.get("allowed_country_codes")
    # Most channels send anywhere: no tuple or refusal text to build for them.
    countries = tuple(str(c) for c in codes) if codes else ()
    return _Shared(text=_text(body.globalmessage), inline=inline,
                   media_url=None if inline else global_media, media_kind=global_kind,
                   media_problem=global_media_problem,
                   template_id=_template_id(body, channel), allowed_countries=countries,
                   country_refusal=(f"channel {channel.id} sends only to country codes "
                                    f"{', '.join(countries)}") if countries else "")


def _template_id(body: PushBody, channel: ChannelSpec) -> str | None:
    template_id = _text(body.template_id).strip() or None
    if template_id is not None and "\x00" in template_id:
        raise ApiError(Code.INVALID_FIELD, "`template_id` holds a NUL (U+0000) character")
    if template_id is not None and channel.application not in TEMPLATE_APPLICATIONS:
        raise ApiError(Code.INVALID_FIELD,
                       f"`template_id` needs an official WhatsApp channel (application 8, 101 "
                       f"or 121); channel {channel.id} is application {channel.application}")
    return template_id


def _plan_entries(
    body: PushBody, entries: list[PushEntry], channel: ChannelSpec, shared: _Shared,
    hosts: MediaHosts, unresolved: set[str],
) -> tuple[list[AcceptedRow], list[EntryRefusal], int, list[str | None] | None]:
    """The accepted rows, the refusals, their credit and the rows' channel data. Every
    recipient of every push passes here: one loop, as a helper per step would cost a call
    per entry."""
    global_text, global_media_url, template_id = shared.text, shared.media_url, shared.template_id
    global_kind, global_media_problem = shared.media_kind, shared.media_problem
    allowed_countries = shared.allowed_countries
    global_reference = body.reference_number
    per_segment = channel.price_unit is PriceUnit.SEGMENT
    price, max_chars, max_segments = channel.price_micro, channel.max_chars, channel.max_segments
    caption_kinds = channel.caption_kinds
    # One verdict per distinct media URL of the push (entries often share theirs).
    url_problems: dict[str, tuple[Code, str] | None] = {}
    extras: list[str | None] | None = [] if template_id is not None else None
    accepted: list[AcceptedRow] = []
    refused: list[EntryRefusal] = []
    seen: dict[tuple[str, str, str | None, str | None], int] = {}
    credit_total = 0
    for index, entry in enumerate(entries):
        raw_number = entry.number
        number = raw_number if isinstance(raw_number, str) else _text(raw_number)
        problem = number_problem(number)
        if problem is not None:
            refused.append(EntryRefusal(index, number, Code.INVALID_NUMBER, problem))
            continue
        # Calling codes are prefix-free, so a prefix test is exact.
        if allowed_countries and not number.startswith(allowed_countries):
            refused.append(EntryRefusal(index, number, Code.COUNTRY_NOT_ALLOWED,
                                        shared.country_refusal))
            continue
        extra = None
        if template_id is not None:
            try:
                extra = _template_extra(body, entry, template_id)
            except ValueError as exc:
                refused.append(EntryRefusal(index, number, Code.INVALID_TEMPLATE, str(exc)))
                continue

        text = _text(entry.message) or global_text
        media = global_media_url
        kind = global_kind
        media_problem = global_media_problem
        if entry.media:
            if not channel.media_allowed:
                refused.append(EntryRefusal(index, number, Code.MEDIA_NOT_ALLOWED,
                                            f"channel {channel.id} sends text only"))
                continue
            media = entry.media.strip()
            if not media.startswith(("http://", "https://")) or "\x00" in media:
                refused.append(EntryRefusal(index, number, Code.INVALID_MEDIA,
                                            "`media` must be an http(s) URL"))
                continue
            kind = media_kind_from_url(media)
            if media in url_problems:
                media_problem = url_problems[media]
            else:
                media_problem = url_problems[media] = _media_url_problem(media, hosts,
                                                                         unresolved)
        if media_problem is not None:
            refused.append(EntryRefusal(index, number, *media_problem))
            continue

        if not text and kind is None and extra is None:
            refused.append(EntryRefusal(index, number, Code.EMPTY_MESSAGE,
                                        "no `message`, `globalmessage` or media"))
            continue
        if "\x00" in text:
            refused.append(EntryRefusal(index, number, Code.INVALID_TEXT,
                                        "the text holds a NUL (U+0000) character"))
            continue
        if len(text) > max_chars:
            refused.append(EntryRefusal(index, number, Code.MESSAGE_TOO_LONG,
                                        f"{len(text)} characters, the channel allows {max_chars}"))
            continue

        reference = entry.reference_number
        if reference is None:
            reference = global_reference
        if reference is not None:
            reference = _text(reference)
            if len(reference) > MAX_REFERENCE_LENGTH or "\x00" in reference:
                refused.append(EntryRefusal(
                    index, number, Code.INVALID_REFERENCE,
                    f"longer than {MAX_REFERENCE_LENGTH} characters or holds a NUL character"))
                continue

        key = (number, text, media, extra)
        first = seen.get(key)
        if first is not None:
            refused.append(EntryRefusal(index, number, Code.DUPLICATE,
                                        f"same number and text as entry {first}", first))
            continue

        if per_segment:
            segments = count_segments(text).segments if text else 0
            if segments > max_segments:
                refused.append(EntryRefusal(
                    index, number, Code.MESSAGE_TOO_LONG,
                    f"{segments} SMS parts, the channel allows {max_segments}"))
                continue
            parts = 1
            units = max(segments, 1)
        else:
            segments = 0
            # Text beside a media that takes no caption goes as a message of its own; a
            # template is one message whatever else the entry carries.
            parts = 2 if (text and extra is None and kind is not None
                          and kind not in caption_kinds) else 1
            units = parts
        seen[key] = index
        credit = price * units
        credit_total += credit
        accepted.append((index, number, text, media, kind, reference, parts, segments, credit))
        if extras is not None:
            extras.append(extra)
    return accepted, refused, credit_total, extras
