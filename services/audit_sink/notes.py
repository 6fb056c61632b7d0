"""What goes into a ticket: which audit events write a note, and the note's words. No I/O.

A case's events carry the ticket the agent entered in ``details["ticket"]``: a ServiceNow number
(``INC…``, ``REQ…``, ``RITM…``) or a Jira issue key. A note is written when the caller is verified,
for each action (done, failed, or uncertain), when verification fails or the user disputes a change,
and when the case closes — the closing note sums up the case::

    ticket = ticket_of(event)                   # Ticket("servicenow", "INC0010001") or None
    if ticket and wants_note(event):
        text = note_text(event, summary)

Nothing secret is ever written: the words come from a fixed list of detail keys (who, whom, how,
what, when), never from free text an API returned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from services.audit_sink.jira import ISSUE_KEY
from services.audit_sink.servicenow import NUMBER
from shared.messages import AuditEvent

System = Literal["servicenow", "jira"]

NOTE_ACTIONS = frozenset(
    {
        "case.verified",
        "case.action",
        "case.closed",
        "case.denied",
        "case.disputed",
        "case.rejected",
        "case.failed",
        "case.timed_out",
    }
)
METHODS = {
    "push": "Okta Verify push",
    "token:software:totp": "a one-time code (TOTP)",
    "token:hotp": "a hardware one-time code",
    "token:hardware": "a hardware token",
    "token": "an RSA SecurID / token code",
    "sms": "an SMS code",
    "call": "a voice call code",
    "email": "an email code",
    "question": "a security question",
    "attribute": "a profile attribute",
}
ACTIONS = {
    "temp_password": "temporary password set",
    "reset_link": "password reset link emailed",
    "reset_factor": "one factor reset",
    "reset_all_factors": "all factors reset",
    "unlock": "account unlocked",
    "revoke_sessions": "signed out everywhere",
    "temp_access_code": "temporary access code issued",
}
RESULTS = {"success": "done", "failure": "FAILED", "uncertain": "outcome uncertain"}
_WORD = re.compile(r"^[a-z][a-z0-9_]{0,40}$")  # a reason code, safe to quote


@dataclass(frozen=True)
class Ticket:
    system: System
    id: str


@dataclass
class CaseSummary:
    """What the closing note sums up; kept per case as its events go by."""

    verified: str | None = None  # "agent@example.com with Okta Verify push (strong) at 10:03 UTC"
    actions: list[str] = field(default_factory=list)  # "password reset link emailed (done)"


def ticket_of(event: AuditEvent) -> Ticket | None:
    """The ticket named in the event, or None when there is none or it is not well-formed."""
    raw = event.details.get("ticket")
    if not isinstance(raw, str):
        return None
    value = raw.strip()
    if NUMBER.match(value):
        return Ticket("servicenow", value)
    if ISSUE_KEY.match(value):
        return Ticket("jira", value)
    return None


def wants_note(event: AuditEvent) -> bool:
    if event.action not in NOTE_ACTIONS:
        return False
    return not (event.action == "case.action" and event.outcome not in RESULTS)


def when(event: AuditEvent) -> str:
    return event.at.strftime("%Y-%m-%d %H:%M UTC")


def agent_of(event: AuditEvent) -> str:
    email = event.details.get("agent_email")
    if isinstance(email, str) and email:
        return email
    return f"Slack user {event.actor}" if event.actor else "an agent"


def target_of(event: AuditEvent) -> str:
    return event.target or "the caller"


def method_of(event: AuditEvent) -> str:
    factor = event.details.get("factor_type")
    method = METHODS.get(str(factor), str(factor)) if factor else "a verified factor"
    assurance = event.details.get("assurance") or event.details.get("level")
    return f"{method} (assurance: {assurance})" if assurance else method


def action_line(event: AuditEvent) -> str:
    kind = str(event.details.get("action") or "action")
    words = ACTIONS.get(kind, kind.replace("_", " "))
    result = RESULTS.get(event.outcome, event.outcome)
    return f"{words} ({result})"


def _reason(event: AuditEvent, key: str = "reason") -> str:
    value = event.details.get(key)
    return f" ({value.replace('_', ' ')})" if isinstance(value, str) and _WORD.match(value) else ""


def note_text(event: AuditEvent, summary: CaseSummary) -> str:
    """The note for ``event``; ``summary`` is the case as known before it (for the closing note)."""
    head = "Helpdesk Verify"
    case = f"Case {event.case_id}." if event.case_id else ""
    agent, target, at = agent_of(event), target_of(event), when(event)
    if event.action == "case.verified":
        return f"{head}: caller {target} verified by {agent} with {method_of(event)} at {at}. {case}".strip()
    if event.action == "case.action":
        line = f"{head}: {action_line(event)} for {target} by {agent} at {at}"
        if event.outcome == "failure":
            line += _reason(event, "error")
        if event.outcome == "uncertain":
            line += ". Okta could not tell whether it took effect: check the user in the Okta Admin Console"
        return f"{line}. {case}".strip()
    if event.action == "case.closed":
        parts = [f"{head}: verification closed by {agent} at {at}."]
        if summary.verified:
            parts.append(f"Caller {target} verified by {summary.verified}")
        else:
            outcome = event.details.get("outcome_before")
            parts.append("Caller not verified" + (f" (outcome: {outcome})" if isinstance(outcome, str) else ""))
        parts[-1] += "; actions: " + (", ".join(summary.actions) if summary.actions else "none") + "."
        return " ".join([*parts, case]).strip()
    if event.action == "case.denied":
        return f"{head}: {agent} is not authorized to verify callers{_reason(event)}; refused at {at}. {case}".strip()
    if event.action == "case.disputed":
        revoked = event.details.get("sessions_revoked")
        tail = ""
        if revoked is True:
            tail = " Their sessions were revoked."
        elif revoked is False:
            tail = " Revoking their sessions FAILED."
        return (
            f"{head}: SECURITY — {target} reported at {at} that the help desk's change to their account was not "
            f"requested by them.{tail} {case}"
        ).strip()
    what = {"case.rejected": "push REJECTED on the user's phone", "case.timed_out": "challenge timed out"}.get(
        event.action, "verification failed" + _reason(event)
    )
    return f"{head}: verification of {target} by {agent} did not succeed: {what} at {at}. {case}".strip()


def summarize(summary: CaseSummary, event: AuditEvent) -> CaseSummary:
    """The summary after ``event`` (verified how, what was done)."""
    if event.action == "case.verified":
        return CaseSummary(
            verified=f"{agent_of(event)} with {method_of(event)} at {when(event)}", actions=summary.actions
        )
    if event.action == "case.action" and event.outcome in RESULTS:
        return CaseSummary(verified=summary.verified, actions=[*summary.actions, action_line(event)])
    return summary
