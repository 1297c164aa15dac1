"""A fake "SMS Gateway for Android" phone in private-server mode, talking to a gateway over HTTP
as the app does (channel-wire-formats.md §4.2):

1. ``POST {api}/device`` with ``Authorization: Bearer <private token>`` and
   ``{"name", "pushToken": null}`` → 201 ``{"id", "token", "login", "password"}``; every later
   call carries ``Authorization: Bearer <device token>``.
2. ``GET {api}/settings`` and applies ``messages.send_interval_min/max`` (seconds between two
   sends) like the app's remote settings.
3. Holds ``GET {api}/events`` (Server-Sent Events; no push token, so no FCM) and fetches on
   ``MessageEnqueued``; reconnects when the stream ends, as the app does. Also polls
   ``GET {api}/message`` now and then (the app's periodic pull).
4. Keeps each fetched message once (by id: the server hands unacknowledged ones out again),
   sends them one by one with the send interval between sends, and reports every state by
   ``PATCH {api}/message``: Processed → Sent → Delivered, or Failed with the Android error on
   the recipient, in the app's words ("Send result: RESULT_ERROR_LIMIT_EXCEEDED (Failed
   because we reached the sending queue limit)"); ``states`` holds every state's time, as RFC
   3339 strings or, like older builds, epoch milliseconds.

Configurable misbehaviour for tests: a per-number failure, Android's own send limit
(``RESULT_ERROR_LIMIT_EXCEEDED`` after N sends), late, duplicated or out-of-order reports,
and ``die()``: the phone stops talking mid-batch, keeping what it fetched unreported.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

LIMIT_EXCEEDED = "RESULT_ERROR_LIMIT_EXCEEDED"
# What the app writes on a recipient whose send Android refused: "Send result: " and, per
# SmsManager result code, the text of its MessagesService.resultToErrorMessage (v1.x). Any code
# not listed becomes "Unknown error code: <number>.".
APP_RESULT_TEXTS: dict[str, str] = {
    "MMS_ERROR_UNSPECIFIED": "MMS_ERROR_UNSPECIFIED (Generic MMS transport failure)",
    "MMS_ERROR_INVALID_APN": "MMS_ERROR_INVALID_APN (APN configuration is invalid for MMS)",
    "MMS_ERROR_UNABLE_CONNECT_MMS": "MMS_ERROR_UNABLE_CONNECT_MMS (Unable to connect to MMSC)",
    "MMS_ERROR_HTTP_FAILURE": "MMS_ERROR_HTTP_FAILURE (HTTP error while sending MMS)",
    "MMS_ERROR_IO_ERROR": "MMS_ERROR_IO_ERROR (I/O error while sending MMS)",
    "MMS_ERROR_RETRY": "MMS_ERROR_RETRY (MMS send should be retried)",
    "RESULT_ERROR_NONE": "RESULT_ERROR_NONE (No error)",
    "RESULT_ERROR_GENERIC_FAILURE": "RESULT_ERROR_GENERIC_FAILURE (Generic failure cause)",
    "RESULT_ERROR_RADIO_OFF": (
        "RESULT_ERROR_RADIO_OFF (Failed because radio was explicitly turned off)"),
    "RESULT_ERROR_NULL_PDU": "RESULT_ERROR_NULL_PDU (Failed because no PDU provided)",
    "RESULT_ERROR_NO_SERVICE": (
        "RESULT_ERROR_NO_SERVICE (Failed because service is currently unavailable)"),
    "RESULT_ERROR_LIMIT_EXCEEDED": (
        "RESULT_ERROR_LIMIT_EXCEEDED (Failed because we reached the sending queue limit)"),
    "RESULT_ERROR_FDN_CHECK_FAILURE": (
        "RESULT_ERROR_FDN_CHECK_FAILURE (Failed because FDN is enabled)"),
    "RESULT_ERROR_SHORT_CODE_NOT_ALLOWED": (
        "RESULT_ERROR_SHORT_CODE_NOT_ALLOWED (Failed because user denied the sending of this "
        "short code)"),
    "RESULT_ERROR_SHORT_CODE_NEVER_ALLOWED": (
        "RESULT_ERROR_SHORT_CODE_NEVER_ALLOWED (Failed because the user has denied this app "
        "ever send premium short codes)"),
    "RESULT_RADIO_NOT_AVAILABLE": (
        "RESULT_RADIO_NOT_AVAILABLE (Failed because the radio was not available)"),
    "RESULT_NETWORK_REJECT": "RESULT_NETWORK_REJECT (Failed because of network rejection)",
    "RESULT_INVALID_ARGUMENTS": "RESULT_INVALID_ARGUMENTS (Failed because of invalid arguments)",
    "RESULT_INVALID_STATE": "RESULT_INVALID_STATE (Failed because of an invalid state)",
    "RESULT_NO_MEMORY": "RESULT_NO_MEMORY (Failed because there is no memory)",
    "RESULT_INVALID_SMS_FORMAT": (
        "RESULT_INVALID_SMS_FORMAT (Failed because the SMS format is not valid)"),
    "RESULT_SYSTEM_ERROR": "RESULT_SYSTEM_ERROR (Failed because of a system error)",
    "RESULT_MODEM_ERROR": "RESULT_MODEM_ERROR (Failed because of a modem error)",
    "RESULT_NETWORK_ERROR": "RESULT_NETWORK_ERROR (Failed because of a network error)",
    "RESULT_ENCODING_ERROR": "RESULT_ENCODING_ERROR (Failed because of an encoding error)",
    "RESULT_INVALID_SMSC_ADDRESS": (
        "RESULT_INVALID_SMSC_ADDRESS (Failed because of an invalid SMSC address)"),
    "RESULT_OPERATION_NOT_ALLOWED": (
        "RESULT_OPERATION_NOT_ALLOWED (Failed because the operation is not allowed)"),
    "RESULT_INTERNAL_ERROR": "RESULT_INTERNAL_ERROR (Failed because of an internal error)",
    "RESULT_NO_RESOURCES": "RESULT_NO_RESOURCES (Failed because there are no resources)",
    "RESULT_CANCELLED": "RESULT_CANCELLED (Failed because the operation was cancelled)",
    "RESULT_REQUEST_NOT_SUPPORTED": (
        "RESULT_REQUEST_NOT_SUPPORTED (Failed because the request is not supported)"),
    "RESULT_NO_BLUETOOTH_SERVICE": (
        "RESULT_NO_BLUETOOTH_SERVICE (Failed sending via Bluetooth because the Bluetooth "
        "service is not available)"),
    "RESULT_INVALID_BLUETOOTH_ADDRESS": (
        "RESULT_INVALID_BLUETOOTH_ADDRESS (Failed sending via Bluetooth because the Bluetooth "
        "device address is invalid)"),
    "RESULT_BLUETOOTH_DISCONNECTED": (
        "RESULT_BLUETOOTH_DISCONNECTED (Failed sending via Bluetooth because Bluetooth "
        "disconnected)"),
    "RESULT_UNEXPECTED_EVENT_STOP_SENDING": (
        "RESULT_UNEXPECTED_EVENT_STOP_SENDING (Failed because the user denied or canceled the "
        "dialog displayed for a premium shortcode SMS or rate-limited SMS)"),
    "RESULT_SMS_BLOCKED_DURING_EMERGENCY": (
        "RESULT_SMS_BLOCKED_DURING_EMERGENCY (Failed sending during an emergency call)"),
    "RESULT_SMS_SEND_RETRY_FAILED": "RESULT_SMS_SEND_RETRY_FAILED (Failed to send an SMS retry)",
    "RESULT_REMOTE_EXCEPTION": (
        "RESULT_REMOTE_EXCEPTION (Set by BroadcastReceiver to indicate a remote exception while "
        "handling a message)"),
    "RESULT_NO_DEFAULT_SMS_APP": (
        "RESULT_NO_DEFAULT_SMS_APP (Set by BroadcastReceiver to indicate there's no default SMS "
        "app)"),
    "RESULT_RIL_RADIO_NOT_AVAILABLE": (
        "RESULT_RIL_RADIO_NOT_AVAILABLE (The radio did not start or is resetting)"),
    "RESULT_RIL_SMS_SEND_FAIL_RETRY": (
        "RESULT_RIL_SMS_SEND_FAIL_RETRY (The radio failed to send the SMS and needs to retry)"),
    "RESULT_RIL_NETWORK_REJECT": (
        "RESULT_RIL_NETWORK_REJECT (The SMS request was rejected by the network)"),
    "RESULT_RIL_INVALID_STATE": (
        "RESULT_RIL_INVALID_STATE (The radio returned an unexpected request for the current "
        "state)"),
    "RESULT_RIL_INVALID_ARGUMENTS": (
        "RESULT_RIL_INVALID_ARGUMENTS (The radio received invalid arguments in the request)"),
    "RESULT_RIL_NO_MEMORY": (
        "RESULT_RIL_NO_MEMORY (The radio didn't have sufficient memory to process the request)"),
    "RESULT_RIL_REQUEST_RATE_LIMITED": (
        "RESULT_RIL_REQUEST_RATE_LIMITED (The radio denied the operation due to overly-frequent "
        "requests)"),
    "RESULT_RIL_INVALID_SMS_FORMAT": (
        "RESULT_RIL_INVALID_SMS_FORMAT (The radio returned an error indicating invalid SMS "
        "format)"),
    "RESULT_RIL_SYSTEM_ERR": (
        "RESULT_RIL_SYSTEM_ERR (The radio encountered a platform or system error)"),
    "RESULT_RIL_ENCODING_ERR": "RESULT_RIL_ENCODING_ERR (The SMS message was not encoded properly)",
    "RESULT_RIL_INVALID_SMSC_ADDRESS": (
        "RESULT_RIL_INVALID_SMSC_ADDRESS (The specified SMSC address was invalid)"),
    "RESULT_RIL_MODEM_ERR": (
        "RESULT_RIL_MODEM_ERR (The vendor RIL received an unexpected or incorrect response)"),
    "RESULT_RIL_NETWORK_ERR": (
        "RESULT_RIL_NETWORK_ERR (The radio received an error from the network)"),
    "RESULT_RIL_INTERNAL_ERR": (
        "RESULT_RIL_INTERNAL_ERR (The modem encountered an unexpected error scenario while "
        "handling the request)"),
    "RESULT_RIL_REQUEST_NOT_SUPPORTED": (
        "RESULT_RIL_REQUEST_NOT_SUPPORTED (The request was not supported by the radio)"),
    "RESULT_RIL_INVALID_MODEM_STATE": (
        "RESULT_RIL_INVALID_MODEM_STATE (The radio cannot process the request in the current "
        "modem state)"),
    "RESULT_RIL_NETWORK_NOT_READY": (
        "RESULT_RIL_NETWORK_NOT_READY (The network is not ready to perform the request)"),
    "RESULT_RIL_OPERATION_NOT_ALLOWED": (
        "RESULT_RIL_OPERATION_NOT_ALLOWED (The radio reports the request is not allowed)"),
    "RESULT_RIL_NO_RESOURCES": (
        "RESULT_RIL_NO_RESOURCES (There are insufficient resources to process the request)"),
    "RESULT_RIL_CANCELLED": "RESULT_RIL_CANCELLED (The request has been cancelled)",
    "RESULT_RIL_SIM_ABSENT": (
        "RESULT_RIL_SIM_ABSENT (The radio failed to set the location where the CDMA "
        "subscription can be retrieved because the SIM or RUIM is absent)"),
    "RESULT_RIL_SIMULTANEOUS_SMS_AND_CALL_NOT_ALLOWED": (
        "RESULT_RIL_SIMULTANEOUS_SMS_AND_CALL_NOT_ALLOWED (1X voice and SMS are not allowed "
        "simultaneously)"),
    "RESULT_RIL_ACCESS_BARRED": "RESULT_RIL_ACCESS_BARRED (Access is barred)",
    "RESULT_RIL_BLOCKED_DUE_TO_CALL": (
        "RESULT_RIL_BLOCKED_DUE_TO_CALL (SMS is blocked due to call control, e.g., resource "
        "unavailable in the SMR entity)"),
    "RESULT_RIL_GENERIC_ERROR": (
        "RESULT_RIL_GENERIC_ERROR (A RIL error occurred during the SMS send)"),
}


def app_error(code: str) -> str:
    """The recipient's ``error`` the app reports for a send Android refused with ``code``."""
    return "Send result: " + APP_RESULT_TEXTS[code]


@dataclass
class SentSms:
    message_id: str
    number: str
    text: str
    at: float
    outcome: str            # "Sent" or the error as reported


@dataclass
class PhoneBehaviour:
    # Number → Android result code to fail with, reported in the app's words (``app_error``),
    # or any other text the app writes, reported as it is (None: sent).
    fail: Callable[[str], str | None] = lambda number: None
    # Android refuses every send after this many (RESULT_ERROR_LIMIT_EXCEEDED).
    android_limit: int | None = None
    # Seconds between "Sent" and the delivery report.
    deliver_after: float = 0.0
    # Every PATCH is sent twice.
    report_twice: bool = False
    # Delivered is reported before Sent.
    out_of_order: bool = False
    # Times in ``states`` as epoch milliseconds (older builds) instead of RFC 3339.
    epoch_ms: bool = False
    # Apply the server's send interval (the app does); off: send as fast as fetched.
    honour_interval: bool = True
    # Seconds the radio takes for one send (between Processed and Sent).
    send_seconds: float = 0.0
    # Listen on /events; off: only the periodic pull.
    use_events: bool = True
    poll_seconds: float = 5.0


@dataclass
class FakeAndroidPhone:
    api_url: str
    private_token: str
    name: str = "Pixel 7"
    behaviour: PhoneBehaviour = field(default_factory=PhoneBehaviour)
    transport: httpx.AsyncBaseTransport | None = None
    user_agent: str = "SMSGateway/1.31.0 (fake; Android 14)"

    device_id: str | None = None
    token: str | None = None
    registration: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    # Every message as fetched, by id (the first time it was seen).
    fetched: dict[str, dict[str, Any]] = field(default_factory=dict)
    sent: list[SentSms] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    keepalives: int = 0
    # Event streams opened (the app reconnects when one ends).
    connections: int = 0
    fetches: int = 0
    patches: list[list[dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._client: httpx.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._fetch_lock = asyncio.Lock()
        self._wanted = asyncio.Event()
        self._states: dict[str, dict[str, str | int]] = {}

    # --- life ---------------------------------------------------------------------------------
    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.api_url.rstrip("/"), transport=self.transport, timeout=10.0,
                headers={"User-Agent": self.user_agent})
        return self._client

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def register(self) -> dict[str, Any]:
        response = await self.client.post(
            "/device", json={"name": self.name, "pushToken": None},
            headers={"Authorization": f"Bearer {self.private_token}"})
        assert response.status_code == 201, (response.status_code, response.text)
        self.registration = response.json()
        self.device_id, self.token = self.registration["id"], self.registration["token"]
        return self.registration

    async def start(self) -> None:
        """Register (once), read the settings, then listen, poll and send until stopped."""
        if self.token is None:
            await self.register()
        response = await self.client.get("/settings", headers=self._auth())
        response.raise_for_status()
        self.settings = response.json()
        self._tasks = [asyncio.create_task(self._sender(), name=f"{self.name}-sender"),
                       asyncio.create_task(self._poller(), name=f"{self.name}-poller")]
        if self.behaviour.use_events:
            self._tasks.append(asyncio.create_task(self._listener(), name=f"{self.name}-sse"))
        self._wanted.set()

    async def die(self) -> None:
        """The phone goes silent at once: no more fetches or reports, its event stream
        drops; what it fetched and did not report stays so."""
        # Cancelled again until done: a cancellation racing a wake-up can be lost.
        while any(not task.done() for task in self._tasks):
            for task in self._tasks:
                task.cancel()
            await asyncio.wait(self._tasks, timeout=0.5)
        self._tasks = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    stop = die

    # --- the app's loops ----------------------------------------------------------------------
    async def _listener(self) -> None:
        while True:
            try:
                async with self.client.stream("GET", "/events", headers=self._auth(),
                                              timeout=httpx.Timeout(10.0, read=None)) as stream:
                    if stream.status_code != 200:
                        raise httpx.HTTPStatusError("event stream refused",
                                                    request=stream.request, response=stream)
                    self.connections += 1
                    event = None
                    async for line in stream.aiter_lines():
                        if line.startswith(":"):
                            self.keepalives += 1
                        elif line.startswith("event:"):
                            event = line.split(":", 1)[1].strip()
                        elif line == "" and event is not None:
                            self.events.append(event)
                            if event == "MessageEnqueued":
                                self._wanted.set()
                            event = None
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)   # the app reconnects after a short pause

    async def _poller(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.behaviour.poll_seconds):
                    await self._wanted.wait()
            self._wanted.clear()
            await self.fetch()

    async def fetch(self) -> list[dict[str, Any]]:
        """``GET /message``; new ones go to the send queue (known ids are skipped, as the app
        keeps a message once)."""
        async with self._fetch_lock:
            response = await self.client.get("/message", headers=self._auth())
            response.raise_for_status()
            self.fetches += 1
            items = response.json()
            for item in items:
                if item["id"] in self.fetched:
                    continue
                self.fetched[item["id"]] = item
                self._states[item["id"]] = {"Pending": self._time(time.time())}
                await self._outbox.put(item)
            return items

    async def _sender(self) -> None:
        first = True
        while True:
            item = await self._outbox.get()
            if not first and self.behaviour.honour_interval:
                messages = self.settings.get("messages", {})
                low = float(messages.get("send_interval_min") or 0)
                high = max(low, float(messages.get("send_interval_max") or 0))
                await asyncio.sleep(random.uniform(low, high))
            first = False
            await self._send(item)

    async def _send(self, item: dict[str, Any]) -> None:
        message_id = item["id"]
        number = item["phoneNumbers"][0]
        await self.report(message_id, "Processed")
        if self.behaviour.send_seconds:
            await asyncio.sleep(self.behaviour.send_seconds)
        error = self.behaviour.fail(number.lstrip("+"))
        done = sum(1 for s in self.sent if s.outcome == "Sent")
        if self.behaviour.android_limit is not None and done >= self.behaviour.android_limit:
            error = LIMIT_EXCEEDED
        if error in APP_RESULT_TEXTS:
            error = app_error(error)   # as the app words it; other texts go as they are
        now = time.time()
        text = item.get("textMessage", {}).get("text") or item.get("message") or ""
        self.sent.append(SentSms(message_id, number, text, now, error or "Sent"))
        if error is not None:
            await self.report(message_id, "Failed", error=error)
            return
        if self.behaviour.out_of_order:
            await self.report(message_id, "Delivered", extra_state="Sent")
            await self.report(message_id, "Sent")
            return
        await self.report(message_id, "Sent")
        if self.behaviour.deliver_after:
            task = asyncio.create_task(self._deliver_later(message_id))
            self._tasks.append(task)
        else:
            await self.report(message_id, "Delivered")

    async def _deliver_later(self, message_id: str) -> None:
        await asyncio.sleep(self.behaviour.deliver_after)
        await self.report(message_id, "Delivered")

    # --- reports --------------------------------------------------------------------------------
    def _time(self, ts: float) -> str | int:
        if self.behaviour.epoch_ms:
            return int(ts * 1000)
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")

    async def report(self, message_id: str, state: str, error: str | None = None,
                     extra_state: str | None = None) -> None:
        """One ``PATCH /message`` with the message's state and the times of every state so far."""
        states = self._states.setdefault(message_id, {})
        for name in (extra_state, state):
            if name is not None:
                states.setdefault(name, self._time(time.time()))
        item = self.fetched.get(message_id, {})
        number = (item.get("phoneNumbers") or [None])[0]
        body = [{"id": message_id, "state": state,
                 "recipients": [{"phoneNumber": number, "state": state, "error": error}],
                 "states": dict(states)}]
        await self.patch(body)

    async def patch(self, body: list[dict[str, Any]]) -> None:
        for _ in range(2 if self.behaviour.report_twice else 1):
            self.patches.append(body)
            response = await self.client.patch("/message", json=body, headers=self._auth())
            assert response.status_code == 204, (response.status_code, response.text)
