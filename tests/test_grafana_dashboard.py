"""deploy/grafana-dashboard.json queries only metrics pushgate exports, and shows every family
of the pipeline."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

import pushgate.api.metrics  # noqa: F401  (registers the API's families)
from pushgate.metrics import StoreGauges

DASHBOARD = Path(__file__).parent.parent / "deploy" / "grafana-dashboard.json"
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum",
                                                             "_created"), "gauge": ("",)}


def exported() -> set[str]:
    """Every sample name pushgate's /metrics may show."""
    families = list(REGISTRY.collect()) + list(StoreGauges(None, []).collect())  # type: ignore[arg-type]
    return {family.name + suffix for family in families if family.name.startswith("pushgate_")
            for suffix in SUFFIXES.get(family.type, ("",))}


def expressions(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    used = {name for expr in expressions(dashboard)
            for name in re.findall(r"\bpushgate_[a-z_]+", expr)}
    assert used, "the dashboard queries no pushgate metric"
    assert used <= exported(), sorted(used - exported())


def test_the_dashboard_shows_every_family_of_the_pipeline() -> None:
    text = " ".join(expressions(json.loads(DASHBOARD.read_text())))
    for name in ("pushgate_messages_sent_total", "pushgate_messages_final_total",
                 "pushgate_queue_depth", "pushgate_webhook_backlog",
                 "pushgate_webhook_deliveries_total", "pushgate_channel_up",
                 "pushgate_phones_online", "pushgate_send_seconds_bucket",
                 "pushgate_provider_errors_total"):
        assert name in text, name


def test_the_delivery_ratio_counts_what_its_title_says() -> None:
    [panel] = [p for p in json.loads(DASHBOARD.read_text())["panels"]
               if p["title"].startswith("Delivery ratio")]
    assert "delivered + read" in panel["title"]
    [expr] = [target["expr"] for target in panel["targets"]]
    numerator, denominator = expr.split(" / ")
    assert 'status=~"delivered|read"' in numerator
    assert "status" not in denominator      # over every final state
