"""``helpdesk audit`` — search the audit trail: who did what to whom, when, with what outcome.

    helpdesk audit --since 2h                            # the last two hours, as a table
    helpdesk audit --target alice --outcome failure      # alice's failed steps (last 24 h by default)
    helpdesk audit --agent agent@example.com --since 7d --format csv > week.csv
    helpdesk audit --ticket INC0010001 --format jsonl    # one JSON event per line, for a SIEM
    helpdesk audit --action 'case.approval_*' --since 2024-05-01 --until 2024-06-01

It reads the durable ``AUDIT`` stream directly through an ordered ephemeral consumer starting at
``--since`` (``deliver_policy=by_start_time``; no acks, nothing written, the consumer vanishes when
the command ends), so it needs only the read side of the JetStream API for that stream (docs/audit.md).
Filters: ``--target`` and ``--agent`` match a part of the login, email or Slack id (any case);
``--ticket``, ``--outcome``, ``--case`` and ``--category`` match exactly; ``--action`` exactly or as a
glob. Times are UTC; ``--since``/``--until`` take ``30m``, ``2h``, ``7d``, ``2w`` (ago) or an ISO date.
The events' fields are described in docs/audit-event.schema.json.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import fnmatch
import re
import sys
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import orjson
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from shared.bus import AUDIT_STREAM, Bus, BusError
from shared.logging import SECRET_KEYS, configure_logging
from shared.messages import AuditEvent, BadMessage
from shared.settings import Settings

DEFAULT_SINCE = "24h"
FORMATS = ("table", "jsonl", "csv")
OUTCOMES = ("success", "failure", "denied", "refused", "pending", "info", "alert", "uncertain")
CSV_COLUMNS = (
    "at",
    "event_id",
    "category",
    "action",
    "outcome",
    "severity",
    "actor",
    "agent_email",
    "target",
    "case_id",
    "ticket",
    "details",
)
TABLE_COLUMNS = (
    ("TIME (UTC)", 19),
    ("CASE", 14),
    ("AGENT", 26),
    ("TARGET", 26),
    ("ACTION", 26),
    ("OUTCOME", 9),
    ("TICKET", 12),
    ("DETAILS", 60),
)
MESSAGE_WAIT = 5.0  # seconds to wait for the next message the server said is pending
UNTIL_SLACK = timedelta(hours=1)  # an event is stored soon after its ``at`` (a crash repair: minutes later)
_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """``2h`` / ``30m`` / ``7d`` ago, or an ISO 8601 date or time (UTC unless it says otherwise)."""
    now = now or datetime.now(UTC)
    if match := _AGO.match(text):
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (try 2h, 30m, 7d or 2024-05-01T10:00)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class AuditQuery:
    """Which events to list; every filter left None matches everything."""

    since: datetime | None = None
    until: datetime | None = None
    target: str | None = None
    agent: str | None = None
    ticket: str | None = None
    outcome: str | None = None
    action: str | None = None
    case_id: str | None = None
    category: str | None = None
    limit: int | None = None  # the most recent N of those matching

    def subject(self) -> str:
        """The stream subject filter: narrowed on the server where the query allows it."""
        category = self.category or "*"
        if self.action and not any(c in self.action for c in "*?["):
            return f"audit.{category}.{self.action}"
        return f"audit.{category}.>"

    def matches(self, event: AuditEvent) -> bool:
        details = event.details
        if self.since and event.at < self.since:
            return False
        if self.until and event.at > self.until:
            return False
        if self.category and event.category != self.category:
            return False
        if self.outcome and event.outcome != self.outcome:
            return False
        if self.case_id and event.case_id != self.case_id:
            return False
        if self.ticket and str(details.get("ticket") or "").lower() != self.ticket.lower():
            return False
        if self.action and not (event.action == self.action or fnmatch.fnmatchcase(event.action, self.action)):
            return False
        if self.agent and not _contains(self.agent, event.actor, details.get("agent_email")):
            return False
        targets = (event.target, details.get("target_login"), details.get("target_email"), details.get("target_id"))
        return not (self.target and not _contains(self.target, *targets))


def _contains(needle: str, *values: Any) -> bool:
    wanted = needle.lower()
    return any(isinstance(v, str) and wanted in v.lower() for v in values)


async def read_events(bus: Bus, query: AuditQuery) -> list[AuditEvent]:
    """The events of the AUDIT stream that match ``query``, oldest first (the last ``limit`` of them).

    An ordered consumer (no acks, in memory, deleted when done) starts at ``query.since``; reading
    stops at the last message pending when it was created, or once past ``query.until``.
    """
    stream = bus.stream_name(AUDIT_STREAM.name)
    try:
        info = await bus.js.stream_info(stream)
    except NotFoundError:
        return []
    if not info.state.messages:
        return []
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_TIME if query.since else DeliverPolicy.ALL,
        opt_start_time=query.since,
    )
    sub = await bus.js.subscribe(
        bus.subject(query.subject()), stream=stream, ordered_consumer=True, config=config, idle_heartbeat=2.0
    )
    found: deque[AuditEvent] = deque(maxlen=query.limit)
    try:
        # A push consumer may have sent everything already: then nothing is pending on the server, but
        # something was delivered (to us). Neither: nothing matches. Else each message says what is left.
        first = await sub.consumer_info()
        pending = first.num_pending or (first.delivered.consumer_seq if first.delivered else 0)
        while pending:
            try:
                msg = await sub.next_msg(timeout=MESSAGE_WAIT)
            except (NatsTimeoutError, TimeoutError):
                break
            meta = msg.metadata
            pending = meta.num_pending
            if query.until and meta.timestamp and meta.timestamp > query.until + UNTIL_SLACK:
                break
            try:
                event = AuditEvent.decode_bytes(msg.data)
            except BadMessage:
                continue
            if query.matches(event):
                found.append(event)
    finally:
        await sub.unsubscribe()
    return list(found)


def _details_text(event: AuditEvent, width: int) -> str:
    shown = [
        f"{k}={v}"
        for k, v in event.details.items()
        if v not in (None, "") and k.lower() not in SECRET_KEYS and k not in ("agent_email", "ticket", "revision")
    ]
    return _clip(" ".join(shown), width)


def _clip(text: str, width: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def write_events(events: Iterable[AuditEvent], fmt: str, out: TextIO) -> int:
    """Write ``events`` to ``out`` as a table, JSON lines or CSV; returns how many were written."""
    count = 0
    if fmt == "jsonl":
        for event in events:
            out.write(orjson.dumps(event.model_dump(mode="json")).decode() + "\n")
            count += 1
        return count
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for event in events:
            data = event.model_dump(mode="json")
            details = data["details"]
            writer.writerow(
                [
                    data["at"],
                    event.event_id,
                    event.category,
                    event.action,
                    event.outcome,
                    event.severity,
                    event.actor or "",
                    details.get("agent_email") or "",
                    event.target or "",
                    event.case_id or "",
                    details.get("ticket") or "",
                    orjson.dumps(details).decode(),
                ]
            )
            count += 1
        return count
    rows = []
    for event in events:
        rows.append(
            (
                event.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                event.case_id or "-",
                str(event.details.get("agent_email") or event.actor or "-"),
                event.target or "-",
                event.action,
                event.outcome,
                str(event.details.get("ticket") or "-"),
                _details_text(event, TABLE_COLUMNS[-1][1]),
            )
        )
    widths = [
        min(limit, max([len(title), *(len(row[i]) for row in rows)])) for i, (title, limit) in enumerate(TABLE_COLUMNS)
    ]
    out.write("  ".join(title.ljust(w) for (title, _), w in zip(TABLE_COLUMNS, widths, strict=True)).rstrip() + "\n")
    for row in rows:
        out.write("  ".join(_clip(cell, w).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")
    out.write(f"({len(rows)} event{'s' if len(rows) != 1 else ''})\n")
    return len(rows)


async def run_audit(settings: Settings, query: AuditQuery, fmt: str, out: TextIO) -> int:
    """Connect, read, write; returns the number of events written."""
    bus = await Bus.connect(settings, name="audit-cli")
    try:
        events = await read_events(bus, query)
    finally:
        await bus.close()
    return write_events(events, fmt, out)


def _time_arg(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_audit_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``audit`` subcommand on the CLI's subparsers."""
    help_text = "search the audit trail (read-only): by target, agent, ticket, outcome, action and time"
    audit = sub.add_parser("audit", help=help_text, description=help_text)
    audit.add_argument("--since", type=_time_arg, help=f"from (2h, 7d, or an ISO time; default {DEFAULT_SINCE} ago)")
    audit.add_argument("--until", type=_time_arg, help="up to (2h, 7d ago, or an ISO time; default now)")
    audit.add_argument("--all", action="store_true", help="from the start of the stream (instead of --since)")
    audit.add_argument("--target", help="part of the target user's login, email or Okta id")
    audit.add_argument("--agent", help="part of the agent's email or Slack user id")
    audit.add_argument("--ticket", help="a ServiceNow number or Jira key")
    audit.add_argument("--outcome", choices=OUTCOMES)
    audit.add_argument("--action", help="an event action, e.g. case.verified, or a glob: 'case.approval_*'")
    audit.add_argument("--case", dest="case_id", help="one case id")
    audit.add_argument("--category", choices=("case", "telephony", "security"))
    audit.add_argument("--limit", type=int, help="only the most recent N matching events")
    audit.add_argument("--format", choices=FORMATS, default="table", help="table (default), jsonl or csv")
    return audit


def query_from_args(args: argparse.Namespace) -> AuditQuery:
    since = None if args.all else (args.since or parse_time(DEFAULT_SINCE))
    return AuditQuery(
        since=since,
        until=args.until,
        target=args.target,
        agent=args.agent,
        ticket=args.ticket,
        outcome=args.outcome,
        action=args.action,
        case_id=args.case_id,
        category=args.category,
        limit=args.limit,
    )


def main_audit(settings: Settings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """``helpdesk audit``: 0 when it listed (even nothing), 1 when NATS failed, 2 when misused."""
    if not settings.nats_url:
        print(
            "helpdesk audit: missing required setting: NATS_URL (the NATS that holds the AUDIT stream)", file=sys.stderr
        )
        return 2
    configure_logging("WARNING", settings.log_format, stream=sys.stderr)  # stdout is for the events
    try:
        asyncio.run(run_audit(settings, query_from_args(args), args.format, out or sys.stdout))
    except BusError as exc:  # names the NATS URLs without credentials
        print(f"helpdesk audit: {exc}", file=sys.stderr)
        return 1
    return 0
