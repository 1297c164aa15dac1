"""Bench-only probe (``bench/fastlane.py``): put this folder on ``PYTHONPATH`` with
``PUSHGATE_BENCH_SEND_LOG=<file>`` and every process of the gateway appends, for each message
the sandbox connector is asked to send, one line ``<time.monotonic()> <number>`` to that file
(the moment ``send_batch`` or ``send`` is called). Nothing in ``src/`` knows about it; without
the variable it does nothing. ``time.monotonic`` is CLOCK_MONOTONIC, one clock for every process
of the machine, so the bench compares it with the moments its client got the push's answers.
"""

from __future__ import annotations

import os
import time

_LOG = os.environ.get("PUSHGATE_BENCH_SEND_LOG")

if _LOG:
    from pushgate.channels.sandbox import SandboxChannel

    _out = open(_LOG, "a", buffering=1)   # noqa: SIM115 - for the process's life
    _send_batch = SandboxChannel.send_batch
    _send = SandboxChannel.send

    async def send_batch(self, messages):  # type: ignore[no-untyped-def]
        now = time.monotonic()
        _out.write("".join(f"{now:.6f} {m.number}\n" for m in messages))
        return await _send_batch(self, messages)

    async def send(self, message):  # type: ignore[no-untyped-def]
        _out.write(f"{time.monotonic():.6f} {message.number}\n")
        return await _send(self, message)

    SandboxChannel.send_batch = send_batch  # type: ignore[method-assign]
    SandboxChannel.send = send  # type: ignore[method-assign]
