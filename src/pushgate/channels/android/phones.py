"""A channel's phones: pairing one with the channel's private token, what each is (its app
version, SIM number), and whether the channel's phones are connected (Picky's
``device-status``).

Pairing: the app registers with a phone channel's ``private_token`` (``pushgate device
pair`` prints it) and gets its own bearer token, stored hashed and revocable; pushgate has no
user accounts, so the login names the channel and the password is empty.
"""

from __future__ import annotations

import hmac
import re
import secrets
from datetime import datetime
from typing import Any

from pushgate.channels.android.channel import PhoneSettings
from pushgate.channels.android.protocol import RegisterBody
from pushgate.channels.base import channel_class
from pushgate.core.channels import ChannelSpec
from pushgate.core.devices import Device
from pushgate.store.base import Store

_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-"
_VERSION = re.compile(r"(?:sms|gateway)[\w.\- ]*/v?(\d+(?:\.\d+)+)", re.IGNORECASE)


def is_phone(channel: ChannelSpec) -> bool:
    """Whether ``channel``'s connector is a pull channel (phones fetch its messages)."""
    try:
        return channel_class(channel.kind).pull
    except ValueError:
        return False


def channel_for_private_token(channels: list[ChannelSpec], token: str) -> ChannelSpec | None:
    """The phone channel whose ``private_token`` is ``token``, or None."""
    phones = [c for c in channels if is_phone(c)]
    # Every channel is compared, in constant time each: no early exit tells which matched.
    matches = [c for c in phones if hmac.compare_digest(
        (c.config.get("private_token") or "").encode(), token.encode())
        and c.config.get("private_token")]
    return matches[0] if token and matches else None


def new_device_id() -> str:
    # The first character is alphanumeric so that an id never reads as an option on the
    # command line (`pushgate device revoke -x…` would be taken for a flag).
    return secrets.choice(_ID_ALPHABET[:62]) + "".join(
        secrets.choice(_ID_ALPHABET) for _ in range(20))


def new_device(channel: ChannelSpec, body: RegisterBody, user_agent: str,
               now: float) -> tuple[Device, str]:
    """A phone paired with ``channel``, and the bearer token it is given (stored hashed)."""
    device = Device(id=new_device_id(), channel_id=channel.id, project_id=channel.project_id,
                    name=(body.name or "")[:128], created_at=now, last_seen_at=now,
                    push_token=body.pushToken, user_agent=user_agent,
                    health={"simCards": body.simCards} if body.simCards else None)
    return device, secrets.token_urlsafe(16)


async def private_token(store: Store, channel: ChannelSpec, rotate: bool = False) -> str:
    """The channel's ``private_token`` phones pair with, made and stored now when it has
    none or ``rotate`` (paired phones keep their own tokens; new ones need the new one).
    ``pushgate device pair`` and the dashboard's phones page both pair through this."""
    token = channel.config.get("private_token")
    if not token or rotate:
        token = secrets.token_urlsafe(24)
        await store.update_channel(channel.id, config={**channel.config, "private_token": token})
    return str(token)


def api_url_of(base_url: str, mobile_api_prefix: str) -> str:
    """The app's "API URL" (Settings → Cloud Server) for a gateway reached at ``base_url``."""
    return base_url.rstrip("/") + mobile_api_prefix.rstrip("/")


def login_of(channel: ChannelSpec) -> dict[str, str]:
    """The app's login for a channel's phones (no user accounts: the channel is the user)."""
    return {"login": f"pushgate-channel-{channel.id}", "password": ""}


def phone_status(devices: list[Device], settings: PhoneSettings, now: float) -> dict[str, Any]:
    """Picky's device-status fields for a phone channel: CONNECTED while a phone was seen
    within ``offline_after_seconds``, else OFFLINE; the most recently seen phone speaks for
    the channel, and every paired phone is listed."""
    live = [d for d in devices if d.revoked_at is None]
    online = [d for d in live if d.online(now, settings.offline_after_seconds)]
    latest = max(live, key=lambda d: d.last_seen_at or 0.0, default=None)

    def facts(device: Device) -> dict[str, Any]:
        health = device.health or {}
        return {"version": app_version(device.user_agent),
                "last_seen": local_iso(device.last_seen_at),
                "battery": health.get("battery"), "network": health.get("network"),
                "connected_number": sim_number(health)}

    return {
        "status": "CONNECTED" if online else "OFFLINE",
        **(facts(latest) if latest else {"version": None, "last_seen": None, "battery": None,
                                         "network": None, "connected_number": None}),
        "devices": [{"id": d.id, "name": d.name,
                     "status": "CONNECTED" if d in online else "OFFLINE",
                     "in_flight": d.in_flight,
                     "paused_until": local_iso(d.paused_until) if d.paused_until > now
                     else None, **facts(d)} for d in live],
    }


def device_state(device: Device, now: float, offline_after_seconds: float) -> str:
    """One phone's state as ``pushgate device list`` and the dashboard show it: revoked,
    resting (Android refused to send more), online or offline."""
    if device.revoked_at is not None:
        return "revoked"
    if device.paused_until > now:
        return "resting"
    return "online" if device.online(now, offline_after_seconds) else "offline"


def app_version(user_agent: str) -> str | None:
    match = _VERSION.search(user_agent or "")
    return match.group(1) if match else (user_agent or None)


def local_iso(ts: float | None) -> str | None:
    """ISO 8601 in the server's time zone, as Picky's ``time`` fields."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def sim_number(health: dict[str, Any]) -> str | None:
    """The phone number of the device's first SIM card, if its registration listed one."""
    for card in health.get("simCards") or ():
        if isinstance(card, dict):
            number = card.get("phoneNumber") or card.get("number")
            if number:
                return str(number).lstrip("+")
    return None
