"""One async function per command, the durable push poll, and the user search.

    ctx = WorkerContext(settings, bus, okta, store, ...)          # built by app.py
    await handle_command(ctx, OpenCase(...), delivery)             # what the CMD consumer calls
    await poll_push(ctx, PollPush(...), delivery)                  # RetryLater while WAITING
    reply = await search_users(ctx, SearchUsers(...))              # request/reply

A command handler loads the case, re-checks the agent's authorization, asks :class:`CaseEngine` whether
the step is allowed (for an action: whether the proofs meet the assurance policy), makes the Okta call,
and stores the next case with compare-and-swap. A command that has effects in Okta (a challenge, a
code, an action) is first *claimed* in the case, so a redelivered command never sends a second push or
SMS. Approvals and the target's "This wasn't me" live in ``approvals.py``.

A temporary password or access code exists only in one local variable and the one ``ShowTempPassword``
request to the responder; the case revision it was shown at is published as no snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import SecretStr

from services.okta_worker import metrics
from services.okta_worker.approvals import approval_notice, decide_approval, report_not_me, request_approval
from services.okta_worker.case import Case, CaseRefused, Intent, PendingChallenge, StaleEvent
from services.okta_worker.context import (
    WorkerContext,
    case_id_for,
    case_of,
    command_id_of,
    load,
    recheck_agent,
)
from services.okta_worker.factors import ATTRIBUTE, attribute_matches, factor_options
from services.okta_worker.journal import release, take
from services.okta_worker.notify import notify_target, security_channel, send_security_notice
from services.okta_worker.okta_client import (
    OktaError,
    OktaRateLimited,
    OktaResendTooSoon,
    OktaTransactionGone,
    OktaUnavailable,
    OktaUser,
    OktaUserLocked,
    OktaWrongCode,
)
from services.okta_worker.policy import ACTION_NAMES
from services.okta_worker.starts import parse_request, prefill, start_from_message, workflow_step
from shared.bus import BusError, Delivery, RetryLater, Unprocessable
from shared.logging import bind_correlation, get_logger
from shared.messages import (
    ActionKind,
    ApprovalStatus,
    AuditEvent,
    BackToSearch,
    CancelChallenge,
    CaseState,
    ChallengeFactor,
    CloseCase,
    Command,
    DecideApproval,
    FactorOption,
    HomeOpened,
    HomeSnapshot,
    Message,
    Notice,
    OpenCase,
    PollPush,
    RefreshCase,
    RefusalNotice,
    RefusedClick,
    RenderAck,
    ReportNotMe,
    RequestApproval,
    ResendChallenge,
    RunAction,
    SecurityNotice,
    SelectUser,
    SetTicket,
    ShowTempPassword,
    StartFromMessage,
    StepUp,
    SubmitCode,
    TicketNoteFailed,
    UserCard,
    WorkflowStep,
)

log = get_logger(__name__)

LIMITS_BUCKET = "challenge_limits"
LIMIT_WINDOW = 3600
TAC_TTL_MINUTES = 60


# -------------------------------------------------------------------------------------------- opening


async def open_case(ctx: WorkerContext, cmd: OpenCase, command_id: str) -> None:
    """Open the modal at once ("checking…"), then authorize the agent: SEARCHING or DENIED.

    An agent authorized a moment ago (AUTH_CACHE_SECONDS) gets the search straight away: one
    snapshot, one ``views.open``, instead of "checking…" and then an update.
    """
    case_id = case_id_for(cmd.trigger_id)
    bind_correlation(case_id=case_id)
    now = ctx.clock()
    token = ctx.tokens.issue(case_id=case_id, agent_id=cmd.agent.user_id)
    query, ticket = parse_request(cmd.query) if cmd.query else ("", None)
    case = ctx.engine.open(
        case_id,
        cmd.agent,
        cmd.trigger_id,
        token,
        now,
        query=query,
        channel_id=cmd.channel_id,
        ticket=cmd.ticket or ticket,
        function_execution_id=cmd.function_execution_id,
    )
    case = ctx.engine.seen_view(case, cmd.view)
    if (known := ctx.authorizer.cached(cmd.agent)) is not None:
        case = ctx.engine.authorized(case, known.email, known.okta_id, now)
    if await ctx.store.create(case):
        await ctx.publish_case(case, first=True)
        await ctx.remember(case)
        await ctx.audit(case, "case.opened", "info", source=cmd.source, channel_id=cmd.channel_id)
        if case.state == CaseState.SEARCHING:
            await _start_on(ctx, case, cmd, command_id)
            return
    else:
        case = await load(ctx, case_id)
        await ctx.publish_case(case)  # redelivery: the snapshot may not have gone out
        if case.state != CaseState.OPENED:
            return
    try:
        agent = await ctx.authorizer.authorize(cmd.agent)
    except CaseRefused as refused:
        reason, why = refused.reason, refused.message
        try:
            _, after = await ctx.apply(case_id, lambda c: ctx.engine.denied(c, why, ctx.clock()))
        except StaleEvent:
            return
        await ctx.audit(after, "case.denied", "denied", reason=reason)
        return
    try:
        _, after = await ctx.apply(case_id, lambda c: ctx.engine.authorized(c, agent.email, agent.okta_id, ctx.clock()))
    except StaleEvent:
        return
    log.info("case.authorized", agent=cmd.agent.user_id)
    await _start_on(ctx, after, cmd, command_id)


async def _start_on(ctx: WorkerContext, case: Case, cmd: OpenCase, command_id: str) -> None:
    """The user to pick at once ("Verify <name>"), or what `/helpdesk alice` names: one match → picked."""

    async def select(okta_user_id: str) -> None:
        pick = SelectUser(agent=cmd.agent, case_token=case.case_token, okta_user_id=okta_user_id)
        await select_user(ctx, pick, f"{command_id}:select")

    if cmd.okta_user_id:
        await select(cmd.okta_user_id)
    elif case.query.strip():
        await prefill(ctx, case.case_id, case.query, select)


# --------------------------------------------------------------------------------------------- target


def user_card(user: OktaUser, protected: list[str]) -> UserCard:
    last_login = None
    if user.last_login:
        with contextlib.suppress(ValueError):
            last_login = datetime.fromisoformat(user.last_login.replace("Z", "+00:00"))
    return UserCard(
        id=user.id,
        login=user.login,
        email=user.email,
        first_name=user.first_name,
        last_name=user.last_name,
        status=user.status,
        last_login=last_login,
        protected=bool(protected),
    )


async def select_user(ctx: WorkerContext, cmd: SelectUser, command_id: str) -> None:
    """The caller's Okta user: factors, protection, risk; refused for the agent's own accounts."""
    case_id = case_of(ctx, cmd)
    case = await load(ctx, case_id)
    try:
        ctx.engine.check_select(case, cmd.okta_user_id)
        agent = await recheck_agent(ctx, cmd, case)
        if agent is None:
            return
        user, raw_factors, groups, resolved = await asyncio.gather(
            ctx.okta.get_user(cmd.okta_user_id),
            ctx.okta.list_factors(cmd.okta_user_id),
            ctx.okta.user_groups(cmd.okta_user_id),
            ctx.authorizer.groups.get(),
        )
        if user.status == "DEPROVISIONED":
            raise CaseRefused(f"{user.login} is deprovisioned: there is nothing to verify.", "deprovisioned")
        if (shared := agent.shares_identity_with(user)) is not None:
            raise CaseRefused(
                f"{user.login} shares your {shared}: it counts as your own account, which you cannot verify "
                "or reset here. Ask another agent.",
                "own_account",
            )
    except CaseRefused as refused:
        after = await ctx.notify(case_id, refused, cmd.view, audited=refused.reason == "own_account")
        if after is not None and refused.reason == "own_account":
            await ctx.audit(
                after,
                "case.user_selected",
                "refused",
                severity="warning",
                reason="own_account",
                selected_id=cmd.okta_user_id,
            )
        return
    except OktaError as exc:
        await ctx.notify(case_id, CaseRefused(exc.message), cmd.view)
        return
    protected = resolved.protected_names(groups)
    options = factor_options(raw_factors, user.profile, ctx.settings.okta_verify_attributes)
    card = user_card(user, protected)
    risk, tac = await asyncio.gather(ctx.risk.read(user, ctx.clock()), tac_available(ctx))
    try:
        _, after = await ctx.apply(
            case_id,
            lambda c: ctx.engine.user_selected(c, card, options, protected, ctx.clock(), risk=risk, tac_available=tac),
            cmd.view,
        )
    except CaseRefused as refused:
        await ctx.notify(case_id, refused, cmd.view)
        return
    await ctx.audit(
        after,
        "case.user_selected",
        "success",
        status=user.status,
        protected=bool(protected),
        factors=len(options),
        risk=risk.level,
        risk_signals="; ".join(risk.signals) or None,
    )


async def tac_available(ctx: WorkerContext) -> bool:
    """Whether the org has the Temporary Access Code authenticator (looked up at most every 10 min)."""
    if ctx.settings.helpdesk_mode != "full":
        return False
    now = time.monotonic()
    if ctx.tac_checked_at is not None and now - ctx.tac_checked_at < 600:
        return ctx.tac_authenticator_id is not None
    try:
        ctx.tac_authenticator_id = await ctx.okta.tac_authenticator_id()
    except OktaError:
        ctx.tac_authenticator_id = None
    ctx.tac_checked_at = now
    return ctx.tac_authenticator_id is not None


async def back_to_search(ctx: WorkerContext, cmd: BackToSearch, command_id: str) -> None:
    case_id = case_of(ctx, cmd)
    case = await load(ctx, case_id)
    if await recheck_agent(ctx, cmd, case) is None:
        return
    await _cancel_pending_push(ctx, case)
    try:
        await ctx.apply(case_id, lambda c: ctx.engine.back_to_search(c, ctx.clock()), cmd.view)
    except CaseRefused as refused:
        await ctx.notify(case_id, refused, cmd.view)


# ----------------------------------------------------------------------------------------- challenges


async def _cancel_pending_push(ctx: WorkerContext, case: Case) -> None:
    challenge = case.challenge
    if case.state == CaseState.CHALLENGE_SENT and challenge and challenge.kind == "push" and challenge.cancel_url:
        with contextlib.suppress(OktaError):
            await ctx.okta.cancel_push(challenge.cancel_url)


async def _ensure_poll_job(ctx: WorkerContext, case: Case) -> None:
    challenge = case.challenge
    if challenge is None or challenge.kind != "push" or not challenge.poll_url or challenge.expires_at is None:
        return
    job = PollPush(
        case_id=case.case_id,
        challenge_id=challenge.challenge_id,
        poll_url=challenge.poll_url,
        expires_at=challenge.expires_at,
        first_poll_at=ctx.clock(),
    )
    await ctx.bus.publish(job, msg_id=f"poll:{case.case_id}:{challenge.challenge_id}")


async def challenge_factor(ctx: WorkerContext, cmd: ChallengeFactor, command_id: str) -> None:
    """Send a challenge to one factor (push, SMS, call, email), or ask for a code, answer or attribute."""
    case_id = case_of(ctx, cmd)
    case = await load(ctx, case_id)
    try:
        option = ctx.engine.check_challenge(case, cmd.factor_id)
    except CaseRefused as refused:
        after = await ctx.notify(case_id, refused, cmd.view, audited=refused.reason == "attribute_limit")
        if after is not None and refused.reason == "attribute_limit":
            await ctx.audit(after, "case.limit_hit", "refused", severity="warning", factor_type=ATTRIBUTE)
        return
    if await recheck_agent(ctx, cmd, case) is None:
        return
    intent = Intent(
        intent_id=command_id,
        kind="challenge",
        factor_id=option.id,
        factor_type=option.factor_type,
        label=option.label,
        started_at=ctx.clock(),
    )
    if await take(ctx, case_id, command_id, cmd.view, intent) is None:
        found = await ctx.store.get(case_id)
        if found is not None and found[0].challenge is not None and found[0].challenge.command_id == command_id:
            await _ensure_poll_job(ctx, found[0])  # the job may be what failed the first time
        metrics.COMMANDS.labels("challenge", "duplicate").inc()
        return
    await _send_challenge(ctx, cmd, case, option, command_id)
    await release(ctx, case_id, command_id)


async def _send_challenge(
    ctx: WorkerContext, cmd: ChallengeFactor, case: Case, option: FactorOption, command_id: str
) -> None:
    """The Okta call of a claimed challenge and its outcome, written with the journal entry closed."""
    case_id = case.case_id
    assert case.target is not None
    target_id = case.target.id
    challenge_id = uuid.uuid4().hex[:16]
    # Profile-attribute checks count too: a guessed birth date is as much an attack as a push bomb.
    decision = await ctx.limiter.hit(f"target:{target_id}", ctx.settings.challenge_limit, LIMIT_WINDOW)
    if not decision.allowed:
        minutes = max(1, round(decision.retry_after / 60))
        limited = CaseRefused(
            f"{decision.count} challenges and checks were already made on this user in the last hour, the "
            f"limit against push bombing and guessing. Try again in about {minutes} min, or escalate.",
            "limit",
        )
        after = await ctx.notify(case_id, limited, cmd.view, audited=True)
        metrics.CHALLENGES.labels(option.factor_type, "limited").inc()
        if after is not None:
            await ctx.audit(
                after,
                "case.limit_hit",
                "refused",
                severity="warning",
                factor_type=option.factor_type,
                limit=ctx.settings.challenge_limit,
            )
        return
    await _cancel_pending_push(ctx, case)
    fields: dict[str, Any] = {"command_id": command_id}
    notice: str | None = None
    try:
        if option.factor_type == "push":
            push = await ctx.okta.verify_push(target_id, option.id)
            expires = None
            if push.expires_at:
                with contextlib.suppress(ValueError):
                    expires = datetime.fromisoformat(push.expires_at.replace("Z", "+00:00"))
            fields.update(
                correct_answer=push.correct_answer,
                poll_url=push.poll_url,
                cancel_url=push.cancel_url,
                expires_at=expires,
            )
        elif option.factor_type in ("sms", "call", "email"):
            await ctx.okta.send_challenge(target_id, option.id)
    except OktaResendTooSoon as exc:
        await ctx.notify(case_id, CaseRefused(exc.message, "resend_too_soon", retry_in=exc.retry_after), cmd.view)
        return
    except OktaUnavailable as exc:
        if not (exc.maybe_sent and option.factor_type in ("sms", "call", "email")):
            await ctx.notify(case_id, CaseRefused(f"{exc.message} Nothing was sent; try again."), cmd.view)
            return
        notice = f"{exc.message} The code may still arrive: ask the caller, or resend in 30 s."
    except OktaError as exc:
        await ctx.notify(case_id, CaseRefused(exc.message), cmd.view)
        return

    def sent(c: Case) -> Case:
        now = ctx.clock()
        nxt = ctx.engine.settle(ctx.engine.challenge_sent(c, option, challenge_id, now, **fields), command_id)
        if notice:
            nxt = nxt.model_copy(update={"notice": Notice(level="warning", text=notice)})
        return nxt

    try:
        _, after = await ctx.apply(
            case_id,
            sent,
            cmd.view,
            audit=lambda c: ctx.audit_event(
                c, "case.challenge_sent", "pending", factor_type=option.factor_type, weak=option.weak
            ),
        )
    except (CaseRefused, StaleEvent):
        return
    metrics.CHALLENGES.labels(option.factor_type, "sent").inc()
    await _ensure_poll_job(ctx, after)


async def submit_code(ctx: WorkerContext, cmd: SubmitCode, command_id: str) -> None:
    """Check the code / answer / attribute value the caller read out. The value is never stored."""
    case_id = case_of(ctx, cmd)
    case = await load(ctx, case_id)
    try:
        challenge = ctx.engine.check_submit(case)
    except CaseRefused as refused:
        await ctx.notify(case_id, refused, cmd.view)
        return
    if await recheck_agent(ctx, cmd, case) is None:
        return
    intent = Intent(
        intent_id=command_id,
        kind="code",
        factor_id=challenge.factor_id,
        factor_type=challenge.factor_type,
        label=challenge.label,
        started_at=ctx.clock(),
    )
    if await take(ctx, case_id, command_id, cmd.view, intent) is None:
        return
    await _check_code(ctx, cmd, case, challenge, command_id)
    await release(ctx, case_id, command_id)


async def _check_code(
    ctx: WorkerContext, cmd: SubmitCode, case: Case, challenge: PendingChallenge, command_id: str
) -> None:
    """The Okta check of a claimed code and its outcome, written with the journal entry closed."""
    case_id = case.case_id
    assert case.target is not None
    target_id = case.target.id
    spoken = cmd.code.get_secret_value()
    cid = challenge.challenge_id
    engine = ctx.engine
    kind = challenge.factor_type

    def settled(change: Callable[[Case], Case]) -> Callable[[Case], Case]:
        return lambda c: engine.settle(change(c), command_id)

    try:
        if challenge.kind == "attribute":
            user = await ctx.okta.get_user(target_id)
            name = challenge.factor_id.removeprefix("attr:")
            if not attribute_matches(user.profile.get(name), spoken):
                raise OktaWrongCode(f"That {name} does not match.", 403, None)
            await ctx.apply(
                case_id,
                settled(lambda c: engine.attribute_matched(c, cid, ctx.clock())),
                cmd.view,
                audit=lambda c: ctx.audit_event(
                    c, "case.attribute_checked", "success", factor_type=ATTRIBUTE, attribute=name
                ),
            )
            return
        if challenge.kind == "answer":
            await ctx.okta.verify_answer(target_id, challenge.factor_id, spoken)
        else:
            await ctx.okta.verify_code(target_id, challenge.factor_id, spoken)
    except OktaWrongCode as exc:
        wrong = exc.message

        def wrong_event(c: Case) -> AuditEvent:
            if c.state == CaseState.FAILED:
                return ctx.audit_event(c, "case.failed", "failure", factor_type=kind, reason="wrong_code")
            left = c.challenge.attempts_left if c.challenge else 0
            return ctx.audit_event(c, "case.code_wrong", "failure", factor_type=kind, attempts_left=left)

        try:
            _, after = await ctx.apply(
                case_id, settled(lambda c: engine.wrong_code(c, cid, ctx.clock(), wrong)), cmd.view, audit=wrong_event
            )
        except StaleEvent:
            return
        metrics.CHALLENGES.labels(kind, "failed" if after.state == CaseState.FAILED else "wrong").inc()
        return
    except OktaUserLocked as exc:
        locked = exc.message
        with contextlib.suppress(StaleEvent):
            await ctx.apply(
                case_id,
                settled(lambda c: engine.failed(c, ctx.clock(), locked)),
                cmd.view,
                audit=lambda c: ctx.audit_event(c, "case.failed", "failure", factor_type=kind, reason="locked"),
            )
        return
    except OktaError as exc:  # OktaCodeReused and the rest: tell the agent, keep the challenge
        await ctx.notify(case_id, CaseRefused(exc.message), cmd.view)
        return
    finally:
        del spoken
    try:
        _, after = await ctx.apply(
            case_id,
            settled(lambda c: engine.verified(c, cid, ctx.clock())),
            cmd.view,
            audit=lambda c: verified_event(ctx, c, kind),
        )
    except StaleEvent:
        return
    metrics.CHALLENGES.labels(kind, "verified").inc()
    await escalate(ctx, after)


def verified_event(ctx: WorkerContext, case: Case, factor_type: str) -> AuditEvent:
    """``case.verified`` with the level proved."""
    proof = case.proofs[-1] if case.proofs else None
    return ctx.audit_event(
        case, "case.verified", "success", factor_type=factor_type, level=proof.level.value if proof else None
    )


async def escalate(ctx: WorkerContext, case: Case) -> None:
    """A protected target, verified for the first time in the case: the escalation goes to a person."""
    if case.escalation and len([p for p in case.proofs if p.factor_type != ATTRIBUTE]) == 1:
        delivered = await send_security_notice(ctx, case, "escalation", case.escalation)
        await ctx.audit(case, "case.escalated", "info", severity="warning", notified=delivered)


async def resend(ctx: WorkerContext, cmd: ResendChallenge, command_id: str) -> None:
    """Send the code again (or a new push) once Okta's 30 s wait is over; counts against the limit."""
    case_id = case_of(ctx, cmd)
    case = await load(ctx, case_id)
    if await recheck_agent(ctx, cmd, case) is None:
        return
    try:
        challenge = ctx.engine.check_resend(case, ctx.clock())
    except CaseRefused as refused:
        await ctx.notify(case_id, refused, cmd.view)
        return
    await challenge_factor(
        ctx,
        ChallengeFactor(agent=cmd.agent, case_token=cmd.case_token, view=cmd.view, factor_id=challenge.factor_id),
        command_id,
    )


async def cancel_challenge(ctx: WorkerContext, cmd: CancelChallenge, command_id: str) -> None:
    case_id = case_of(ctx, cmd)
    case = await load(ctx, case_id)
    await _cancel_pending_push(ctx, case)
    try:
        await ctx.apply(case_id, lambda c: ctx.engine.cancelled(c, ctx.clock()), cmd.view)
    except CaseRefused as refused:
        await ctx.notify(case_id, refused, cmd.view)


async def step_up(ctx: WorkerContext, cmd: StepUp, command_id: str) -> None:
    """ "Verify another factor": the factor list, with what the case has verified kept."""
    case_id = case_of(ctx, cmd)
    case = await load(ctx, case_id)
    if await recheck_agent(ctx, cmd, case) is None:
        return
    try:
        _, after = await ctx.apply(case_id, lambda c: ctx.engine.step_up(c, ctx.clock()), cmd.view)
    except CaseRefused as refused:
        await ctx.notify(case_id, refused, cmd.view)
        return
    await ctx.audit(after, "case.step_up", "info")


def since(ctx: WorkerContext, moment: datetime) -> float:
    return (ctx.clock() - moment).total_seconds()


async def _poll_once(ctx: WorkerContext, job: PollPush) -> str:
    """One GET of the push's poll link: WAITING, SUCCESS, REJECTED or TIMEOUT; ``RetryLater`` on trouble."""
    try:
        return (await ctx.okta.poll_push(job.poll_url)).result
    except OktaRateLimited as exc:
        metrics.PUSH_POLLS.labels("rate_limited").inc()
        raise RetryLater(max(exc.retry_after, ctx.pacer.interval), "okta rate limited") from None
    except OktaTransactionGone:
        return "TIMEOUT"
    except OktaError as exc:
        metrics.PUSH_POLLS.labels("unavailable").inc()
        raise RetryLater(ctx.pacer.interval, f"okta: {type(exc).__name__}") from None


async def poll_push(ctx: WorkerContext, job: PollPush, delivery: Delivery | None = None) -> None:
    """Poll a push once: WAITING → ``RetryLater`` (nak with delay); a final result updates the case."""
    bind_correlation(case_id=job.case_id)
    ctx.handled += 1
    if job.first_poll_at is not None and (wait := ctx.pacer.until_tick(since(ctx, job.first_poll_at))):
        await asyncio.sleep(wait)
    started = ctx.clock()
    expired = started >= job.expires_at
    # The case is read while the poll is out: the poll (an idempotent GET) is not held up by the read,
    # and a final result is written on the revision just read. A case that has moved on (cancelled,
    # another factor) costs at most this one extra poll.
    reading = asyncio.create_task(ctx.store.get(job.case_id))
    try:
        result = "TIMEOUT" if expired else await _poll_once(ctx, job)
        found = await reading
    finally:
        if not reading.done():
            reading.cancel()
        elif not reading.cancelled():
            reading.exception()  # a read that failed while the poll raised: retrieved, not logged as lost
    if found is None:
        metrics.PUSH_POLLS.labels("stale").inc()
        return
    try:
        challenge = ctx.engine.current_challenge(found[0], job.challenge_id)
    except StaleEvent:
        metrics.PUSH_POLLS.labels("stale").inc()
        return  # cancelled, replaced or already finished: the wait ends here
    if expired and challenge.cancel_url:
        with contextlib.suppress(OktaError):
            await ctx.okta.cancel_push(challenge.cancel_url)
    metrics.PUSH_POLLS.labels(result).inc()
    if result not in ("SUCCESS", "REJECTED", "TIMEOUT"):
        now = ctx.clock()
        remaining = (job.expires_at - now).total_seconds()
        since_first = (now - job.first_poll_at).total_seconds() if job.first_poll_at else None
        delay = ctx.pacer.delay(since_first=since_first, spent=(now - started).total_seconds())
        raise RetryLater(max(0.05, min(delay, remaining)), "push waiting")
    seen = time.perf_counter()
    alerted = security_channel(ctx.settings) is not None

    def outcome_event(c: Case) -> AuditEvent:
        if result == "SUCCESS":
            return verified_event(ctx, c, "push")
        if result == "REJECTED":
            return ctx.audit_event(c, "case.rejected", "failure", factor_type="push")
        return ctx.audit_event(c, "case.timed_out", "failure", factor_type="push")

    try:
        _, after = await ctx.apply(
            job.case_id,
            lambda c: ctx.engine.push_ended(c, job.challenge_id, result, ctx.clock(), alerted),
            known=found,
            audit=outcome_event,
        )
    except (StaleEvent, CaseRefused):
        return
    metrics.PUSH_RESULT_TO_UPDATE.observe(time.perf_counter() - seen)
    if result == "SUCCESS":
        metrics.CHALLENGES.labels("push", "verified").inc()
        await escalate(ctx, after)
    elif result == "REJECTED":
        metrics.CHALLENGES.labels("push", "rejected").inc()
        await send_security_notice(
            ctx,
            after,
            "push_rejected",
            "A push sent by the help desk was rejected on the user's phone: the caller may not be the user.",
        )
        await ctx.audit(
            after,
            "push_rejected",
            "alert",
            category="security",
            severity="alert",
            factor_type="push",
            note="A push sent by the help desk was rejected on the user's phone.",
        )
    else:
        metrics.CHALLENGES.labels("push", "timed_out").inc()


# -------------------------------------------------------------------------------------------- actions


async def run_action(ctx: WorkerContext, cmd: RunAction, command_id: str) -> None:
    """A change to the target's account, re-checked server-side before any Okta call: the agent still
    authorized, the case verified by them for this user, the proofs meeting the policy for this action,
    and, where the policy wants one, an approval — spent in the same compare-and-swap as the claim."""
    case_id = case_of(ctx, cmd)
    case = await load(ctx, case_id)
    engine = ctx.engine
    required = engine.gate(case, cmd.action, ctx.clock(), cmd.factor_id).needs if engine.offered(case) else None
    try:
        engine.check_action(case, cmd.action, cmd.agent, ctx.clock(), cmd.factor_id)
    except CaseRefused as refused:
        await _action_refused(ctx, case_id, cmd, refused, required)
        return
    if await recheck_agent(ctx, cmd, case) is None:
        return
    intent = Intent(
        intent_id=command_id, kind="action", action=cmd.action, factor_id=cmd.factor_id, started_at=ctx.clock()
    )

    def spend(fresh: Case) -> Case:
        """Checked again on the freshest case; the approval it needs is spent in the same write."""
        engine.check_action(fresh, cmd.action, cmd.agent, ctx.clock(), cmd.factor_id)
        if engine.policy.needs_approval(cmd.action, fresh.risk) and (used := engine.approval_used(fresh)):
            return fresh.model_copy(update={"approval": used})
        return fresh

    try:
        claimed = await take(ctx, case_id, command_id, cmd.view, intent, prepare=spend)
    except CaseRefused as refused:  # the case changed in between (an approval spent, the proof expired)
        await _action_refused(ctx, case_id, cmd, refused, required)
        return
    if claimed is None:
        return
    await _change_in_okta(ctx, cmd, claimed, command_id, required)
    await release(ctx, case_id, command_id)


async def _change_in_okta(
    ctx: WorkerContext, cmd: RunAction, case: Case, command_id: str, required: str | None
) -> None:
    """The Okta call of a claimed action and its outcome, written with the journal entry closed."""
    case_id = case.case_id
    engine = ctx.engine
    assert case.target is not None
    uid = case.target.id
    label = case.target.display_name
    secret: str | None = None
    secret_expires: datetime | None = None
    factors = None
    try:
        if cmd.action == ActionKind.TEMP_PASSWORD:
            secret = await ctx.okta.temp_password(uid)
            message = f"Temporary password shown once to the agent; {label} must change it at next sign-in."
        elif cmd.action == ActionKind.TEMP_ACCESS_CODE:
            authenticator = ctx.tac_authenticator_id or await ctx.okta.tac_authenticator_id()
            if authenticator is None:
                raise CaseRefused("This Okta org has no Temporary Access Code authenticator.", "no_tac")
            issued = await ctx.okta.create_tac(uid, authenticator, TAC_TTL_MINUTES)
            secret = issued.code
            secret_expires = _parse_time(issued.expires_at) or ctx.clock() + timedelta(minutes=TAC_TTL_MINUTES)
            message = f"Temporary access code shown once to the agent; {label} signs in with it once."
        elif cmd.action == ActionKind.RESET_LINK:
            await ctx.okta.reset_password_email(uid)
            message = f"A password reset link was emailed to {case.target.email or case.target.login}."
        elif cmd.action == ActionKind.RESET_FACTOR:
            assert cmd.factor_id is not None
            await ctx.okta.reset_factor(uid, cmd.factor_id)
            gone = next((o.label for o in case.factors if o.id == cmd.factor_id), "The factor")
            message = f"{gone} was reset: {label} enrolls it again at next sign-in."
        elif cmd.action == ActionKind.RESET_ALL_FACTORS:
            await ctx.okta.reset_all_factors(uid)
            message = f"All of {label}'s factors were reset: they enroll again at next sign-in."
        elif cmd.action == ActionKind.UNLOCK:
            current = await ctx.okta.get_user(uid)
            if current.status != "LOCKED_OUT":
                raise CaseRefused(f"{label} is {current.status}, not locked out: nothing to unlock.", "not_locked")
            await ctx.okta.unlock(uid)
            message = f"{label}'s account was unlocked."
        else:
            await ctx.okta.revoke_sessions(uid, oauth_tokens=True)
            message = f"All of {label}'s Okta sessions were ended and their OAuth tokens revoked."
        user = await _quiet_user(ctx, uid)
        if cmd.action in (ActionKind.RESET_FACTOR, ActionKind.RESET_ALL_FACTORS):
            with contextlib.suppress(OktaError):
                raw = await ctx.okta.list_factors(uid)
                factors = factor_options(raw, user.profile if user else {}, ctx.settings.okta_verify_attributes)
    except (CaseRefused, OktaError) as exc:
        text, error = exc.message, type(exc).__name__
        with contextlib.suppress(StaleEvent):
            await ctx.apply(
                case_id,
                lambda c: engine.settle(engine.action_failed(c, cmd.action, text, ctx.clock()), command_id),
                audit=lambda c: ctx.audit_event(
                    c, "case.action", "failure", action=cmd.action.value, error=error, required=required
                ),
            )
        return
    card = user_card(user, case.protected_groups) if user is not None else None
    shown = secret is not None

    def done(c: Case) -> Case:
        return engine.settle(
            engine.action_done(
                c, cmd.action, True, message, ctx.clock(), target=card, factors=factors, secret_shown=shown
            ),
            command_id,
        )

    approved_by = case.approval.decided_by if case.approval and case.approval.action == cmd.action else None
    _, after = await ctx.apply(
        case_id,
        done,
        cmd.view,
        audit=lambda c: ctx.audit_event(
            c,
            "case.action",
            "success",
            action=cmd.action.value,
            factor_id=cmd.factor_id,
            required=required,
            approved_by=approved_by,
        ),
    )
    await ctx.risk.forget(uid)
    spent = case.approval
    if spent is not None and spent.status == ApprovalStatus.USED and spent.action == cmd.action:
        await ctx.bus.publish(
            approval_notice(ctx, after, spent), msg_id=f"{case_id}:{spent.approval_id}:{spent.status.value}"
        )
    if secret is not None:
        await _show_secret(ctx, after, secret, cmd.action, secret_expires)
    await notify_target(ctx, after, [message])


async def _action_refused(
    ctx: WorkerContext, case_id: str, cmd: RunAction, refused: CaseRefused, required: str | None
) -> None:
    """Tell the agent why, and audit it: no refusal is silent."""
    engine = ctx.engine
    if refused.reason == "verification_expired":
        with contextlib.suppress(StaleEvent, CaseRefused):
            await ctx.apply(case_id, lambda c: engine.verification_expired(c, ctx.clock()), cmd.view)
        return
    after = await ctx.notify(case_id, refused, cmd.view, audited=True)
    if after is not None:
        action = "case.escalated" if refused.reason in ("escalate", "not_allowed") else "case.action"
        await ctx.audit(
            after,
            action,
            "refused",
            severity="warning" if refused.reason in ("assurance", "approval_required") else "info",
            action_kind=cmd.action.value,
            reason=refused.reason,
            required=required,
        )


def _parse_time(raw: str | None) -> datetime | None:
    if not raw:
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return None


async def _quiet_user(ctx: WorkerContext, user_id: str) -> OktaUser | None:
    try:
        return await ctx.okta.get_user(user_id)
    except OktaError:
        return None


async def _show_secret(
    ctx: WorkerContext, case: Case, secret: str, action: ActionKind, expires_at: datetime | None = None
) -> None:
    """Hand the temporary password or access code to the responder, the one place it is rendered."""
    assert case.target is not None
    request = ShowTempPassword(
        case_id=case.case_id,
        revision=case.revision,
        agent=case.agent,
        view=case.view,
        target_login=case.target.login,
        temp_password=SecretStr(secret),
        case_token=case.case_token,
        kind="temp_access_code" if action == ActionKind.TEMP_ACCESS_CODE else "temp_password",
        expires_at=expires_at,
    )
    failure: str | None = None
    try:
        ack = await ctx.bus.request(request, RenderAck, timeout=5.0)
        if not ack.ok:
            failure = ack.error or "the view could not be updated"
    except BusError as exc:
        failure = type(exc).__name__
    if failure is None:
        return
    log.warning("case.secret_not_shown", reason=failure)
    what = ACTION_NAMES[action].lower()
    text = f"The one-time secret could not be shown to you ({what}): issue a new one (this one is unusable unseen)."
    with contextlib.suppress(StaleEvent):
        _, after = await ctx.apply(case.case_id, lambda c: ctx.engine.action_failed(c, action, text, ctx.clock()))
        await ctx.audit(after, "case.action", "failure", action=action.value, error="not_shown")


# ------------------------------------------------------------------------------------ view lifecycle


async def refresh(ctx: WorkerContext, cmd: RefreshCase, command_id: str) -> None:
    case_id = case_of(ctx, cmd)
    with contextlib.suppress(StaleEvent):
        await ctx.apply(case_id, lambda c: ctx.engine.refreshed(c, ctx.clock()), cmd.view)


async def close_case(ctx: WorkerContext, cmd: CloseCase, command_id: str) -> None:
    case_id = case_of(ctx, cmd)
    case = await load(ctx, case_id)
    await _cancel_pending_push(ctx, case)
    try:
        _, after = await ctx.apply(case_id, lambda c: ctx.engine.closed(c, ctx.clock()), cmd.view)
    except StaleEvent:
        return
    await ctx.audit(after, "case.closed", "info", outcome_before=ctx.engine.outcome(case))


async def home_opened(ctx: WorkerContext, cmd: HomeOpened, command_id: str) -> None:
    """The agent's App Home: their last cases and Okta as this replica last saw it."""
    checked = datetime.fromtimestamp(ctx.okta.status_at, UTC) if ctx.okta.status_at is not None else None
    home = HomeSnapshot(
        agent=cmd.agent,
        recent=await ctx.agents.recent(cmd.agent.user_id),
        okta_status=ctx.okta.status,
        okta_checked_at=checked,
    )
    await ctx.bus.publish(home, msg_id=f"home:{command_id}")


async def refused_click(ctx: WorkerContext, cmd: RefusedClick, command_id: str) -> None:
    """A click the gateway refused: audited (a security event when the token was altered or another
    agent's), the security channel told, and the agent's modal replaced by one that says what happened."""
    expired = cmd.kind == "expired"
    event = AuditEvent(
        category="case" if expired else "security",
        action="case_token.refused",
        outcome="refused",
        actor=cmd.agent.user_id,
        severity="info" if expired else "alert",
        details={"reason": cmd.kind, "action_id": cmd.action_id, "view_id": cmd.view.view_id if cmd.view else None},
    )
    await ctx.bus.publish(event, msg_id=f"{command_id}:audit")
    if not expired and (channel := security_channel(ctx.settings)) is not None:
        what = "another agent's case" if cmd.kind == "wrong_agent" else "an altered or missing case token"
        notice = SecurityNotice(
            case_id="-",
            kind="tampered",
            text=f"A help-desk click by <@{cmd.agent.user_id}> was refused: it carried {what}.",
            agent=cmd.agent,
            channel_id=channel,
        )
        await ctx.bus.publish(notice, msg_id=f"{command_id}:security")
    if cmd.view is not None:
        await ctx.bus.publish(
            RefusalNotice(agent=cmd.agent, view=cmd.view, kind=cmd.kind), msg_id=f"{command_id}:refusal"
        )


async def set_ticket(ctx: WorkerContext, cmd: SetTicket, command_id: str) -> None:
    """The ticket this case is for: carried into every audit event from now on (and its write-back)."""
    case_id = case_of(ctx, cmd)
    ticket = cmd.ticket.strip()
    try:
        _, after = await ctx.apply(case_id, lambda c: ctx.engine.ticket_set(c, ticket, ctx.clock()), cmd.view)
    except CaseRefused as refused:
        await ctx.notify(case_id, refused, cmd.view)
        return
    except StaleEvent:
        return
    await ctx.audit(after, "case.ticket", "info")


NOTE_FAILURES = {
    "not_found": "no such ticket",
    "forbidden": "the integration user may not write to it",
    "unauthorized": "the ticket system refused our credentials",
    "gave_up": "the ticket system did not answer for a day",
}


async def ticket_note_failed(ctx: WorkerContext, cmd: TicketNoteFailed, command_id: str) -> None:
    """The audit sink gave up on the case's note in its ticket: a warning in the agent's modal (the
    sink audited it). A failure never blocks the case."""
    why = NOTE_FAILURES.get(cmd.reason, cmd.reason.replace("_", " "))
    text = f"The note in ticket {cmd.ticket} could not be written ({why}): add it there by hand."
    with contextlib.suppress(StaleEvent, CaseRefused):
        await ctx.apply(cmd.case_id, lambda c: ctx.engine.with_notice(c, ctx.clock(), text, "warning"))


# ------------------------------------------------------------------------------------------- dispatch

CommandHandler = Callable[[WorkerContext, Any, str], Awaitable[None]]

COMMAND_HANDLERS: dict[type[Command], CommandHandler] = {
    OpenCase: open_case,
    SelectUser: select_user,
    ChallengeFactor: challenge_factor,
    SubmitCode: submit_code,
    ResendChallenge: resend,
    CancelChallenge: cancel_challenge,
    BackToSearch: back_to_search,
    RunAction: run_action,
    RefreshCase: refresh,
    CloseCase: close_case,
    HomeOpened: home_opened,
    StepUp: step_up,
    RequestApproval: request_approval,
    DecideApproval: decide_approval,
    ReportNotMe: report_not_me,
    RefusedClick: refused_click,
    StartFromMessage: start_from_message,
    WorkflowStep: workflow_step,
    SetTicket: set_ticket,
    TicketNoteFailed: ticket_note_failed,
}


async def handle_command(ctx: WorkerContext, message: Message, delivery: Delivery | None = None) -> None:
    """The CMD consumer's handler: route by type, time it, count it."""
    handler = COMMAND_HANDLERS.get(type(message))  # type: ignore[arg-type]
    if handler is None:
        raise Unprocessable(f"no handler for {type(message).__name__}")
    name = type(message).__name__
    ctx.handled += 1
    started = time.perf_counter()
    try:
        await handler(ctx, message, command_id_of(message, delivery))
    except Unprocessable:
        metrics.COMMANDS.labels(name, "unprocessable").inc()
        raise
    except Exception:
        metrics.COMMANDS.labels(name, "error").inc()
        raise
    metrics.COMMANDS.labels(name, "ok").inc()
    metrics.COMMAND_LATENCY.labels(name).observe(time.perf_counter() - started)
