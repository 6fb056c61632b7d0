"""Prometheus metrics of the gateway (default registry, served at ``GET /metrics``).

    metrics.REQUESTS.labels("commands", "accepted").inc()

Labels hold routes, outcomes, reasons and subjects only: never a user, a token or a code.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Slack waits 3 s; the interesting part is well below 10 ms.
_ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 3.0, 5.0)

REQUESTS = Counter(
    "helpdesk_gateway_requests_total",
    "Slack requests by route and outcome (accepted, duplicate, answered, ignored, refused, invalid, "
    "unauthorized, too_large, unavailable).",
    ["route", "outcome"],
)
ACK_LATENCY = Histogram(
    "helpdesk_gateway_ack_seconds",
    "Time from reading a Slack request to answering it (including the JetStream publish).",
    ["route"],
    buckets=_ACK_BUCKETS,
)
PUBLISH_FAILURES = Counter(
    "helpdesk_gateway_publish_failures_total",
    "Commands that could not be published (NATS down or too slow), by subject.",
    ["subject"],
)
REJECTIONS = Counter(
    "helpdesk_gateway_rejections_total",
    "Requests refused before or after parsing, by reason (signature, body, case token).",
    ["reason"],
)
OPTIONS = Counter(
    "helpdesk_gateway_options_total",
    "User-search menus answered, by source (cache, search, unavailable, refused, empty).",
    ["source"],
)
