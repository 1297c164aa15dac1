"""Wake-up hints between the processes of one host: "messages were queued for channel N".

An API process that accepts a push while the dispatcher runs in another process on the same
host (``pushgate serve --workers N``: the dispatcher in the first child, the others
``--api-only``) sends the channel id as a datagram to a Unix socket the dispatcher's process
listens on (``PUSHGATE_WAKE_SOCKET``, which ``serve --workers`` sets for its children), so the
channel's idle runner claims at once instead of at the store's next look (SQLite's
``listen`` polls; PostgreSQL's NOTIFY needs none of this but does no harm alongside).

A hint is only a hint: every hand-off between processes is still a row in the store. A hint
lost (no dispatcher listening yet, a full socket buffer, another host) costs latency, never a
message: the runners' polling and the store's notifications find the row anyway.

Hints are coalesced on both sides: the sender gathers the channels of one event-loop turn into
one datagram, and the receiver sets the runner's wake-up flag, a no-op while it is awake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Callable

log = logging.getLogger("pushgate.dispatch")

_ID = struct.Struct("!q")
#: Most channel ids one datagram carries (a few KB: well under any Unix datagram limit).
MAX_IDS_PER_DATAGRAM = 512
#: Most datagrams read per readiness callback, so a flood cannot starve the event loop.
MAX_READS_PER_CALL = 64


def encode(channel_ids: list[int]) -> list[bytes]:
    """Datagrams carrying ``channel_ids`` (8-byte big-endian each)."""
    return [b"".join(_ID.pack(c) for c in channel_ids[i:i + MAX_IDS_PER_DATAGRAM])
            for i in range(0, len(channel_ids), MAX_IDS_PER_DATAGRAM)]


def decode(datagram: bytes) -> list[int]:
    """The channel ids of a datagram; trailing bytes that make no whole id are ignored."""
    whole = len(datagram) - len(datagram) % _ID.size
    return [value for (value,) in _ID.iter_unpack(datagram[:whole])]


class HintListener:
    """The dispatcher's side: a datagram socket bound at ``path``; each channel id received
    is handed to ``on_channel`` (on the running event loop)."""

    def __init__(self, path: str, on_channel: Callable[[int], None]) -> None:
        self.path = path
        self.on_channel = on_channel
        self.sock: socket.socket | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> bool:
        """Bind and start reading; False (logged) when the socket cannot be made, in which
        case the dispatcher relies on polling and the store's notifications."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)   # a previous dispatcher's, which is gone
            sock.bind(self.path)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            log.warning("cannot listen for wake-up hints on %s (%s); polling only",
                        self.path, exc)
            return False
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(sock.fileno(), self._read)
        return True

    def _read(self) -> None:
        assert self.sock is not None
        seen: set[int] = set()
        for _ in range(MAX_READS_PER_CALL):
            try:
                datagram = self.sock.recv(_ID.size * MAX_IDS_PER_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.warning("reading wake-up hints failed: %s", exc)
                break
            seen.update(decode(datagram))
        for channel_id in seen:
            self.on_channel(channel_id)

    def close(self) -> None:
        if self.sock is None:
            return
        if self.loop is not None:
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self.sock = None
        with contextlib.suppress(OSError):
            os.unlink(self.path)


class HintSender:
    """An API process's side: ``queued(channel_id)`` marks the channel; at the end of the
    event loop's turn one datagram carries every channel marked during it. Sending never
    blocks and never fails the caller."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.pending: set[int] = set()
        self.sent = 0      # datagrams handed to the kernel
        self.dropped = 0   # datagrams not (nobody listening, buffer full): polling covers them

    def queued(self, channel_id: int) -> None:
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self.pending.add(channel_id)

    def flush(self) -> None:
        ids, self.pending = sorted(self.pending), set()
        for datagram in encode(ids):
            try:
                self.sock.sendto(datagram, self.path)
            except OSError:
                self.dropped += 1
            else:
                self.sent += 1

    def close(self) -> None:
        self.sock.close()
