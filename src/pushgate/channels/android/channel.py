"""Android phones running "SMS Gateway for Android" (capcom6/android-sms-gateway) as an SMS
channel, with pushgate as the app's *private server*.

This is a pull channel: the dispatcher runs no sender for it. Each paired phone fetches its own
messages through the device API (``pushgate.api.devices``), sends them with Android's SMS
manager and reports every state back. So a channel of kind ``android`` is a pool of phones:
messages go to the phones that are online, each phone within its own limits.

Why limits per phone. Android itself lets one app send only 30 SMS per 30 minutes
(``sms_outgoing_check_max_count`` / ``sms_outgoing_check_interval_ms``); beyond that it asks the
user to confirm each message, and an unconfirmed send fails with
``RESULT_ERROR_LIMIT_EXCEEDED``. Carriers also block SIMs that send like a bulk sender. The
defaults therefore stay inside Android's default window:

==========================  =========  ==================================================
config key                  default    meaning
==========================  =========  ==================================================
``per_minute``              2          messages a phone is handed per rolling minute
``per_hour``                30         ... per rolling hour: never more than 30 in any 30 min
``per_day``                 300        ... per rolling day (0 = no limit, for any of the three)
``min_delay_seconds``       15         random pause between two messages of one phone,
``max_delay_seconds``       30         drawn uniformly between these two
``per_fetch``               5          at most this many new messages per fetch
``max_in_flight``           10         a phone holding this many unreported gets no more
``lease_seconds``           600        a message unreported this long goes to another phone
``offline_after_seconds``   120        a phone silent this long is offline (no new work)
``limit_pause_seconds``     1800       a phone that hit Android's limit rests this long
``trouble_pause_seconds``   300        a phone that cannot send (no service, radio off,
                                       no SIM, ...) rests this long
``sticky_seconds``          300        how long a recipient's message waits for "its" phone
``sim_number``              none       SIM slot (1-3) the phones send from; none = app's
``keepalive_seconds``       15         keep-alive comments on the event stream
``events_poll_seconds``     1.0        how often an event stream looks for new work
``private_token``           none       what the app registers with (``pushgate device pair``)
==========================  =========  ==================================================

How a failed send is read. The app reports a send Android refused as text, e.g. ``"Send
result: RESULT_ERROR_LIMIT_EXCEEDED (Failed because we reached the sending queue limit)"``
(``MessagesService.resultToErrorMessage``; an MMS's codes start ``MMS_ERROR_``). The gateway
takes the result code out of that text (``read_app_error``) and acts on whose problem it is:

- the phone's limit (``RESULT_ERROR_LIMIT_EXCEEDED``, ``RESULT_RIL_REQUEST_RATE_LIMITED``, and
  ``RESULT_UNEXPECTED_EVENT_STOP_SENDING``, Android's limit dialog unanswered): the phone rests
  ``limit_pause_seconds``; the message goes back to the queue, not counted as an attempt;
- the phone cannot send (``PHONE_TROUBLE``: radio off, no service, no SIM, barred, FDN, no
  default SMS app, the SIM's SMSC address...): the phone rests ``trouble_pause_seconds``; the
  message goes back to the queue, not counted as an attempt, for another phone or later;
- a passing fault (``TRANSIENT``: network, modem, system or memory errors, "retry" codes): the
  message is retried with the usual back-off, counted as an attempt, and refunded once
  ``PUSHGATE_RETRY_MAX_ATTEMPTS`` run out;
- anything else (``RESULT_ERROR_GENERIC_FAILURE``, which is mostly the carrier refusing the
  message, invalid number or text, short codes refused, a text with no code at all): failed
  and refunded at once, as before.

A phone whose Android limit was raised (``adb shell settings put global
sms_outgoing_check_max_count 1000``) can take higher ``per_*`` values. The app is also told
the delay and the per-minute limit through ``GET /settings`` so it spaces its own sends; the
gateway does not rely on it: it hands a phone no new message before the random delay after the
previous one has passed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, ClassVar

from pushgate.channels.base import (
    Channel,
    ChannelConfigError,
    ChannelEnv,
    ChannelStatus,
    register,
)
from pushgate.channels.config import ChannelConfig, parse_model
from pushgate.core.channels import ChannelSpec
from pushgate.core.models import OutboundMessage, Outcome, SendResult

# Android's own error for a send it refused because the app sent too many (see above).
LIMIT_EXCEEDED = "RESULT_ERROR_LIMIT_EXCEEDED"
MIN_PRIVATE_TOKEN = 16


class PhoneFault(StrEnum):
    """What a failed send says about whose problem it is (see the module docstring)."""

    LIMIT = "limit"           # the phone's sending limit: rest it, re-queue the message
    PHONE = "phone"           # the phone cannot send now: rest it, re-queue the message
    TRANSIENT = "transient"   # a passing fault: retry the message later (an attempt)
    PERMANENT = "permanent"   # the message cannot go: failed and refunded


# What a send the phone reports failed becomes, by whose problem it is.
FAULT_OUTCOMES: dict[PhoneFault, Outcome] = {
    PhoneFault.LIMIT: Outcome.DEFER,
    PhoneFault.PHONE: Outcome.DEFER,
    PhoneFault.TRANSIENT: Outcome.RETRY,
    PhoneFault.PERMANENT: Outcome.FAILED,
}


# SmsManager's result codes, by what they mean for the message (the app's texts name them).
LIMIT_CODES = frozenset({
    LIMIT_EXCEEDED, "RESULT_RIL_REQUEST_RATE_LIMITED", "RESULT_UNEXPECTED_EVENT_STOP_SENDING",
})
PHONE_TROUBLE = frozenset({
    "RESULT_ERROR_RADIO_OFF", "RESULT_ERROR_NO_SERVICE", "RESULT_ERROR_FDN_CHECK_FAILURE",
    "RESULT_RADIO_NOT_AVAILABLE", "RESULT_RIL_RADIO_NOT_AVAILABLE", "RESULT_RIL_SIM_ABSENT",
    "RESULT_RIL_NETWORK_NOT_READY", "RESULT_RIL_ACCESS_BARRED", "RESULT_RIL_INVALID_MODEM_STATE",
    "RESULT_NO_DEFAULT_SMS_APP", "RESULT_INVALID_SMSC_ADDRESS",
    "RESULT_RIL_INVALID_SMSC_ADDRESS", "RESULT_SMS_BLOCKED_DURING_EMERGENCY",
    "RESULT_RIL_BLOCKED_DUE_TO_CALL", "RESULT_RIL_SIMULTANEOUS_SMS_AND_CALL_NOT_ALLOWED",
    "MMS_ERROR_INVALID_APN",
})
TRANSIENT = frozenset({
    "RESULT_RIL_SMS_SEND_FAIL_RETRY", "RESULT_SMS_SEND_RETRY_FAILED", "RESULT_NETWORK_ERROR",
    "RESULT_RIL_NETWORK_ERR", "RESULT_MODEM_ERROR", "RESULT_RIL_MODEM_ERR",
    "RESULT_SYSTEM_ERROR", "RESULT_RIL_SYSTEM_ERR", "RESULT_INTERNAL_ERROR",
    "RESULT_RIL_INTERNAL_ERR", "RESULT_NO_MEMORY", "RESULT_RIL_NO_MEMORY",
    "RESULT_NO_RESOURCES", "RESULT_RIL_NO_RESOURCES", "RESULT_RIL_GENERIC_ERROR",
    "RESULT_INVALID_STATE", "RESULT_RIL_INVALID_STATE", "RESULT_REMOTE_EXCEPTION",
    "RESULT_CANCELLED", "RESULT_RIL_CANCELLED", "RESULT_ERROR_NULL_PDU",
    "MMS_ERROR_UNSPECIFIED", "MMS_ERROR_UNABLE_CONNECT_MMS", "MMS_ERROR_HTTP_FAILURE",
    "MMS_ERROR_IO_ERROR", "MMS_ERROR_RETRY",
})
# Named so every code the app can report is classified on purpose; a code in no set (a new
# Android one) is read as permanent too.
PERMANENT = frozenset({
    "RESULT_ERROR_GENERIC_FAILURE", "RESULT_ERROR_NONE", "RESULT_ERROR_SHORT_CODE_NOT_ALLOWED",
    "RESULT_ERROR_SHORT_CODE_NEVER_ALLOWED", "RESULT_NETWORK_REJECT", "RESULT_RIL_NETWORK_REJECT",
    "RESULT_INVALID_ARGUMENTS", "RESULT_RIL_INVALID_ARGUMENTS", "RESULT_INVALID_SMS_FORMAT",
    "RESULT_RIL_INVALID_SMS_FORMAT", "RESULT_ENCODING_ERROR", "RESULT_RIL_ENCODING_ERR",
    "RESULT_OPERATION_NOT_ALLOWED", "RESULT_RIL_OPERATION_NOT_ALLOWED",
    "RESULT_REQUEST_NOT_SUPPORTED", "RESULT_RIL_REQUEST_NOT_SUPPORTED",
    "RESULT_NO_BLUETOOTH_SERVICE", "RESULT_INVALID_BLUETOOTH_ADDRESS",
    "RESULT_BLUETOOTH_DISCONNECTED",
})
# A result code inside the app's text ("Send result: RESULT_… (why)"), or alone (older
# builds and other clients send the bare code).
_RESULT_CODE = re.compile(r"\b((?:RESULT|MMS_ERROR)_[A-Z0-9_]+)\b")
# The app's own refusals before Android is asked, when the phone has no SIM to send from
# ("Can't send message: No SIMs found", "... SIM 2 not found", "SIM selection requires ...").
_NO_SIM = re.compile(r"No SIMs found|SIM \d+ not found|SIM selection (?:requires|available)")


@dataclass(frozen=True, slots=True)
class AppError:
    """A phone's report of a failed send, read: the result code in it (None if it names
    none), what that means, and the app's whole text."""

    code: str | None
    fault: PhoneFault
    text: str


def read_app_error(error: str | None) -> AppError:
    text = (error or "").strip()
    found = _RESULT_CODE.search(text)
    code = found.group(1) if found else None
    if code in LIMIT_CODES:
        fault = PhoneFault.LIMIT
    elif code in PHONE_TROUBLE:
        fault = PhoneFault.PHONE
    elif code in TRANSIENT:
        fault = PhoneFault.TRANSIENT
    elif code is None and _NO_SIM.search(text):
        fault = PhoneFault.PHONE
    else:
        fault = PhoneFault.PERMANENT
    return AppError(code, fault, text)

_DEFAULTS: dict[str, Any] = {
    "per_minute": 2,
    "per_hour": 30,
    "per_day": 300,
    "min_delay_seconds": 15.0,
    "max_delay_seconds": 30.0,
    "per_fetch": 5,
    "max_in_flight": 10,
    "lease_seconds": 600.0,
    "offline_after_seconds": 120.0,
    "limit_pause_seconds": 1800.0,
    "trouble_pause_seconds": 300.0,
    "sticky_seconds": 300.0,
    "keepalive_seconds": 15.0,
    "events_poll_seconds": 1.0,
}
_COUNTS = ("per_minute", "per_hour", "per_day", "per_fetch", "max_in_flight")
_POSITIVE = ("per_fetch", "max_in_flight", "lease_seconds", "offline_after_seconds",
             "keepalive_seconds", "events_poll_seconds")


class AndroidConfig(ChannelConfig, kw_only=True):
    """A phone channel's pacing, claim and health settings (module docstring)."""

    per_minute: int = _DEFAULTS["per_minute"]
    per_hour: int = _DEFAULTS["per_hour"]
    per_day: int = _DEFAULTS["per_day"]
    min_delay_seconds: float = _DEFAULTS["min_delay_seconds"]
    max_delay_seconds: float = _DEFAULTS["max_delay_seconds"]
    per_fetch: int = _DEFAULTS["per_fetch"]
    max_in_flight: int = _DEFAULTS["max_in_flight"]
    lease_seconds: float = _DEFAULTS["lease_seconds"]
    offline_after_seconds: float = _DEFAULTS["offline_after_seconds"]
    limit_pause_seconds: float = _DEFAULTS["limit_pause_seconds"]
    trouble_pause_seconds: float = _DEFAULTS["trouble_pause_seconds"]
    sticky_seconds: float = _DEFAULTS["sticky_seconds"]
    keepalive_seconds: float = _DEFAULTS["keepalive_seconds"]
    events_poll_seconds: float = _DEFAULTS["events_poll_seconds"]
    sim_number: int | None = None
    private_token: str | None = None

    def __repr__(self) -> str:
        # Configs end up in tracebacks and logs: never show the token.
        return "AndroidConfig(private_token redacted)"

    @classmethod
    def normalise(cls, config: dict[str, Any]) -> dict[str, Any]:
        out = {**_DEFAULTS, **config}
        for key in _DEFAULTS:
            value = out[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ChannelConfigError(f"`{key}` must be a number, got {value!r}")
            if key in _COUNTS:
                if value != int(value):
                    raise ChannelConfigError(f"`{key}` must be a whole number, got {value!r}")
                out[key] = int(value)
            else:
                out[key] = float(value)
            if out[key] < 0 or (key in _POSITIVE and out[key] == 0):
                bound = "above 0" if key in _POSITIVE else "0 or more"
                raise ChannelConfigError(f"`{key}` must be {bound}, got {value!r}")
        if out["min_delay_seconds"] > out["max_delay_seconds"]:
            raise ChannelConfigError("`min_delay_seconds` is above `max_delay_seconds`")
        sim = out.get("sim_number")
        if sim is not None and (isinstance(sim, bool) or sim not in (1, 2, 3)):
            raise ChannelConfigError(f"`sim_number` must be 1, 2 or 3, got {sim!r}")
        out["sim_number"] = sim
        token = out.get("private_token")
        if token is not None and (not isinstance(token, str) or len(token) < MIN_PRIVATE_TOKEN):
            raise ChannelConfigError(
                f"`private_token` must be a string of at least {MIN_PRIVATE_TOKEN} characters")
        out["private_token"] = token
        return out


@dataclass(frozen=True, slots=True)
class PhoneSettings:
    """A phone channel's config, checked and with its defaults filled in."""

    per_minute: int
    per_hour: int
    per_day: int
    min_delay_seconds: float
    max_delay_seconds: float
    per_fetch: int
    max_in_flight: int
    lease_seconds: float
    offline_after_seconds: float
    limit_pause_seconds: float
    trouble_pause_seconds: float
    sticky_seconds: float
    keepalive_seconds: float
    events_poll_seconds: float
    sim_number: int | None
    private_token: str | None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PhoneSettings:
        """From a stored config (unknown keys ignored, logged)."""
        checked = parse_model(AndroidConfig, config, kind=AndroidChannel.kind, stored=True)
        return cls(**{f.name: getattr(checked, f.name) for f in fields(cls)})


@register
class AndroidChannel(Channel):
    kind = "android"
    config_model = AndroidConfig
    pull: ClassVar[bool] = True

    def __init__(self, spec: ChannelSpec, env: ChannelEnv | None = None) -> None:
        super().__init__(spec, env)
        self.settings = PhoneSettings.from_config(spec.config)


    async def send(self, message: OutboundMessage) -> SendResult:
        # Phones fetch their messages; a dispatcher that calls this anyway must not spend an
        # attempt on the message, only give it back.
        return SendResult.defer(message.id, "pull_channel",
                                "android channels are sent by their phones", retry_after=60.0)

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        return [await self.send(m) for m in messages]

    async def status(self) -> ChannelStatus:
        # Which phones are online is in the store; ``device-status`` computes it from there.
        return ChannelStatus(connected=False, state="OFFLINE",
                             detail="phones report through the device API")
