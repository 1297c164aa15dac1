"""The one table of status codes pushgate answers with.

Every API answer carries a numeric ``status`` and a ``message``, as Picky Assist's API does. Picky's
documented codes (100, 401, 405) keep their meaning; the others are pushgate's own, because Picky's
master error table is not public. ``docs/error-codes.md`` is generated from this table
(``pushgate docs error-codes``), and a test keeps the two identical.

Codes in ``ENTRY_CODES`` are per-recipient: they appear inside ``data[]`` next to accepted entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, unique


@unique
class Code(IntEnum):
    SUCCESS = 100

    # Request-level: the whole push is refused, nothing is queued or charged.
    MALFORMED_BODY = 400
    AUTH_FAILED = 401
    TOKEN_REVOKED = 402
    IP_NOT_ALLOWED = 403
    NOT_FOUND = 404
    API_NOT_ACTIVE = 405
    INVALID_FIELD = 406
    UNKNOWN_APPLICATION = 407
    EMPTY_DATA = 408
    TOO_MANY_RECIPIENTS = 409
    COMMAND_NOT_SUPPORTED = 411
    CHANNEL_PAUSED = 412
    BODY_TOO_LARGE = 413
    METHOD_NOT_ALLOWED = 414
    NO_VALID_ENTRIES = 416
    REQUEST_REFUSED = 418
    INSUFFICIENT_CREDIT = 420
    UNKNOWN_CHANNEL = 421
    CHANNEL_APPLICATION_MISMATCH = 422
    NO_SANDBOX_CHANNEL = 423
    INVALID_CSV = 424
    UNKNOWN_PLACEHOLDER = 425
    NUMBER_COLUMN_MISSING = 426
    INVALID_SEND_AT = 427
    IDEMPOTENCY_KEY_REUSED = 428
    RATE_LIMITED = 429
    PROVIDER_REFUSED = 430
    PROVIDER_UNREACHABLE = 431
    INTERNAL_ERROR = 500
    UNAVAILABLE = 503
    INVALID_ACTION = 842

    # Per-entry: the entry is refused, the rest of the push goes on.
    INVALID_NUMBER = 201
    EMPTY_MESSAGE = 202
    MESSAGE_TOO_LONG = 203
    MEDIA_NOT_ALLOWED = 204
    MEDIA_TOO_LARGE = 205
    INVALID_MEDIA = 206
    DUPLICATE = 207
    INVALID_REFERENCE = 208
    INVALID_TEXT = 209
    COUNTRY_NOT_ALLOWED = 210
    INVALID_TEMPLATE = 211
    MEDIA_ADDRESS_NOT_ALLOWED = 212
    OPTED_OUT = 213


@dataclass(frozen=True, slots=True)
class CodeInfo:
    code: Code
    http_status: int
    message: str
    when: str


_TABLE: tuple[CodeInfo, ...] = (
    CodeInfo(Code.SUCCESS, 200, "Success",
             "The push was accepted and queued. It does not mean delivered: follow the reports."),
    CodeInfo(Code.MALFORMED_BODY, 400, "Malformed request body",
             "The body is not JSON, not a JSON object, or the `data` form field is not JSON; "
             "or the JSON is nested too deeply (about 1,000 levels, even inside an unknown "
             "key); or a `multipart/form-data` body has no boundary, more than 1,000 fields "
             "or files, or a part that cannot be parsed."),
    CodeInfo(Code.AUTH_FAILED, 401, "Authentication Failed",
             "No token was given, or it is not a token of any project."),
    CodeInfo(Code.TOKEN_REVOKED, 401, "Token revoked",
             "The token existed but was revoked (`pushgate token revoke`)."),
    CodeInfo(Code.IP_NOT_ALLOWED, 403, "IP address not allowed for this token",
             "The token has an IP allow-list and the caller's address is not on it."),
    CodeInfo(Code.NOT_FOUND, 404, "Not found",
             "The push or message asked for does not exist in the token's project, or no "
             "route has the requested path. A push of another project answers the same as "
             "one that does not exist (`delivery-report`, `push-cancel`, `pushes/{id}`): a "
             "token learns nothing of other projects."),
    CodeInfo(Code.API_NOT_ACTIVE, 403, "API Is Not Active For This Project",
             "The project is disabled."),
    CodeInfo(Code.INVALID_FIELD, 422, "Invalid field",
             "A field has a value of the wrong type or out of range (the message names it): "
             "e.g. `application`, `priority` or `push_id` with more digits than a 64-bit id "
             "(or a 32-bit application code) has."),
    CodeInfo(Code.INVALID_SEND_AT, 422, "Invalid send_at",
             "`send_at` (a scheduled push) is not ISO 8601 with an offset (`Z`, `+05:30`) "
             "nor unix seconds, has no offset, or is more than "
             "`PUSHGATE_MAX_SCHEDULE_SECONDS` (default 366 days) ahead. A time already past "
             "is no error: the push is sent now. Nothing is queued or charged."),
    CodeInfo(Code.IDEMPOTENCY_KEY_REUSED, 422, "Idempotency key reused",
             "The `Idempotency-Key` (or a campaign's derived key) was used before for a push "
             "with other messages (other numbers, texts or `send_at`): the earlier push is not "
             "answered for this one. Use a new key for a new push. Nothing is queued or "
             "charged."),
    CodeInfo(Code.UNKNOWN_APPLICATION, 422, "Unknown application",
             "The project has no channel serving this `application` code (Picky's codes: 1, "
             "2, 3, 4, 5, 8, 10, 101, 121). Nothing is queued or charged. A channel's id is "
             "not an application code: to pick a channel by id, send `channel_id`."),
    CodeInfo(Code.EMPTY_DATA, 422, "Empty data",
             "`data` is missing or has no entries."),
    CodeInfo(Code.TOO_MANY_RECIPIENTS, 413, "Too many recipients",
             "`data` has more entries than `PUSHGATE_MAX_RECIPIENTS` (default 10,000)."),
    CodeInfo(Code.COMMAND_NOT_SUPPORTED, 422, "Command not supported for this channel",
             "A `device-action` command that does not apply to the channel: the call-queue "
             "commands are for application 4 (calls) and the message-queue ones for the "
             "others; `reset` and `restart` for phone channels (SMS Gateway for Android) and "
             "the WhatsApp Web bridges (WAHA, Evolution API); `disconnect` for the bridges; "
             "`restart-server` and `clearlogs` for no channel pushgate runs. The message names "
             "the command and the channel's kind (the bridge table is in docs/channels.md)."),
    CodeInfo(Code.CHANNEL_PAUSED, 409, "Channel paused by the operator",
             "`resume-message-queue` (or `resume-call-queue`) on a channel that was not stopped "
             "by `device-action` but paused by the operator, or by the gateway when the "
             "provider refused its credentials; the operator resumes it "
             "(`pushgate channel pause ID --resume`)."),
    CodeInfo(Code.BODY_TOO_LARGE, 413, "Request body too large",
             "The body is larger than `PUSHGATE_MAX_BODY_BYTES`."),
    CodeInfo(Code.METHOD_NOT_ALLOWED, 405, "Method not allowed",
             "The path exists but does not take this HTTP method (e.g. `GET /api/v2/push`); "
             "the `Allow` header lists the ones it takes."),
    CodeInfo(Code.NO_VALID_ENTRIES, 422, "No valid entries",
             "Every entry was refused, for different reasons; see `data[]`. (When all share one "
             "reason, the push answers with that entry code instead.)"),
    CodeInfo(Code.REQUEST_REFUSED, 400, "Request refused",
             "The HTTP layer refused the request for a reason no other code names (the "
             "message says which); the HTTP status is that refusal's own."),
    CodeInfo(Code.INSUFFICIENT_CREDIT, 402, "Insufficient credit",
             "The project's balance does not cover every accepted entry. The whole push is "
             "refused and nothing is charged."),
    CodeInfo(Code.INVALID_CSV, 400, "Invalid CSV",
             "`POST /api/v2/push-csv`: the file is not UTF-8 text, has no header row or names "
             "a column twice. Nothing is sent."),
    CodeInfo(Code.UNKNOWN_PLACEHOLDER, 422, "Unknown placeholder",
             "`POST /api/v2/push-csv`: the message names a `{column}` the file has no column "
             "for. Nothing is sent."),
    CodeInfo(Code.NUMBER_COLUMN_MISSING, 422, "Number column missing",
             "`POST /api/v2/push-csv`: the file has no column named by `number_column` "
             "(default `number`). Nothing is sent."),
    CodeInfo(Code.UNKNOWN_CHANNEL, 422, "Unknown channel",
             "`channel_id` (a pushgate extension) names no channel of the token's project."),
    CodeInfo(Code.CHANNEL_APPLICATION_MISMATCH, 422, "Channel serves another application",
             "Both `channel_id` and `application` were given, and the channel serves another "
             "application code. Send the channel's own code, or only `channel_id`."),
    CodeInfo(Code.INVALID_ACTION, 400, "Invalid Action",
             "A push's `action` is neither absent (send), 0 (send) nor 1 (Picky's WhatsApp "
             "number filter). Picky documents 842 as Invalid Action."),
    CodeInfo(Code.NO_SANDBOX_CHANNEL, 422, "No sandbox channel for this application",
             "`POST /api/v2/sandbox/inbound` names an `application` for which the token's "
             "project has no `sandbox` channel (a channel of another kind does not count: "
             "users' messages on a real channel come from its provider). Add one with "
             "`pushgate channel add --type sandbox --application CODE`."),
    CodeInfo(Code.RATE_LIMITED, 429, "Rate limit exceeded",
             "The token sent more pushes (and sandbox inbound messages, which count with "
             "them) per minute than `PUSHGATE_PUSH_RATE_PER_MINUTE` (default 90), or the "
             "caller's address sent `PUSHGATE_AUTH_FAILURE_LIMIT` unknown tokens (default 10) "
             "within `PUSHGATE_AUTH_FAILURE_WINDOW_SECONDS` (default 600): "
             "then any token from it is refused unread. Nothing was queued; retry after the "
             "`Retry-After` seconds."),
    CodeInfo(Code.PROVIDER_REFUSED, 502, "Channel provider refused the command",
             "A `device-action` command was sent to the channel's WhatsApp Web bridge and the "
             "bridge answered with an error (the message gives its HTTP status and text: a "
             "wrong API key, an unknown session or instance, a session not in a state the "
             "command takes). Nothing was done: for `reset` the queue is left as it was."),
    CodeInfo(Code.PROVIDER_UNREACHABLE, 504, "Channel provider unreachable",
             "A `device-action` command could not reach the channel's WhatsApp Web bridge "
             "(connection refused, timeout). Nothing was done; retry when the bridge is up."),
    CodeInfo(Code.INTERNAL_ERROR, 500, "Internal error",
             "A fault in pushgate, logged with its traceback. A push is accepted in one "
             "transaction, but the answer may be lost after it: check the project's balance "
             "(or its pushes) before sending again."),
    CodeInfo(Code.UNAVAILABLE, 503, "Service unavailable",
             "The store cannot be reached or is overloaded. Nothing was queued; retry later."),
    CodeInfo(Code.INVALID_NUMBER, 422, "Invalid number",
             "The number is not digits with country code (no `+`, no leading `0`), or cannot "
             "exist in its country."),
    CodeInfo(Code.EMPTY_MESSAGE, 422, "Empty message",
             "Neither the entry's `message`, `globalmessage` nor any media gives something "
             "to send."),
    CodeInfo(Code.MESSAGE_TOO_LONG, 422, "Message too long for the channel",
             "The text is longer than the channel allows (characters, or SMS parts)."),
    CodeInfo(Code.MEDIA_NOT_ALLOWED, 422, "Media not allowed on this channel",
             "The channel cannot send media (e.g. SMS or a call)."),
    CodeInfo(Code.MEDIA_TOO_LARGE, 413, "Media too large",
             "Inline media (`globalmedia_code`) exceeds the limit for its type: image 5 MB, "
             "video 16 MB, audio 16 MB, document 100 MB."),
    CodeInfo(Code.INVALID_MEDIA, 422, "Invalid media",
             "The media URL is not an http(s) URL (or its host or port is malformed), or "
             "`globalmedia_code` is not valid base64."),
    CodeInfo(Code.DUPLICATE, 200, "Duplicate entry",
             "The same number and text appear earlier in the push; it is sent once. "
             "`duplicate_of` names the msg_id that carries it."),
    CodeInfo(Code.INVALID_REFERENCE, 422, "Invalid reference_number",
             "`reference_number` is longer than 255 characters or holds a NUL character."),
    CodeInfo(Code.INVALID_TEXT, 422, "Invalid text",
             "The message text holds a NUL (U+0000) character, which no channel can send."),
    CodeInfo(Code.COUNTRY_NOT_ALLOWED, 422, "Country not allowed on this channel",
             "The channel has an allow-list of destination country codes "
             "(`allowed_country_codes` in its config) and the number's is not on it."),
    CodeInfo(Code.INVALID_TEMPLATE, 422, "Invalid template values",
             "A template push entry's `template_message` (or `template_globalmessage`) is not a "
             "list of strings and numbers, or `language` is missing."),
    CodeInfo(Code.MEDIA_ADDRESS_NOT_ALLOWED, 422, "Media URL address not allowed",
             "The entry's media URL (its own `media`, or `globalmedia`) names a host that is, or "
             "resolves to, a non-public address: loopback (127.0.0.0/8, ::1, `localhost`), "
             "private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local (169.254/16 with cloud "
             "metadata at 169.254.169.254, fe80::/10), unspecified (0.0.0.0, ::), CGNAT, "
             "multicast, reserved or documentation ranges, in any spelling (`127.1`, "
             "`2130706433`, `0x7f.0.0.1`, `[::ffff:127.0.0.1]`, a trailing dot); or a host "
             "that does not resolve; or a host part that clients read differently (a "
             "backslash, a space or control character, extra slashes after `http://`). "
             "Nothing is charged or sent for the entry. Allowed for local development with "
             "`PUSHGATE_ALLOW_PRIVATE_MEDIA=true`."),
    CodeInfo(Code.OPTED_OUT, 422, "Number opted out",
             "The number is on the project's opt-out list (`pushgate optout add`, "
             "`POST /api/v2/optouts`, or the user wrote one of the project's STOP keywords), "
             "matched in its normalised form (digits only). Nothing is charged or sent for the "
             "entry; the user's START keyword or `pushgate optout remove` lifts it."),
)

CODES: dict[Code, CodeInfo] = {info.code: info for info in _TABLE}
ENTRY_CODES: frozenset[Code] = frozenset(c for c in Code if 200 <= c < 300)


class ApiError(Exception):
    """A request-level refusal; the API layer turns it into ``{"status": code, "message": …}``."""

    def __init__(self, code: Code, detail: str | None = None, **extra: object) -> None:
        self.code = code
        self.detail = detail
        self.extra = extra
        super().__init__(self.message)

    @property
    def message(self) -> str:
        base = CODES[self.code].message
        return f"{base}: {self.detail}" if self.detail else base

    @property
    def http_status(self) -> int:
        return CODES[self.code].http_status


def _row(info: CodeInfo) -> str:
    return f"| {int(info.code)} | {info.http_status} | {info.message} | {info.when} |"


def render_markdown() -> str:
    """The text of docs/error-codes.md."""
    lines = [
        "# Status and error codes",
        "",
        "Generated from `src/pushgate/core/errors.py` by `pushgate docs error-codes`; do not edit.",
        "",
        "Every answer is JSON with a numeric `status` and a `message`. The HTTP status follows the",
        "class of the error; set `PUSHGATE_ALWAYS_HTTP_200=true` for clients that need HTTP 200",
        "on every answer (the JSON body is the same).",
        "",
        "Under `/api/` and Picky's older `/app/api/` every refusal has this shape, including an",
        "unknown path (404), a method the path does not take (414), a path or query parameter of",
        "the wrong type (406), any other refusal of the HTTP layer (its own code below, else 418)",
        "and a fault (500). The phones' API (`/api/mobile/v1`) answers its own errors as its app",
        "expects (`{\"message\": ...}`); an unknown path or wrong method there, and anywhere",
        "else, is answered as above too.",
        "",
        "## Request-level codes",
        "",
        "| status | HTTP | message | when |",
        "|---|---|---|---|",
    ]
    for info in _TABLE:
        if info.code not in ENTRY_CODES:
            lines.append(_row(info))
    lines += [
        "",
        "## Per-entry codes",
        "",
        "These appear inside `data[]` of a push answer, in the place of the refused entry, with no",
        '`msg_id` and `credit` `"0"`; the other entries are accepted. If no entry is accepted the',
        "whole push is refused (with the shared entry code, or 416) and nothing is charged. The",
        "HTTP column applies when the code becomes the push's own status.",
        "",
        "| status | HTTP | message | when |",
        "|---|---|---|---|",
    ]
    for info in _TABLE:
        if info.code in ENTRY_CODES:
            lines.append(_row(info))
    lines += [
        "",
        "## Delivery report statuses",
        "",
        "In `delivery-report` answers and event webhooks, each message's `status` is Picky's:",
        "",
        "| status | meaning | pushgate states |",
        "|---|---|---|",
        "| 0 | Unknown / pending | queued, sending |",
        "| 4 | Submitted (accepted by the channel) | submitted |",
        "| 1 | Delivered | delivered |",
        "| 3 | Read | read |",
        "| 2 | Failed | failed |",
        "| 5 | Refunded (credit returned; treat as failed) | refunded, expired, cancelled |",
        "",
    ]
    return "\n".join(lines)
