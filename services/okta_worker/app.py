"""Wiring of the okta worker: settings → Okta client, KV buckets, limits → consumers and responder.

    bus = await Bus.connect(settings, name="okta-worker")
    await bus.ensure_streams()
    service = create_service(settings, bus)   # MissingSetting at once if Okta or the case secret is unset
    await service.start()
    ...
    await service.stop(); await bus.close()

Subscriptions: the command stream (durable ``okta-worker``, shared by every replica), the push-poll
jobs (durable ``okta-worker-poll``) and ``okta.users.search`` (queue group ``okta-worker``).
The bus belongs to the caller; the HTTP client is opened in ``start`` and closed in ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from services.okta_worker.approvals import expire_approval
from services.okta_worker.authz import Authorizer, GroupConfigError, GroupDirectory
from services.okta_worker.case import CaseEngine
from services.okta_worker.context import WorkerContext, utcnow
from services.okta_worker.handlers import LIMITS_BUCKET, handle_command, poll_push
from services.okta_worker.okta_client import OktaAuth, OktaClient, OktaError, auth_from_settings
from services.okta_worker.pacer import RATE_BUCKET, PollPacer
from services.okta_worker.policy import Policy, load_policy
from services.okta_worker.risk import RISK_BUCKET, RiskReader
from services.okta_worker.search import search_users
from services.okta_worker.store import AGENTS_BUCKET, AGENTS_TTL, CASES_BUCKET, CASES_TTL, AgentIndex, CaseStore
from shared.bus import CMD_STREAM, JOB_STREAM, Bus, Delivery, Subscription
from shared.limits import RateLimiter
from shared.logging import get_logger
from shared.messages import ExpireApproval, Message, PollPush, SearchUsers
from shared.settings import Settings
from shared.tokens import CaseTokens

log = get_logger(__name__)

CMD_DURABLE = "okta-worker"
POLL_DURABLE = "okta-worker-poll"
SEARCH_QUEUE = "okta-worker"
MAX_ACK_PENDING = 100_000
# A command or poll whose worker died is redelivered this long after: seconds, not half a minute. A
# handler that is still working (Okta slow) says so every third of it (``Delivery.in_progress``).
ACK_WAIT = 5.0


class Heartbeat:
    """Tells JetStream, every ``interval`` seconds while a handler runs, that the message is still in work.

    One timer per message, no task unless it fires: a command answered in milliseconds costs nothing.
    """

    def __init__(self, delivery: Delivery, interval: float) -> None:
        self.delivery = delivery
        self.interval = interval
        self.loop = asyncio.get_running_loop()
        self.timer = self.loop.call_later(interval, self._beat)
        self.tasks: set[asyncio.Task[None]] = set()

    def _beat(self) -> None:
        task = self.loop.create_task(self._in_progress())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        self.timer = self.loop.call_later(self.interval, self._beat)

    async def _in_progress(self) -> None:
        with contextlib.suppress(Exception):  # a lost heartbeat costs a redelivery, which is handled
            await self.delivery.in_progress()

    def stop(self) -> None:
        self.timer.cancel()


def check_settings(settings: Settings) -> tuple[OktaAuth, Policy]:
    """What the worker cannot start without: the org, a complete Okta auth, the case-token secret,
    a readable assurance policy (``PolicyError`` names the problem)."""
    settings.require("OKTA_ORG_URL", "CASE_TOKEN_SECRET")
    return auth_from_settings(settings), load_policy(settings.helpdesk_policy, settings.case_verified_ttl)


class OktaWorkerService:
    """The worker of one process: ``start()`` subscribes, ``stop()`` finishes in-flight work first."""

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        *,
        clock: Callable[[], datetime] = utcnow,
        job_ack_wait: float = ACK_WAIT,
        # Polls held by this replica: most wait a moment for their tick (PollPacer.lead); Okta sees at
        # most the HTTP pool's 30 at once. Against real Okta (50–100 ms a poll) that is 300+ polls/s.
        polls_in_flight: int = 128,
        commands_in_flight: int = 8,
        okta: OktaClient | None = None,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.clock = clock
        self.job_ack_wait = job_ack_wait
        self.polls_in_flight = polls_in_flight
        self.commands_in_flight = commands_in_flight
        auth, self.policy = check_settings(settings)
        assert settings.okta_org_url is not None
        self.okta = okta or OktaClient(settings.okta_org_url, auth)
        self.tokens = CaseTokens.from_settings(settings)
        self.ctx: WorkerContext | None = None
        self._subs: list[Subscription] = []

    async def start(self) -> None:
        bus, settings = self.bus, self.settings
        cases = await bus.key_value(CASES_BUCKET, ttl=CASES_TTL)
        agents = await bus.key_value(AGENTS_BUCKET, ttl=AGENTS_TTL)
        rate = await bus.key_value(RATE_BUCKET, ttl=120)
        risk_cache = await bus.key_value(RISK_BUCKET, ttl=float(max(1, settings.risk_cache_seconds)))
        groups = GroupDirectory(self.okta, settings)
        try:
            await groups.resolve()
        except GroupConfigError:
            raise  # a missing or ambiguous group name: the worker must not run
        except OktaError as exc:  # Okta unreachable now: resolved on first use instead
            log.warning("okta.groups.unresolved", error=type(exc).__name__)
        limiter = await RateLimiter.create(bus, LIMITS_BUCKET)
        self.ctx = ctx = WorkerContext(
            settings=settings,
            bus=bus,
            okta=self.okta,
            store=CaseStore(cases),
            agents=AgentIndex(agents),
            limiter=limiter,
            pacer=PollPacer(settings.push_poll_interval, rate, self.okta),
            tokens=self.tokens,
            engine=CaseEngine(settings, self.policy),
            authorizer=Authorizer(self.okta, bus, groups),
            risk=RiskReader(self.okta, limiter, risk_cache, settings),
            clock=self.clock,
        )

        beat = ACK_WAIT / 3

        async def on_command(message: Message, delivery: Delivery) -> None:
            heartbeat = Heartbeat(delivery, beat)
            try:
                await handle_command(ctx, message, delivery)
            finally:
                heartbeat.stop()

        async def on_job(message: Any, delivery: Delivery) -> None:
            if isinstance(message, ExpireApproval):
                await expire_approval(ctx, message)
            elif isinstance(message, PollPush):
                heartbeat = Heartbeat(delivery, min(beat, self.job_ack_wait / 3))
                try:
                    await poll_push(ctx, message, delivery)
                finally:
                    heartbeat.stop()

        async def on_search(request: SearchUsers) -> Message:
            return await search_users(ctx, request)

        # A push waits at most push_max_wait; every poll is one delivery, so allow all of them and more.
        polls = int(settings.push_max_wait / max(0.05, settings.push_poll_interval)) * 3 + 50
        self._subs.append(
            await bus.consume(
                CMD_STREAM,
                CMD_DURABLE,
                on_command,
                max_in_flight=self.commands_in_flight,
                max_deliver=5,
                ack_wait=ACK_WAIT,
            )
        )
        # A waiting push stays ack-pending between polls (nak with delay): room for every pending push.
        self._subs.append(
            await bus.consume(
                JOB_STREAM,
                POLL_DURABLE,
                on_job,
                max_in_flight=self.polls_in_flight,
                max_deliver=polls,
                ack_wait=self.job_ack_wait,
                max_ack_pending=MAX_ACK_PENDING,
            )
        )
        await bus.serve(SearchUsers, on_search, queue=SEARCH_QUEUE)
        await bus.nc.flush()  # the search subscription is live on the server before start() returns
        log.info("okta_worker.started", org=settings.okta_org_url, auth=self.okta.auth.scheme)

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.stop()
        self._subs.clear()
        await self.okta.aclose()
        log.info("okta_worker.stopped")


def create_service(settings: Settings, bus: Bus) -> OktaWorkerService:
    """The okta worker on a connected ``bus`` (``MissingSetting`` at once if misconfigured)."""
    return OktaWorkerService(settings, bus)
