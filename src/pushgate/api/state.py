"""What the routes of one application share, kept on ``app.state.gateway``.

Routes are module-level functions (``api/push.py``, ``api/reports.py`` …); each reads the
``Gateway`` of the application it serves with ``gateway_of(request)``, one attribute lookup,
so the hot push path pays nothing for the split.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc

from starlette.requests import Request

from pushgate.api.auth import FailureThrottle, Lookups, RateLimiter
from pushgate.channels.android.protocol import Wakeups
from pushgate.channels.base import Channel, channel_for
from pushgate.config import Settings
from pushgate.core.channels import ChannelSpec
from pushgate.core.push import Limits
from pushgate.dispatch.hints import HintSender
from pushgate.dispatch.worker import Dispatcher, new_worker_id, pull_kinds
from pushgate.metrics import StoreGauges, flush_tallies_every
from pushgate.outbound import NameVerdicts
from pushgate.store.base import Store
from pushgate.webhooks.deliverer import DeliveryWake, WebhookDeliverer
from pushgate.wiring import build_deliverer, build_dispatcher, channel_env, retry_policy


class Gateway:
    """What the routes share: settings, store, limiter, and (unless API-only) the loops."""

    def __init__(self, settings: Settings, store: Store, run_workers: bool) -> None:
        self.settings = settings
        self.store = store
        self.run_workers = run_workers
        self.limits = Limits(max_recipients=settings.max_recipients)
        self.rate_limiter = RateLimiter(settings.push_rate_per_minute)
        self.lookups = Lookups(store, settings.lookup_cache_seconds, FailureThrottle(
            settings.auth_failure_limit, settings.auth_failure_window_seconds))
        self.retry_policy = retry_policy(settings)
        # Whether media URL hosts resolve to public addresses only, kept a few seconds.
        self.media_names = NameVerdicts()
        self.webhook_wake = DeliveryWake()
        # The gauges ``/metrics`` reads from the store, from a snapshot kept a few seconds.
        self.store_gauges = StoreGauges(store, pull_kinds())
        self.dispatcher: Dispatcher | None = None
        # API-only with a dispatcher elsewhere on this host: its wake-up hints go there.
        self.hints: HintSender | None = None
        self.deliverer: WebhookDeliverer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Adds the per-push counts to the metrics every second, and when stopped.
        self._tally_task: asyncio.Task[None] | None = None
        self.env = channel_env(settings)
        # Connector instances answering provider callbacks, by channel id (rebuilt when the
        # channel's settings change).
        self._callback_channels: dict[int, tuple[ChannelSpec, Channel]] = {}
        # The phones' device API: event streams to wake, wrong private tokens on
        # ``POST /device`` per client address (guessing them), when each device last wrote
        # its "last seen".
        self.wakeups = Wakeups()
        self.registrations = FailureThrottle(settings.auth_failure_limit,
                                             settings.auth_failure_window_seconds)
        self.device_touched: dict[str, float] = {}

    def callback_channel(self, spec: ChannelSpec) -> Channel:
        cached = self._callback_channels.get(spec.id)
        if cached is None or cached[0] != spec:
            cached = self._callback_channels[spec.id] = (spec, channel_for(spec, self.env))
        return cached[1]

    async def start(self) -> None:
        await self.store.open()
        # Everything loaded so far (phonenumbers metadata, modules) lives as long as the
        # process: keep it out of the collector's full passes, which otherwise walk it
        # again and again while pushes allocate.
        gc.freeze()
        self._tally_task = asyncio.create_task(flush_tallies_every(), name="metrics-tallies")
        if not self.run_workers:
            if self.settings.wake_socket:
                self.hints = HintSender(self.settings.wake_socket)
            return
        worker_id = self.settings.worker_id or new_worker_id()
        self.dispatcher = build_dispatcher(self.settings, self.store, worker_id, self.webhook_wake)
        self.deliverer = build_deliverer(self.settings, self.store, worker_id, self.webhook_wake)
        self._tasks = [asyncio.create_task(self.dispatcher.run(), name="dispatcher"),
                       asyncio.create_task(self.deliverer.run(), name="webhooks")]

    def queued(self, channel_id: int) -> None:
        """Messages were just committed for ``channel_id``: wake its runner now, in this
        process or (a hint, dispatch/hints.py) in the dispatcher's process of this host.
        Only a hint either way: the runners would find the rows by polling."""
        if self.dispatcher is not None:
            self.dispatcher.wake(channel_id)
        elif self.hints is not None:
            self.hints.queued(channel_id)

    async def stop(self) -> None:
        if self.hints is not None:
            self.hints.close()
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.deliverer is not None:
            self.deliverer.stop()
        for task in self._tasks:
            with contextlib.suppress(Exception):
                await task
        if self._tally_task is not None:   # its last flush: the pushes this process took
            self._tally_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tally_task
            self._tally_task = None
        await self.store.close()


def gateway_of(request: Request) -> Gateway:
    """The ``Gateway`` of the application serving ``request``."""
    gateway: Gateway = request.app.state.gateway
    return gateway
