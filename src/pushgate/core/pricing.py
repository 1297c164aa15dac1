"""Credits are integer micro-credits everywhere inside pushgate; strings only at the edges.

Floats never hold money: 0.1 + 0.2 is not 0.3, and a balance that drifts by a micro-credit per
message is wrong by thousands after a few million messages.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MICRO = 1_000_000


def parse_credits(text: str | int | float) -> int:
    """``"0.005"`` → ``5000``. Raises ``ValueError`` for negatives, non-numbers and sub-micro
    precision (which would silently round a price)."""
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"credits must be a non-negative number: {text!r}")
    micro = value * MICRO
    if micro != micro.to_integral_value():
        raise ValueError(f"credits have at most 6 decimal places: {text!r}")
    return int(micro)


#: Most amounts ``credit_text`` keeps (it starts again when full).
CREDIT_TEXTS_KEPT = 1024
_credit_texts: dict[int, str] = {}


def credit_text(micro: int) -> str:
    """``format_credits(micro)``, kept for an amount met before: the push answer's credits
    are mostly a channel's price and its small multiples, the same push after push."""
    text = _credit_texts.get(micro)
    if text is None:
        if len(_credit_texts) >= CREDIT_TEXTS_KEPT:
            _credit_texts.clear()
        text = _credit_texts[micro] = format_credits(micro)
    return text


def format_credits(micro: int) -> str:
    """``5000`` → ``"0.005"``, ``0`` → ``"0"``, ``2_500_000`` → ``"2.5"``."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    if not frac:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:06d}".rstrip("0")
