"""Prometheus metrics of the telephony hook (default registry, served at ``GET /metrics``).

    metrics.SENDS.labels("TWILIO", "sms", "sent").inc()

Labels never hold a number, a user or a code: only providers, channels, outcomes and reasons.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0)

REQUESTS = Counter(
    "helpdesk_telephony_requests_total",
    "Okta hook requests by channel and answer (successful, pending, failed, error, duplicate, unauthorized).",
    ["channel", "answer"],
)
REQUEST_LATENCY = Histogram(
    "helpdesk_telephony_request_seconds",
    "Time from Okta's request to the hook's answer.",
    ["channel"],
    buckets=_LATENCY_BUCKETS,
)
SENDS = Counter(
    "helpdesk_telephony_sends_total",
    "Provider requests by provider, channel and outcome (sent, rejected, unavailable, maybe_sent, cancelled).",
    ["provider", "channel", "outcome"],
)
PROVIDER_LATENCY = Histogram(
    "helpdesk_telephony_provider_seconds",
    "Duration of one provider request.",
    ["provider", "channel"],
    buckets=_LATENCY_BUCKETS,
)
REFUSALS = Counter(
    "helpdesk_telephony_refusals_total",
    "Requests refused before anything was sent, by reason.",
    ["reason"],
)
AUTH_FAILURES = Counter(
    "helpdesk_telephony_auth_failures_total",
    "Requests refused with 401, by reason.",
    ["endpoint", "reason"],
)
STATUS_CALLBACKS = Counter(
    "helpdesk_telephony_status_callbacks_total",
    "Provider delivery status callbacks by reported status.",
    ["status"],
)
