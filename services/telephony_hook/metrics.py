"""Prometheus metrics of the telephony hook (default registry, served at ``GET /metrics``).

    metrics.SENDS.labels("TWILIO", "sms", "sent").inc()

Labels never hold a number, a user or a code: only providers, channels, outcomes and reasons.
"""

from __future__ import annotations

from functools import cache

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


# The children of the metrics every request touches, looked up once per label set: ``labels()``
# takes a lock and checks its arguments on each call. The label sets are small and fixed.


@cache
def request_count(channel: str, answer: str) -> Counter:
    return REQUESTS.labels(channel, answer)


@cache
def request_latency(channel: str) -> Histogram:
    return REQUEST_LATENCY.labels(channel)


@cache
def send_count(provider: str, channel: str, outcome: str) -> Counter:
    return SENDS.labels(provider, channel, outcome)


@cache
def provider_latency(provider: str, channel: str) -> Histogram:
    return PROVIDER_LATENCY.labels(provider, channel)
