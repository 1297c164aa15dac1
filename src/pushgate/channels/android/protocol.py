"""The payloads the app exchanges with its private server: the messages a fetch hands a
phone (``MobileMessage``), the app's remote settings, its registration and device bodies, and
when an event stream tells a phone to fetch (``Wakeups``).

Times go out as RFC 3339 in UTC. Facts a phone sends about itself (SIM cards, battery,
network) are stored and shown again by ``device-status``, so they are refused when nested
deeper than ``MAX_HEALTH_DEPTH`` or holding what a column or the JSON encoder refuses.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import msgspec

from pushgate.channels.android.channel import PhoneSettings
from pushgate.core.devices import DeviceMessage

# The app's battery, network and SIM card facts are a level or two deep; they are stored and
# shown again in device-status, whose JSON encoder stops at 255 levels.
MAX_HEALTH_DEPTH = 16


class RegisterBody(msgspec.Struct):
    name: str | None = None
    pushToken: str | None = None  # noqa: N815 - the app's field names
    simCards: list[Any] | None = None  # noqa: N815


class DevicePatch(msgspec.Struct):
    id: str | None = None
    pushToken: str | None = None  # noqa: N815
    battery: dict[str, Any] | None = None
    network: dict[str, Any] | str | None = None


register_decoder = msgspec.json.Decoder(RegisterBody)
patch_decoder = msgspec.json.Decoder(DevicePatch)


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def message_item(message: DeviceMessage, settings: PhoneSettings) -> dict[str, Any]:
    """A pending message as the app reads it (``MobileMessage``); ``message`` is the legacy
    text field that older app versions read instead of ``textMessage``."""
    return {
        "id": str(message.id),
        "message": message.text,
        "textMessage": {"text": message.text},
        "phoneNumbers": [f"+{message.number}"],
        "simNumber": settings.sim_number,
        "withDeliveryReport": True,
        "isEncrypted": False,
        "priority": message.priority,
        "ttl": None,
        "validUntil": rfc3339(message.expires_at),
        "scheduleAt": None,
        "state": "Pending",
        "createdAt": rfc3339(message.created_at),
    }


def app_settings(settings: PhoneSettings) -> dict[str, Any]:
    """The app's remote settings: its own spacing of sends and its own per-minute limit."""
    # Whole seconds in the app; the gateway spaces its hand-outs by the exact delays anyway.
    messages: dict[str, Any] = {
        "send_interval_min": int(settings.min_delay_seconds),
        "send_interval_max": max(int(settings.min_delay_seconds),
                                 int(settings.max_delay_seconds + 0.5)),
    }
    if settings.per_minute:
        messages.update(limit_period="PerMinute", limit_value=settings.per_minute)
    else:
        messages.update(limit_period="Disabled", limit_value=0)
    return {"messages": messages}


def nested_deeper(value: Any, limit: int) -> bool:
    """Whether decoded JSON ``value`` has lists or objects nested more than ``limit`` deep."""
    if not isinstance(value, (dict, list)):
        return False
    if limit <= 0:
        return True
    children = value.values() if isinstance(value, dict) else value
    return any(nested_deeper(child, limit - 1) for child in children)


def unstorable(value: Any) -> str | None:
    """What in decoded JSON ``value`` cannot be stored and shown again, or None: a NUL
    character (PostgreSQL's text and jsonb columns refuse it) or an integer past 64 bits
    (device-status's JSON encoder refuses it)."""
    if isinstance(value, str):
        return "a NUL (U+0000) character" if "\x00" in value else None
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return "an integer out of the 64-bit range"
    if isinstance(value, dict):
        return next((p for k, v in value.items() if (p := unstorable(k) or unstorable(v))),
                    None)
    if isinstance(value, list):
        return next((p for item in value if (p := unstorable(item))), None)
    return None


def registration_problem(body: RegisterBody) -> str | None:
    """Why a registration's facts cannot be kept (the 400's message), or None."""
    if nested_deeper(body.simCards, MAX_HEALTH_DEPTH):
        return f"invalid request: `simCards` nested deeper than {MAX_HEALTH_DEPTH} levels"
    problem = unstorable([body.name, body.pushToken, body.simCards])
    return None if problem is None else f"invalid request: {problem}"


def patch_problem(body: DevicePatch) -> str | None:
    """Why a ``PATCH /device``'s facts cannot be kept (the 400's message), or None."""
    if nested_deeper(body.battery, MAX_HEALTH_DEPTH) \
            or nested_deeper(body.network, MAX_HEALTH_DEPTH):
        return (f"invalid request: `battery` or `network` nested deeper "
                f"than {MAX_HEALTH_DEPTH} levels")
    problem = unstorable([body.id, body.pushToken, body.battery, body.network])
    return None if problem is None else f"invalid request: {problem}"


class Wakeups:
    """In-process wake-ups of event streams (a resume, a re-queued message), and when each
    device last made progress (took new messages, or reported one sent or failed): a stream
    announces again only after progress, so a phone that holds all it may hold is not told
    to fetch over and over."""

    def __init__(self) -> None:
        self.events: dict[int, set[asyncio.Event]] = defaultdict(set)
        self.progress: dict[str, float] = {}

    def subscribe(self, channel_id: int) -> asyncio.Event:
        event = asyncio.Event()
        self.events[channel_id].add(event)
        return event

    def unsubscribe(self, channel_id: int, event: asyncio.Event) -> None:
        self.events[channel_id].discard(event)
        if not self.events[channel_id]:
            del self.events[channel_id]

    def notify(self, channel_id: int) -> None:
        for event in self.events.get(channel_id, ()):
            event.set()
