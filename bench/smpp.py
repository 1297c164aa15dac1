"""SMPP connector throughput: messages/s through ``SmppChannel`` into the fake SMSC, receipts on.

The fake SMSC (``tests/fakes/smsc.py``) runs in its own process on 127.0.0.1, answering every
submit_sm at once and sending a DELIVRD receipt for each. This process runs the connector as the
dispatcher drives it: ``send_batch`` of 1,000 messages at a time (single-part GSM texts, each to
its own number), one batch after the other, with a sink that only counts (no store: this
measures the connector and the wire, not the database). A case ends when every receipt is in,
or at the time limit.

Per case it prints messages/s two ways: *submitted* (sends answered by submit_sm_resp) and
*receipted* (from the first send to the last receipt acknowledged), plus the CPU seconds of the
connector and of the fake.

    python bench/smpp.py [--messages 50000] [--binds 1,2] [--window 10] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_seconds, valid_numbers  # noqa: E402

from pushgate.channels.smpp import SmppChannel  # noqa: E402
from pushgate.core.channels import ChannelSpec, PriceUnit  # noqa: E402
from pushgate.core.lifecycle import State  # noqa: E402
from pushgate.core.models import InboundMessage, OutboundMessage, StatusUpdate  # noqa: E402

BATCH = 1000
MAX_MESSAGES = 1_000_000


class CountingSink:
    def __init__(self) -> None:
        self.delivered = 0
        self.other = 0
        self.last_at = 0.0
        self.done = asyncio.Event()
        self.expected = 0

    async def updates(self, updates: list[StatusUpdate]) -> None:
        for update in updates:
            if update.state is State.DELIVERED:
                self.delivered += 1
            else:
                self.other += 1
        self.last_at = time.perf_counter()
        if self.delivered + self.other >= self.expected:
            self.done.set()

    async def inbound(self, messages: list[InboundMessage]) -> None:
        pass


class FakeSmscProcess:
    """``python -m tests.fakes.smsc`` in a subprocess (its own core), stopped on exit."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.smsc", "--window", "100000"], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("port "):
            self.close()
            raise RuntimeError(f"the fake SMSC did not start: {line!r}")
        self.port = int(line.split()[1])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def run_case(port: int, fake_pid: int, messages: int, binds: int, window: int,
                   seconds: float) -> dict[str, Any]:
    spec = ChannelSpec(
        id=1, project_id=1, kind="smpp", application=3, price_micro=1000,
        price_unit=PriceUnit.SEGMENT,
        config=SmppChannel.validate_config({
            "host": "127.0.0.1", "port": port, "system_id": "pushgate", "password": "secret",
            "source_addr": "PUSHGATE", "binds": binds, "window": window}))
    channel = SmppChannel(spec)
    sink = CountingSink()
    sink.expected = messages
    channel.sink = sink
    numbers = valid_numbers(min(messages, 100_000))
    await channel.start()
    try:
        cpu0, fake_cpu0 = time.process_time(), cpu_seconds(fake_pid)
        started = time.perf_counter()
        deadline = started + seconds
        sent = failed = 0
        for start in range(0, messages, BATCH):
            if time.perf_counter() > deadline:
                break
            batch = [OutboundMessage(id=i, push_id=1, project_id=1, channel_id=1,
                                     number=numbers[i % len(numbers)], text=f"Your bill {i} is due",
                                     media_url=None, media_kind=None, parts=1, priority=0,
                                     attempts=0)
                     for i in range(start, min(start + BATCH, messages))]
            results = await channel.send_batch(batch)
            ok = sum(1 for r in results if r.kind.went_out)
            sent += ok
            failed += len(results) - ok
        submitted_at = time.perf_counter()
        sink.expected = sent
        if sink.delivered + sink.other < sent:
            remaining = max(deadline - time.perf_counter(), 5.0)
            try:
                async with asyncio.timeout(remaining):
                    await sink.done.wait()
            except TimeoutError:
                pass
        cpu, fake_cpu = time.process_time() - cpu0, cpu_seconds(fake_pid) - fake_cpu0
    finally:
        await channel.stop()
    receipted = (sink.last_at or time.perf_counter()) - started
    return {"binds": binds, "window": window, "sent": sent, "failed": failed,
            "receipts": sink.delivered + sink.other, "submit_s": submitted_at - started,
            "receipt_s": receipted, "submitted_messages_s": sent / (submitted_at - started),
            "receipted_messages_s": (sink.delivered + sink.other) / receipted,
            "connector_cpu_s": cpu, "fake_cpu_s": fake_cpu}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--binds", default="1,2", help="comma-separated, one run each")
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60.0, help="time limit per case")
    args = parser.parse_args(argv)
    if not 0 < args.messages <= MAX_MESSAGES:
        parser.error(f"--messages must be in 1..{MAX_MESSAGES}")
    rows = []
    for binds in (int(b) for b in args.binds.split(",")):
        fake = FakeSmscProcess()
        try:
            row = asyncio.run(run_case(fake.port, fake.proc.pid, args.messages, binds,
                                       args.window, args.seconds))
        finally:
            fake.close()
        rows.append(row)
        print(f"smpp {binds} bind(s) window {args.window:<3} {row['sent']:>7} sent "
              f"({row['failed']} failed) {row['receipts']:>7} receipts  "
              f"submitted {row['submitted_messages_s']:>6.0f} messages/s  "
              f"receipted {row['receipted_messages_s']:>6.0f} messages/s "
              f"({row['receipt_s']:.1f} s)  cpu connector {row['connector_cpu_s']:.1f} s "
              f"fake {row['fake_cpu_s']:.1f} s", flush=True)
    return rows


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
