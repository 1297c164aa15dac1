"""SMPP channel config (``SmppConfig``: the keys of ``channel add --config``) and the
connector's tuning constants."""

from __future__ import annotations

from typing import Any

from pushgate.channels.base import ChannelConfigError
from pushgate.channels.config import ChannelConfig

# How long a mobile-originated deliver_sm whose acknowledgement is in doubt (its session ended
# before the SMSC showed it had read our answer) may come again as a re-delivery: SMSCs deliver
# again on the next bind or on their retry schedule, within minutes. An identical deliver_sm
# after that is a new message.
MO_REDELIVERY_SECONDS = 600.0
# In-doubt deliver_sm remembered at most (the oldest are forgotten first).
MO_DOUBT_LIMIT = 10_000
# An answer to a user's deliver_sm is confirmed by the SMSC answering a request written after
# it; when no request follows within this many seconds, an enquire_link is sent to get one, so
# an answer stays in doubt only for about this long (plus a round trip).
MO_CONFIRM_SECONDS = 1.0
# Added to each second of the submit rate: a submit is stamped when it is granted, and the SMSC
# counts it when it reads it, a little later and not always equally late.
SUBMIT_RATE_GUARD_SECONDS = 0.02
# Pauses a bind remembers (``Bind.pauses``, for status and tests).
PAUSE_LOG = 100
# Receipts and inbound messages handed to the sink in one call at most.
SINK_BATCH = 1000
UDH_CONCAT_8BIT = b"\x05\x00\x03"


# msgspec lets a frozen Struct extend a mutable one; mypy applies the dataclass rule.
class SmppConfig(ChannelConfig, kw_only=True, frozen=True):  # type: ignore[misc]
    """An ESME's bind settings (the package docstring says what each key does)."""

    host: str
    port: int = 2775
    system_id: str
    password: str = ""
    system_type: str = ""
    service_type: str = ""
    source_addr: str = ""
    # Derived from source_addr when not given: 5/0 alphanumeric, 1/1 digits, 0/0 none.
    source_ton: int = 0
    source_npi: int = 0
    dest_ton: int = 1
    dest_npi: int = 1
    binds: int = 1
    window: int = 10
    enquire_link_seconds: float = 30.0
    response_timeout_seconds: float = 10.0
    registered_delivery: int = 1
    bind_wait_seconds: float = 10.0
    rebind_min_seconds: float = 1.0
    rebind_max_seconds: float = 60.0
    throttle_backoff_seconds: float = 1.0
    throttle_backoff_max_seconds: float = 30.0
    concat_timeout_seconds: float = 300.0

    def __repr__(self) -> str:
        # Configs end up in tracebacks and logs: never show the password.
        return f"SmppConfig(host={self.host!r}, system_id={self.system_id!r}, password redacted)"

    @classmethod
    def normalise(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Checked, with defaults filled; ``ChannelConfigError`` names the bad key."""
        source = _text(config, "source_addr", "", 20)
        if source and not source.isdigit():
            if len(source) > 11:
                raise ChannelConfigError("smpp: source_addr: an alphanumeric sender has at most "
                                         "11 characters")
            ton, npi = 5, 0
        else:
            ton, npi = (1, 1) if source else (0, 0)
        rebind_min = _number(config, "rebind_min_seconds", 1.0, 0.001, 3600)
        throttle_min = _number(config, "throttle_backoff_seconds", 1.0, 0.001, 3600)
        return dict(
            host=_text(config, "host", None, 253),
            port=int(_number(config, "port", 2775, 1, 65535, integer=True)),
            system_id=_text(config, "system_id", None, 15),
            # v3.4 allows 8 characters; some SMSCs take longer ones, so they are sent as given.
            password=_text(config, "password", "", 64),
            system_type=_text(config, "system_type", "", 12),
            service_type=_text(config, "service_type", "", 5),
            source_addr=source,
            source_ton=int(_number(config, "source_ton", ton, 0, 6, integer=True)),
            source_npi=int(_number(config, "source_npi", npi, 0, 18, integer=True)),
            dest_ton=int(_number(config, "dest_ton", 1, 0, 6, integer=True)),
            dest_npi=int(_number(config, "dest_npi", 1, 0, 18, integer=True)),
            binds=int(_number(config, "binds", 1, 1, 32, integer=True)),
            window=int(_number(config, "window", 10, 1, 1000, integer=True)),
            enquire_link_seconds=_number(config, "enquire_link_seconds", 30.0, 0.01, 3600),
            response_timeout_seconds=_number(config, "response_timeout_seconds", 10.0, 0.01, 600),
            registered_delivery=int(_number(config, "registered_delivery", 1, 0, 255,
                                            integer=True)),
            bind_wait_seconds=_number(config, "bind_wait_seconds", 10.0, 0.0, 600),
            rebind_min_seconds=rebind_min,
            rebind_max_seconds=_number(config, "rebind_max_seconds", max(60.0, rebind_min),
                                       rebind_min, 3600),
            throttle_backoff_seconds=throttle_min,
            throttle_backoff_max_seconds=_number(config, "throttle_backoff_max_seconds",
                                                 max(30.0, throttle_min), throttle_min, 3600),
            concat_timeout_seconds=_number(config, "concat_timeout_seconds", 300.0, 0.01,
                                           86_400),
        )


def _text(config: dict[str, Any], key: str, default: str | None, max_len: int) -> str:
    value = config.get(key, default)
    if value is None:
        raise ChannelConfigError(f"smpp: {key} is required")
    if not isinstance(value, str) or not value.isascii() or "\0" in value:
        raise ChannelConfigError(f"smpp: {key} must be an ASCII string")
    if len(value) > max_len:
        raise ChannelConfigError(f"smpp: {key} has at most {max_len} characters")
    return value


def _number(config: dict[str, Any], key: str, default: float, low: float, high: float,
            integer: bool = False) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            integer and value != int(value)):
        raise ChannelConfigError(f"smpp: {key} must be {'an integer' if integer else 'a number'}")
    if not low <= value <= high:
        raise ChannelConfigError(f"smpp: {key} must be between {low:g} and {high:g}")
    return float(value)
