"""The WhatsApp Cloud API connector (Meta Graph API): official WhatsApp numbers, Picky
applications 8, 101 and 121.

One channel is one business phone number. Sends go to ``POST /{version}/{phone_number_id}/
messages`` over reused keep-alive connections (``channels/transport.py``: httpx when a proxy is
configured; status and media calls always use httpx); the returned ``wamid`` is the provider id
that every later status webhook names. What is built here and nowhere else:

- the message shape: text, media by link (a caption only where WhatsApp takes one, a
  ``filename`` for documents, the text of an audio as a second message), or a template when
  ``message.extra["template"]`` is set;
- the error table (``ERROR_RULES``): Graph error ``code`` → retry, wait, fail or pause the
  channel. Meta asks to branch on the code, never on the HTTP status or the text;
- the per-recipient pair limit (about one message per 6 s to the same user, error 131056),
  which the channel-wide rate limiter cannot express;
- the webhook: the GET subscription handshake and signed POSTs (``X-Hub-Signature-256``)
  carrying message statuses and the users' own messages.

Config keys (``pushgate channel add --config``): ``phone_number_id``, ``access_token``,
``app_secret`` (signs webhooks), ``verify_token`` (subscription handshake), ``graph_base_url``
(default the real Graph host), ``graph_version`` (default ``v21.0``), ``pair_interval_seconds``
(default 6; 0 turns the pair limit off), ``timeout_seconds`` (default 20) and ``max_in_flight``
(sends awaiting Graph's answer at once, default 64: enough for 80/s at Graph's usual 100–500 ms
per call; an upgraded number at 1,000/s needs ~200–500).

Modules: ``config`` (keys, defaults, validation), ``errors`` (the error table, ``GraphError``),
``channel`` (``WhatsAppCloudChannel``: sends, status, media), ``callbacks`` (the webhook).
"""

from pushgate.channels.whatsapp_cloud.channel import PairPacer, WhatsAppCloudChannel
from pushgate.channels.whatsapp_cloud.errors import (
    ERROR_RULES,
    ErrorRule,
    GraphError,
    error_rule,
)

__all__ = ["ERROR_RULES", "ErrorRule", "GraphError", "PairPacer", "WhatsAppCloudChannel",
           "error_rule"]
