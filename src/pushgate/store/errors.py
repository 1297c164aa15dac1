"""Errors the stores raise to their callers."""

from __future__ import annotations


class InsufficientCredit(Exception):
    def __init__(self, needed_micro: int, balance_micro: int) -> None:
        self.needed_micro = needed_micro
        self.balance_micro = balance_micro
        super().__init__(f"needs {needed_micro} micro-credits, balance {balance_micro}")


class StoreUnavailable(Exception):
    """The database cannot be reached or stays locked; the caller answers 503."""
