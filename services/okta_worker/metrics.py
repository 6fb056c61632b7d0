"""Prometheus metrics of the okta worker (prometheus_client's default registry, created once).

    metrics.COMMANDS.labels("challenge", "ok").inc()

Labels never hold a user, a login, a code or a case id: only commands, endpoints, outcomes and states.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)

COMMANDS = Counter(
    "helpdesk_okta_worker_commands_total",
    "Commands handled, by command and outcome (ok, refused, duplicate, stale, error).",
    ["command", "outcome"],
)
COMMAND_LATENCY = Histogram(
    "helpdesk_okta_worker_command_seconds",
    "Time to handle one command, Okta calls included.",
    ["command"],
    buckets=_LATENCY_BUCKETS,
)
OKTA_REQUESTS = Counter(
    "helpdesk_okta_worker_okta_requests_total",
    "Okta API requests by endpoint template and HTTP status ('error' for no answer).",
    ["endpoint", "status"],
)
OKTA_LATENCY = Histogram(
    "helpdesk_okta_worker_okta_request_seconds",
    "Duration of one Okta API request.",
    ["endpoint"],
    buckets=_LATENCY_BUCKETS,
)
RATE_REMAINING = Gauge(
    "helpdesk_okta_worker_okta_rate_remaining",
    "X-Rate-Limit-Remaining of the last Okta answer this process saw.",
)
RATE_LIMITED = Counter(
    "helpdesk_okta_worker_okta_rate_limited_total",
    "Okta answers with HTTP 429 E0000047.",
)
PUSH_POLLS = Counter(
    "helpdesk_okta_worker_push_polls_total",
    "Push polls by result (WAITING, SUCCESS, REJECTED, TIMEOUT, gone, rate_limited, unavailable, stale).",
    ["result"],
)
PUSH_RESULT_TO_UPDATE = Histogram(
    "helpdesk_okta_worker_push_result_to_update_seconds",
    "From the poll that saw the push's final result to the case update being stored.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
TRANSITIONS = Counter(
    "helpdesk_okta_worker_case_transitions_total",
    "Case state changes, by new state.",
    ["state"],
)
CHALLENGES = Counter(
    "helpdesk_okta_worker_challenges_total",
    "Challenges by factor type and outcome (sent, verified, wrong, failed, rejected, timed_out, limited).",
    ["factor_type", "outcome"],
)
CAS_CONFLICTS = Counter(
    "helpdesk_okta_worker_case_cas_conflicts_total",
    "Case writes retried because another replica wrote the case first.",
)
