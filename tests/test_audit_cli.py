"""`helpdesk audit`: read the AUDIT stream with filters and formats, changing nothing on the server."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker

import helpdesk.audit_cli as audit_cli
from helpdesk.audit_cli import AuditQuery, main_audit, parse_time, read_events, write_events
from helpdesk.cli import build_parser
from shared.bus import AUDIT_STREAM, Bus
from shared.messages import AuditEvent
from shared.settings import Settings

SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "audit-event.schema.json"
NOW = datetime.now(UTC)


def ev(minutes_ago: int, action: str, outcome: str, *, agent: str = "agent@example.com", **kw: Any) -> AuditEvent:
    details: dict[str, Any] = {"agent_email": agent, **kw.pop("details", {})}
    return AuditEvent(
        at=NOW - timedelta(minutes=minutes_ago),
        category=kw.pop("category", "case"),
        action=action,
        outcome=outcome,  # type: ignore[arg-type]
        actor=kw.pop("actor", "U0AGENT01"),
        target=kw.pop("target", "alice@example.com"),
        case_id=kw.pop("case_id", "case-a"),
        details=details,
        **kw,
    )


EVENTS = [
    ev(50, "case.opened", "info", target=None, details={"ticket": "INC0010001"}),
    ev(40, "case.verified", "success", details={"ticket": "INC0010001", "factor_type": "push"}),
    ev(30, "case.action", "failure", details={"ticket": "INC0010001", "action": "unlock", "error": "not_locked"}),
    ev(
        20,
        "case.approval_requested",
        "pending",
        agent="second@example.com",
        actor="U0AGENT02",
        target="bob@x.com",
        case_id="case-b",
        details={"ticket": "HELP-7"},
    ),
    ev(10, "push_rejected", "alert", category="security", severity="alert", case_id="case-b", target="bob@x.com"),
]


@pytest.fixture
async def published(bus: Bus) -> list[AuditEvent]:
    for event in EVENTS:
        await bus.publish(event)
    return EVENTS


async def ids(bus: Bus, **query: Any) -> list[str]:
    since = query.pop("since", NOW - timedelta(hours=1))
    return [e.action for e in await read_events(bus, AuditQuery(since=since, **query))]


async def test_filters(bus: Bus, published: list[AuditEvent]) -> None:
    """Each filter narrows the list: target, agent, ticket, outcome, action (exact or glob), case, category, time."""
    assert await ids(bus) == [e.action for e in EVENTS]
    assert await ids(bus, target="ALICE") == ["case.verified", "case.action"]
    assert await ids(bus, agent="second@") == ["case.approval_requested"]
    assert await ids(bus, agent="U0AGENT02") == ["case.approval_requested"]
    assert await ids(bus, ticket="inc0010001") == ["case.opened", "case.verified", "case.action"]
    assert await ids(bus, outcome="failure") == ["case.action"]
    assert await ids(bus, action="case.verified") == ["case.verified"]
    assert await ids(bus, action="case.approval_*") == ["case.approval_requested"]
    assert await ids(bus, case_id="case-b") == ["case.approval_requested", "push_rejected"]
    assert await ids(bus, category="security") == ["push_rejected"]
    assert await ids(bus, since=NOW - timedelta(minutes=35)) == [
        "case.action",
        "case.approval_requested",
        "push_rejected",
    ]
    assert await ids(bus, until=NOW - timedelta(minutes=35)) == ["case.opened", "case.verified"]
    assert await ids(bus, limit=2) == ["case.approval_requested", "push_rejected"]
    assert await ids(bus, since=NOW + timedelta(hours=1)) == []


async def test_reading_changes_nothing(bus: Bus, published: list[AuditEvent]) -> None:
    """The stream holds the same messages after a read, and no durable consumer was made."""
    stream = bus.stream_name(AUDIT_STREAM.name)
    before = await bus.js.stream_info(stream)
    await read_events(bus, AuditQuery())
    after = await bus.js.stream_info(stream)
    assert (after.state.messages, after.state.last_seq) == (before.state.messages, before.state.last_seq)
    consumers = await bus.js.consumers_info(stream)
    assert not [c for c in consumers if c.config.durable_name]


def test_formats() -> None:
    """jsonl lines are schema-valid events; csv has a header and the ticket column; the table a count."""
    lines = io.StringIO()
    assert write_events(EVENTS, "jsonl", lines) == len(EVENTS)
    check = Draft202012Validator(json.loads(SCHEMA.read_text()), format_checker=FormatChecker())
    for line in lines.getvalue().splitlines():
        assert not list(check.iter_errors(json.loads(line)))
    sheet = io.StringIO()
    write_events(EVENTS, "csv", sheet)
    rows = list(csv.DictReader(io.StringIO(sheet.getvalue())))
    assert [r["ticket"] for r in rows] == ["INC0010001", "INC0010001", "INC0010001", "HELP-7", ""]
    assert json.loads(rows[2]["details"])["error"] == "not_locked" and rows[1]["agent_email"] == "agent@example.com"
    table = io.StringIO()
    write_events(EVENTS, "table", table)
    text = table.getvalue()
    assert text.splitlines()[0].startswith("TIME (UTC)") and "(5 events)" in text
    assert "push_rejected" in text and "HELP-7" in text


def test_times_parse() -> None:
    """2h / 30m / 7d ago, or an ISO date (UTC unless said)."""
    now = datetime(2025, 5, 1, 12, tzinfo=UTC)
    assert parse_time("2h", now) == datetime(2025, 5, 1, 10, tzinfo=UTC)
    assert parse_time("30m", now) == datetime(2025, 5, 1, 11, 30, tzinfo=UTC)
    assert parse_time("7d", now) == datetime(2025, 4, 24, 12, tzinfo=UTC)
    assert parse_time("2025-04-01", now) == datetime(2025, 4, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_time("yesterday", now)


async def test_the_command_line(
    settings: Settings, published: list[AuditEvent], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`helpdesk audit --since 1h --target alice --format jsonl` prints alice's events, one JSON per line."""
    monkeypatch.setattr(audit_cli, "configure_logging", lambda *a, **k: None)  # keep the suite's logging
    args = build_parser().parse_args(["audit", "--since", "1h", "--target", "alice", "--format", "jsonl"])
    out = io.StringIO()
    assert await asyncio.to_thread(main_audit, settings, args, out) == 0
    assert [json.loads(line)["action"] for line in out.getvalue().splitlines()] == ["case.verified", "case.action"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["audit", "--since", "last tuesday"])
    assert main_audit(settings.model_copy(update={"nats_url": None}), args, io.StringIO()) == 2
