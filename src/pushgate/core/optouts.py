"""Opt-outs: the numbers a project must send nothing to, and users' STOP / START keywords.

Everything here is a decision without I/O: how a number is written when it is matched
(``normal_number``), whether a user's message is a keyword (``keyword_action``), and what a
push plan becomes once the store has named its opted-out numbers (``without_opted_out``).
The stores keep the list (``optouts``) and apply the keywords when they record a user's
message, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final

from pushgate.core.errors import Code
from pushgate.core.numbers import number_problem
from pushgate.core.push import ROW_CREDIT, ROW_INDEX, ROW_NUMBER, EntryRefusal, PushPlan

#: Picky's event webhook id for a new subscriber / an opt-out.
EVENT_SUBSCRIBER: Final = 4

DEFAULT_STOP_KEYWORDS: Final = ("STOP", "UNSUBSCRIBE", "STOPALL", "CANCEL", "END", "QUIT")
DEFAULT_START_KEYWORDS: Final = ("START", "UNSTOP")
OPTED_OUT_MESSAGE: Final = "the number has opted out of this project's messages"

_SEPARATORS = str.maketrans("", "", " \t-().\u00a0")


class Action(StrEnum):
    STOP = "stop"
    START = "start"


def normal_number(raw: str | int) -> str:
    """``raw`` as opt-outs are matched: digits only, as push entries are written (no ``+``,
    spaces, dashes, dots or brackets; a leading ``00`` international prefix dropped). The same
    number written with ``+`` or spaces is the same. It may still be an invalid number:
    ``number_problem`` of the result says."""
    text = (raw if isinstance(raw, str) else str(raw)).strip().translate(_SEPARATORS)
    if text.startswith("+"):
        text = text[1:]
    elif text.startswith("00"):
        text = text[2:]
    return text


def checked_number(raw: str | int) -> str:
    """``normal_number(raw)``; ``ValueError`` naming the problem when it is not a valid
    international number."""
    number = normal_number(raw)
    problem = number_problem(number)
    if problem is not None:
        raise ValueError(f"{raw!r}: {problem}")
    return number


def parse_keywords(text: str | Iterable[str]) -> tuple[str, ...]:
    """Keywords from a comma-separated text (or a list), trimmed, upper-cased, deduplicated
    in order; empty items dropped."""
    items = text.split(",") if isinstance(text, str) else text
    seen: dict[str, None] = {}
    for item in items:
        word = " ".join(item.split()).upper()
        if word:
            seen[word] = None
    return tuple(seen)


@dataclass(frozen=True, slots=True)
class KeywordSettings:
    """A project's STOP / START keywords and the confirmations answered to them (None: no
    answer)."""

    stop: tuple[str, ...] = DEFAULT_STOP_KEYWORDS
    start: tuple[str, ...] = DEFAULT_START_KEYWORDS
    stop_reply: str | None = None
    start_reply: str | None = None

    @classmethod
    def from_columns(cls, stop: str | None, start: str | None, stop_reply: str | None,
                     start_reply: str | None) -> KeywordSettings:
        """From the project row: a NULL keyword column means the defaults."""
        return cls(stop=DEFAULT_STOP_KEYWORDS if stop is None else parse_keywords(stop),
                   start=DEFAULT_START_KEYWORDS if start is None else parse_keywords(start),
                   stop_reply=stop_reply or None, start_reply=start_reply or None)

    def reply_for(self, action: Action) -> str | None:
        return self.stop_reply if action is Action.STOP else self.start_reply


def keyword_action(text: str, settings: KeywordSettings) -> Action | None:
    """What a user's message does: STOP when it is one of the project's stop keywords, START
    when one of its start keywords (case-insensitive, trimmed, inner spaces collapsed), else
    None. Only the whole message counts: "please stop" is a message, not a keyword."""
    if len(text) > 64:
        return None
    word = " ".join(text.split()).upper()
    if not word:
        return None
    if word in settings.stop:
        return Action.STOP
    if word in settings.start:
        return Action.START
    return None


def without_opted_out(plan: PushPlan, opted_out: Collection[str]) -> PushPlan:
    """``plan`` with every accepted entry to a number of ``opted_out`` refused in its place
    (``Code.OPTED_OUT``, no credit); the plan itself when none is. The rows keep their order;
    a duplicate refusal that pointed at a refused entry keeps its index (it gets no msg_id)."""
    if not opted_out:
        return plan
    accepted = []
    refused: list[EntryRefusal] = []
    dropped = 0
    for row in plan.accepted:
        if row[ROW_NUMBER] in opted_out:
            refused.append(EntryRefusal(row[ROW_INDEX], row[ROW_NUMBER], Code.OPTED_OUT,
                                        OPTED_OUT_MESSAGE))
            dropped += row[ROW_CREDIT]
        else:
            accepted.append(row)
    if not refused:
        return plan
    extras = plan.extras
    if extras is not None:
        extras = [extra for row, extra in zip(plan.accepted, extras, strict=True)
                  if row[ROW_NUMBER] not in opted_out]
    return replace(plan, accepted=accepted,
                   refused=sorted([*plan.refused, *refused], key=lambda r: r.index),
                   credit_total=plan.credit_total - dropped, extras=extras)


def numbers_left_out(plan: PushPlan, numbers_sent: Iterable[str]) -> frozenset[str]:
    """The plan's accepted numbers that a push already accepted (``numbers_sent``, its
    messages' numbers) has no message for: the ones refused as opted out when it was
    accepted, for an idempotent replay of that push to answer the same way."""
    sent = set(numbers_sent)
    return frozenset(row[ROW_NUMBER] for row in plan.accepted if row[ROW_NUMBER] not in sent)


@dataclass(frozen=True, slots=True)
class OptOut:
    """One number of a project's opt-out list."""

    number: str
    at: float
    source: str   # "api", "cli", or "keyword" (the user wrote a STOP keyword)


@dataclass(frozen=True, slots=True)
class OptoutEvent:
    """A user's STOP or START as the event webhook reports it (Picky's event 4), with what
    the deliverer needs: the project's webhook and secret, the confirmation to answer."""

    id: int
    project_id: int
    channel_id: int
    number: str
    action: Action
    keyword: str
    at: float
    webhook_url: str
    webhook_secret: str
    reply: str | None
    attempts: int


def event_payload(event: OptoutEvent) -> dict[str, object]:
    """One item of an event 4 body's ``data``."""
    return {"number": event.number, "channel_id": event.channel_id,
            "status": "opted_out" if event.action is Action.STOP else "opted_in",
            "keyword": event.keyword, "at": event.at}
