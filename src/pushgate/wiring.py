"""The long-running parts built from settings, once, for both entry points.

``pushgate serve`` (through ``api/gateway.py``) and ``pushgate worker`` (``cli.py``) run the
same dispatcher and webhook deliverer; building them here keeps the two identical and lets the
CLI run a worker without importing the HTTP layer.
"""

from __future__ import annotations

from pushgate.channels.base import ChannelEnv
from pushgate.config import Settings
from pushgate.core.policy import RetryPolicy
from pushgate.dispatch.worker import Dispatcher
from pushgate.store.base import Store
from pushgate.webhooks.deliverer import DeliveryWake, WebhookDeliverer
from pushgate.webhooks.instant_reply import InstantReplies


def channel_env(settings: Settings) -> ChannelEnv:
    """What every connector may know of the gateway (its public URL, media signing key)."""
    return ChannelEnv(public_url=settings.gateway_url(), secret_key=settings.secret_key,
                      allow_private_media=settings.allow_private_media)


def retry_policy(settings: Settings) -> RetryPolicy:
    """The one retry policy: for the dispatcher's sends and the phones' reports alike."""
    return RetryPolicy(settings.retry_max_attempts, settings.retry_base_seconds,
                       settings.retry_cap_seconds)


def build_dispatcher(settings: Settings, store: Store, worker_id: str,
                     webhook_wake: DeliveryWake | None) -> Dispatcher:
    return Dispatcher(
        store, worker_id=worker_id, claim_batch=settings.claim_batch,
        send_lanes=settings.send_lanes,
        message_lease_seconds=settings.message_lease_seconds,
        channel_lease_seconds=settings.channel_lease_seconds,
        idle_poll=settings.idle_poll_seconds,
        retry_policy=retry_policy(settings),
        webhook_wake=webhook_wake, env=channel_env(settings),
        number_check_timeout_seconds=settings.number_check_timeout_seconds,
        wake_socket=settings.wake_socket or None)


def build_deliverer(settings: Settings, store: Store, worker_id: str,
                    wake: DeliveryWake | None) -> WebhookDeliverer:
    return WebhookDeliverer(
        store, worker_id, timeout=settings.webhook_timeout_seconds,
        schedule=settings.webhook_schedule(), batch_size=settings.webhook_batch,
        idle_poll=settings.idle_poll_seconds, wake=wake,
        allow_private=settings.allow_private_webhooks,
        replies=InstantReplies(
            store, max_bytes=settings.instant_reply_max_bytes,
            interval=settings.instant_reply_interval_seconds,
            validity=settings.message_validity_seconds or None,
            allow_private_media=settings.allow_private_media))
