"""What a send's outcome, a validity sweep and a cancellation write: pure functions, no I/O.

Both stores ask these functions and execute the answer, a plan of writes, in their own SQL:
input the connectors' results (or the rows a sweep or a cancellation took), the current rows of
the messages they concern and the retry policy; output the new state of each message, its event
rows, its webhook reports and the refunds per project. The texts of those events and the
reasons in the credit ledger are written here only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from pushgate.core.lifecycle import State
from pushgate.core.models import Outcome, SendResult, StatusUpdate
from pushgate.core.policy import RetryPolicy

#: Why a queued message expired.
VALIDITY_ENDED = "validity period ended"
#: Why a message expired whose lease ran out past its validity: its last send (a worker that
#: stopped, a phone that went silent) may have reached the provider, but is never repeated.
EXPIRED_UNCONFIRMED = "validity period ended before its last send was confirmed"
#: The credit ledger's reasons.
REFUND_SEND_FAILED = "refund: send failed"
REFUND_EXPIRED = "refund: expired"
REFUND_PROVIDER_FAILURE = "refund: provider reported failure"
#: A deferred send is put back for at least this long, so a connector answering "later" with
#: no time cannot make its runner spin.
MIN_DEFER_SECONDS = 0.05


# Why the queued messages of a push its project cancelled (``Store.cancel_push``) are
# cancelled: their ``error_message``, the event and the webhook report say it.
PUSH_CANCELLED = "push cancelled by its project"


def refund_reason_cancelled(reason: str) -> str:
    """The ledger's reason for the refund of a cancelled queue."""
    return f"refund: {reason}"


# HeldMessage and Submission are NamedTuples, not frozen dataclasses like the records below:
# one of each is built for every message of every outcome write, on the SQLite writer thread,
# and a frozen dataclass's __init__ (a ``object.__setattr__`` per field) costs 3-6 times a
# tuple's (docs/benchmarks.md).
class HeldMessage(NamedTuple):
    """A message its claimer still holds (``sending``, leased by the worker reporting)."""

    id: int
    project_id: int
    credit_micro: int
    attempts: int
    # Whether the message's project has a webhook (its state changes are reported).
    has_webhook: bool


@dataclass(frozen=True, slots=True)
class Event:
    """A ``message_events`` row."""

    message_id: int
    state: str
    at: float
    detail: str | None


@dataclass(frozen=True, slots=True)
class Report:
    """An ``outbox`` row: a state change reported to the project's webhook."""

    project_id: int
    message_id: int
    state: str
    at: float
    error_code: str | None
    error_message: str | None

    def row(self) -> tuple[int, int, str, float, str | None, str | None, float]:
        """(project_id, message_id, state, at, error_code, error_message, next_attempt_at)."""
        return (self.project_id, self.message_id, self.state, self.at, self.error_code,
                self.error_message, self.at)


class Submission(NamedTuple):
    """A send that went through: the message leaves its lease as ``state``.

    Written only where the message is still held by the reporting worker (a message whose
    lease ran out belongs to another worker, whose outcome counts). A clean submission keeps
    its steps in columns (``submitted_at``, ``delivered_at``, core/history.py); one with a
    problem to report (an audio's text lost) gets event rows with the problem instead."""

    message_id: int
    state: str
    provider_id: str | None
    # This attempt's problem, if any: an earlier attempt's error stays in the history only.
    error_code: str | None
    error_message: str | None
    delivered_at: float | None
    # Event rows and webhook report states, both only for a message still held.
    events: tuple[Event, ...]
    report_states: tuple[str, ...]

    @property
    def clean(self) -> bool:
        return not self.error_code


@dataclass(frozen=True, slots=True)
class Requeue:
    """A message back to ``queued`` until ``next_attempt_at``."""

    message_id: int
    next_attempt_at: float
    error_code: str | None
    error_message: str | None


@dataclass(frozen=True, slots=True)
class Failure:
    """A message given up: ``refunded``, its credit returned."""

    message_id: int
    error_code: str | None
    error_message: str | None


@dataclass(slots=True)
class OutcomePlan:
    """The writes of a batch's outcomes, for the messages still held; events and reports in
    the order of the results."""

    submitted: list[Submission] = field(default_factory=list)
    # Back to the queue after a back-off; the attempt counts.
    retried: list[Requeue] = field(default_factory=list)
    # Back to the queue for the connector's wait; the attempt does not count.
    deferred: list[Requeue] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)
    refunds: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    refund_reason: str = REFUND_SEND_FAILED


def plan_submission(res: SendResult, now: float) -> Submission:
    """The writes of one send that went through (``res.kind.went_out``)."""
    delivered = res.kind is Outcome.DELIVERED
    state = "delivered" if delivered else "submitted"
    reports = ("submitted", "delivered") if delivered else ("submitted",)
    if not res.error_code:
        return Submission(res.message_id, state, res.provider_id, None, None,
                          now if delivered else None, (), reports)
    # An ok send may still report a problem with a part: the submission keeps its event rows,
    # with the problem (its `submitted_at` still counts it for the channel's caps).
    events = [Event(res.message_id, "submitted", now, f"provider id {res.provider_id}; "
                    f"{res.error_code}: {res.error_message or ''}")]
    if delivered:
        events.append(Event(res.message_id, "delivered", now, None))
    return Submission(res.message_id, state, res.provider_id, res.error_code,
                      res.error_message or "", None, tuple(events), reports)


def plan_submissions(results: Sequence[SendResult], now: float) -> list[Submission]:
    """The writes of every send of ``results`` that went through, for a store whose write
    keeps only those of messages still held (``plan_outcomes`` leaves the others out first)."""
    return [plan_submission(res, now) for res in results if res.kind.went_out]


def provider_refs(results: Sequence[SendResult]) -> list[tuple[int, str, int]]:
    """(message id, provider id, part) of each part of the sends that went through: the
    ``provider_refs`` rows that let a status update naming one part find its message."""
    return [(res.message_id, pid, part) for res in results if res.kind.went_out
            for part, pid in res.provider_refs]


def plan_outcomes(results: Sequence[SendResult], held: Mapping[int, HeldMessage], now: float,
                  policy: RetryPolicy) -> OutcomePlan:
    """The writes of a batch's outcomes: submissions; sends deferred (no attempt counted),
    retried with back-off while attempts remain, else failed and refunded. Results for
    messages not in ``held`` are left out: their lease ran out and another worker's outcome
    counts (or a provider callback moved them on first)."""
    plan = OutcomePlan()
    for res in results:
        row = held.get(res.message_id)
        if row is None:
            continue
        if res.kind.went_out:
            submission = plan_submission(res, now)
            plan.submitted.append(submission)
            plan.events += submission.events
            if row.has_webhook:
                plan.reports += [Report(row.project_id, row.id, state, now, None, None)
                                 for state in submission.report_states]
        else:
            _plan_failure(plan, res, row, now, policy)
    return plan


def _plan_failure(plan: OutcomePlan, res: SendResult, row: HeldMessage, now: float,
                  policy: RetryPolicy) -> None:
    mid = row.id
    detail = f"{res.error_code or 'error'}: {res.error_message or ''}".strip()
    if res.kind.waits:
        wait = max(res.retry_after or 0.0, MIN_DEFER_SECONDS)
        plan.deferred.append(Requeue(mid, now + wait, res.error_code, res.error_message))
        plan.events.append(Event(mid, "queued", now,
                                 f"waiting {wait:.1f}s (not an attempt): {detail}"))
        return
    retry = res.kind is Outcome.RETRY
    if retry and row.attempts < policy.max_attempts:
        delay = policy.delay(row.attempts, res.retry_after)
        plan.retried.append(Requeue(mid, now + delay, res.error_code, res.error_message))
        plan.events.append(Event(mid, "queued", now, f"retry in {delay:.1f}s after {detail}"))
        return
    if retry:
        detail = f"gave up after {row.attempts} attempts; last {detail}"
    plan.failed.append(Failure(mid, res.error_code, res.error_message))
    plan.events.append(Event(mid, "failed", now, detail))
    plan.events.append(Event(mid, "refunded", now, f"{row.credit_micro} micro-credits returned"))
    plan.refunds[row.project_id] += row.credit_micro
    if row.has_webhook:
        plan.reports.append(Report(row.project_id, mid, "refunded", now, res.error_code,
                                   res.error_message))


@dataclass(frozen=True, slots=True)
class Settled:
    """A message a sweep or a cancellation took out of the queue (already in its end state)."""

    id: int
    project_id: int
    credit_micro: int
    # Why, as its ``error_message`` says.
    why: str
    has_webhook: bool


@dataclass(slots=True)
class SettlePlan:
    """Events, webhook reports and refunds of messages taken out of the queue."""

    events: list[Event]
    reports: list[Report]
    refunds: dict[int, int]
    refund_reason: str


def plan_expiry(rows: Sequence[Settled], now: float) -> SettlePlan:
    """The writes after a validity sweep expired ``rows`` (``why``: ``VALIDITY_ENDED`` or
    ``EXPIRED_UNCONFIRMED``): each refunded, reported."""
    return SettlePlan(
        [Event(row.id, "expired", now, f"{row.why}; credit returned") for row in rows],
        [Report(row.project_id, row.id, "expired", now, None, row.why)
         for row in rows if row.has_webhook],
        _refunds(rows), REFUND_EXPIRED)


def plan_cancellation(rows: Sequence[Settled], now: float, reason: str) -> SettlePlan:
    """The writes after a channel's queue or a push's queued messages were cancelled for
    ``reason``: each refunded, reported, in id order."""
    rows = sorted(rows, key=lambda row: row.id)
    return SettlePlan(
        [Event(row.id, "cancelled", now, f"{reason}; {row.credit_micro} micro-credits returned")
         for row in rows],
        [Report(row.project_id, row.id, "cancelled", now, None, reason)
         for row in rows if row.has_webhook],
        _refunds(rows), refund_reason_cancelled(reason))


def _refunds(rows: Sequence[Settled]) -> dict[int, int]:
    refunds: dict[int, int] = defaultdict(int)
    for row in rows:
        refunds[row.project_id] += row.credit_micro
    return refunds


@dataclass(frozen=True, slots=True)
class Moved:
    """A message a provider status update moves."""

    project_id: int
    credit_micro: int
    has_webhook: bool


@dataclass(slots=True)
class StatusPlan:
    """Refunds and webhook reports of the moves of provider status updates."""

    reports: list[Report]
    refunds: dict[int, int]
    refund_reason: str = REFUND_PROVIDER_FAILURE


def plan_status_moves(moves: Sequence[tuple[int, StatusUpdate]],
                      messages: Mapping[int, Moved]) -> StatusPlan:
    """What the moves ``(message_id, update)`` of provider status updates write besides the
    new states: a message ``refunded`` gets its credit back, and each move of a project with a
    webhook is reported, in the order of the moves."""
    plan = StatusPlan([], defaultdict(int))
    for mid, update in moves:
        message = messages[mid]
        if update.state is State.REFUNDED:
            plan.refunds[message.project_id] += message.credit_micro
        if message.has_webhook:
            plan.reports.append(Report(message.project_id, mid, update.state.value, update.at,
                                       update.error_code, update.error_message))
    return plan
