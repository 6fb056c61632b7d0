"""docs/audit-event.schema.json is generated from AuditEvent, and the worker's real events fit it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from helpdesk.audit_schema import SCHEMA_ID, audit_event_schema, render
from sandbox.okta_data import ALICE, ALICE_TOTP, DEMO_PASSCODE
from services.audit_sink.handlers import NOTE_FAILED
from shared.bus import Bus
from shared.messages import SCHEMA_VERSION, ActionKind, AuditEvent, CloseCase, RunAction
from shared.settings import Settings
from tests.test_worker_flows import harness

DOCS = Path(__file__).resolve().parents[1] / "docs"
SCHEMA_FILE = DOCS / "audit-event.schema.json"


def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def test_shipped_schema_is_generated_from_the_model() -> None:
    """The file in docs/ is exactly `python -m helpdesk.audit_schema`: the model and the doc cannot drift."""
    assert SCHEMA_FILE.read_text() == render(), "run: python -m helpdesk.audit_schema > docs/audit-event.schema.json"
    schema = audit_event_schema()
    assert schema["$id"] == SCHEMA_ID and SCHEMA_ID.endswith(f":v{SCHEMA_VERSION}")
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["required"]) == set(AuditEvent.model_fields)


def test_schema_refuses_what_is_not_an_event() -> None:
    """An unknown outcome, a nested detail and a missing field are each refused."""
    check = validator()
    good: dict[str, Any] = AuditEvent(category="case", action="case.opened", outcome="info").model_dump(mode="json")
    assert not list(check.iter_errors(good))
    for bad in (
        {**good, "outcome": "maybe"},
        {**good, "details": {"nested": {"no": 1}}},
        {k: v for k, v in good.items() if k != "at"},
        {**good, "schema_version": 2},
    ):
        assert list(check.iter_errors(bad))


def test_documented_actions_cover_the_ones_the_code_emits() -> None:
    """docs/audit.md names every action of the worker's flow and the sink's own event."""
    text = (DOCS / "audit.md").read_text()
    for action in ("case.opened", "case.verified", "case.action", "case.closed", "push_rejected", NOTE_FAILED):
        assert f"`{action}`" in text


async def test_real_worker_events_validate(settings: Settings, bus: Bus) -> None:
    """A whole case on the worker (open, pick, challenge, verify, act, close) publishes only valid events."""
    raw: list[bytes] = []

    async def on(msg: Any) -> None:
        raw.append(msg.data)

    sub = await bus.nc.subscribe(bus.subject("audit.>"), cb=on)
    try:
        async with harness(settings, bus) as h:
            snap = await h.verified(ALICE, ALICE_TOTP, DEMO_PASSCODE)
            await h.send(h.cmd(snap, RunAction, action=ActionKind.RESET_LINK))
            await h.audit("case.action", snap.case_id)
            await h.send(h.cmd(snap, CloseCase))
            await h.audit("case.closed", snap.case_id)
    finally:
        await sub.unsubscribe()
    check = validator()
    actions = set()
    for data in raw:
        event = json.loads(data)
        errors = [e.message for e in check.iter_errors(event)]
        assert not errors, (event["action"], errors)
        actions.add(event["action"])
    assert {"case.opened", "case.user_selected", "case.verified", "case.action", "case.closed"} <= actions
