"""One async function per subject: the commands, the durable push poll, and the user search.

    ctx = WorkerContext(settings, bus, okta, store, ...)          # built by app.py
    await handle_command(ctx, OpenCase(...), delivery)             # what the CMD consumer calls
    await poll_push(ctx, PollPush(...), delivery)                  # RetryLater while WAITING
    reply = await search_users(ctx, SearchUsers(...))              # request/reply

A command handler loads the case, asks :class:`CaseEngine` whether the step is allowed, makes the Okta
call, and stores the next case with compare-and-swap (:class:`CaseStore`); every stored revision is
published as a ``CaseSnapshot`` (msg id ``case_id:revision``) and every step as an ``AuditEvent``.
A command that has effects in Okta (a challenge, a code, an action) is first *claimed* in the case,
so a redelivered command never sends a second push or SMS.

A temporary password exists only in one local variable and the one ``ShowTempPassword`` request to
the responder; the case revision it was shown at is published as no snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import SecretStr, ValidationError

from services.okta_worker import metrics
from services.okta_worker.case import Case, CaseEngine, CaseRefused, StaleEvent
from services.okta_worker.factors import ATTRIBUTE, attribute_matches, factor_options
from services.okta_worker.okta_client import (
    OktaClient,
    OktaError,
    OktaRateLimited,
    OktaResendTooSoon,
    OktaTransactionGone,
    OktaUnavailable,
    OktaUser,
    OktaUserLocked,
    OktaWrongCode,
    RateLimit,
    scim_quote,
)
from shared.bus import Bus, BusError, Delivery, RetryLater, Unprocessable, kv_read
from shared.limits import RateLimiter, kv_key
from shared.logging import bind_correlation, get_logger
from shared.messages import (
    ActionKind,
    Actor,
    AuditEvent,
    BackToSearch,
    CancelChallenge,
    CaseState,
    ChallengeFactor,
    CloseCase,
    Command,
    HomeOpened,
    HomeSnapshot,
    LookupSlackUser,
    Message,
    Notice,
    OpenCase,
    PollPush,
    RecentCase,
    RefreshCase,
    RenderAck,
    ResendChallenge,
    RunAction,
    SearchUsers,
    SearchUsersReply,
    SelectUser,
    ShowTempPassword,
    SlackUserInfo,
    SubmitCode,
    UserCard,
    UserOption,
)
from shared.settings import Settings
from shared.tokens import CaseTokenError, CaseTokens

log = get_logger(__name__)

CASES_BUCKET = "cases"
CASES_TTL = 24 * 3600.0
AGENTS_BUCKET = "agent_cases"
AGENTS_TTL = 30 * 24 * 3600.0
RATE_BUCKET = "okta_rate"
LIMITS_BUCKET = "challenge_limits"
RECENT_KEEP = 10
AUTH_CACHE_SECONDS = 60.0
LOOKUP_TIMEOUT = 2.0
SEARCH_DEADLINE = 2.0
LIMIT_WINDOW = 3600
LABEL_MAX = 75


def utcnow() -> datetime:
    return datetime.now(UTC)


# ----------------------------------------------------------------------------------------- storage


class CaseStore:
    """Cases in KV ``cases``: create once, then compare-and-swap on the KV revision."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def get(self, case_id: str) -> tuple[Case, int] | None:
        found = await kv_read(self.kv, kv_key(case_id))
        if found is None:
            return None
        value, revision = found
        try:
            return Case.model_validate_json(value), revision
        except ValidationError:
            log.error("case.unreadable", case_id=case_id)
            return None

    async def create(self, case: Case) -> bool:
        try:
            await self.kv.create(kv_key(case.case_id), case.model_dump_json().encode())
        except KeyWrongLastSequenceError:
            return False
        return True

    async def update(
        self, case_id: str, change: Callable[[Case], Case], known: tuple[Case, int] | None = None
    ) -> tuple[Case, Case]:
        """Apply ``change`` to the stored case until the write wins; returns (before, after).

        ``change`` is pure, so running it again on a fresher case is safe; it may raise
        ``CaseRefused`` / ``StaleEvent``, which propagate. An unchanged result is not written.
        ``known`` (a case and revision just read) saves the first read; a newer write wins over it.
        """
        for _ in range(50):
            current, known = known or await self.get(case_id), None
            if current is None:
                raise StaleEvent("case not found (expired or never opened)")
            case, revision = current
            updated = change(case)
            if updated == case:
                return case, case
            try:
                await self.kv.update(kv_key(case_id), updated.model_dump_json().encode(), last=revision)
            except KeyWrongLastSequenceError:
                metrics.CAS_CONFLICTS.inc()
                continue
            return case, updated
        raise BusError(f"case {case_id} too contended")


class AgentIndex:
    """Each agent's last cases (KV ``agent_cases``), for their App Home."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def recent(self, agent_id: str) -> list[RecentCase]:
        found = await kv_read(self.kv, kv_key(agent_id))
        if found is None:
            return []
        return [RecentCase.model_validate(item) for item in orjson.loads(found[0])]

    async def record(self, agent_id: str, item: RecentCase) -> None:
        key = kv_key(agent_id)
        for _ in range(20):
            try:
                entry = await self.kv.get(key)
                items = [] if entry.value is None else orjson.loads(entry.value)
                revision: int | None = int(entry.revision or 0)
            except KeyNotFoundError:
                items, revision = [], None
            items = [i for i in items if i.get("case_id") != item.case_id]
            items.insert(0, item.model_dump(mode="json"))
            items.sort(key=lambda i: str(i.get("at")), reverse=True)
            value = orjson.dumps(items[:RECENT_KEEP])
            try:
                if revision is None:
                    await self.kv.create(key, value)
                else:
                    await self.kv.update(key, value, last=revision)
            except KeyWrongLastSequenceError:
                continue
            return


class PollPacer:
    """When a push's next poll happens: every interval, longer when Okta's budget runs low.

    Polls of one push fall on a grid (first poll + k × interval), so the user's wait between two
    polls stays one interval however long a job queued. JetStream brings a job back ``lead`` seconds
    before its tick and the worker waits out the rest itself: a redelivery is a few to a hundred ms
    late under load, an event-loop timer is not.

    Every replica writes the rate-limit headers it last saw to KV ``okta_rate`` (at most once a second)
    and reads the others' there, so all replicas slow down together before Okta answers 429.
    """

    LOW = 0.10  # below this share of the budget left: wait for the window to reset
    TIGHT = 0.30  # below this: poll half as often
    CATCH_UP = 0.10  # at most this share of the interval is made up per poll

    def __init__(self, interval: float, kv: KeyValue | None, okta: OktaClient) -> None:
        self.interval = interval
        self.lead = min(0.2, interval * 0.1)
        self.kv = kv
        self.okta = okta
        self.shared: RateLimit | None = None
        self._synced_at = 0.0
        self._sync_task: asyncio.Task[None] | None = None

    def budget(self, now: float | None = None) -> RateLimit | None:
        now = time.time() if now is None else now
        seen = [r for r in (self.okta.rate, self.shared) if r is not None and r.reset > now]
        if not seen:
            return None
        return min(seen, key=lambda r: r.remaining / max(1, r.limit))

    def delay(self, now: float | None = None, since_first: float | None = None, spent: float = 0.0) -> float:
        """Seconds until the next poll: the next tick of the push's grid (``since_first``: seconds since
        its first poll), else one interval from when this poll started (``spent`` seconds ago)."""
        now = time.time() if now is None else now
        if now - self._synced_at > 1.0 and self.kv is not None and self._sync_task is None:
            self._synced_at = now
            self._sync_task = asyncio.create_task(self._sync())
        rate = self.budget(now)
        if rate is not None and rate.limit > 0:
            share = rate.remaining / rate.limit
            if share <= self.LOW:
                return max(self.interval, rate.reset - now + random.uniform(0.1, 1.0))
            if share <= self.TIGHT:
                return self.interval * 2
        # Queueing and redelivery make each poll a little late; left alone that adds up, and the gap
        # between two polls (the user's wait for the case to move on) grows past the interval. So aim
        # at the push's grid (first poll + k × interval), closing at most a tenth of the interval per
        # poll, so that polls late after a burst or a restart come back without crowding Okta.
        if since_first is None:
            return self.interval - min(spent, self.interval * self.CATCH_UP)
        behind = since_first % self.interval
        return self.interval - min(behind, self.interval * self.CATCH_UP) - self.lead

    def until_tick(self, since_first: float) -> float:
        """Seconds to wait for the grid's next tick when a job came back early (0: poll now)."""
        ahead = -since_first % self.interval
        return ahead if 0 < ahead <= 2 * self.lead else 0.0

    async def _sync(self) -> None:
        assert self.kv is not None
        try:
            mine = self.okta.rate
            if mine is not None:
                await self.kv.put("api", orjson.dumps(mine.__dict__))
            entry = await self.kv.get("api")
            if entry.value:
                self.shared = RateLimit(**orjson.loads(entry.value))
        except Exception as exc:  # the budget is advisory: never fail a poll over it
            log.debug("okta.rate.sync_failed", error=type(exc).__name__)
        finally:
            self._sync_task = None


# ----------------------------------------------------------------------------------------- context


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
    clock: Callable[[], datetime] = utcnow
    auth_cache: dict[str, tuple[float, str, str]] = field(default_factory=dict)
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
        event = AuditEvent(
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
                **details,
            },
        )
        await self.bus.publish(event, msg_id=f"{case.case_id}:{case.revision}:{category}.{name}")

    async def apply(
        self,
        case_id: str,
        change: Callable[[Case], Case],
        view: Any = None,
        known: tuple[Case, int] | None = None,
    ) -> tuple[Case, Case]:
        """Store the next case (CAS) and publish its snapshot; index it for the agent's Home."""
        engine = self.engine

        def with_view(case: Case) -> Case:
            return change(engine.seen_view(case, view))

        before, after = await self.store.update(case_id, with_view, known)
        if after.revision != before.revision:
            await self.publish_case(after)
            if after.state != before.state:
                metrics.TRANSITIONS.labels(after.state.value).inc()
                await self.remember(after)
        return before, after

    async def remember(self, case: Case) -> None:
        """List the case on the agent's App Home once it concerns someone (a user picked) or was denied:
        a modal opened and closed again is not one of "your last cases"."""
        if case.target is not None or case.state == CaseState.DENIED:
            await self.agents.record(case.agent.user_id, self.engine.recent(case))

    async def notify(self, case_id: str, refused: CaseRefused, view: Any = None) -> Case | None:
        """Show a refusal to the agent as a notice on the case."""
        now = self.clock()
        try:
            _, after = await self.apply(
                case_id,
                lambda c: self.engine.with_notice(c, now, refused.message, retry_in=refused.retry_in),
                view,
            )
        except StaleEvent:
            return None
        return after


# -------------------------------------------------------------------------------------- authorization


async def authorize(ctx: WorkerContext, agent: Actor) -> tuple[str, str]:
    """The agent's (email, Okta user id) if they are in ``OKTA_HELPDESK_GROUP``; ``CaseRefused`` if not."""
    if (cached := cached_authorization(ctx, agent)) is not None:
        return cached
    try:
        info = await ctx.bus.request(LookupSlackUser(user_id=agent.user_id), SlackUserInfo, timeout=LOOKUP_TIMEOUT)
    except BusError:
        raise CaseRefused("Your Slack profile could not be looked up right now; try again.", "lookup_failed") from None
    if info.error or info.deleted or info.is_bot:
        raise CaseRefused("Your Slack account could not be checked (deactivated or not a person).", "slack_user")
    if not info.email:
        raise CaseRefused(
            "Your Slack profile has no email the help desk can read, so your Okta account cannot be found.",
            "no_email",
        )
    group = ctx.settings.okta_helpdesk_group
    try:
        user = await ctx.okta.find_user_by_email(info.email)
        if user is None:
            raise CaseRefused(f"No Okta user has the login or email {info.email}.", "no_okta_user")
        if user.status != "ACTIVE":
            raise CaseRefused(f"Your Okta account is {user.status}, not ACTIVE.", "okta_user_inactive")
        groups = await ctx.okta.user_group_names(user.id)
    except OktaError as exc:
        raise CaseRefused(f"Your access could not be checked in Okta: {exc.message}", "okta_error") from None
    if group not in groups:
        raise CaseRefused(f"You are not in the Okta group {group!r}, which this help desk requires.", "not_in_group")
    ctx.auth_cache[agent.user_id] = (time.monotonic() + AUTH_CACHE_SECONDS, info.email, user.id)
    return info.email, user.id


def cached_authorization(ctx: WorkerContext, agent: Actor) -> tuple[str, str] | None:
    """The agent's (email, Okta user id) if they were authorized in the last AUTH_CACHE_SECONDS."""
    cached = ctx.auth_cache.get(agent.user_id)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1], cached[2]
    return None


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


async def claim(ctx: WorkerContext, case_id: str, command_id: str, view: Any) -> bool:
    """Mark a command with effects in Okta as taken; False if it was already (a redelivery)."""
    taken = False

    def mark(case: Case) -> Case:
        nonlocal taken
        taken = command_id in case.handled
        return case if taken else ctx.engine.remember(ctx.engine.seen_view(case, view), command_id)

    await ctx.store.update(case_id, mark)
    return not taken


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
    case = ctx.engine.open(case_id, cmd.agent, cmd.trigger_id, token, now, query=cmd.query, channel_id=cmd.channel_id)
    case = ctx.engine.seen_view(case, cmd.view)
    if (known := cached_authorization(ctx, cmd.agent)) is not None:
        case = ctx.engine.authorized(case, *known, now)
    if await ctx.store.create(case):
        await ctx.publish_case(case, first=True)
        await ctx.remember(case)
        await ctx.audit(case, "case.opened", "info", source=cmd.source, channel_id=cmd.channel_id)
        if case.state == CaseState.SEARCHING:
            return
    else:
        case = await load(ctx, case_id)
        await ctx.publish_case(case)  # redelivery: the snapshot may not have gone out
        if case.state != CaseState.OPENED:
            return
    try:
        email, okta_id = await authorize(ctx, cmd.agent)
    except CaseRefused as refused:
        reason, why = refused.reason, refused.message
        try:
            _, after = await ctx.apply(case_id, lambda c: ctx.engine.denied(c, why, ctx.clock()))
        except StaleEvent:
            return
        await ctx.audit(after, "case.denied", "denied", reason=reason)
        return
    with contextlib.suppress(StaleEvent):
        _, after = await ctx.apply(case_id, lambda c: ctx.engine.authorized(c, email, okta_id, ctx.clock()))
        log.info("case.authorized", agent=cmd.agent.user_id)


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
    case_id = case_of(ctx, cmd)
    case = await load(ctx, case_id)
    try:
        ctx.engine.check_select(case, cmd.okta_user_id)
        user, raw_factors, groups = await asyncio.gather(
            ctx.okta.get_user(cmd.okta_user_id),
            ctx.okta.list_factors(cmd.okta_user_id),
            ctx.okta.user_group_names(cmd.okta_user_id),
        )
        if user.status == "DEPROVISIONED":
            raise CaseRefused(f"{user.login} is deprovisioned: there is nothing to verify.", "deprovisioned")
    except CaseRefused as refused:
        after = await ctx.notify(case_id, refused, cmd.view)
        if after is not None and refused.reason == "own_account":
            await ctx.audit(after, "case.user_selected", "refused", reason="own_account")
        return
    except OktaError as exc:
        await ctx.notify(case_id, CaseRefused(exc.message), cmd.view)
        return
    protected = [g for g in groups if g in ctx.settings.okta_protected_groups]
    options = factor_options(raw_factors, user.profile, ctx.settings.okta_verify_attributes)
    card = user_card(user, protected)
    try:
        _, after = await ctx.apply(
            case_id, lambda c: ctx.engine.user_selected(c, card, options, protected, ctx.clock()), cmd.view
        )
    except CaseRefused as refused:
        await ctx.notify(case_id, refused, cmd.view)
        return
    await ctx.audit(
        after, "case.user_selected", "success", status=user.status, protected=bool(protected), factors=len(options)
    )


async def back_to_search(ctx: WorkerContext, cmd: BackToSearch, command_id: str) -> None:
    case_id = case_of(ctx, cmd)
    case = await load(ctx, case_id)
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
        await ctx.notify(case_id, refused, cmd.view)
        return
    if not await claim(ctx, case_id, command_id, cmd.view):
        case = await load(ctx, case_id)
        if case.challenge is not None and case.challenge.command_id == command_id:
            await _ensure_poll_job(ctx, case)  # the job may be what failed the first time
        metrics.COMMANDS.labels("challenge", "duplicate").inc()
        return
    assert case.target is not None
    target_id = case.target.id
    challenge_id = uuid.uuid4().hex[:16]
    if option.factor_type != ATTRIBUTE:
        decision = await ctx.limiter.hit(f"target:{target_id}", ctx.settings.challenge_limit, LIMIT_WINDOW)
        if not decision.allowed:
            minutes = max(1, round(decision.retry_after / 60))
            limited = CaseRefused(
                f"{decision.count} challenges were already sent to this user in the last hour, the limit "
                f"against push bombing. Try again in about {minutes} min, or escalate.",
                "limit",
            )
            after = await ctx.notify(case_id, limited, cmd.view)
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
        nxt = ctx.engine.challenge_sent(c, option, challenge_id, now, **fields)
        if notice:
            nxt = nxt.model_copy(update={"notice": Notice(level="warning", text=notice)})
        return nxt

    try:
        _, after = await ctx.apply(case_id, sent, cmd.view)
    except (CaseRefused, StaleEvent):
        return
    metrics.CHALLENGES.labels(option.factor_type, "sent").inc()
    await ctx.audit(after, "case.challenge_sent", "pending", factor_type=option.factor_type, weak=option.weak)
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
    if not await claim(ctx, case_id, command_id, cmd.view):
        return
    assert case.target is not None
    target_id = case.target.id
    spoken = cmd.code.get_secret_value()
    cid = challenge.challenge_id
    engine = ctx.engine
    try:
        if challenge.kind == "attribute":
            user = await ctx.okta.get_user(target_id)
            name = challenge.factor_id.removeprefix("attr:")
            if not attribute_matches(user.profile.get(name), spoken):
                raise OktaWrongCode(f"That {name} does not match.", 403, None)
            _, after = await ctx.apply(case_id, lambda c: engine.attribute_matched(c, cid, ctx.clock()), cmd.view)
            await ctx.audit(after, "case.attribute_checked", "success", factor_type=ATTRIBUTE, attribute=name)
            return
        if challenge.kind == "answer":
            await ctx.okta.verify_answer(target_id, challenge.factor_id, spoken)
        else:
            await ctx.okta.verify_code(target_id, challenge.factor_id, spoken)
    except OktaWrongCode as exc:
        wrong = exc.message
        try:
            _, after = await ctx.apply(case_id, lambda c: engine.wrong_code(c, cid, ctx.clock(), wrong), cmd.view)
        except StaleEvent:
            return
        if after.state == CaseState.FAILED:
            metrics.CHALLENGES.labels(challenge.factor_type, "failed").inc()
            await ctx.audit(after, "case.failed", "failure", factor_type=challenge.factor_type, reason="wrong_code")
        else:
            metrics.CHALLENGES.labels(challenge.factor_type, "wrong").inc()
            await ctx.audit(
                after,
                "case.code_wrong",
                "failure",
                factor_type=challenge.factor_type,
                attempts_left=after.challenge.attempts_left if after.challenge else 0,
            )
        return
    except OktaUserLocked as exc:
        locked = exc.message
        with contextlib.suppress(StaleEvent):
            _, after = await ctx.apply(case_id, lambda c: engine.failed(c, ctx.clock(), locked), cmd.view)
            await ctx.audit(after, "case.failed", "failure", factor_type=challenge.factor_type, reason="locked")
        return
    except OktaError as exc:  # OktaCodeReused and the rest: tell the agent, keep the challenge
        await ctx.notify(case_id, CaseRefused(exc.message), cmd.view)
        return
    finally:
        del spoken
    try:
        _, after = await ctx.apply(case_id, lambda c: engine.verified(c, cid, ctx.clock()), cmd.view)
    except StaleEvent:
        return
    metrics.CHALLENGES.labels(challenge.factor_type, "verified").inc()
    await ctx.audit(after, "case.verified", "success", factor_type=challenge.factor_type, weak=challenge.weak)


async def resend(ctx: WorkerContext, cmd: ResendChallenge, command_id: str) -> None:
    """Send the code again (or a new push) once Okta's 30 s wait is over; counts against the limit."""
    case_id = case_of(ctx, cmd)
    case = await load(ctx, case_id)
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
    try:
        _, after = await ctx.apply(
            job.case_id, lambda c: ctx.engine.push_ended(c, job.challenge_id, result, ctx.clock()), known=found
        )
    except (StaleEvent, CaseRefused):
        return
    metrics.PUSH_RESULT_TO_UPDATE.observe(time.perf_counter() - seen)
    if result == "SUCCESS":
        metrics.CHALLENGES.labels("push", "verified").inc()
        await ctx.audit(after, "case.verified", "success", factor_type="push")
    elif result == "REJECTED":
        metrics.CHALLENGES.labels("push", "rejected").inc()
        await ctx.audit(after, "case.rejected", "failure", factor_type="push")
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
        await ctx.audit(after, "case.timed_out", "failure", factor_type="push")


# -------------------------------------------------------------------------------------------- actions


async def run_action(ctx: WorkerContext, cmd: RunAction, command_id: str) -> None:
    """A reset or unlock, re-checked server-side: verified, in time, by this agent, for this user."""
    case_id = case_of(ctx, cmd)
    case = await load(ctx, case_id)
    engine = ctx.engine
    try:
        engine.check_action(case, cmd.action, cmd.agent, ctx.clock(), cmd.factor_id)
        await authorize(ctx, cmd.agent)
    except CaseRefused as refused:
        if refused.reason == "verification_expired":
            with contextlib.suppress(StaleEvent, CaseRefused):
                await ctx.apply(case_id, lambda c: engine.verification_expired(c, ctx.clock()), cmd.view)
            return
        after = await ctx.notify(case_id, refused, cmd.view)
        if after is not None:
            action = "case.escalated" if refused.reason in ("escalate", "not_allowed") else "case.action"
            await ctx.audit(after, action, "refused", action_kind=cmd.action.value, reason=refused.reason)
        return
    if not await claim(ctx, case_id, command_id, cmd.view):
        return
    assert case.target is not None
    uid = case.target.id
    label = case.target.display_name
    secret: str | None = None
    factors = None
    try:
        if cmd.action == ActionKind.TEMP_PASSWORD:
            secret = await ctx.okta.temp_password(uid)
            message = f"Temporary password shown once to the agent; {label} must change it at next sign-in."
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
            await ctx.okta.revoke_sessions(uid)
            message = f"All of {label}'s Okta sessions were ended."
        user = await _quiet_user(ctx, uid)
        if cmd.action in (ActionKind.RESET_FACTOR, ActionKind.RESET_ALL_FACTORS):
            with contextlib.suppress(OktaError):
                raw = await ctx.okta.list_factors(uid)
                factors = factor_options(raw, user.profile if user else {}, ctx.settings.okta_verify_attributes)
    except (CaseRefused, OktaError) as exc:
        text = exc.message
        with contextlib.suppress(StaleEvent):
            _, after = await ctx.apply(case_id, lambda c: engine.action_failed(c, cmd.action, text, ctx.clock()))
            await ctx.audit(after, "case.action", "failure", action=cmd.action.value, error=type(exc).__name__)
        return
    card = user_card(user, case.protected_groups) if user is not None else None
    shown = secret is not None

    def done(c: Case) -> Case:
        return engine.action_done(
            c, cmd.action, True, message, ctx.clock(), target=card, factors=factors, secret_shown=shown
        )

    _, after = await ctx.apply(case_id, done, cmd.view)
    await ctx.audit(after, "case.action", "success", action=cmd.action.value, factor_id=cmd.factor_id)
    if secret is not None:
        await _show_secret(ctx, after, secret)


async def _quiet_user(ctx: WorkerContext, user_id: str) -> OktaUser | None:
    try:
        return await ctx.okta.get_user(user_id)
    except OktaError:
        return None


async def _show_secret(ctx: WorkerContext, case: Case, secret: str) -> None:
    """Hand the temporary password to the responder, the one place it is rendered. Never stored."""
    assert case.target is not None
    request = ShowTempPassword(
        case_id=case.case_id,
        revision=case.revision,
        agent=case.agent,
        view=case.view,
        target_login=case.target.login,
        temp_password=SecretStr(secret),
        case_token=case.case_token,
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
    text = "The temporary password could not be shown to you. Set a new one (the one Okta made is unusable unseen)."
    with contextlib.suppress(StaleEvent):
        _, after = await ctx.apply(
            case.case_id, lambda c: ctx.engine.action_failed(c, ActionKind.TEMP_PASSWORD, text, ctx.clock())
        )
        await ctx.audit(after, "case.action", "failure", action=ActionKind.TEMP_PASSWORD.value, error="not_shown")


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


# -------------------------------------------------------------------------------------------- search


def option_label(user: OktaUser) -> str:
    label = f"{user.display_name} — {user.login} ({user.status})"
    return label if len(label) <= LABEL_MAX else label[: LABEL_MAX - 1] + "…"


def search_expression(query: str) -> str:
    q = scim_quote(query.strip())
    terms = [f"profile.{attr} sw {q}" for attr in ("login", "email", "firstName", "lastName")]
    words = query.split()
    if len(words) >= 2:
        first, last = scim_quote(words[0]), scim_quote(" ".join(words[1:]))
        terms.append(f"(profile.firstName sw {first} and profile.lastName sw {last})")
    return " or ".join(terms)


async def search_users(ctx: WorkerContext, request: SearchUsers) -> SearchUsersReply:
    """Options for the agent's user search; answers within ``SEARCH_DEADLINE`` whatever happens."""
    query = request.query.strip()[:100]
    if not query:
        return SearchUsersReply(options=[])
    try:
        async with asyncio.timeout(SEARCH_DEADLINE):
            await authorize(ctx, request.agent)
            users = await ctx.okta.search_users(search_expression(query), limit=50, rate_limit_wait=0.0)
    except CaseRefused as refused:
        return SearchUsersReply(error=refused.message)
    except TimeoutError:
        return SearchUsersReply(error="Okta did not answer in time; type again.")
    except OktaError as exc:
        return SearchUsersReply(error=exc.message)
    options = [UserOption(id=u.id, label=option_label(u)) for u in users if u.status != "DEPROVISIONED"]
    return SearchUsersReply(options=options[:100])


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
