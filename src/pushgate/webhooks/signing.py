"""Signing event webhooks: ``X-Pushgate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>``.

The HMAC key is the project's webhook secret and the signed text is ``"<t>.<raw body>"``, so a
receiver can reject both forged bodies and replays of old ones (by checking ``t``).
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-Pushgate-Signature"


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify(secret: str, header: str, body: bytes, tolerance: float = 300.0,
           now: float | None = None) -> bool:
    """True if ``header`` signs ``body`` with ``secret`` within ``tolerance`` seconds."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        t = int(fields["t"])
    except (ValueError, KeyError):
        return False
    current = time.time() if now is None else now
    if abs(current - t) > tolerance:
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, value)
               for key, value in (p.split("=", 1) for p in header.split(",")) if key == "v1")
