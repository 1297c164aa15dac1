"""Errors the stores raise to their callers."""

from __future__ import annotations


class InsufficientCredit(Exception):
    def __init__(self, needed_micro: int, balance_micro: int) -> None:
        self.needed_micro = needed_micro
        self.balance_micro = balance_micro
        super().__init__(f"needs {needed_micro} micro-credits, balance {balance_micro}")


class StoreUnavailable(Exception):
    """The database cannot be reached or stays locked; the caller answers 503."""


class AllOptedOut(Exception):
    """Every accepted entry of a push went to an opted-out number: nothing was written.
    ``numbers`` are the opted-out ones (``core.optouts.without_opted_out`` builds the answer)."""

    def __init__(self, numbers: frozenset[str]) -> None:
        self.numbers = numbers
        super().__init__(f"{len(numbers)} opted-out numbers, nothing else to send")


class IdempotencyKeyReused(Exception):
    """An idempotency key accepted before for push ``push_id`` came with other planned
    messages (another ``core.push.plan_digest``): nothing was written."""

    def __init__(self, push_id: int) -> None:
        self.push_id = push_id
        super().__init__(f"the key was used for push {push_id}, with other messages")
