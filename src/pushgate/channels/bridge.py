"""What the WhatsApp Web bridge connectors (WAHA, Evolution API) have in common.

Both bridges drive a WhatsApp Web session on the customer's own phone number over a small REST
API, so both connectors follow the same plan, implemented here once:

- **Send only while the session is connected.** Before a send the session state is read (and
  cached for ``session_cache_seconds``, so a batch costs one look-up). A session that is starting,
  logged out or stopped makes the message wait (``Outcome.DEFER``: not an attempt) instead of
  failing; a send refused with an error is re-checked against a fresh state for the same
  reason, because a session that dropped after the cached look-up answers sends with errors.
- **Classify bridge answers the same way:** 401 pauses the channel (the operator must fix the key),
  429/408/5xx and network errors are retryable, other 4xx are permanent — each only while a
  fresh look-up still finds the session connected; a bridge that is down or unreachable makes
  the message wait instead.
- **One message may be two sends** (a text beside an audio or a document goes as a text message
  of its own). The parts already sent are remembered per message, so a retry after the second
  part failed does not send the first one again (a doubled message is as bad as a lost one).
- **Device state** for Picky's ``device-status``: CONNECTED, TIMEOUT (starting), UNPAIRED (needs a
  QR scan), OFFLINE (stopped, failed, unreachable) with the reason.
- **Device commands** for Picky's ``device-action`` (``device_action``): each subclass maps a
  command onto one request of its session API (``action_call``) or says why it has none; the
  request's failure is raised (``ActionFailed``: refused, or no answer), never retried, so the
  caller knows nothing was done. The table is in docs/channels.md.

- **Callbacks are authenticated by default.** A channel takes a shared secret (WAHA's webhook
  HMAC key, Evolution's webhook token) that ``channel add`` generates when none is given; a
  channel without one refuses every callback (403) unless its config says
  ``"insecure_callbacks": true`` (local development), which is logged as a warning whenever the
  channel is loaded. Channels stored before secrets were generated have none: their callbacks are
  refused, with a log line naming ``pushgate channel callback-secret``.

WhatsApp bans numbers that send fast, so both kinds default to 15 s between messages plus up to
30 s of random jitter (``default_delay_ms`` / ``default_jitter_ms``, applied by ``channel add``;
the dispatcher paces).
"""

from __future__ import annotations

import asyncio
import logging
import math
import mimetypes
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import httpx
import msgspec
import orjson

from pushgate.channels.base import (
    CallbackRejected,
    CallbackRequest,
    Channel,
    ChannelConfigError,
    ChannelEnv,
    ChannelStatus,
)
from pushgate.channels.config import ChannelConfig, parse_model
from pushgate.core.channels import ChannelSpec, media_kind_from_url
from pushgate.core.checks import CheckUnavailable, NumberCheck
from pushgate.core.models import OutboundMessage, SendResult

# Picky device states (``ChannelStatus.state``).
CONNECTED = "CONNECTED"
TIMEOUT = "TIMEOUT"
UNPAIRED = "UNPAIRED"
OFFLINE = "OFFLINE"

_DEFAULT_MIMETYPES = {
    "image": "image/jpeg",
    "video": "video/mp4",
    "audio": "audio/mpeg",
    "document": "application/octet-stream",
}
# Picky's media extensions, pinned so the MIME type does not depend on the host's mime.types.
_EXTENSION_MIMETYPES = {
    "jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif",
    "webp": "image/webp", "mp4": "video/mp4", "3gp": "video/3gpp", "3gpp": "video/3gpp",
    "mp3": "audio/mpeg", "wav": "audio/wav", "aac": "audio/aac", "m4a": "audio/mp4",
    "amr": "audio/amr", "ogg": "audio/ogg", "oga": "audio/ogg", "opus": "audio/ogg",
    "pdf": "application/pdf",
}
# Extensions of audio that WhatsApp plays as a voice note (OGG container, Opus codec).
VOICE_EXTENSIONS = frozenset({"ogg", "oga", "opus"})
VOICE_MIMETYPE = "audio/ogg; codecs=opus"
# Bridge answers that mean "try again later" rather than "this message is bad".
_RETRYABLE_STATUS = frozenset({408, 425, 429})
# How many half-sent messages (first part out, second pending) are remembered at most.
_PARTIAL_LIMIT = 10_000

log = logging.getLogger("pushgate.channels.bridge")


class BridgeConfig(ChannelConfig, kw_only=True):
    """Settings shared by both bridges (``channel add --config``)."""

    base_url: str
    api_key: str
    timeout_seconds: float = 30.0
    # How long a session look-up is trusted before the next send reads it again.
    session_cache_seconds: float = 2.0
    # How long a message waits when the session is not connected.
    session_retry_seconds: float = 5.0
    link_preview: bool = False
    # Accept callbacks that carry no secret, from anyone (local development only).
    insecure_callbacks: bool = False

    def __post_init__(self) -> None:
        scheme = urlsplit(self.base_url).scheme
        if scheme not in ("http", "https") or not urlsplit(self.base_url).netloc:
            raise ValueError("base_url must be an http(s) URL, e.g. http://127.0.0.1:3000")
        self.base_url = self.base_url.rstrip("/")
        if not self.api_key.strip():
            raise ValueError("api_key must not be empty")
        if self.timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        if self.session_cache_seconds < 0 or self.session_retry_seconds <= 0:
            raise ValueError("session_cache_seconds must be >= 0, session_retry_seconds > 0")

    def __repr__(self) -> str:
        # Configs end up in tracebacks and logs: never show the secrets.
        return f"{type(self).__name__}(base_url={self.base_url!r}, secrets redacted)"


@dataclass(frozen=True, slots=True)
class SessionState:
    """The bridge session as last read."""

    state: str                       # Picky device state
    detail: str                      # human-readable, names the provider status
    provider_status: str             # the bridge's own word (WORKING, open, UNREACHABLE, ...)
    connected_number: str | None = None
    unauthorized: bool = False

    @property
    def connected(self) -> bool:
        return self.state == CONNECTED


@dataclass(frozen=True, slots=True)
class ActionCall:
    """The bridge request a ``device-action`` command becomes (path under the base URL)."""

    method: str
    path: str


@dataclass(frozen=True, slots=True)
class ActionDone:
    """A command the bridge accepted: the request made and the bridge's own word on it."""

    command: str
    request: str                     # "POST /api/sessions/default/restart"
    detail: str


class ActionUnsupported(Exception):
    """The bridge has no API for this command; nothing was sent."""


class ActionFailed(Exception):
    """The bridge was asked and did not do it; ``reached`` is False when no answer came."""

    def __init__(self, detail: str, *, reached: bool) -> None:
        super().__init__(detail)
        self.reached = reached


@dataclass(frozen=True, slots=True)
class SendCall:
    """One bridge request of a message: ``part`` 0 is the first send, 1 the separate text."""

    part: int
    path: str
    body: dict[str, Any]


def digits(jid: str | None) -> str | None:
    """The phone number in a WhatsApp id: ``7911111:3@s.whatsapp.net`` → ``7911111``."""
    if not jid:
        return None
    user = jid.split("@", 1)[0].split(":", 1)[0]
    number = "".join(ch for ch in user if ch.isdigit())
    return number or None


def media_file(url: str, kind: str) -> tuple[str, str]:
    """A file name and MIME type for a media URL (bridges must tell WhatsApp both)."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    guessed = _EXTENSION_MIMETYPES.get(extension) or (
        mimetypes.guess_type(name)[0] if extension else None)
    default = _DEFAULT_MIMETYPES.get(kind, _DEFAULT_MIMETYPES["document"])
    # A signed gateway URL or an odd extension must not turn an image into "text/html".
    if guessed is None or (kind != "document" and not guessed.startswith(f"{kind}/")):
        mimetype = default
    else:
        mimetype = guessed
    if not extension and mimetype != _DEFAULT_MIMETYPES["document"]:
        name = f"{name or kind}{mimetypes.guess_extension(mimetype) or ''}"
    return name or kind, mimetype


def is_voice(url: str) -> bool:
    path = urlsplit(url).path
    return path.rsplit(".", 1)[-1].lower() in VOICE_EXTENSIONS if "." in path else False


def error_text(response: httpx.Response) -> str:
    """The bridge's error message: WAHA (NestJS) ``{"message", "error"}``, Evolution
    ``{"response": {"message": [...] | "..."}}``; else the raw body, shortened."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if not isinstance(body, dict):
        return str(body)[:300]
    inner = body.get("response")
    candidates = [inner.get("message") if isinstance(inner, dict) else None,
                  body.get("message"), body.get("error"), body.get("exception")]
    for value in candidates:
        if isinstance(value, dict):
            value = value.get("message")
        if isinstance(value, list):
            value = "; ".join(v if isinstance(v, str) else msgspec.json.encode(v).decode()
                              for v in value)
        if value:
            return str(value)[:300]
    return response.text[:300]


def json_event(request: CallbackRequest) -> dict[str, Any] | None:
    """A bridge webhook's JSON object (None for other JSON); a body that is not JSON is
    refused 400."""
    try:
        event = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        raise CallbackRejected(400, "body is not JSON") from None
    return event if isinstance(event, dict) else None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class BridgeChannel(Channel):
    """Base of the WhatsApp Web bridge connectors; subclasses speak their bridge's dialect."""

    concurrency = 1
    # A message of two parts is two WhatsApp messages: with a rate set, each part takes a
    # permit as it goes out (the delay and jitter stay between messages, in the dispatcher).
    paces_requests: ClassVar[bool] = True
    default_delay_ms: ClassVar[int] = 15_000
    default_jitter_ms: ClassVar[int] = 30_000
    config_type: ClassVar[type[BridgeConfig]] = BridgeConfig
    config_model: ClassVar[type[ChannelConfig]] = BridgeConfig
    # "WAHA session", "Evolution instance": used in messages.
    session_noun: ClassVar[str] = "session"

    def __init__(self, spec: ChannelSpec, env: ChannelEnv | None = None) -> None:
        super().__init__(spec, env)
        config = self.stored_config()
        assert isinstance(config, self.config_type)
        self.config = config
        if not self.callback_secret() and self.config.insecure_callbacks:
            log.warning("channel %s (%s): insecure_callbacks is on: callbacks are accepted "
                        "UNSIGNED, from anyone who can reach the gateway; use it for local "
                        "development only (`pushgate channel callback-secret %s` sets a "
                        "secret)", spec.id, self.kind, spec.id)
        elif not self.callback_secret():
            log.warning("channel %s (%s) has no %s: its callbacks are refused (403); run "
                        "`pushgate channel callback-secret %s` and set what it prints on the "
                        "bridge", spec.id, self.kind, self.callback_secret_key, spec.id)
        self._client: httpx.AsyncClient | None = None
        self._session: SessionState | None = None
        self._session_read_at = -math.inf
        self._session_lock = asyncio.Lock()
        # message id → {part: provider id} of parts already out, while a later part is pending.
        self._partial: OrderedDict[int, dict[int, str | None]] = OrderedDict()

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        parsed = parse_model(cls.config_type, config, kind=cls.kind)
        if parsed.insecure_callbacks and getattr(parsed, cls.callback_secret_key, None):
            raise ChannelConfigError(f"insecure_callbacks cannot be true with a "
                                     f"{cls.callback_secret_key}: give one or the other")
        return msgspec.structs.asdict(parsed)

    # -- callbacks -----------------------------------------------------------------------------

    def callback_secret(self) -> str | None:
        secret = getattr(self.config, self.callback_secret_key, None)
        return secret if isinstance(secret, str) and secret else None

    def verify_callback(self, request: CallbackRequest) -> None:
        """Refuse (``CallbackRejected``) a callback that does not carry the channel's secret;
        with no secret configured, refuse every callback unless ``insecure_callbacks``."""
        secret = self.callback_secret()
        if secret:
            self.check_secret(request, secret)
        elif not self.config.insecure_callbacks:
            raise CallbackRejected(
                403, f"channel {self.spec.id} has no {self.callback_secret_key}, so it takes no "
                f"callbacks; run `pushgate channel callback-secret {self.spec.id}` (or set "
                f"\"insecure_callbacks\": true for local development)")

    def check_secret(self, request: CallbackRequest, secret: str) -> None:
        """Raise ``CallbackRejected`` (401) unless ``request`` carries ``secret`` the way the
        bridge sends it."""
        raise NotImplementedError

    # -- subclass hooks ------------------------------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        raise NotImplementedError

    def session_path(self) -> str:
        raise NotImplementedError

    def session_name(self) -> str:
        raise NotImplementedError

    def session_from(self, body: Any) -> SessionState:
        """The state from the bridge's session endpoint answer (HTTP 200)."""
        raise NotImplementedError

    async def calls(self, message: OutboundMessage) -> list[SendCall] | SendResult:
        """The requests that send ``message``, or the reason it cannot be sent."""
        raise NotImplementedError

    def provider_id(self, response: httpx.Response) -> str | None:
        """The message id in a successful send's answer (None when the bridge gave none)."""
        raise NotImplementedError

    def error_code(self, response: httpx.Response) -> str:
        return str(response.status_code)

    def action_call(self, command: str) -> ActionCall | str:
        """The request for Picky's ``device-action`` ``command``, or why the bridge has none."""
        raise NotImplementedError

    # -- connection ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._http()

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        # Created on first use too, so ``status()`` works on a channel nobody started.
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.config.base_url,
                                             headers=self.auth_headers(),
                                             timeout=self.config.timeout_seconds)
        return self._client

    # -- session -------------------------------------------------------------------------------

    async def session(self, fresh: bool = False) -> SessionState:
        """The session state, read again when older than ``session_cache_seconds``."""
        async with self._session_lock:
            age = time.monotonic() - self._session_read_at
            if fresh or self._session is None or age >= self.config.session_cache_seconds:
                self._session = await self._read_session()
                self._session_read_at = time.monotonic()
            return self._session

    def forget_session(self) -> None:
        """Read the session again before the next send (a session event arrived)."""
        self._session_read_at = -math.inf

    async def _read_session(self) -> SessionState:
        label = f"{self.session_noun} {self.session_name()!r}"
        try:
            response = await self._http().get(self.session_path())
        except httpx.HTTPError as exc:
            return SessionState(OFFLINE, f"bridge unreachable: {_describe(exc)}", "UNREACHABLE")
        if response.status_code == 401:
            return SessionState(OFFLINE, "bridge refused the API key (HTTP 401)", "UNAUTHORIZED",
                                unauthorized=True)
        if response.status_code == 404:
            return SessionState(OFFLINE, f"{label} not found on the bridge", "NOT_FOUND")
        if not response.is_success:
            return SessionState(OFFLINE, f"bridge answered HTTP {response.status_code} for "
                                f"{label}: {error_text(response)}", f"HTTP_{response.status_code}")
        try:
            body = response.json()
        except ValueError:
            return SessionState(OFFLINE, f"bridge answered {label} with a non-JSON body",
                                "BAD_ANSWER")
        return self.session_from(body)

    async def status(self) -> ChannelStatus:
        session = await self.session(fresh=True)
        return ChannelStatus(connected=session.connected, detail=session.detail,
                             state=session.state, connected_number=session.connected_number,
                             extra={"bridge_status": session.provider_status})

    async def device_action(self, command: str) -> ActionDone:
        """Run a ``device-action`` command on the session as one bridge request. Raises
        ``ActionUnsupported`` before any request when the bridge has no API for it, and
        ``ActionFailed`` when the bridge refused it or did not answer."""
        call = self.action_call(command)
        if isinstance(call, str):
            raise ActionUnsupported(call)
        label = f"{self.session_noun} {self.session_name()!r}"
        request = f"{call.method} {call.path}"
        try:
            response = await self._http().request(call.method, call.path)
        except httpx.HTTPError as exc:
            raise ActionFailed(f"bridge unreachable for {request}: {_describe(exc)}",
                               reached=False) from None
        # Whatever the answer, the session may have changed: the next send reads it again.
        self.forget_session()
        if not response.is_success:
            raise ActionFailed(f"bridge answered HTTP {response.status_code} to {request} "
                               f"({label}): {error_text(response)}", reached=True)
        return ActionDone(command, request, f"{label}: {self.action_answer(response)}")

    def action_answer(self, response: httpx.Response) -> str:
        """The bridge's answer to a command, in a few words."""
        return f"HTTP {response.status_code}"

    # -- number filter -------------------------------------------------------------------------

    async def check_numbers(self, numbers: Sequence[str]) -> list[NumberCheck]:
        """Ask the session which numbers are on WhatsApp (``ask_numbers``). A session that is
        not connected, or a bridge that fails, raises ``CheckUnavailable``: the checks wait."""
        session = await self.session()
        if not session.connected:
            raise CheckUnavailable(session.detail)
        return await self.ask_numbers(list(numbers))

    async def ask_numbers(self, numbers: list[str]) -> list[NumberCheck]:
        """The bridge's contact check for ``numbers``, in order."""
        raise NotImplementedError

    async def check_call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One contact-check request: the answer's JSON, or ``CheckUnavailable``."""
        try:
            response = await self._http().request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CheckUnavailable(f"bridge unreachable: {_describe(exc)}") from None
        if not response.is_success:
            raise CheckUnavailable(f"bridge answered HTTP {response.status_code} to "
                                   f"{method} {path}: {error_text(response)}")
        try:
            return response.json()
        except ValueError:
            raise CheckUnavailable(f"bridge answered {method} {path} without JSON") from None

    def _waiting(self, message: OutboundMessage, session: SessionState) -> SendResult:
        if session.unauthorized:
            return SendResult.pause(message.id, "401", session.detail)
        return SendResult.defer(message.id, f"session-{session.provider_status.lower()}",
                                f"{session.detail}; the message waits for it",
                                retry_after=self.config.session_retry_seconds)

    # -- sending -------------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> SendResult:
        session = await self.session()
        if not session.connected:
            return self._waiting(message, session)
        planned = await self.calls(message)
        if isinstance(planned, SendResult):
            return await self._unless_session_dropped(message, planned)
        if not planned:
            return SendResult.failed(message.id, "empty", "message has neither text nor media")
        done = self._partial.pop(message.id, {})
        for call in planned:
            if call.part in done:
                continue
            # Each part is a WhatsApp message: each takes the channel's rate permit.
            answer = await self.request(message.id, "POST", call.path, json=call.body,
                                        extensions=self.permit_extensions())
            if isinstance(answer, SendResult):
                if done:
                    self._remember_partial(message.id, done)
                return await self._unless_session_dropped(message, answer)
            done[call.part] = self.provider_id(answer)
        known = [(part, pid) for part, pid in sorted(done.items()) if pid]
        first = known[0][1] if known else None
        refs = known if len(planned) > 1 else []
        return SendResult.sent(message.id, first, provider_refs=refs)

    def _remember_partial(self, message_id: int, done: dict[int, str | None]) -> None:
        self._partial[message_id] = done
        while len(self._partial) > _PARTIAL_LIMIT:
            self._partial.popitem(last=False)

    async def _unless_session_dropped(self, message: OutboundMessage,
                                      failure: SendResult) -> SendResult:
        """A bridge whose session dropped since the cached look-up refuses sends with errors
        that look like the message's fault: check again, and let the message wait if so."""
        if failure.kind.went_out or failure.kind.waits:
            return failure
        session = await self.session(fresh=True)
        return failure if session.connected else self._waiting(message, session)

    async def request(self, message_id: int, method: str, path: str,
                      **kwargs: Any) -> httpx.Response | SendResult:
        """One bridge call for a message: the response when it succeeded, else the outcome."""
        try:
            response = await self._http().request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            return SendResult.retry(message_id, "network",
                                    f"bridge call failed: {_describe(exc)}")
        if response.is_success:
            return response
        status = response.status_code
        detail = f"HTTP {status}: {error_text(response)}"
        if status == 401:
            return SendResult.pause(message_id, "401", f"bridge refused the API key ({detail})")
        if status >= 500 or status in _RETRYABLE_STATUS:
            return SendResult.retry(message_id, str(status), detail,
                                    retry_after=_retry_after(response))
        return SendResult.failed(message_id, self.error_code(response), detail)


def media_kind(message: OutboundMessage) -> str:
    return message.media_kind or media_kind_from_url(message.media_url or "").value
