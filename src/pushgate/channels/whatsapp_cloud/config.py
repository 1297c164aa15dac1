"""The WhatsApp Cloud channel's config model (``WhatsAppCloudConfig``): its keys, defaults,
limits and rules."""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

from pushgate.channels.base import ChannelConfigError
from pushgate.channels.config import ChannelConfig

GRAPH_BASE_URL = "https://graph.facebook.com"
GRAPH_VERSION = "v21.0"
DEFAULT_PAIR_INTERVAL = 6.0
DEFAULT_TIMEOUT = 20.0
_VERSION_RE = re.compile(r"^v\d+\.\d+$")
DEFAULT_MAX_IN_FLIGHT = 64
# Each send in flight holds a connection (a file descriptor).
MAX_IN_FLIGHT = 1000


class WhatsAppCloudConfig(ChannelConfig, kw_only=True):
    """One business phone number's Graph credentials and the send path's limits."""

    phone_number_id: str
    access_token: str
    app_secret: str
    verify_token: str
    graph_base_url: str = GRAPH_BASE_URL
    graph_version: str = GRAPH_VERSION
    pair_interval_seconds: float = DEFAULT_PAIR_INTERVAL
    timeout_seconds: float = DEFAULT_TIMEOUT
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT

    def __repr__(self) -> str:
        # Configs end up in tracebacks and logs: never show the secrets.
        return f"WhatsAppCloudConfig(phone_number_id={self.phone_number_id!r}, secrets redacted)"

    @classmethod
    def normalise(cls, config: dict[str, Any]) -> dict[str, Any]:
        return normalise(config)


def normalise(config: dict[str, Any]) -> dict[str, Any]:
    """The Cloud API's rules, each error naming its key."""
    out = dict(config)
    if isinstance(out.get("phone_number_id"), int):   # a JSON number on the command line
        out["phone_number_id"] = str(out["phone_number_id"])
    for key in ("phone_number_id", "access_token", "app_secret", "verify_token"):
        value = out.get(key)
        if not isinstance(value, str) or not value.strip():
            raise ChannelConfigError(f"{key} is required (a non-empty string)")
        out[key] = value.strip()
    if not out["phone_number_id"].isdigit():
        raise ChannelConfigError("phone_number_id must be the numeric Graph id of the number")
    base_url = out.get("graph_base_url", GRAPH_BASE_URL)
    parsed = urllib.parse.urlsplit(base_url) if isinstance(base_url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ChannelConfigError("graph_base_url must be an http(s) URL")
    out["graph_base_url"] = base_url.rstrip("/")
    version = out.get("graph_version", GRAPH_VERSION)
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise ChannelConfigError("graph_version must look like 'v21.0'")
    out["graph_version"] = version
    out["pair_interval_seconds"] = _number(out, "pair_interval_seconds",
                                           DEFAULT_PAIR_INTERVAL, minimum=0.0)
    out["timeout_seconds"] = _number(out, "timeout_seconds", DEFAULT_TIMEOUT, minimum=0.001)
    in_flight = out.get("max_in_flight", DEFAULT_MAX_IN_FLIGHT)
    if isinstance(in_flight, bool) or not isinstance(in_flight, int) \
            or not 1 <= in_flight <= MAX_IN_FLIGHT:
        raise ChannelConfigError(f"max_in_flight must be a whole number from 1 to "
                                 f"{MAX_IN_FLIGHT}")
    out["max_in_flight"] = in_flight
    return out


def _number(config: dict[str, Any], key: str, default: float, minimum: float) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ChannelConfigError(f"{key} must be a number >= {minimum:g}")
    return float(value)
