"""Settings, read from ``PUSHGATE_*`` environment variables and an optional ``.env`` file in the
working directory (documented in the README; every setting is listed in ``.env.example``)."""

from __future__ import annotations

import ipaddress
import logging
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    # The environment wins over the .env file; the file may hold other programs' variables.
    model_config = SettingsConfigDict(env_prefix="PUSHGATE_", env_file=".env",
                                      env_file_encoding="utf-8", extra="ignore")

    database_url: str = "sqlite:///./data/pushgate.db"
    host: str = "127.0.0.1"
    port: int = 8000
    # Where providers reach this gateway: callback URLs and signed media links are built on it.
    public_url: str = ""
    # Signs media links; set it to a long random string in production (and the same on
    # every node).
    # Also signs the dashboard's session cookies (a key derived from it). Left at the
    # development key, the dashboard generates its own and keeps it beside the SQLite
    # database (else in ./data/): ui/session.py.
    secret_key: str = "pushgate-dev-key"
    # The dashboard's operator sign-in (every project, a project switcher); empty = none.
    admin_password: str = ""
    # Let media URLs point at private, loopback and link-local addresses (tests, labs): both
    # the push API's check of customers' media URLs and the gateway's own media downloads.
    allow_private_media: bool = False
    # Let event and incoming webhook URLs point at such addresses (a receiver on this host).
    allow_private_webhooks: bool = False
    # Where phones running SMS Gateway for Android find their private-server API.
    mobile_api_prefix: str = "/api/mobile/v1"

    # How long an idle client connection stays open for its next request. Longer than the
    # clients' own idle limit (httpx: 5 s), so the client drops an idle connection first:
    # with uvicorn's 5 s a server closing it just as the client sent its next request (a
    # provider's callback) reset that request. nginx keeps 75 s.
    keep_alive_seconds: float = Field(75.0, gt=0)
    # A connection that sends nothing, or trickles a request's headers, is closed when the
    # headers are not complete this long after the connection opened (first request) or the
    # request's first byte (later ones); a body has as long plus a second per 64 KiB received.
    read_timeout_seconds: float = Field(30.0, gt=0)
    # Reverse proxies (IPs or CIDR networks, comma-separated) whose X-Forwarded-For and
    # X-Forwarded-Proto are believed. Empty: none, so the client address every check sees (a
    # token's IP allow-list, guess throttling) is the TCP peer's, whatever headers it sends.
    trusted_proxies: str = ""

    # Logs of `serve` and `worker` on stderr: "text" lines, or "json" (one object a line, for
    # log shippers). The level applies to pushgate's own loggers.
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    # One line per HTTP request (uvicorn's access log). Off by default: at full load it is a
    # line per push, which the message-level logs deliberately are not.
    access_log: bool = False

    # Guessing: after this many wrong API tokens, or wrong phone private tokens, from one
    # address within the window, that address is answered 429 until the window frees up.
    auth_failure_limit: int = Field(10, ge=0, description="0 = no throttling")
    auth_failure_window_seconds: float = Field(600.0, gt=0)

    # Push API limits.
    max_recipients: int = Field(10_000, ge=1)
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    push_rate_per_minute: int = Field(90, ge=0, description="per token; 0 = unlimited")
    always_http_200: bool = False
    message_validity_seconds: float = Field(72 * 3600, ge=0, description="0 = never expire")
    # A scheduled push (`send_at`) may be at most this far ahead of its accept time.
    max_schedule_seconds: float = Field(366 * 86400, gt=0)
    # A number filter check no connector answered by then is answered as unknown
    # (``checked_by: "gave_up"``), so a bridge that stays down or a paused channel cannot keep
    # the project waiting for ever.
    number_check_timeout_seconds: float = Field(24 * 3600, ge=0,
                                                description="0 = wait forever")
    # How long the API keeps a token's or a channel's lookup: changes made elsewhere (CLI,
    # another node) reach the accept path within this time.
    lookup_cache_seconds: float = Field(1.0, ge=0, description="0 = read the store every time")

    # Dispatcher.
    worker_id: str = ""
    claim_batch: int = Field(1000, ge=1)
    # Overlapping claim–send–record loops per unpaced shareable channel (sandbox): the store
    # claims one batch while it records another. Paced channels always keep one.
    send_lanes: int = Field(2, ge=1, le=16)
    message_lease_seconds: float = Field(60.0, gt=0)
    channel_lease_seconds: float = Field(15.0, gt=0)
    idle_poll_seconds: float = Field(0.2, gt=0)
    # A Unix datagram socket path: the dispatcher's process listens there for wake-up hints
    # from API processes of the same host (dispatch/hints.py); `serve --workers` sets it for
    # its children. Empty: no hints (polling and the store's notifications only).
    wake_socket: str = ""
    retry_max_attempts: int = Field(5, ge=1)
    retry_base_seconds: float = Field(2.0, ge=0)
    retry_cap_seconds: float = Field(600.0, ge=0)

    # Event webhooks.
    webhook_timeout_seconds: float = Field(30.0, gt=0)
    webhook_retry_schedule: str = Field("60,900,7200,21600",
                                        description="seconds after each failed try")
    webhook_batch: int = Field(500, ge=1)
    # Instant reply: the incoming webhook's answer sent back to the user who wrote.
    # Bytes of the answer read at most (0 turns instant replies off).
    instant_reply_max_bytes: int = Field(65536, ge=0)
    # At most one instant reply to a number on a channel per this many seconds (bot loops).
    instant_reply_interval_seconds: float = Field(60.0, ge=0)

    @field_validator("log_format", mode="before")
    @classmethod
    def _format_name(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("log_level")
    @classmethod
    def _level_name(cls, value: str) -> str:
        name = value.upper()
        if not isinstance(logging.getLevelName(name), int):
            raise ValueError(f"{value!r} is not a log level (DEBUG, INFO, WARNING, ERROR)")
        return name

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_addresses(cls, value: str) -> str:
        for entry in (e.strip() for e in value.split(",")):
            if not entry:
                continue
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
        return value

    def trusted_proxy_list(self) -> list[str]:
        """The trusted proxies as networks (``10.0.0.0/8``, ``127.0.0.1/32``): uvicorn would
        take ``10.0.0.1/8`` for a name and silently trust nothing."""
        return [str(ipaddress.ip_network(e.strip(), strict=False))
                for e in self.trusted_proxies.split(",") if e.strip()]

    def gateway_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def callback_url(self, channel_id: int) -> str:
        """The URL a channel's provider posts its status webhooks, receipts and inbound
        messages to (``pushgate channel add`` prints it; the dashboard shows it)."""
        return f"{self.gateway_url()}/channels/{channel_id}/callback"

    def webhook_schedule(self) -> list[float]:
        return [float(x) for x in self.webhook_retry_schedule.split(",") if x.strip()]
