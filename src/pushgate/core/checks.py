"""Picky's WhatsApp number filter (a push with ``action: 1``): which numbers are checked, what
the check costs, and the answers that need no provider (no I/O here).

A check sends nothing. Each accepted number becomes a row the dispatcher works through with the
channel's connector (``Channel.check_numbers``), and its answer goes to the project's event
webhook as Picky's ``event_id: 2``. Who answers:

- the WhatsApp Web bridges (WAHA, Evolution API) ask their session (``checked_by``: the kind);
- every other channel answers from the number's validity (``checked_by: "validity"``): a valid
  number counts as on WhatsApp, as nothing else is known without sending;
- the sandbox follows ``sandbox_on_whatsapp`` (``checked_by: "sandbox"``), so tests can tell;
- a check nobody answered within the number check timeout (a bridge that stays down, a paused
  channel) is answered as unknown (``checked_by: "gave_up"``, ``on_whatsapp`` None, a reason):
  ``plan_give_up`` says which and why, both stores write it.

A check costs the channel's ``check_price`` (a gateway config key, in credits; default 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from pushgate.core.channels import ChannelSpec
from pushgate.core.errors import ApiError, Code
from pushgate.core.numbers import number_problem
from pushgate.core.pricing import parse_credits
from pushgate.core.push import EntryRefusal, Limits, PushBody, parse_int_field

#: Picky's ``action`` values: absent or 0 sends, 1 is the WhatsApp number filter.
ACTION_SEND = 0
ACTION_NUMBER_FILTER = 1

#: The channel config key (the gateway's, every kind) of the price of one check, in credits.
CHECK_PRICE_KEY = "check_price"

CHECKED_BY_VALIDITY = "validity"
CHECKED_BY_SANDBOX = "sandbox"
CHECKED_BY_GAVE_UP = "gave_up"

#: A check's state, as ``GET /api/v2/pushes/{id}`` lists it (``check_state``).
CHECK_QUEUED = "queued"        # not asked yet
CHECK_WAITING = "waiting"      # asked, the connector could not answer yet (asked again later)
CHECK_CHECKED = "checked"      # answered by a connector
CHECK_GAVE_UP = "gave_up"      # answered as unknown after the timeout


def parse_action(body: PushBody) -> int:
    """The push's ``action``: ``ACTION_SEND`` or ``ACTION_NUMBER_FILTER``; anything else is
    refused (Picky's 842, Invalid Action)."""
    value = parse_int_field("action", body.action, default=ACTION_SEND, maximum=10**6)
    if value not in (ACTION_SEND, ACTION_NUMBER_FILTER):
        raise ApiError(Code.INVALID_ACTION,
                       f"`action` is 1 (WhatsApp number filter) or absent, got {body.action!r}")
    return value


def check_price_micro(channel: ChannelSpec) -> int:
    """What one number check costs on ``channel`` (micro-credits; 0 unless configured)."""
    price = channel.config.get(CHECK_PRICE_KEY)
    if price is None:
        return 0
    try:
        return parse_credits(price)
    except ValueError:
        return 0   # refused when the channel is added; a hand-edited value checks for free


def sandbox_on_whatsapp(number: str) -> bool:
    """The sandbox's documented rule: a number ending in an even digit is on WhatsApp."""
    return number[-1:] in ("0", "2", "4", "6", "8")


@dataclass(frozen=True, slots=True)
class NumberCheck:
    """One number's answer, as a connector gives it."""

    number: str
    # None: not known (a check that gave up).
    on_whatsapp: bool | None
    checked_by: str
    # The id WhatsApp knows the number by, where the bridge says (Brazilian numbers differ).
    chat_id: str | None = None


@dataclass(frozen=True, slots=True)
class PendingCheck:
    """A queued check the dispatcher claimed."""

    id: int
    push_id: int
    channel_id: int
    number: str


class CheckUnavailable(Exception):
    """The connector cannot check now (a bridge down, its session not connected): the claimed
    checks come back when their lease ends."""


def by_validity(numbers: list[str], checked_by: str = CHECKED_BY_VALIDITY) -> list[NumberCheck]:
    """Answers from the numbers' validity alone."""
    return [NumberCheck(n, number_problem(n) is None, checked_by) for n in numbers]


def by_sandbox_rule(numbers: list[str]) -> list[NumberCheck]:
    return [NumberCheck(n, sandbox_on_whatsapp(n), CHECKED_BY_SANDBOX) for n in numbers]


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Checks still unanswered that were queued at or before ``cutoff`` are answered as
    unknown (``checked_by``, ``on_whatsapp`` None) with ``reason``."""

    cutoff: float
    reason: str
    checked_by: str = CHECKED_BY_GAVE_UP


def plan_give_up(now: float, timeout_seconds: float) -> GiveUp | None:
    """Which checks stop waiting at ``now``: those queued ``timeout_seconds`` ago or earlier,
    whatever kept them (a bridge down, a session not connected, a paused channel, no worker);
    None when the timeout is 0 (wait for ever)."""
    if timeout_seconds <= 0:
        return None
    return GiveUp(now - timeout_seconds,
                  f"no answer within {timeout_seconds:g} s of the push"
                  " (the channel's bridge or session down, or the channel paused)")


def check_status(on_whatsapp: bool | None) -> int | None:
    """A number check's ``status`` (event 2, ``GET /api/v2/pushes/{id}``): 1 on WhatsApp, 0
    not, None not known (not answered yet, or gave up)."""
    return None if on_whatsapp is None else int(on_whatsapp)


def check_state(checked_by: str | None, checked_at: float | None, attempts: int) -> str:
    """A check's state from its row: ``CHECK_QUEUED``, ``CHECK_WAITING``, ``CHECK_CHECKED``
    or ``CHECK_GAVE_UP``."""
    if checked_at is None:
        return CHECK_WAITING if attempts else CHECK_QUEUED
    return CHECK_GAVE_UP if checked_by == CHECKED_BY_GAVE_UP else CHECK_CHECKED


@dataclass(slots=True)
class CheckPlan:
    # (index in the request's ``data``, number), in request order.
    accepted: list[tuple[int, str]]
    refused: list[EntryRefusal]
    price_micro: int
    total_entries: int

    @property
    def credit_total(self) -> int:
        return self.price_micro * len(self.accepted)

    def refusal_only_error(self) -> ApiError:
        codes = {r.code for r in self.refused if r.code is not Code.DUPLICATE}
        code = codes.pop() if len(codes) == 1 else Code.NO_VALID_ENTRIES
        return ApiError(code, "no number of the filter can be checked")


def plan_checks(body: PushBody, channel: ChannelSpec, limits: Limits) -> CheckPlan:
    """The numbers of a number-filter push: invalid numbers, numbers outside the channel's
    countries and repeats are refused per entry; the others are priced at ``check_price``."""
    entries = body.data
    if not entries:
        raise ApiError(Code.EMPTY_DATA, "`data` must list at least one number")
    if len(entries) > limits.max_recipients:
        raise ApiError(Code.TOO_MANY_RECIPIENTS,
                       f"{len(entries)} entries, at most {limits.max_recipients} per push")
    countries = tuple(str(c) for c in channel.config.get("allowed_country_codes") or ())
    accepted: list[tuple[int, str]] = []
    refused: list[EntryRefusal] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        raw = entry.number
        number = raw if isinstance(raw, str) else ("" if raw is None else str(raw))
        problem = number_problem(number)
        if problem is not None:
            refused.append(EntryRefusal(index, number, Code.INVALID_NUMBER, problem))
        elif countries and not number.startswith(countries):
            refused.append(EntryRefusal(
                index, number, Code.COUNTRY_NOT_ALLOWED,
                f"channel {channel.id} sends only to country codes {', '.join(countries)}"))
        elif number in seen:
            refused.append(EntryRefusal(index, number, Code.DUPLICATE,
                                        f"same number as entry {seen[number]}", seen[number]))
        else:
            seen[number] = index
            accepted.append((index, number))
    return CheckPlan(accepted, refused, check_price_micro(channel), len(entries))
