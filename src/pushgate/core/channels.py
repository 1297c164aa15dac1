"""What the accept path needs to know about a channel: its price and its content rules.

The store loads channel rows into ``ChannelSpec``; core uses it to validate and price entries
without I/O. Connector behaviour (how to send) lives in ``pushgate.channels``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

# Picky Assist application codes.
APP_WHATSAPP_PERSONAL = 1
APP_WHATSAPP_BUSINESS = 2
APP_SMS = 3
APP_CALL = 4
APP_MESSENGER = 5
APP_WHATSAPP_OFFICIAL = 8
APP_WHATSAPP_WEB = 10
APP_WHATSAPP_CLOUD = 101
APP_WHATSAPP_MANAGED = 121
APPLICATION_CODES: dict[int, str] = {
    APP_WHATSAPP_PERSONAL: "WhatsApp Personal",
    APP_WHATSAPP_BUSINESS: "WhatsApp Business",
    APP_SMS: "SMS",
    APP_CALL: "Call",
    APP_MESSENGER: "Facebook Messenger",
    APP_WHATSAPP_OFFICIAL: "WhatsApp Official",
    APP_WHATSAPP_WEB: "WhatsApp Web Automation",
    APP_WHATSAPP_CLOUD: "WhatsApp Cloud API",
    APP_WHATSAPP_MANAGED: "WhatsApp Official Managed",
}


class PriceUnit(StrEnum):
    MESSAGE = "message"   # one charge per send (a media with a separate text is two sends)
    SEGMENT = "segment"   # SMS: one charge per GSM-7 / UCS-2 part
    CALL = "call"         # one charge per call attempt


class MediaKind(StrEnum):
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    DOCUMENT = "document"


# Picky's documented per-type limits for media.
MEDIA_MAX_BYTES: dict[MediaKind, int] = {
    MediaKind.IMAGE: 5 * 1024 * 1024,
    MediaKind.VIDEO: 16 * 1024 * 1024,
    MediaKind.AUDIO: 16 * 1024 * 1024,
    MediaKind.DOCUMENT: 100 * 1024 * 1024,
}
_EXTENSIONS: dict[str, MediaKind] = {
    **dict.fromkeys(("jpg", "jpeg", "gif", "png", "image", "webp"), MediaKind.IMAGE),
    **dict.fromkeys(("mp4", "3gp", "3gpp"), MediaKind.VIDEO),
    **dict.fromkeys(("mp3", "wav", "aac", "m4a", "amr", "opus", "ogg"), MediaKind.AUDIO),
}


def media_kind_from_url(url: str) -> MediaKind:
    """The kind of a media URL, from its path's extension; anything unknown is a document."""
    path = url.split("?", 1)[0].split("#", 1)[0]
    last = path.rsplit("/", 1)[-1]
    ext = last.rsplit(".", 1)[-1].lower() if "." in last else ""
    return _EXTENSIONS.get(ext, MediaKind.DOCUMENT)


def media_kind_from_bytes(data: bytes) -> tuple[MediaKind, str]:
    """The kind and MIME type of inline media, from its magic bytes."""
    if data.startswith(b"\xff\xd8\xff"):
        return MediaKind.IMAGE, "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return MediaKind.IMAGE, "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return MediaKind.IMAGE, "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return MediaKind.IMAGE, "image/webp"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand.startswith(b"M4A"):
            return MediaKind.AUDIO, "audio/mp4"
        if brand.startswith(b"3gp"):
            return MediaKind.VIDEO, "video/3gpp"
        return MediaKind.VIDEO, "video/mp4"
    if data.startswith(b"ID3") or data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return MediaKind.AUDIO, "audio/mpeg"
    if data.startswith(b"OggS"):
        return MediaKind.AUDIO, "audio/ogg"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return MediaKind.AUDIO, "audio/wav"
    if data.startswith(b"#!AMR"):
        return MediaKind.AUDIO, "audio/amr"
    if data.startswith(b"%PDF"):
        return MediaKind.DOCUMENT, "application/pdf"
    return MediaKind.DOCUMENT, "application/octet-stream"


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """A channel as the accept path and the dispatcher see it (loaded from the store)."""

    id: int
    project_id: int
    kind: str
    application: int
    price_micro: int
    price_unit: PriceUnit
    # Content rules. ``max_segments`` applies to segment-priced (SMS) channels.
    max_chars: int = 4096
    max_segments: int = 10
    media_allowed: bool = True
    # WhatsApp (Cloud API and the bridges) captions images, videos and documents; an audio's
    # text goes as a second message. Calls and SMS differ: ``caption_kinds_for``.
    caption_kinds: frozenset[MediaKind] = frozenset(
        {MediaKind.IMAGE, MediaKind.VIDEO, MediaKind.DOCUMENT})
    caption_kinds_default: ClassVar[frozenset[MediaKind]] = frozenset(
        {MediaKind.IMAGE, MediaKind.VIDEO, MediaKind.DOCUMENT})
    # Pacing.
    rate_per_second: float = 0.0     # 0 = unlimited
    delay_ms: int = 0                # pause between two sends
    jitter_ms: int = 0               # random extra pause, 0..jitter_ms
    paused: bool = False
    # Why it is paused when the gateway paused it (e.g. the provider refused its token).
    paused_reason: str = ""
    name: str = ""
    config: dict[str, Any] = field(default_factory=dict)


def parse_country_codes(value: Any) -> list[str]:
    """A channel's ``allowed_country_codes``: a non-empty list of calling codes (``"91"``,
    ``"+44"``, ``1``), normalised to digits; ``ValueError`` names a bad one. Calling codes are a
    prefix code (none starts another), so the accept path tests numbers by prefix."""
    from phonenumbers import COUNTRY_CODE_TO_REGION_CODE

    if not isinstance(value, list) or not value:
        raise ValueError(
            'allowed_country_codes must be a non-empty list of calling codes, e.g. ["91"]')
    codes = []
    for item in value:
        code = str(item).strip().lstrip("+")
        if not code.isdigit() or int(code) not in COUNTRY_CODE_TO_REGION_CODE:
            raise ValueError(f"allowed_country_codes: {item!r} is not a country calling code")
        codes.append(code)
    return codes


def caption_kinds_for(application: int) -> frozenset[MediaKind]:
    """Media kinds whose text travels with them in one send (else it is a second send)."""
    if application == APP_CALL:
        return frozenset({MediaKind.AUDIO})   # one call: <Play> the audio, then <Say> the text
    if application == APP_SMS:
        return frozenset(MediaKind)            # MMS: one message carries body and media
    return ChannelSpec.caption_kinds_default


def default_rules(application: int) -> dict[str, Any]:
    """Content rules and price unit that fit a Picky application code."""
    captions = caption_kinds_for(application)
    if application == APP_SMS:
        return {"price_unit": PriceUnit.SEGMENT, "max_chars": 1600, "max_segments": 10,
                "media_allowed": False, "caption_kinds": captions}
    if application == APP_CALL:
        return {"price_unit": PriceUnit.CALL, "max_chars": 4000, "media_allowed": True,
                "caption_kinds": captions}
    return {"price_unit": PriceUnit.MESSAGE, "max_chars": 4096, "media_allowed": True,
            "caption_kinds": captions}
