"""The JSON Schema of an audit event (``docs/audit-event.schema.json``), generated from ``AuditEvent``.

    python -m helpdesk.audit_schema > docs/audit-event.schema.json

Draft 2020-12; its ``$id`` carries the schema version (``shared.messages.SCHEMA_VERSION``), which is
raised whenever a field changes meaning or goes away (adding a field or a detail key does not).
Every event on the wire has every property, so all are required; ``details`` holds flat values only.
tests/test_audit_schema.py checks that the shipped file is this output and that the worker's real
events validate against it. What each action means and its details keys: docs/audit.md.
"""

from __future__ import annotations

import json
from typing import Any

from shared.messages import SCHEMA_VERSION, AuditEvent

SCHEMA_ID = f"urn:helpdesk-verify:schema:audit-event:v{SCHEMA_VERSION}"

DESCRIPTIONS = {
    "schema_version": "Version of this schema the event was written with; readers refuse a newer one.",
    "event_id": "Unique id of the event (32 hex digits); the webhook's Idempotency-Key.",
    "at": "When it happened (UTC, ISO 8601).",
    "category": "case: a verification case; telephony: the Okta telephony hook; security: look at it.",
    "action": "What happened, e.g. case.verified, case.action, sms.sent (docs/audit.md lists them).",
    "outcome": "How it ended; uncertain: Okta could not tell whether a change took effect.",
    "actor": "Who acted: the agent's Slack user id, or okta / provider for the telephony hook.",
    "target": "The Okta login of the user acted on, when there is one.",
    "case_id": "The verification case this event belongs to (none for telephony events).",
    "severity": "info, warning (worth a look) or alert (a security event).",
    "details": "Flat facts of the event (docs/audit.md); never a secret. details.ticket names the ticket.",
}


def audit_event_schema() -> dict[str, Any]:
    generated = AuditEvent.model_json_schema(mode="serialization")
    properties: dict[str, Any] = generated["properties"]
    for name, text in DESCRIPTIONS.items():
        properties[name]["description"] = text
        properties[name].pop("title", None)
    properties["schema_version"] = {
        "type": "integer",
        "const": SCHEMA_VERSION,
        "description": DESCRIPTIONS["schema_version"],
    }
    properties["event_id"]["pattern"] = "^[0-9a-f]{32}$"
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Helpdesk Verify audit event",
        "description": (
            "One step of who did what to whom, with its outcome, as published on audit.<category>.<action> "
            "(NATS stream AUDIT), listed by `helpdesk audit --format jsonl` and POSTed to AUDIT_WEBHOOK_URL."
        ),
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def render() -> str:
    return json.dumps(audit_event_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")
