"""Prometheus metrics of the Slack responder (default registry).

    metrics.RENDERS.labels("verified", "updated").inc()

Labels hold Slack method names, case states and outcomes only: never a user, a case id or a text.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)

SLACK_CALLS = Counter(
    "helpdesk_responder_slack_calls_total",
    "Slack Web API calls by method and outcome (ok, Slack's error code, ratelimited, unavailable).",
    ["method", "outcome"],
)
SLACK_LATENCY = Histogram(
    "helpdesk_responder_slack_call_seconds",
    "Duration of one Slack Web API call, built-in rate-limit retries included.",
    ["method"],
    buckets=_LATENCY_BUCKETS,
)
RENDERS = Counter(
    "helpdesk_responder_renders_total",
    "Case snapshots handled, by case state and result "
    "(opened, updated, stale, no_view, gone, expired_trigger, failed).",
    ["state", "result"],
)
SNAPSHOT_LAG = Histogram(
    "helpdesk_responder_snapshot_lag_seconds",
    "Time from a snapshot's creation by the worker to its view reaching Slack.",
    buckets=_LATENCY_BUCKETS,
)
HASH_RETRIES = Counter(
    "helpdesk_responder_hash_retries_total",
    "views.update retries after hash_conflict, by the hash used for the retry (snapshot, none).",
    ["retry_with"],
)
AUDIT_POSTS = Counter(
    "helpdesk_responder_audit_posts_total",
    "Audit channel messages by kind (parent, reply, parent_update, alert, standalone; not_posted: routine).",
    ["kind"],
)
LOOKUPS = Counter(
    "helpdesk_responder_user_lookups_total",
    "Slack user look-ups served, by source (cache, slack, error).",
    ["source"],
)
HOME_PUBLISHES = Counter(
    "helpdesk_responder_home_publishes_total",
    "App Home views published, by outcome.",
    ["outcome"],
)
