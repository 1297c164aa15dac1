"""Prometheus metrics of the API process (``GET /metrics``)."""

from prometheus_client import Counter, Histogram

PUSHES = Counter("pushgate_pushes_accepted_total", "Pushes answered with status 100")
MESSAGES_ACCEPTED = Counter("pushgate_messages_accepted_total", "Messages queued by pushes")
ERRORS = Counter("pushgate_api_errors_total", "Requests refused, by status code", ["code"])
ACCEPT_SECONDS = Histogram(
    "pushgate_push_accept_seconds", "Time to accept one push (decode to commit)",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))
CALLBACKS = Counter("pushgate_provider_callbacks_total", "Provider callbacks, by channel kind",
                    ["kind", "outcome"])
