"""The contract between the services: one typed message per NATS subject.

Every message is a pydantic model with a ``SUBJECT`` (relative to the install's prefix) and a
``schema_version``. ``decode(subject, data)`` turns bytes from the bus back into the right type, or
raises :class:`BadMessage` with a reason a consumer logs before terminating the message.

Secrets that must cross the bus (a code the caller reads out, a temporary password on its way to the
one view that shows it) are ``Secret`` fields: hidden in ``repr`` and logs, revealed only on the wire.
A temporary password travels only by core request/reply (:class:`ShowTempPassword`), never through a
JetStream stream, so it is never stored.

    cmd = ChallengeFactor(agent=Actor(user_id="U1"), case_token=token, factor_id="opf1")
    await bus.publish(cmd, msg_id=f"challenge:{action_ts}")
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, SecretStr, ValidationError

SCHEMA_VERSION = 1
CASE_ID_HEADER = "Helpdesk-Case-Id"

# Revealed on the wire (model_dump(mode="json")), hidden in repr/str and therefore in logs.
Secret = Annotated[SecretStr, PlainSerializer(lambda v: v.get_secret_value(), return_type=str, when_used="json")]


def utcnow() -> datetime:
    return datetime.now(UTC)


class BadMessage(ValueError):
    """Raised by :func:`decode` when bytes on a subject are not a valid message of its type."""


class Message(BaseModel):
    """Base of every message on the bus."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    SUBJECT: ClassVar[str]
    schema_version: int = SCHEMA_VERSION

    def subject(self) -> str:
        return self.SUBJECT

    def correlation_id(self) -> str | None:
        # Not getattr(): on a model without the field, pydantic's __getattr__ raises and catches internally.
        value = self.__dict__.get("case_id")
        return value if isinstance(value, str) else None

    def encode(self) -> bytes:
        # The same bytes as orjson.dumps(self.model_dump(mode="json")), without the dict in between.
        return self.__pydantic_serializer__.to_json(self)

    @classmethod
    def decode_bytes(cls, data: bytes) -> Self:
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise BadMessage(f"{cls.__name__}: not JSON ({exc.msg})") from None
        if not isinstance(raw, dict):
            raise BadMessage(f"{cls.__name__}: expected a JSON object")
        version = raw.get("schema_version", SCHEMA_VERSION)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise BadMessage(f"{cls.__name__}: unsupported schema_version {version!r}")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) or "?" for e in exc.errors()[:5])
            raise BadMessage(f"{cls.__name__}: invalid field(s) {fields}") from None


@dataclass(frozen=True)
class Encoded:
    """A message already in its wire form: what ``Bus.publish`` needs, without the model built.

    Only for a hot path where building the pydantic model is the largest cost left (the gateway's
    slash command: ~15 % of its throughput at 64 connections, bench/gateway.py). Each maker lists
    every field of its model and is tested to decode into the model the ordinary way builds.
    """

    SUBJECT: str
    data: bytes

    def subject(self) -> str:
        return self.SUBJECT

    def encode(self) -> bytes:
        return self.data

    def correlation_id(self) -> str | None:
        return None


# ---------------------------------------------------------------------------------------------
# Small value types


class Actor(BaseModel):
    """The Slack user acting (the help-desk agent)."""

    model_config = ConfigDict(frozen=True)
    user_id: str
    team_id: str | None = None
    user_name: str | None = None


class ViewRef(BaseModel):
    """A Slack view as last seen: its id and the hash that guards updates against races."""

    model_config = ConfigDict(frozen=True)
    view_id: str
    hash: str | None = None


class ActionKind(StrEnum):
    TEMP_PASSWORD = "temp_password"
    RESET_LINK = "reset_link"
    RESET_FACTOR = "reset_factor"
    RESET_ALL_FACTORS = "reset_all_factors"
    UNLOCK = "unlock"
    REVOKE_SESSIONS = "revoke_sessions"  # Okta sessions and OAuth tokens (oauthTokens=true)
    TEMP_ACCESS_CODE = "temp_access_code"  # Okta Temporary Access Code, where the org has the authenticator


class CaseState(StrEnum):
    OPENED = "opened"  # checking the agent's access
    DENIED = "denied"
    SEARCHING = "searching"  # authorized: pick the caller's Okta user
    FACTORS = "factors"  # user selected, factors listed
    CHALLENGE_SENT = "challenge_sent"  # waiting for a push, or for a code
    VERIFIED = "verified"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"
    FAILED = "failed"
    CLOSED = "closed"


TERMINAL_STATES = frozenset({CaseState.DENIED, CaseState.CLOSED})


class AssuranceLevel(StrEnum):
    """How much a verified factor proves (``services/okta_worker/policy.py`` says which is which)."""

    STRONG = "strong"  # Okta Verify push with number matching, TOTP, hardware token
    POSSESSION = "possession"  # SMS, voice, email code: SIM swap and forwarding defeat them
    WEAK = "weak"  # security question, profile attribute: never enough alone


class ApprovalStatus(StrEnum):
    REQUESTED = "requested"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    USED = "used"  # approved, then spent on the action it was for (single use)


class UserOption(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: str
    label: str


class MessageRef(BaseModel):
    """A Slack message we posted (or that was clicked): its channel and ``ts``, to update it later."""

    model_config = ConfigDict(frozen=True)
    channel: str
    ts: str


# ---------------------------------------------------------------------------------------------
# Commands: gateway → okta_worker (JetStream stream HELPDESK_CMD, work queue)


class Command(Message):
    """What an agent did in Slack. ``case_token`` is the signed token from the view's private_metadata."""

    agent: Actor
    case_token: str | None = None
    view: ViewRef | None = None
    sent_at: datetime = Field(default_factory=utcnow)


class OpenCase(Command):
    SUBJECT = "helpdesk.cmd.open"
    trigger_id: str
    query: str = ""
    source: Literal["command", "shortcut", "home", "retry", "message", "workflow"] = "command"
    channel_id: str | None = None
    okta_user_id: str | None = None  # the user to pick at once (a "Verify <name>" button)
    ticket: str | None = None  # a ServiceNow number or Jira key, carried into every audit event
    function_execution_id: str | None = None  # a Workflow Builder step waiting for this case's result

    @classmethod
    def wire(
        cls,
        *,
        user_id: str,
        team_id: str | None,
        user_name: str | None,
        trigger_id: str,
        query: str = "",
        source: Literal["command", "shortcut", "home", "retry", "message", "workflow"] = "command",
        channel_id: str | None = None,
    ) -> Encoded:
        """``OpenCase(agent=Actor(user_id=…, …), trigger_id=…, …).encode()`` without building either
        model (see :class:`Encoded`)."""
        fields = {
            "schema_version": SCHEMA_VERSION,
            "agent": {"user_id": user_id, "team_id": team_id, "user_name": user_name},
            "case_token": None,
            "view": None,
            "sent_at": utcnow(),
            "trigger_id": trigger_id,
            "query": query,
            "source": source,
            "channel_id": channel_id,
            "okta_user_id": None,
            "ticket": None,
            "function_execution_id": None,
        }
        return Encoded(cls.SUBJECT, orjson.dumps(fields, option=orjson.OPT_UTC_Z))


class SelectUser(Command):
    SUBJECT = "helpdesk.cmd.select_user"
    okta_user_id: str


class ChallengeFactor(Command):
    """Send a challenge to one enrolled factor (or start a profile-attribute check: ``attr:<name>``)."""

    SUBJECT = "helpdesk.cmd.challenge"
    factor_id: str


class SubmitCode(Command):
    """A code (or answer) the caller read out, typed by the agent; already well-formed at the gateway."""

    SUBJECT = "helpdesk.cmd.submit_code"
    code: Secret


class ResendChallenge(Command):
    SUBJECT = "helpdesk.cmd.resend"


class CancelChallenge(Command):
    """Back to the factor list (cancel a pending push, or pick another factor)."""

    SUBJECT = "helpdesk.cmd.cancel_challenge"


class BackToSearch(Command):
    SUBJECT = "helpdesk.cmd.back_to_search"


class RunAction(Command):
    SUBJECT = "helpdesk.cmd.action"
    action: ActionKind
    factor_id: str | None = None  # for RESET_FACTOR


class StepUp(Command):
    """ "Verify another factor": back to the factor list, keeping what the case has verified so far."""

    SUBJECT = "helpdesk.cmd.step_up"


class RequestApproval(Command):
    """Ask a second person to approve ``action`` (four eyes); the proofs must already suffice."""

    SUBJECT = "helpdesk.cmd.request_approval"
    action: ActionKind
    factor_id: str | None = None  # for RESET_FACTOR


class DecideApproval(Command):
    """Approve or Deny clicked on an approval message. ``agent`` is the approver, not the case's agent;
    ``approval_token`` (signed, from the button) names the case and the approval; no case token."""

    SUBJECT = "helpdesk.cmd.decide_approval"
    approval_token: str
    approve: bool
    message: MessageRef | None = None


class ReportNotMe(Command):
    """ "This wasn't me" clicked by the target user on the notice DM; ``notice_token`` is signed."""

    SUBJECT = "helpdesk.cmd.not_me"
    notice_token: str
    message: MessageRef | None = None


class StartFromMessage(Command):
    """A DM to the app or an @mention ("verify jdoe", "help"): answered with a message holding a
    "Verify <name>" button (a message carries no trigger_id; the click does)."""

    SUBJECT = "helpdesk.cmd.start_message"
    text: str
    channel_id: str
    in_dm: bool
    thread_ts: str | None = None


class WorkflowStep(Command):
    """Workflow Builder ran the "Verify caller" step: ``agent`` is the person running the workflow."""

    SUBJECT = "helpdesk.cmd.workflow_step"
    function_execution_id: str
    caller: str  # a Slack user id (U…) or an Okta login / email
    ticket: str | None = None


class SetTicket(Command):
    """The agent entered the ticket this case is for (already checked for its shape at the gateway)."""

    SUBJECT = "helpdesk.cmd.ticket"
    ticket: str


class TicketNoteFailed(Command):
    """The audit sink could not write the case's note in its ticket: the agent's modal says so.
    From a service, not a click: ``agent`` is the case's agent, ``case_id`` names the case."""

    SUBJECT = "helpdesk.cmd.ticket_note_failed"
    case_id: str
    ticket: str
    reason: str


class RefusedClick(Command):
    """A click the gateway refused (its case token expired, was altered, or is another agent's): the worker
    audits it — a security event unless merely expired — and has the agent's modal say so."""

    SUBJECT = "helpdesk.cmd.refused"
    kind: Literal["expired", "invalid", "wrong_agent", "missing"]
    action_id: str = ""


class RefreshCase(Command):
    """Render the case again (after a one-time secret was shown, the agent clicks "Done")."""

    SUBJECT = "helpdesk.cmd.refresh"


class CloseCase(Command):
    SUBJECT = "helpdesk.cmd.close"


class HomeOpened(Command):
    """The agent opened the app's Home tab."""

    SUBJECT = "helpdesk.cmd.home_opened"


COMMANDS: tuple[type[Command], ...] = (
    OpenCase,
    SelectUser,
    ChallengeFactor,
    SubmitCode,
    ResendChallenge,
    CancelChallenge,
    BackToSearch,
    RunAction,
    RefreshCase,
    CloseCase,
    HomeOpened,
    StepUp,
    RequestApproval,
    DecideApproval,
    ReportNotMe,
    RefusedClick,
    StartFromMessage,
    WorkflowStep,
    SetTicket,
    TicketNoteFailed,
)


# ---------------------------------------------------------------------------------------------
# Jobs: okta_worker → okta_worker (JetStream stream HELPDESK_JOBS): the durable push wait


class PollPush(Message):
    """Poll one pending push once; WAITING → nak(delay), so any replica carries the wait on."""

    SUBJECT = "helpdesk.job.poll_push"
    case_id: str
    challenge_id: str  # which challenge of the case this poll belongs to
    poll_url: str
    expires_at: datetime
    # The poll grid's origin: polls fall on first_poll_at + k × interval, so the time a job spends
    # queued or in flight does not pile up into a longer gap between polls.
    first_poll_at: datetime | None = None


class ExpireApproval(Message):
    """End an approval request nobody decided in time: it comes back (nak with delay) until then."""

    SUBJECT = "helpdesk.job.approval_expiry"
    case_id: str
    approval_id: str
    expires_at: datetime


# ---------------------------------------------------------------------------------------------
# Case snapshots: okta_worker → slack_responder (JetStream stream HELPDESK_CASE). Never a secret.


class UserCard(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: str
    login: str
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    status: str
    last_login: datetime | None = None
    protected: bool = False

    @property
    def display_name(self) -> str:
        name = " ".join(p for p in (self.first_name, self.last_name) if p)
        return name or self.login


class FactorOption(BaseModel):
    """One of the target's enrolled factors as the agent sees it (hint masked)."""

    model_config = ConfigDict(frozen=True)
    id: str
    factor_type: str
    provider: str
    label: str
    hint: str | None = None
    usable: bool = True
    reason: str | None = None  # why it cannot be used here
    weak: bool = False
    level: AssuranceLevel | None = None  # what verifying it proves (None: unusable here)


class ChallengeInfo(BaseModel):
    model_config = ConfigDict(frozen=True)
    challenge_id: str
    factor_id: str
    factor_type: str
    label: str
    hint: str | None = None
    kind: Literal["push", "code", "answer", "attribute"]
    correct_answer: int | None = None  # number matching: the number the caller must tap
    sent_at: datetime
    expires_at: datetime | None = None
    attempts_left: int = 0
    resend_available_at: datetime | None = None
    can_resend: bool = False


class Proof(BaseModel):
    """One factor verified in a case: what it proves and until when it counts."""

    model_config = ConfigDict(frozen=True)
    factor_id: str
    factor_type: str
    label: str
    level: AssuranceLevel
    channel: str  # push, totp, token, sms, voice, email, question, attribute: "different channels" compares these
    at: datetime
    expires_at: datetime


class RiskSummary(BaseModel):
    """What Okta says about the target before verifying: the System Log of the last days, user risk, age."""

    model_config = ConfigDict(frozen=True)
    level: Literal["high", "medium", "low", "unknown"]
    signals: list[str] = Field(default_factory=list)  # short lines for the agent, never a secret
    checked_at: datetime
    note: str | None = None  # e.g. "The System Log could not be read in time."


class ApprovalInfo(BaseModel):
    """The four-eyes approval of one action on a case."""

    model_config = ConfigDict(frozen=True)
    approval_id: str
    action: ActionKind
    factor_id: str | None = None
    status: ApprovalStatus
    approver: Literal["agent", "manager"] = "agent"
    requested_by: str  # Slack user id of the case's agent
    requested_at: datetime
    expires_at: datetime
    decided_by: str | None = None  # Slack user id
    decided_at: datetime | None = None


class ActionGate(BaseModel):
    """One action as the policy sees it now: allowed, or what it still needs."""

    model_config = ConfigDict(frozen=True)
    action: ActionKind
    allowed: bool
    needs: str  # "a strong factor, or two possession factors on different channels, + an approval"
    has: str  # "SMS" / "nothing yet"
    missing: str | None = None  # "a strong factor" / "an approval": None when allowed
    approval_needed: bool = False  # the proofs suffice and only an approval is missing
    approval: ApprovalInfo | None = None


class VerifiedInfo(BaseModel):
    model_config = ConfigDict(frozen=True)
    by_agent: str
    method: str
    at: datetime
    expires_at: datetime
    weak: bool = False


class ActionResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    action: ActionKind
    ok: bool
    message: str
    at: datetime = Field(default_factory=utcnow)


class Notice(BaseModel):
    """Something the agent should read: an error from Okta, a rate-limit wait, a warning."""

    model_config = ConfigDict(frozen=True)
    level: Literal["info", "warning", "error"]
    text: str
    retry_in: float | None = None


class CaseSnapshot(Message):
    """The whole visible state of a case at ``revision``; the responder renders it and drops stale ones."""

    SUBJECT = "helpdesk.case.snapshot"
    case_id: str
    revision: int
    state: CaseState
    agent: Actor
    case_token: str
    trigger_id: str | None = None  # set while the modal has not been opened yet
    # The snapshot published as the case was created: nothing can have been rendered for it, so the
    # responder opens the modal without first looking for a view (one NATS round trip less per case).
    first: bool = False
    channel_id: str | None = None  # where the agent opened the case (OpenCase.channel_id), if known
    view: ViewRef | None = None
    query: str = ""
    mode: Literal["full", "verify-only"] = "full"
    target: UserCard | None = None
    factors: list[FactorOption] = Field(default_factory=list)
    challenge: ChallengeInfo | None = None
    verified: VerifiedInfo | None = None
    actions: list[ActionKind] = Field(default_factory=list)
    results: list[ActionResult] = Field(default_factory=list)
    notice: Notice | None = None
    denial_reason: str | None = None
    admin_url: str | None = None  # the target in the Okta Admin Console
    escalation: str | None = None  # why actions are not offered (protected user)
    proofs: list[Proof] = Field(default_factory=list)  # every factor verified in this case, still valid or not
    assurance: str = "nothing verified"  # the assurance reached, e.g. "strong (Okta Verify push)"
    gates: list[ActionGate] = Field(default_factory=list)  # each offered action, allowed or what it needs
    risk: RiskSummary | None = None
    approval: ApprovalInfo | None = None  # the latest approval of the case
    disputed: bool = False  # the user said "This wasn't me"
    tac_available: bool = False
    ticket: str | None = None
    suggestions: list[UserOption] = Field(default_factory=list)  # `/helpdesk alice` matched several users
    updated_at: datetime = Field(default_factory=utcnow)


class StartOffer(Message):
    """Answer a message, a mention or a workflow step: text and "Verify <name>" buttons (one per match).

    Posted in the DM (``in_dm``), or ephemeral to ``agent`` in ``channel_id``; for a workflow step, a DM
    to the person running it with a "Start verification" button.
    """

    SUBJECT = "helpdesk.case.offer"
    agent: Actor
    channel_id: str | None = None
    in_dm: bool = True
    thread_ts: str | None = None
    text: str
    matches: list[UserOption] = Field(default_factory=list)
    ticket: str | None = None
    function_execution_id: str | None = None


class WorkflowResult(Message):
    """Complete a Workflow Builder step: ``functions.completeSuccess`` with outputs, or ``completeError``."""

    SUBJECT = "helpdesk.case.workflow"
    case_id: str | None = None
    function_execution_id: str
    verified: bool
    method: str | None = None
    assurance: str | None = None
    verified_at: datetime | None = None
    error: str | None = None


class RefusalNotice(Message):
    """Replace the agent's modal: the case expired (start again), or the request was refused."""

    SUBJECT = "helpdesk.case.refusal"
    agent: Actor
    view: ViewRef
    kind: Literal["expired", "invalid", "wrong_agent", "missing"]


class RecentCase(BaseModel):
    model_config = ConfigDict(frozen=True)
    case_id: str
    target_login: str | None
    state: CaseState
    outcome: str
    at: datetime


class HomeSnapshot(Message):
    """What the agent's App Home shows: their recent cases and the dependencies as last seen."""

    SUBJECT = "helpdesk.case.home"
    agent: Actor
    recent: list[RecentCase] = Field(default_factory=list)
    okta_status: str = "unknown"
    okta_checked_at: datetime | None = None


# ---------------------------------------------------------------------------------------------
# Notifications: okta_worker → slack_responder (JetStream stream HELPDESK_NOTIFY, file storage):
# messages to people other than the agent. Never a secret in them.


class ApprovalNotice(Message):
    """Post (``REQUESTED``) or update (any other status, ``message`` set) an approval request.

    Posted in ``channel_id`` (SLACK_APPROVALS_CHANNEL), or as a DM to ``manager_email`` when the
    policy says ``approver = "manager"``. The Approve / Deny buttons carry ``approval_token``.
    """

    SUBJECT = "helpdesk.notify.approval"
    case_id: str
    approval: ApprovalInfo
    approval_token: str
    requester: Actor
    requester_email: str | None = None
    target: UserCard
    assurance: str
    risk: RiskSummary | None = None
    action_label: str
    channel_id: str | None = None
    manager_email: str | None = None
    message: MessageRef | None = None  # the posted request, when it is to be updated
    note: str | None = None  # why the decision was refused, shown under the request


class TargetNotice(Message):
    """A DM to the target user after a change to their account, with a "This wasn't me" button."""

    SUBJECT = "helpdesk.notify.user"
    case_id: str
    target_email: str
    target_name: str
    changes: list[str]  # what the help desk did, one line each
    agent: Actor
    agent_email: str | None = None
    at: datetime
    notice_token: str
    disputed: bool = False  # after the click: update ``message`` to say what happened
    message: MessageRef | None = None


class SecurityNotice(Message):
    """Something a person must look at: an escalation of a protected user, a dispute, a push rejected."""

    SUBJECT = "helpdesk.notify.security"
    case_id: str
    kind: Literal["escalation", "disputed", "push_rejected", "tampered"]
    text: str
    agent: Actor | None = None
    target: UserCard | None = None
    admin_url: str | None = None
    channel_id: str  # SLACK_APPROVALS_CHANNEL for an escalation, else SLACK_SECURITY_CHANNEL


NOTICES: tuple[type[Message], ...] = (ApprovalNotice, TargetNotice, SecurityNotice)


# ---------------------------------------------------------------------------------------------
# Request/reply (core NATS, never stored)


class SearchUsers(Message):
    """Options for the user search (`external_select`); must answer well under Slack's 3 s."""

    SUBJECT = "okta.users.search"
    query: str
    agent: Actor


class SearchUsersReply(Message):
    SUBJECT = "okta.users.search.reply"
    options: list[UserOption] = Field(default_factory=list)
    error: str | None = None


class LookupSlackUser(Message):
    """Slack user id → email and names (served by the responder, cached)."""

    SUBJECT = "slack.users.lookup"
    user_id: str


class SlackUserInfo(Message):
    SUBJECT = "slack.users.lookup.reply"
    user_id: str
    email: str | None = None
    display_name: str | None = None
    real_name: str | None = None
    is_bot: bool = False
    deleted: bool = False
    error: str | None = None


class ShowTempPassword(Message):
    """The one message that carries a one-time secret (a temporary password or a Temporary Access Code):
    worker → responder, request/reply only."""

    SUBJECT = "helpdesk.render.temp_password"
    case_id: str
    revision: int
    agent: Actor
    view: ViewRef | None
    target_login: str
    temp_password: Secret
    case_token: str
    kind: Literal["temp_password", "temp_access_code"] = "temp_password"
    expires_at: datetime | None = None  # a Temporary Access Code's end


class RenderAck(Message):
    SUBJECT = "helpdesk.render.ack"
    ok: bool
    error: str | None = None


# ---------------------------------------------------------------------------------------------
# Audit (JetStream stream AUDIT, file storage, long retention)


class AuditEvent(Message):
    """One step of who did what to whom, with its outcome. Never a secret in ``details``."""

    SUBJECT = "audit"
    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    at: datetime = Field(default_factory=utcnow)
    category: Literal["case", "telephony", "security"]
    action: str
    # "uncertain": an Okta call was interrupted and Okta could not tell whether it took effect
    outcome: Literal["success", "failure", "denied", "refused", "pending", "info", "alert", "uncertain"]
    actor: str | None = None
    target: str | None = None
    case_id: str | None = None
    severity: Literal["info", "warning", "alert"] = "info"
    details: dict[str, str | int | float | bool | None] = Field(default_factory=dict)

    def subject(self) -> str:
        return f"audit.{self.category}.{self.action}"


# ---------------------------------------------------------------------------------------------
# Decoding by subject

_MESSAGE_TYPES: tuple[type[Message], ...] = (
    *COMMANDS,
    *NOTICES,
    PollPush,
    ExpireApproval,
    CaseSnapshot,
    RefusalNotice,
    StartOffer,
    WorkflowResult,
    HomeSnapshot,
    SearchUsers,
    SearchUsersReply,
    LookupSlackUser,
    SlackUserInfo,
    ShowTempPassword,
    RenderAck,
)
_BY_SUBJECT: dict[str, type[Message]] = {m.SUBJECT: m for m in _MESSAGE_TYPES}


def message_type(subject: str) -> type[Message]:
    """The message class for a (prefix-free) subject; ``BadMessage`` if no contract covers it."""
    if subject in _BY_SUBJECT:
        return _BY_SUBJECT[subject]
    if subject.startswith("audit."):
        return AuditEvent
    raise BadMessage(f"no message type for subject {subject!r}")


def decode(subject: str, data: bytes) -> Message:
    return message_type(subject).decode_bytes(data)


def to_json(message: Message) -> dict[str, Any]:
    return message.model_dump(mode="json")
