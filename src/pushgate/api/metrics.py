"""Prometheus metrics of the API process (``GET /metrics``).

The per-push counts go through their tallies (``PUSHES_TALLY`` …, ``pushgate/metrics.py``):
plain numbers added to the metrics in one go, at least every second and before every
exposition.
"""

from prometheus_client import Counter, Histogram

from pushgate.metrics import CounterTally, HistogramTally

PUSHES = Counter("pushgate_pushes_accepted_total", "Pushes answered with status 100")
MESSAGES_ACCEPTED = Counter("pushgate_messages_accepted_total", "Messages queued by pushes")
ERRORS = Counter("pushgate_api_errors_total", "Requests refused, by status code", ["code"])
ACCEPT_SECONDS = Histogram(
    "pushgate_push_accept_seconds", "Time to accept one push (decode to commit)",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))
PUSHES_TALLY = CounterTally(PUSHES)
MESSAGES_TALLY = CounterTally(MESSAGES_ACCEPTED)
ACCEPT_SECONDS_TALLY = HistogramTally(ACCEPT_SECONDS)
CALLBACKS = Counter("pushgate_provider_callbacks_total", "Provider callbacks, by channel kind",
                    ["kind", "outcome"])
