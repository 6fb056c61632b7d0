"""Four eyes, and the target's "This wasn't me": the commands that come from people other than the agent.

    await request_approval(ctx, RequestApproval(...), command_id)   # the agent asks
    await decide_approval(ctx, DecideApproval(...), command_id)      # someone clicks Approve or Deny
    await report_not_me(ctx, ReportNotMe(...), command_id)           # the target disowns a change

An approval is a sub-state of the case (:class:`~shared.messages.ApprovalInfo`): requested → approved |
denied | expired, then used once by the action it was for. The approver must be authorized like an
agent (or, with ``approver = "manager"``, be the target's manager in Okta), and is never the requesting
agent nor the target, nor an account sharing their identifiers. Every step is audited, and a refused
decision is answered under the request — nothing is dropped silently.
"""

from __future__ import annotations

import contextlib
import uuid

from services.okta_worker.authz import AgentIdentity, identifiers_of
from services.okta_worker.case import Case, CaseRefused, StaleEvent
from services.okta_worker.context import WorkerContext, case_of, claim, load, recheck_agent
from services.okta_worker.notify import send_security_notice, target_notice
from services.okta_worker.okta_client import OktaError, OktaUser
from services.okta_worker.policy import ACTION_NAMES
from shared.bus import RetryLater, Unprocessable
from shared.logging import bind_correlation, get_logger
from shared.messages import (
    ApprovalInfo,
    ApprovalNotice,
    ApprovalStatus,
    AuditEvent,
    DecideApproval,
    ExpireApproval,
    MessageRef,
    ReportNotMe,
    RequestApproval,
)
from shared.tokens import CaseTokenError

log = get_logger(__name__)

APPROVAL_PREFIX = "approval:"
TARGET_PREFIX = "target:"


async def _manager_of(ctx: WorkerContext, target_id: str) -> OktaUser | None:
    """The target's manager (``profile.managerId``), if it names an ACTIVE Okta user."""
    target = await ctx.okta.get_user(target_id)
    if not target.manager_id:
        return None
    try:
        manager = await ctx.okta.get_user(target.manager_id)
    except OktaError:
        return None
    return manager if manager.status == "ACTIVE" else None


def approval_notice(
    ctx: WorkerContext,
    case: Case,
    approval: ApprovalInfo,
    *,
    manager_email: str | None = None,
    message: MessageRef | None = None,
    note: str | None = None,
) -> ApprovalNotice:
    assert case.target is not None
    ttl = max(60, int((approval.expires_at - ctx.clock()).total_seconds()) + 60)
    return ApprovalNotice(
        case_id=case.case_id,
        approval=approval,
        approval_token=ctx.tokens.issue(case.case_id, f"{APPROVAL_PREFIX}{approval.approval_id}", ttl=ttl),
        requester=case.agent,
        requester_email=case.agent_email,
        target=case.target,
        assurance=ctx.engine.assurance(case, ctx.clock()),
        risk=case.risk,
        action_label=ACTION_NAMES[approval.action],
        channel_id=None if manager_email else ctx.settings.slack_approvals_channel,
        manager_email=manager_email,
        message=message,
        note=note,
    )


async def request_approval(ctx: WorkerContext, cmd: RequestApproval, command_id: str) -> None:
    """Ask for a second person's approval of one action; the proofs must already meet the policy."""
    case_id = case_of(ctx, cmd)
    case = await load(ctx, case_id)
    engine = ctx.engine
    try:
        pending = engine.check_request_approval(case, cmd.action, cmd.agent, ctx.clock(), cmd.factor_id)
        if pending is not None:
            raise CaseRefused("An approval was already requested: waiting for the approver.", "approval_pending")
    except CaseRefused as refused:
        await ctx.notify(case_id, refused, cmd.view)
        return
    agent = await recheck_agent(ctx, cmd, case)
    if agent is None:
        return
    assert case.target is not None
    manager_email: str | None = None
    try:
        if engine.policy.approver == "manager":
            manager = await _manager_of(ctx, case.target.id)
            if manager is None:
                raise CaseRefused(
                    f"{case.target.display_name} has no active manager in Okta (profile.managerId): the approval "
                    "cannot be requested. Escalate to an Okta administrator.",
                    "no_manager",
                )
            if agent.shares_identity_with(manager) is not None:
                raise CaseRefused("You are this user's manager: another person must approve.", "self_approval")
            manager_email = manager.email or manager.login
        elif not ctx.settings.slack_approvals_channel:
            raise CaseRefused(
                "This action needs an approval, and no approvals channel is configured (SLACK_APPROVALS_CHANNEL).",
                "no_approvals_channel",
            )
    except OktaError as exc:
        await ctx.notify(case_id, CaseRefused(exc.message), cmd.view)
        return
    except CaseRefused as refused:
        after = await ctx.notify(case_id, refused, cmd.view, audited=True)
        if after is not None:
            await ctx.audit(after, "case.approval_requested", "refused", reason=refused.reason)
        return
    if await claim(ctx, case_id, command_id, cmd.view) is None:
        return
    approval_id = uuid.uuid4().hex[:16]
    try:
        _, after = await ctx.apply(
            case_id,
            lambda c: engine.approval_requested(c, approval_id, cmd.action, cmd.factor_id, ctx.clock()),
            cmd.view,
        )
    except (CaseRefused, StaleEvent):
        return
    assert after.approval is not None
    await ctx.bus.publish(
        approval_notice(ctx, after, after.approval, manager_email=manager_email),
        msg_id=f"{case_id}:{approval_id}:requested",
    )
    expiry = ExpireApproval(case_id=case_id, approval_id=approval_id, expires_at=after.approval.expires_at)
    await ctx.bus.publish(expiry, msg_id=f"expire:{case_id}:{approval_id}")
    await ctx.audit(
        after,
        "case.approval_requested",
        "pending",
        action_kind=cmd.action.value,
        approver=engine.policy.approver,
        approval_id=approval_id,
        required=engine.gate(after, cmd.action, ctx.clock(), cmd.factor_id).needs,
    )


async def expire_approval(ctx: WorkerContext, job: ExpireApproval) -> None:
    """The job that ends a request nobody decided: back (nak with delay) until its time, then the case
    says it expired, the request in Slack loses its buttons, and it is audited."""
    bind_correlation(case_id=job.case_id)
    remaining = (job.expires_at - ctx.clock()).total_seconds()
    if remaining > 0:
        raise RetryLater(remaining + 0.2, "approval pending")
    try:
        _, after = await ctx.apply(
            job.case_id,
            lambda c: ctx.engine.approval_expired(c, job.approval_id, ctx.clock()),
            audit=lambda c: ctx.audit_event(c, "case.approval_expired", "info", approval_id=job.approval_id),
        )
    except StaleEvent:
        return  # decided, replaced, or the case is gone: nothing to end
    assert after.approval is not None
    notice = approval_notice(ctx, after, after.approval)
    await ctx.bus.publish(notice, msg_id=f"{job.case_id}:{job.approval_id}:expired")


def _token_claims(ctx: WorkerContext, token: str, prefix: str) -> tuple[str, str]:
    """(case id, the id after ``prefix``) from a signed button token; ``Unprocessable`` if forged."""
    try:
        claims = ctx.tokens.verify(token)
    except CaseTokenError as exc:
        raise Unprocessable(f"button token refused: {exc}") from None
    if not claims.agent_id.startswith(prefix):
        raise Unprocessable("button token of another kind")
    bind_correlation(case_id=claims.case_id)
    return claims.case_id, claims.agent_id.removeprefix(prefix)


async def _check_approver(ctx: WorkerContext, case: Case, cmd: DecideApproval) -> AgentIdentity:
    """The approver, if they may decide: authorized like an agent (or the manager), never the requester
    nor the target nor someone sharing their identifiers. ``CaseRefused`` says why not."""
    assert case.target is not None
    if cmd.agent.user_id == case.agent.user_id:
        raise CaseRefused("You cannot approve your own request: another person must.", "self_approval")
    if ctx.engine.policy.approver == "manager":
        email, person = await ctx.authorizer.person(cmd.agent)
        manager = await _manager_of(ctx, case.target.id)
        if manager is None or manager.id != person.id:
            raise CaseRefused("Only the user's manager (in Okta) may decide this request.", "not_manager")
        approver = AgentIdentity(
            slack_id=cmd.agent.user_id,
            email=email,
            okta_id=person.id,
            identifiers=tuple(identifiers_of(person).items()),
        )
    else:
        approver = await ctx.authorizer.authorize(cmd.agent)
    target = await ctx.okta.get_user(case.target.id)
    if approver.shares_identity_with(target) is not None:
        raise CaseRefused("You are the user this request is about: another person must decide.", "target_approval")
    if case.agent_okta_id and approver.okta_id == case.agent_okta_id:
        raise CaseRefused("You cannot approve your own request: another person must.", "self_approval")
    return approver


async def decide_approval(ctx: WorkerContext, cmd: DecideApproval, command_id: str) -> None:
    """Approve or Deny: checked, stored with compare-and-swap, the agent's modal and the request updated."""
    case_id, approval_id = _token_claims(ctx, cmd.approval_token, APPROVAL_PREFIX)
    case = await load(ctx, case_id)
    engine = ctx.engine
    try:
        if case.target is None or case.approval is None:
            raise CaseRefused("This request no longer applies (the case moved on).", "approval_replaced")
        engine.check_decide(case, approval_id, cmd.agent.user_id, ctx.clock())
        approver = await _check_approver(ctx, case, cmd)
        _, after = await ctx.apply(
            case_id, lambda c: engine.approval_decided(c, approval_id, cmd.agent.user_id, cmd.approve, ctx.clock())
        )
    except (CaseRefused, OktaError) as exc:
        reason = exc.reason if isinstance(exc, CaseRefused) else "okta_error"
        await _decision_refused(ctx, case, cmd, exc.message, reason)
        return
    except StaleEvent:
        return
    assert after.approval is not None
    status = after.approval.status.value
    await ctx.bus.publish(
        approval_notice(ctx, after, after.approval, message=cmd.message), msg_id=f"{case_id}:{approval_id}:{status}"
    )
    await ctx.audit(
        after,
        f"case.approval_{status}",
        "success" if cmd.approve else "denied",
        action_kind=after.approval.action.value,
        approver=cmd.agent.user_id,
        approver_email=approver.email,
        approval_id=approval_id,
    )


async def _decision_refused(ctx: WorkerContext, case: Case, cmd: DecideApproval, why: str, reason: str) -> None:
    """A decision that does not count: said under the request, audited (a warning when it smells)."""
    approval = case.approval
    if approval is not None and case.target is not None:
        shown = approval
        if reason == "approval_expired" and approval.status == ApprovalStatus.REQUESTED:
            shown = approval.model_copy(update={"status": ApprovalStatus.EXPIRED})
        await ctx.bus.publish(
            approval_notice(ctx, case, shown, message=cmd.message, note=f"<@{cmd.agent.user_id}>: {why}"),
            msg_id=f"{case.case_id}:{approval.approval_id}:refused:{command_id_of_click(cmd)}",
        )
    suspicious = reason in ("self_approval", "target_approval", "not_manager", "not_in_group")
    await ctx.audit(
        case,
        "case.approval_refused",
        "refused",
        category="security" if suspicious else "case",
        severity="alert" if suspicious else "info",
        approver=cmd.agent.user_id,
        reason=reason,
    )


def command_id_of_click(cmd: DecideApproval) -> str:
    return f"{cmd.agent.user_id}:{cmd.approve}:{cmd.sent_at.timestamp():.3f}"


async def report_not_me(ctx: WorkerContext, cmd: ReportNotMe, command_id: str) -> None:
    """The target says a change was not theirs: end every session and OAuth token, alert security,
    mark the case disputed. Only the target may: the clicking Slack user must be that Okta user."""
    case_id, target_id = _token_claims(ctx, cmd.notice_token, TARGET_PREFIX)
    found = await ctx.store.get(case_id)
    case = found[0] if found else None
    try:
        _, person = await ctx.authorizer.person(cmd.agent, require_active=False)
    except CaseRefused as refused:
        log.warning("case.not_me_refused", reason=refused.reason)
        return
    if person.id != target_id:
        await _audit_raw(ctx, case_id, "case.not_me_refused", "refused", cmd.agent.user_id, reason="not_the_target")
        return
    if case is not None and case.disputed:
        return  # a second click: already done
    try:
        await ctx.okta.revoke_sessions(target_id, oauth_tokens=True)
        revoked = True
    except OktaError as exc:
        log.warning("case.not_me_revoke_failed", error=type(exc).__name__)
        revoked = False
    if case is None:
        await _audit_raw(
            ctx, case_id, "case.disputed", "alert", cmd.agent.user_id, sessions_revoked=revoked, target_id=target_id
        )
        return
    with contextlib.suppress(StaleEvent):
        _, case = await ctx.apply(case_id, lambda c: ctx.engine.disputed(c, ctx.clock()))
    await ctx.audit(
        case,
        "case.disputed",
        "alert",
        category="security",
        severity="alert",
        reported_by=cmd.agent.user_id,
        sessions_revoked=revoked,
    )
    name = case.target.display_name if case.target else "The user"
    await send_security_notice(
        ctx,
        case,
        "disputed",
        f"{name} says the help desk's change to their account was not requested by them. "
        + ("Their sessions and OAuth tokens were revoked. " if revoked else "Revoking their sessions FAILED. ")
        + "Check the case and who called.",
    )
    notice = target_notice(ctx, case, [r.message for r in case.results if r.ok])
    if notice is not None:
        update = notice.model_copy(update={"disputed": True, "message": cmd.message})
        await ctx.bus.publish(update, msg_id=f"{case_id}:disputed:user")


async def _audit_raw(
    ctx: WorkerContext, case_id: str, action: str, outcome: str, actor: str, **details: str | bool | None
) -> None:
    """An audit event for a case no longer in KV (the notice outlives the case by days)."""
    event = AuditEvent(
        category="security",
        action=action,
        outcome=outcome,  # type: ignore[arg-type]
        actor=actor,
        case_id=case_id,
        severity="alert",
        details=dict(details),
    )
    await ctx.bus.publish(event, msg_id=f"{case_id}:{action}:{actor}")
