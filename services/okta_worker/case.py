"""The verification case: its stored model and ``CaseEngine``, the state machine. No I/O here.

    engine = CaseEngine(settings)
    case = engine.open("c_1", agent, trigger_id="13345.2", case_token=token, now=now)
    case = engine.authorized(case, email="agent@example.com", okta_id="00u1", now=now)
    case = engine.user_selected(case, card, options, protected=[], now=now)
    option = engine.check_challenge(case, "opf1", now)        # CaseRefused if not allowed now

Every transition is a pure function ``Case → Case`` that bumps ``revision``; the handlers do the Okta
calls around them and store the result in KV ``cases`` with compare-and-swap, re-running the
transition on the fresh case when another replica wrote first. A transition that no longer applies
(the challenge was cancelled meanwhile, the case was closed) raises :class:`CaseRefused` or
:class:`StaleEvent`.

```
opened → searching | denied → factors → challenge_sent → verified | rejected | timed_out | failed
   factors ⇄ challenge_sent (cancel, another factor);  verified → (actions…) → closed
```
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from services.okta_worker.factors import ATTRIBUTE, ChallengeKind, challenge_kind
from services.okta_worker.policy import ACTION_NAMES, Policy, assurance_reached, channel_of, level_of
from shared.messages import (
    ActionGate,
    ActionKind,
    ActionResult,
    Actor,
    ApprovalInfo,
    ApprovalStatus,
    AssuranceLevel,
    AuditEvent,
    CaseSnapshot,
    CaseState,
    ChallengeInfo,
    FactorOption,
    Notice,
    Proof,
    RecentCase,
    RiskSummary,
    UserCard,
    UserOption,
    VerifiedInfo,
    ViewRef,
)
from shared.settings import Settings
from shared.ui import TICKET_PATTERN

HANDLED_KEEP = 32  # command ids remembered per case, so a redelivered command is not run twice
RESULTS_KEEP = 10
OKTA_USER_ID = re.compile(r"[0-9A-Za-z]{20}")  # checked before it goes into an Okta URL or a KV key
PROOFS_KEEP = 8
ATTRIBUTE_CHECKS_PER_CASE = 3  # profile-attribute checks an agent may start in one case (they can be guessed)
# Okta refuses a new SMS or call within 30 s, a new email within 5 s (E0000109 / E0000133 / E0000118).
RESEND_WAIT = {"email": timedelta(seconds=5)}
RESEND_WAIT_DEFAULT = timedelta(seconds=30)
CHALLENGE_STATES = frozenset(
    {CaseState.FACTORS, CaseState.CHALLENGE_SENT, CaseState.REJECTED, CaseState.TIMED_OUT, CaseState.VERIFIED}
)


class CaseRefused(Exception):
    """Raised by a transition that is not allowed now; ``message`` is for the agent."""

    def __init__(self, message: str, reason: str = "refused", retry_in: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.retry_in = retry_in


class StaleEvent(Exception):
    """Raised when an event belongs to a challenge or state the case has already left (drop it)."""


class PendingChallenge(BaseModel):
    """The challenge in flight, as stored (poll and cancel links included; never a code)."""

    model_config = ConfigDict(frozen=True)
    challenge_id: str
    factor_id: str
    factor_type: str
    label: str
    hint: str | None = None
    kind: ChallengeKind
    weak: bool = False
    correct_answer: int | None = None
    level: AssuranceLevel | None = None
    sent_at: datetime
    expires_at: datetime | None = None
    attempts_left: int = 0
    resend_available_at: datetime | None = None
    can_resend: bool = False
    poll_url: str | None = None
    cancel_url: str | None = None
    command_id: str | None = None

    def info(self) -> ChallengeInfo:
        return ChallengeInfo(
            challenge_id=self.challenge_id,
            factor_id=self.factor_id,
            factor_type=self.factor_type,
            label=self.label,
            hint=self.hint,
            kind=self.kind,
            correct_answer=self.correct_answer,
            sent_at=self.sent_at,
            expires_at=self.expires_at,
            attempts_left=self.attempts_left,
            resend_available_at=self.resend_available_at,
            can_resend=self.can_resend,
        )


class Intent(BaseModel):
    """The journal's open entry: an Okta call with effects, recorded (compare-and-swap) before it is made,
    cleared by the write that records its outcome. Found open later, it is reconciled (``journal.py``)."""

    model_config = ConfigDict(frozen=True)
    intent_id: str  # the id of the command that makes the call
    kind: Literal["challenge", "code", "action"]
    factor_id: str | None = None
    factor_type: str | None = None
    label: str | None = None
    action: ActionKind | None = None
    started_at: datetime


class Case(BaseModel):
    """Everything the worker keeps about one case (KV ``cases``, key = case id)."""

    model_config = ConfigDict(frozen=True)
    case_id: str
    revision: int = 1
    state: CaseState = CaseState.OPENED
    agent: Actor
    agent_email: str | None = None
    agent_okta_id: str | None = None
    case_token: str
    trigger_id: str | None = None
    channel_id: str | None = None  # where the agent typed the command: a modal that cannot open is followed up there
    view: ViewRef | None = None
    query: str = ""
    mode: Literal["full", "verify-only"] = "full"
    target: UserCard | None = None
    protected_groups: list[str] = Field(default_factory=list)
    factors: list[FactorOption] = Field(default_factory=list)
    challenge: PendingChallenge | None = None
    verified: VerifiedInfo | None = None
    verified_target_id: str | None = None
    checks: list[str] = Field(default_factory=list)  # profile attributes that matched (extra checks)
    attribute_checks: int = 0  # profile-attribute checks started in this case (capped)
    proofs: list[Proof] = Field(default_factory=list)  # every factor verified for this target in this case
    risk: RiskSummary | None = None
    approval: ApprovalInfo | None = None
    disputed: bool = False
    tac_available: bool = False
    ticket: str | None = None  # the ServiceNow / Jira ticket this case is for
    suggestions: list[UserOption] = Field(default_factory=list)
    function_execution_id: str | None = None  # a Workflow Builder step waiting for the result
    workflow_done: bool = False
    results: list[ActionResult] = Field(default_factory=list)
    notice: Notice | None = None
    denial_reason: str | None = None
    escalation: str | None = None
    admin_url: str | None = None
    handled: list[str] = Field(default_factory=list)
    intent: Intent | None = None  # an Okta call in flight (or interrupted): see journal.py
    # The audit events of this revision, stored with it and published with a deduplication id derived
    # from it: a crash between the write and the publish is repaired by publishing them again.
    outbox: list[AuditEvent] = Field(default_factory=list)
    secret_revision: int | None = None  # a one-time secret was shown at this revision: no snapshot for it
    created_at: datetime
    updated_at: datetime


def admin_console_url(settings: Settings, user_id: str) -> str | None:
    """The user in the Okta Admin Console: OKTA_ADMIN_URL, else the org host with ``-admin`` inserted."""
    base = settings.okta_admin_url
    if not base and settings.okta_org_url:
        parts = urlsplit(settings.okta_org_url)
        host = parts.hostname or ""
        label, dot, rest = host.partition(".")
        if dot and not label.endswith("-admin") and not host.replace(".", "").isdigit():
            netloc = f"{label}-admin.{rest}" + (f":{parts.port}" if parts.port else "")
        else:
            netloc = parts.netloc
        base = urlunsplit((parts.scheme, netloc, "", "", ""))
    return f"{base.rstrip('/')}/admin/user/profile/view/{user_id}" if base else None


class CaseEngine:
    """Pure transitions over :class:`Case`; the settings give limits and the mode, the policy the assurance."""

    def __init__(self, settings: Settings, policy: Policy) -> None:
        self.settings = settings
        self.policy = policy

    # -- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _next(case: Case, now: datetime, **changes: object) -> Case:
        changes.setdefault("notice", None)
        changes.setdefault("outbox", [])
        return case.model_copy(update={**changes, "revision": case.revision + 1, "updated_at": now})

    @staticmethod
    def settle(case: Case, intent_id: str) -> Case:
        """Close the journal entry of ``intent_id`` (stored with the outcome's write)."""
        if case.intent is None or case.intent.intent_id != intent_id:
            return case
        return case.model_copy(update={"intent": None})

    def with_notice(
        self, case: Case, now: datetime, text: str, level: Literal["info", "warning", "error"] = "error", **kw: object
    ) -> Case:
        retry_in = kw.pop("retry_in", None)
        notice = Notice(level=level, text=text, retry_in=retry_in)  # type: ignore[arg-type]
        return self._next(case, now, notice=notice, **kw)

    @staticmethod
    def remember(case: Case, command_id: str | None) -> Case:
        """Mark a command as handled (no revision bump; stored with the next write)."""
        if not command_id or command_id in case.handled:
            return case
        return case.model_copy(update={"handled": [*case.handled[-(HANDLED_KEEP - 1) :], command_id]})

    @staticmethod
    def seen_view(case: Case, view: ViewRef | None) -> Case:
        """Keep the latest view reference; once a view is known the trigger id is no longer sent."""
        if view is None or view == case.view:
            return case
        return case.model_copy(update={"view": view, "trigger_id": None})

    # -- opening ----------------------------------------------------------------------------------

    def open(
        self,
        case_id: str,
        agent: Actor,
        trigger_id: str,
        case_token: str,
        now: datetime,
        query: str = "",
        channel_id: str | None = None,
        ticket: str | None = None,
        function_execution_id: str | None = None,
    ) -> Case:
        return Case(
            case_id=case_id,
            agent=agent,
            case_token=case_token,
            trigger_id=trigger_id,
            channel_id=channel_id,
            query=query[:200],
            mode=self.settings.helpdesk_mode,
            ticket=ticket,
            function_execution_id=function_execution_id,
            created_at=now,
            updated_at=now,
        )

    def suggested(self, case: Case, matches: list[UserOption], now: datetime) -> Case:
        """`/helpdesk alice` matched several users: offered first; none: said, with the search open."""
        if case.state != CaseState.SEARCHING:
            raise StaleEvent("the case moved on")
        if matches:
            return self._next(case, now, suggestions=matches[:10])
        text = f"No Okta user matches “{case.query}”: search below."
        return self.with_notice(case, now, text, "info")

    def ticket_set(self, case: Case, ticket: str, now: datetime) -> Case:
        self._require_open(case)
        if not re.match(TICKET_PATTERN, ticket):
            raise CaseRefused(
                "That is not a ticket number: a ServiceNow INC…, REQ… or RITM… number, or a Jira key (ABC-123).",
                "bad_ticket",
            )
        return self.with_notice(case, now, f"Ticket {ticket} is attached to this case.", "info", ticket=ticket)

    def workflow_outcome(self, case: Case) -> Literal["verified", "failed"] | None:
        """Whether a Workflow Builder step waiting on this case can be completed now, and how."""
        if case.function_execution_id is None or case.workflow_done:
            return None
        if case.state == CaseState.VERIFIED and case.verified is not None:
            return "verified"
        if case.state in (CaseState.FAILED, CaseState.DENIED, CaseState.CLOSED):
            return "failed"
        return None

    def authorized(self, case: Case, email: str, okta_id: str, now: datetime) -> Case:
        if case.state != CaseState.OPENED:
            raise StaleEvent("case already past authorization")
        return self._next(case, now, state=CaseState.SEARCHING, agent_email=email, agent_okta_id=okta_id)

    def denied(self, case: Case, reason: str, now: datetime) -> Case:
        return self._next(case, now, state=CaseState.DENIED, denial_reason=reason, challenge=None)

    # -- target -----------------------------------------------------------------------------------

    def check_select(self, case: Case, user_id: str) -> None:
        self._require_open(case)
        if not OKTA_USER_ID.fullmatch(user_id):
            raise CaseRefused("That is not an Okta user id: pick the user from the search.", "bad_id")
        if case.state == CaseState.OPENED:
            raise CaseRefused("Still checking your access; try again in a moment.", "not_authorized_yet")
        if case.agent_okta_id and user_id == case.agent_okta_id:
            raise CaseRefused("You cannot verify or reset your own account here.", "own_account")

    def user_selected(
        self,
        case: Case,
        card: UserCard,
        options: list[FactorOption],
        protected: list[str],
        now: datetime,
        *,
        risk: RiskSummary | None = None,
        tac_available: bool = False,
    ) -> Case:
        self.check_select(case, card.id)
        notice = None
        if not any(o.usable and o.factor_type != ATTRIBUTE for o in options):
            notice = Notice(
                level="warning",
                text=f"{card.display_name} has no factor that can be checked here: escalate to an Okta admin.",
            )
        return self._next(
            case,
            now,
            state=CaseState.FACTORS,
            target=card.model_copy(update={"protected": bool(protected)}),
            protected_groups=protected,
            factors=options,
            challenge=None,
            verified=None,
            verified_target_id=None,
            checks=[],
            attribute_checks=0,
            proofs=[],
            risk=risk,
            approval=None,
            tac_available=tac_available,
            results=[],
            escalation=None,
            admin_url=admin_console_url(self.settings, card.id),
            notice=notice,
        )

    def back_to_search(self, case: Case, now: datetime) -> Case:
        self._require_open(case)
        if case.state == CaseState.OPENED:
            raise CaseRefused("Still checking your access; try again in a moment.", "not_authorized_yet")
        return self._next(
            case,
            now,
            state=CaseState.SEARCHING,
            target=None,
            protected_groups=[],
            factors=[],
            challenge=None,
            verified=None,
            verified_target_id=None,
            checks=[],
            attribute_checks=0,
            proofs=[],
            risk=None,
            approval=None,
            tac_available=False,
            results=[],
            escalation=None,
            admin_url=None,
        )

    # -- challenges -------------------------------------------------------------------------------

    def check_challenge(self, case: Case, factor_id: str) -> FactorOption:
        """The factor to challenge, if a challenge may be sent now (else :class:`CaseRefused`)."""
        self._require_open(case)
        if case.target is None or case.state not in CHALLENGE_STATES:
            raise CaseRefused("Select the caller's Okta user first.", "no_target")
        option = next((o for o in case.factors if o.id == factor_id), None)
        if option is None:
            raise CaseRefused("That factor is not one of this user's factors (the list may be out of date).")
        if not option.usable:
            raise CaseRefused(option.reason or "That factor cannot be checked here.", "unusable")
        if option.factor_type == ATTRIBUTE:
            if option.id.removeprefix("attr:") in case.checks:
                raise CaseRefused("That profile check already matched.", "already_checked")
            if case.attribute_checks >= ATTRIBUTE_CHECKS_PER_CASE:
                raise CaseRefused(
                    f"{ATTRIBUTE_CHECKS_PER_CASE} profile checks were already made in this case: profile "
                    "details can be guessed, so no more are allowed. Verify an enrolled factor.",
                    "attribute_limit",
                )
        return option

    def challenge_sent(
        self,
        case: Case,
        option: FactorOption,
        challenge_id: str,
        now: datetime,
        *,
        correct_answer: int | None = None,
        poll_url: str | None = None,
        cancel_url: str | None = None,
        expires_at: datetime | None = None,
        command_id: str | None = None,
    ) -> Case:
        kind = "attribute" if option.factor_type == ATTRIBUTE else challenge_kind(option.factor_type)
        assert kind is not None
        resendable = option.factor_type in ("sms", "call", "email", "push")
        wait = RESEND_WAIT.get(option.factor_type, RESEND_WAIT_DEFAULT)
        level = level_of(option.factor_type, number_matching=kind != "push" or correct_answer is not None)
        if kind == "push":
            cap = now + timedelta(seconds=self.settings.push_max_wait)
            expires_at = min(expires_at, cap) if expires_at else cap
        challenge = PendingChallenge(
            challenge_id=challenge_id,
            factor_id=option.id,
            factor_type=option.factor_type,
            label=option.label,
            hint=option.hint,
            kind=kind,
            weak=option.weak,
            correct_answer=correct_answer,
            level=level,
            sent_at=now,
            expires_at=expires_at,
            attempts_left=0 if kind == "push" else max(1, self.settings.code_attempts),
            resend_available_at=now + wait if resendable else None,
            can_resend=resendable,
            poll_url=poll_url,
            cancel_url=cancel_url,
            command_id=command_id,
        )
        attribute_checks = case.attribute_checks + (1 if kind == "attribute" else 0)
        return self._next(
            case, now, state=CaseState.CHALLENGE_SENT, challenge=challenge, attribute_checks=attribute_checks
        )

    def current_challenge(self, case: Case, challenge_id: str | None = None) -> PendingChallenge:
        """The pending challenge (of that id), or :class:`StaleEvent`."""
        if case.state != CaseState.CHALLENGE_SENT or case.challenge is None:
            raise StaleEvent("no challenge pending")
        if challenge_id is not None and case.challenge.challenge_id != challenge_id:
            raise StaleEvent("another challenge is pending")
        return case.challenge

    def check_submit(self, case: Case) -> PendingChallenge:
        self._require_open(case)
        try:
            challenge = self.current_challenge(case)
        except StaleEvent:
            raise CaseRefused("There is no code to check right now.", "no_challenge") from None
        if challenge.kind == "push":
            raise CaseRefused("This challenge is a push: the caller answers it on their phone.", "push")
        return challenge

    def check_resend(self, case: Case, now: datetime) -> PendingChallenge:
        self._require_open(case)
        try:
            challenge = self.current_challenge(case)
        except StaleEvent:
            raise CaseRefused("There is nothing to resend right now.", "no_challenge") from None
        if not challenge.can_resend:
            raise CaseRefused("This factor has nothing to resend: the caller reads the code from their device.")
        if challenge.resend_available_at and now < challenge.resend_available_at:
            wait = (challenge.resend_available_at - now).total_seconds()
            raise CaseRefused(f"Okta allows a new code in {wait:.0f} s.", "resend_too_soon", retry_in=wait)
        return challenge

    def wrong_code(self, case: Case, challenge_id: str, now: datetime, message: str) -> Case:
        """One wrong code: fewer attempts left, or the case fails when none are."""
        challenge = self.current_challenge(case, challenge_id)
        left = challenge.attempts_left - 1
        if left <= 0:
            return self.failed(case, now, f"{message} No attempts left: this verification failed.")
        plural = "attempt" if left == 1 else "attempts"
        return self.with_notice(
            case,
            now,
            f"{message} {left} {plural} left.",
            "warning",
            challenge=challenge.model_copy(update={"attempts_left": left}),
        )

    def failed(self, case: Case, now: datetime, message: str) -> Case:
        return self.with_notice(case, now, message, "error", state=CaseState.FAILED, verified=None)

    def _proof(self, challenge: PendingChallenge, now: datetime) -> Proof:
        level = challenge.level or level_of(challenge.factor_type) or AssuranceLevel.WEAK
        return Proof(
            factor_id=challenge.factor_id,
            factor_type=challenge.factor_type,
            label=challenge.label,
            level=level,
            channel=channel_of(challenge.factor_type),
            at=now,
            expires_at=now + timedelta(seconds=self.settings.case_verified_ttl),
        )

    def _with_proof(self, case: Case, proof: Proof) -> list[Proof]:
        """The case's proofs with ``proof`` added (the same factor verified again replaces its older proof)."""
        kept = [p for p in case.proofs if p.factor_id != proof.factor_id]
        return [*kept, proof][-PROOFS_KEEP:]

    def attribute_matched(self, case: Case, challenge_id: str, now: datetime) -> Case:
        challenge = self.current_challenge(case, challenge_id)
        name = challenge.factor_id.removeprefix("attr:")
        proofs = self._with_proof(case, self._proof(challenge, now))
        if self._still_verified(case, now):
            return self._verified_state(case, proofs, now, checks=[*case.checks, name])
        return self.with_notice(
            case,
            now,
            f"{name} matches. That is a weak check, never enough alone: now verify one of the user's factors.",
            "info",
            state=CaseState.FACTORS,
            challenge=None,
            checks=[*case.checks, name],
            proofs=proofs,
        )

    def verified(self, case: Case, challenge_id: str, now: datetime) -> Case:
        challenge = self.current_challenge(case, challenge_id)
        assert case.target is not None
        return self._verified_state(case, self._with_proof(case, self._proof(challenge, now)), now)

    def _verified_state(self, case: Case, proofs: list[Proof], now: datetime, **changes: object) -> Case:
        assert case.target is not None
        counting = [p for p in proofs if p.expires_at > now and p.level != AssuranceLevel.WEAK] or [
            p for p in proofs if p.expires_at > now
        ]
        checks = list(changes.get("checks", case.checks))  # type: ignore[call-overload]
        info = VerifiedInfo(
            by_agent=case.agent.user_id,
            method=" + ".join([p.label for p in counting if p.factor_type != ATTRIBUTE] + checks)
            or " + ".join(p.label for p in counting),
            at=max(p.at for p in counting),
            expires_at=max(p.expires_at for p in counting),
            weak=all(p.level == AssuranceLevel.WEAK for p in counting),
        )
        escalation = None
        if case.protected_groups:
            escalation = (
                f"{case.target.display_name} is in a protected group ({', '.join(case.protected_groups)}): "
                "the verification is recorded, but resets must be done by an Okta administrator."
            )
        return self._next(
            case,
            now,
            state=CaseState.VERIFIED,
            challenge=None,
            verified=info,
            verified_target_id=case.target.id,
            escalation=escalation,
            proofs=proofs,
            **changes,
        )

    def push_ended(
        self, case: Case, challenge_id: str, result: str, now: datetime, security_alerted: bool = False
    ) -> Case:
        """A push's final result: SUCCESS, REJECTED or TIMEOUT."""
        if result == "SUCCESS":
            return self.verified(case, challenge_id, now)
        challenge = self.current_challenge(case, challenge_id)
        if result == "REJECTED":
            told = (
                "security has been alerted."
                if security_alerted
                else "tell your security team (no security channel is configured here)."
            )
            return self.with_notice(
                case,
                now,
                "The push was rejected on the user's phone. If the caller did not reject it, someone else "
                f"may be trying to get into this account: {told}",
                "error",
                state=CaseState.REJECTED,
                challenge=None,
            )
        return self.with_notice(
            case,
            now,
            f"The push was not answered in time ({challenge.label}). Send another or pick another factor.",
            "warning",
            state=CaseState.TIMED_OUT,
            challenge=None,
        )

    def cancelled(self, case: Case, now: datetime) -> Case:
        self._require_open(case)
        if case.target is None:
            raise CaseRefused("Select the caller's Okta user first.", "no_target")
        state = CaseState.VERIFIED if self._still_verified(case, now) else CaseState.FACTORS
        return self._next(case, now, state=state, challenge=None)

    def step_up(self, case: Case, now: datetime) -> Case:
        """ "Verify another factor": the factor list again, with the proofs kept."""
        self._require_open(case)
        if case.target is None or case.state not in (CaseState.VERIFIED, CaseState.FACTORS):
            raise CaseRefused("Verify the caller first.", "not_verified")
        return self._next(case, now, state=CaseState.FACTORS, challenge=None)

    def closed(self, case: Case, now: datetime) -> Case:
        if case.state == CaseState.CLOSED:
            raise StaleEvent("already closed")
        return self._next(case, now, state=CaseState.CLOSED, challenge=None, trigger_id=None)

    def refreshed(self, case: Case, now: datetime) -> Case:
        return self._next(case, now)

    # -- after verification -----------------------------------------------------------------------

    def _still_verified(self, case: Case, now: datetime) -> bool:
        v = case.verified
        return (
            v is not None
            and case.target is not None
            and case.verified_target_id == case.target.id
            and v.by_agent == case.agent.user_id
            and any(p.expires_at > now for p in case.proofs)
        )

    def offered(self, case: Case) -> list[ActionKind]:
        """The actions that apply to this target at all (the policy then says which may run now)."""
        if case.state != CaseState.VERIFIED or case.target is None or self.refusal(case) is not None:
            return []
        offered = [ActionKind.TEMP_ACCESS_CODE] if case.tac_available else []
        offered += [ActionKind.TEMP_PASSWORD, ActionKind.RESET_LINK]
        if any(o.factor_type != ATTRIBUTE for o in case.factors):
            offered += [ActionKind.RESET_FACTOR, ActionKind.RESET_ALL_FACTORS]
        if case.target.status == "LOCKED_OUT":
            offered.append(ActionKind.UNLOCK)
        offered.append(ActionKind.REVOKE_SESSIONS)
        return offered

    def gate(self, case: Case, action: ActionKind, now: datetime, factor_id: str | None = None) -> ActionGate:
        """The policy's answer for ``action`` on this case now."""
        return self.policy.gate(action, case.proofs, now, risk=case.risk, approval=case.approval, factor_id=factor_id)

    def gates(self, case: Case, now: datetime) -> list[ActionGate]:
        return [self.gate(case, action, now) for action in self.offered(case)]

    def actions(self, case: Case, now: datetime | None = None) -> list[ActionKind]:
        """What the agent may do now (checked again, server-side, before each one runs)."""
        now = now or case.updated_at
        return [g.action for g in self.gates(case, now) if g.allowed]

    def assurance(self, case: Case, now: datetime) -> str:
        return assurance_reached(case.proofs, now)

    def refusal(self, case: Case) -> str | None:
        """Why no action may run on this case's target at all (mode, protection, own account)."""
        if case.mode == "verify-only":
            return "This help desk verifies only: make changes in the Okta Admin Console."
        if case.protected_groups:
            return case.escalation or "This user is protected: escalate to an Okta administrator."
        if case.target is not None and case.agent_okta_id == case.target.id:
            return "You cannot reset your own account here."
        return None

    def check_action(
        self, case: Case, action: ActionKind, agent: Actor, now: datetime, factor_id: str | None = None
    ) -> None:
        """Server-side re-check before an action: verified, in time, by this agent, for this user."""
        self._require_open(case)
        if agent.user_id != case.agent.user_id:
            raise CaseRefused("This case belongs to another agent.", "wrong_agent")
        if case.state != CaseState.VERIFIED or case.verified is None:
            raise CaseRefused("Verify the caller first.", "not_verified")
        if not self._still_verified(case, now):
            raise CaseRefused("The verification has expired: verify the caller again.", "verification_expired")
        if (why := self.refusal(case)) is not None:
            raise CaseRefused(why, "escalate" if case.protected_groups else "not_allowed")
        if action not in self.offered(case):
            if action == ActionKind.UNLOCK:
                raise CaseRefused("The account is not locked out: there is nothing to unlock.", "not_locked")
            raise CaseRefused("That action is not available for this user.", "unavailable")
        if action == ActionKind.RESET_FACTOR and not any(
            o.id == factor_id and o.factor_type != ATTRIBUTE for o in case.factors
        ):
            raise CaseRefused("That factor is not one of this user's factors.", "unknown_factor")
        gate = self.gate(case, action, now, factor_id)
        if gate.allowed:
            return
        name = ACTION_NAMES[action]
        if gate.approval_needed:
            raise CaseRefused(f"{name} needs {gate.needs}: request an approval first.", "approval_required")
        raise CaseRefused(
            f"{name} needs {gate.needs} — verified so far: {gate.has}. Verify another factor first.", "assurance"
        )

    # -- approvals (four eyes) --------------------------------------------------------------------

    def check_request_approval(
        self, case: Case, action: ActionKind, agent: Actor, now: datetime, factor_id: str | None = None
    ) -> ApprovalInfo | None:
        """May the agent ask for an approval of ``action`` now? Returns a pending request to reuse, if any."""
        self._require_open(case)
        if agent.user_id != case.agent.user_id:
            raise CaseRefused("This case belongs to another agent.", "wrong_agent")
        if case.state != CaseState.VERIFIED or not self._still_verified(case, now):
            raise CaseRefused("Verify the caller first.", "not_verified")
        if (why := self.refusal(case)) is not None:
            raise CaseRefused(why, "not_allowed")
        if action not in self.offered(case):
            raise CaseRefused("That action is not available for this user.", "unavailable")
        gate = self.gate(case, action, now, factor_id)
        if gate.allowed:
            raise CaseRefused("No approval is needed: the action can run now.", "not_needed")
        if not gate.approval_needed:
            raise CaseRefused(
                f"{ACTION_NAMES[action]} needs {gate.needs} — verified so far: {gate.has}. "
                "Verify another factor before asking for an approval.",
                "assurance",
            )
        pending = case.approval
        if (
            pending is not None
            and pending.status == ApprovalStatus.REQUESTED
            and pending.action == action
            and pending.factor_id == factor_id
            and now < pending.expires_at
        ):
            return pending
        return None

    def approval_requested(
        self, case: Case, approval_id: str, action: ActionKind, factor_id: str | None, now: datetime
    ) -> Case:
        approval = ApprovalInfo(
            approval_id=approval_id,
            action=action,
            factor_id=factor_id,
            status=ApprovalStatus.REQUESTED,
            approver=self.policy.approver,
            requested_by=case.agent.user_id,
            requested_at=now,
            expires_at=now + timedelta(minutes=self.policy.approval_minutes),
        )
        who = "the user's manager" if self.policy.approver == "manager" else "another help-desk agent"
        return self.with_notice(
            case, now, f"Approval requested from {who}: this view updates when they decide.", "info", approval=approval
        )

    def check_decide(self, case: Case, approval_id: str, approver_id: str, now: datetime) -> ApprovalInfo:
        """The approval a decision is for, if it may be decided now by ``approver_id`` (Slack user id)."""
        approval = case.approval
        if approval is None or approval.approval_id != approval_id:
            raise CaseRefused("This approval request was replaced by a newer one.", "approval_replaced")
        if approval.status != ApprovalStatus.REQUESTED:
            raise CaseRefused(f"This request was already {approval.status.value}.", "approval_decided")
        if now >= approval.expires_at or case.state in (CaseState.CLOSED, CaseState.DENIED, CaseState.FAILED):
            raise CaseRefused("This request has expired (or its case was closed).", "approval_expired")
        if approver_id == approval.requested_by or approver_id == case.agent.user_id:
            raise CaseRefused("You cannot approve your own request: another person must.", "self_approval")
        return approval

    def approval_decided(self, case: Case, approval_id: str, approver_id: str, approve: bool, now: datetime) -> Case:
        approval = self.check_decide(case, approval_id, approver_id, now)
        status = ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED
        decided = approval.model_copy(update={"status": status, "decided_by": approver_id, "decided_at": now})
        name = ACTION_NAMES[approval.action]
        if approve:
            return self.with_notice(
                case,
                now,
                f"{name} was approved: it may run once, before {decided.expires_at:%H:%M} UTC.",
                "info",
                approval=decided,
            )
        return self.with_notice(
            case, now, f"{name} was denied by the approver: it stays refused.", "warning", approval=decided
        )

    def approval_expired(self, case: Case, approval_id: str, now: datetime) -> Case:
        """A request nobody decided in time: expired, and said so (the action stays refused)."""
        approval = case.approval
        if approval is None or approval.approval_id != approval_id or approval.status != ApprovalStatus.REQUESTED:
            raise StaleEvent("the request was decided or replaced")
        if now < approval.expires_at:
            raise StaleEvent("not yet")
        expired = approval.model_copy(update={"status": ApprovalStatus.EXPIRED})
        text = f"Nobody approved {ACTION_NAMES[approval.action]} in time: request it again if it is still needed."
        return self.with_notice(case, now, text, "warning", approval=expired)

    def approval_used(self, case: Case) -> ApprovalInfo | None:
        if case.approval is None or case.approval.status != ApprovalStatus.APPROVED:
            return None
        return case.approval.model_copy(update={"status": ApprovalStatus.USED})

    def reconciled(
        self,
        case: Case,
        intent: Intent,
        result: Literal["done", "not_done", "uncertain"],
        message: str,
        now: datetime,
    ) -> Case:
        """The journal's entry ``intent``, found open after an interruption, closed with what Okta told.

        Nothing is sent again: a challenge that may have gone out is shown as such (an SMS, call or email
        code can still be typed in); an action is recorded done, not done or uncertain.
        """
        if case.intent is None or case.intent.intent_id != intent.intent_id:
            raise StaleEvent("the journal entry was already closed")
        level: Literal["info", "warning", "error"] = "warning" if result == "uncertain" else "info"
        changes: dict[str, object] = {"intent": None}
        if intent.kind == "challenge" and intent.factor_type in ("sms", "call", "email") and case.target:
            option = next((o for o in case.factors if o.id == intent.factor_id), None)
            if option is not None:
                sent = self.challenge_sent(case, option, f"r{intent.intent_id[:15]}", intent.started_at)
                challenge = sent.challenge
                return self.with_notice(
                    case, now, message, level, state=CaseState.CHALLENGE_SENT, challenge=challenge, **changes
                )
        if intent.kind == "action" and intent.action is not None:
            ok = result == "done"
            changes["results"] = [
                *case.results[-(RESULTS_KEEP - 1) :],
                ActionResult(action=intent.action, ok=ok, message=message, at=now),
            ]
            approval = case.approval
            if (
                result == "not_done"
                and approval is not None
                and approval.status == ApprovalStatus.USED
                and approval.action == intent.action
                and now < approval.expires_at
            ):
                changes["approval"] = approval.model_copy(update={"status": ApprovalStatus.APPROVED})
        return self.with_notice(case, now, message, level, **changes)

    def disputed(self, case: Case, now: datetime) -> Case:
        return self.with_notice(
            case,
            now,
            "The user reported this change as not theirs: their sessions were ended and security was alerted.",
            "error",
            disputed=True,
        )

    def verification_expired(self, case: Case, now: datetime) -> Case:
        return self.with_notice(
            case,
            now,
            "The verification has expired: verify the caller again.",
            "warning",
            state=CaseState.FACTORS,
            verified=None,
            verified_target_id=None,
        )

    def action_done(
        self,
        case: Case,
        action: ActionKind,
        ok: bool,
        message: str,
        now: datetime,
        *,
        target: UserCard | None = None,
        factors: list[FactorOption] | None = None,
        secret_shown: bool = False,
        approval: ApprovalInfo | None = None,
    ) -> Case:
        result = ActionResult(action=action, ok=ok, message=message, at=now)
        changes: dict[str, object] = {"results": [*case.results[-(RESULTS_KEEP - 1) :], result]}
        if approval is not None:
            changes["approval"] = approval
        if target is not None:
            changes["target"] = target.model_copy(update={"protected": bool(case.protected_groups)})
        if factors is not None:
            changes["factors"] = factors
        nxt = self._next(case, now, **changes)
        if secret_shown:
            nxt = nxt.model_copy(update={"secret_revision": nxt.revision})
        return nxt

    def action_failed(self, case: Case, action: ActionKind, message: str, now: datetime) -> Case:
        nxt = self.action_done(case, action, False, message, now)
        return nxt.model_copy(update={"notice": Notice(level="error", text=message)})

    # -- views of the case ------------------------------------------------------------------------

    @staticmethod
    def _require_open(case: Case) -> None:
        if case.state in (CaseState.CLOSED, CaseState.DENIED):
            raise CaseRefused("This case is closed. Start a new verification.", "closed")
        if case.state == CaseState.FAILED:
            raise CaseRefused("This verification failed. Start a new case to try again.", "failed")

    def snapshot(self, case: Case, first: bool = False) -> CaseSnapshot:
        gates = self.gates(case, case.updated_at)
        return CaseSnapshot(
            case_id=case.case_id,
            revision=case.revision,
            first=first,
            state=case.state,
            agent=case.agent,
            case_token=case.case_token,
            trigger_id=case.trigger_id if case.view is None else None,
            channel_id=case.channel_id,
            view=case.view,
            query=case.query,
            mode=case.mode,
            target=case.target,
            factors=case.factors,
            challenge=case.challenge.info() if case.challenge else None,
            verified=case.verified,
            actions=[g.action for g in gates if g.allowed],
            gates=gates,
            proofs=case.proofs,
            assurance=self.assurance(case, case.updated_at),
            risk=case.risk,
            approval=case.approval,
            disputed=case.disputed,
            tac_available=case.tac_available,
            ticket=case.ticket,
            suggestions=case.suggestions if case.state == CaseState.SEARCHING else [],
            results=case.results,
            notice=case.notice,
            denial_reason=case.denial_reason,
            admin_url=case.admin_url if case.state == CaseState.VERIFIED else None,
            escalation=case.escalation,
            updated_at=case.updated_at,
        )

    @staticmethod
    def outcome(case: Case) -> str:
        return {
            CaseState.VERIFIED: "verified",
            CaseState.DENIED: "denied",
            CaseState.FAILED: "failed",
            CaseState.REJECTED: "push rejected",
            CaseState.TIMED_OUT: "timed out",
            CaseState.CLOSED: "verified, closed" if case.verified else "closed",
        }.get(case.state, "in progress")

    def recent(self, case: Case) -> RecentCase:
        return RecentCase(
            case_id=case.case_id,
            target_login=case.target.login if case.target else None,
            state=case.state,
            outcome=self.outcome(case),
            at=case.updated_at,
        )
