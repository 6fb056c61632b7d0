"""What every worker handler needs (:class:`WorkerContext`), and the plumbing from a command to its case.

    case_id = case_of(ctx, cmd)                       # the signed token's case, for this agent
    case = await load(ctx, case_id)
    if await claim(ctx, case_id, command_id, cmd.view) is not None:   # first delivery of one with effects
        ...
    _, after = await ctx.apply(case_id, lambda c: ctx.engine.refreshed(c, ctx.clock()))
    await ctx.audit(after, "case.refreshed", "info")

Every stored revision is published as a ``CaseSnapshot`` (msg id ``case_id:revision``) and every
step as an ``AuditEvent`` carrying the assurance the case has reached.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from services.okta_worker import metrics
from services.okta_worker.authz import AgentIdentity, Authorizer
from services.okta_worker.case import Case, CaseEngine, CaseRefused, Intent, StaleEvent
from services.okta_worker.okta_client import OktaClient
from services.okta_worker.pacer import PollPacer
from services.okta_worker.risk import RiskReader
from services.okta_worker.store import AgentIndex, CaseStore
from shared.bus import Bus, Delivery, Unprocessable
from shared.limits import RateLimiter
from shared.logging import bind_correlation, get_logger
from shared.messages import AuditEvent, CaseState, Command, Message, WorkflowResult
from shared.settings import Settings
from shared.tokens import CaseTokenError, CaseTokens

log = get_logger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class WorkerContext:
    """What every handler needs; built once per process by ``app.py``."""

    settings: Settings
    bus: Bus
    okta: OktaClient
    store: CaseStore
    agents: AgentIndex
    limiter: RateLimiter
    pacer: PollPacer
    tokens: CaseTokens
    engine: CaseEngine
    authorizer: Authorizer
    risk: RiskReader
    clock: Callable[[], datetime] = utcnow
    tac_authenticator_id: str | None = None  # the org's Temporary Access Code authenticator, if it has one
    tac_checked_at: float | None = None
    handled: int = 0  # commands and jobs this process handled (bench: the split across replicas)

    # -- publishing -------------------------------------------------------------------------------

    async def publish_case(self, case: Case, *, first: bool = False) -> None:
        """The case's snapshot; ``first`` only for the one published as the case was created."""
        if case.secret_revision == case.revision:
            return  # the revision of a one-time secret: the responder shows it from ShowTempPassword only
        await self.bus.publish(self.engine.snapshot(case, first=first), msg_id=f"{case.case_id}:{case.revision}")

    async def audit(
        self,
        case: Case,
        name: str,
        outcome: str,
        *,
        category: str = "case",
        severity: str = "info",
        **details: str | int | float | bool | None,
    ) -> None:
        await self.publish_audit(
            case, self.audit_event(case, name, outcome, category=category, severity=severity, **details)
        )

    async def publish_audit(self, case: Case, event: AuditEvent) -> None:
        """One audit event of ``case``'s revision; its msg id makes a second publish a no-op."""
        msg_id = f"{case.case_id}:{event.details.get('revision')}:{event.category}.{event.action}"
        await self.bus.publish(event, msg_id=msg_id)

    async def republish(self, case: Case) -> None:
        """The stored revision's snapshot and audit events again (deduplicated): what a crash between the
        KV write and the publish lost is published now, and nothing twice."""
        await self.publish_case(case)
        for event in case.outbox:
            await self.publish_audit(case, event)

    def audit_event(
        self,
        case: Case,
        name: str,
        outcome: str,
        *,
        category: str = "case",
        severity: str = "info",
        **details: str | int | float | bool | None,
    ) -> AuditEvent:
        return AuditEvent(
            category=category,  # type: ignore[arg-type]
            action=name,
            outcome=outcome,  # type: ignore[arg-type]
            actor=case.agent.user_id,
            target=case.target.login if case.target else None,
            case_id=case.case_id,
            severity=severity,  # type: ignore[arg-type]
            details={
                "agent_email": case.agent_email,
                "target_id": case.target.id if case.target else None,
                "revision": case.revision,
                "assurance": self.engine.assurance(case, case.updated_at),
                "ticket": case.ticket,
                **details,
            },
        )

    async def apply(
        self,
        case_id: str,
        change: Callable[[Case], Case],
        view: Any = None,
        known: tuple[Case, int] | None = None,
        *,
        audit: Callable[[Case], AuditEvent] | None = None,
    ) -> tuple[Case, Case]:
        """Store the next case (CAS) and publish its snapshot; index it for the agent's Home.

        ``audit`` (the new case → its event) is stored in the same write (the case's outbox) and then
        published, so an outcome and its audit event are never separated by a crash.
        """
        engine = self.engine

        def with_view(case: Case) -> Case:
            after = change(engine.seen_view(case, view))
            if audit is not None and after.revision != case.revision:
                after = after.model_copy(update={"outbox": [audit(after)]})
            return after

        before, after = await self.store.update(case_id, with_view, known)
        if after.revision != before.revision:
            await self.publish_case(after)
            for event in after.outbox:
                await self.publish_audit(after, event)
            if after.state != before.state:
                metrics.TRANSITIONS.labels(after.state.value).inc()
                await self.remember(after)
                if self.engine.workflow_outcome(after) is not None:
                    await self.finish_workflow(case_id)
        return before, after

    async def finish_workflow(self, case_id: str) -> None:
        """Complete the Workflow Builder step waiting on this case: its outputs once verified, an error
        when the case failed or was closed unverified. Marked done first (compare-and-swap): once."""
        outcome: str | None = None

        def mark(case: Case) -> Case:
            nonlocal outcome
            outcome = self.engine.workflow_outcome(case)
            return case if outcome is None else case.model_copy(update={"workflow_done": True})

        _, case = await self.store.update(case_id, mark)
        if outcome is None or case.function_execution_id is None:
            return
        verified = case.verified
        if outcome == "verified" and verified is not None:
            result = WorkflowResult(
                case_id=case.case_id,
                function_execution_id=case.function_execution_id,
                verified=True,
                method=verified.method,
                assurance=self.engine.assurance(case, case.updated_at),
                verified_at=verified.at,
            )
        else:
            why = case.denial_reason or (case.notice.text if case.notice else None) or "closed before verification"
            result = WorkflowResult(
                case_id=case.case_id,
                function_execution_id=case.function_execution_id,
                verified=False,
                error=f"The caller was not verified: {why}"[:300],
            )
        await self.bus.publish(result, msg_id=f"workflow:{case.function_execution_id}")

    async def remember(self, case: Case) -> None:
        """List the case on the agent's App Home once it concerns someone (a user picked) or was denied:
        a modal opened and closed again is not one of "your last cases"."""
        if case.target is not None or case.state == CaseState.DENIED:
            await self.agents.record(case.agent.user_id, self.engine.recent(case))

    async def notify(
        self, case_id: str, refused: CaseRefused, view: Any = None, *, audited: bool = False
    ) -> Case | None:
        """Show a refusal to the agent as a notice on the case, and record it: ``case.refused`` with its
        reason, in the same write — unless the caller records it under a name of its own (``audited``)."""
        now = self.clock()

        def event(case: Case) -> AuditEvent:
            return self.audit_event(case, "case.refused", "refused", reason=refused.reason)

        try:
            _, after = await self.apply(
                case_id,
                lambda c: self.engine.with_notice(c, now, refused.message, retry_in=refused.retry_in),
                view,
                audit=None if audited else event,
            )
        except StaleEvent:
            return None
        return after


def case_id_for(trigger_id: str) -> str:
    """One case per trigger id, so a redelivered OpenCase finds its case instead of opening a second."""
    return "c_" + hashlib.sha256(trigger_id.encode()).hexdigest()[:24]


def command_id_of(message: Message, delivery: Delivery | None) -> str:
    if delivery is not None and (msg_id := delivery.headers.get("Nats-Msg-Id")):
        return msg_id
    return hashlib.sha256(message.encode()).hexdigest()[:32]


def case_of(ctx: WorkerContext, command: Command) -> str:
    """The case id from the command's signed token, checked against the acting agent."""
    if not command.case_token:
        raise Unprocessable("command without a case token")
    try:
        claims = ctx.tokens.verify(command.case_token, agent_id=command.agent.user_id)
    except CaseTokenError as exc:
        raise Unprocessable(f"case token refused: {exc}") from None
    bind_correlation(case_id=claims.case_id)
    return claims.case_id


async def load(ctx: WorkerContext, case_id: str) -> Case:
    found = await ctx.store.get(case_id)
    if found is None:
        raise Unprocessable("case not found (expired or never opened)")
    return found[0]


STALE_INTENT = timedelta(seconds=30)  # longer than any live Okta call (10 s timeout, heartbeats meanwhile)


class Busy(Exception):
    """Raised by :func:`claim` when another Okta call of the case is in flight (or was interrupted)."""

    def __init__(self, case: Case, stale: bool) -> None:
        super().__init__("another step of this case is in flight")
        self.case = case
        self.stale = stale


async def claim(
    ctx: WorkerContext,
    case_id: str,
    command_id: str,
    view: Any,
    intent: Intent | None = None,
    prepare: Callable[[Case], Case] | None = None,
) -> Case | None:
    """Mark a command with effects in Okta as taken, with its journal entry: the case as claimed, or
    None if it was already (a redelivery).

    ``intent`` is recorded in the same compare-and-swap: from then on the call is either recorded with
    its outcome (``CaseEngine.settle``) or found open and reconciled (``journal.reconcile``). While
    another entry is open the command is refused (:class:`Busy`): a second click never sends a second SMS.
    ``prepare`` checks the freshest case once more and may change it in the same write (an action spends
    its approval there); its ``CaseRefused`` propagates.
    """
    taken = False
    now = ctx.clock()

    def mark(case: Case) -> Case:
        nonlocal taken
        taken = command_id in case.handled
        if taken:
            return case
        if intent is not None and case.intent is not None and case.intent.intent_id != command_id:
            raise Busy(case, stale=now - case.intent.started_at > STALE_INTENT)
        if prepare is not None:
            case = prepare(case)
        marked = ctx.engine.remember(ctx.engine.seen_view(case, view), command_id)
        return marked.model_copy(update={"intent": intent}) if intent is not None else marked

    _, after = await ctx.store.update(case_id, mark)
    return None if taken else after


TRANSIENT_REFUSALS = frozenset({"lookup_failed", "okta_error"})


async def recheck_agent(ctx: WorkerContext, cmd: Command, case: Case) -> AgentIdentity | None:
    """The agent, authorized again (cached ≤ 60 s) before a case command runs; None if refused.

    An agent removed from the help-desk group loses the open case too: it is closed as denied and
    audited. A check that could not be made (Slack or Okta down) refuses this command only.
    """
    try:
        return await ctx.authorizer.authorize(cmd.agent)
    except CaseRefused as refused:
        if refused.reason in TRANSIENT_REFUSALS:
            await ctx.notify(case.case_id, refused, cmd.view)
            return None
        why = refused.message
        try:
            _, after = await ctx.apply(case.case_id, lambda c: ctx.engine.denied(c, why, ctx.clock()), cmd.view)
        except StaleEvent:
            return None
        await ctx.audit(
            after, "case.denied", "denied", severity="warning", reason=refused.reason, command=type(cmd).__name__
        )
        return None
