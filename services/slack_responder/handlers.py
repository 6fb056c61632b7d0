"""The responder's handlers: case snapshots → modal, the temporary password, user look-ups, App Home.

    responder = Responder(slack, views, bus)
    await bus.consume(CASE_STREAM, "slack-responder", responder.on_case_message)
    await bus.serve(LookupSlackUser, responder.lookup_user, queue="slack-responder")
    await bus.serve(ShowTempPassword, responder.show_temp_password, queue="slack-responder")

Rules for one case, whichever replica handles it:

* **Open first.** With no view yet and a ``trigger_id`` on the snapshot, ``views.open`` is the first
  Slack call for the case (the trigger lives 3 s). ``expired_trigger_id`` → the agent gets a message
  with a button that starts over (ephemeral in the channel the case came from, else a DM).
* **Strict order.** Snapshots of one case are handled one at a time (a per-case lock), and any
  snapshot whose revision is not newer than the one on screen (KV ``views``) is dropped.
* **Hash conflicts.** ``views.update`` sends the hash from KV (what our last update returned). On
  ``hash_conflict`` we re-read KV: a newer revision on screen → drop ours; a hash we have not tried
  (KV's, then the snapshot's from the agent's last click) → retry with it; otherwise one last retry
  without a hash. Dropping the guard is safe there because the revision check already proved this
  snapshot is the newest state; the conflict means the gateway replaced the view itself (its
  ``response_action: update`` after a submitted code leaves the hash unknown).
* **The temporary password** arrives only by request/reply; it is rendered into the view, its
  revision marked as on screen, and it is never logged, stored or put in an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.slack_responder import metrics, views
from services.slack_responder.offers import Offers
from services.slack_responder.slack_client import (
    HashConflict,
    SlackClient,
    SlackError,
    SlackRateLimited,
    SlackRejected,
    SlackUnavailable,
    TriggerExpired,
    ViewGone,
)
from services.slack_responder.store import Found, KeyedLocks, ViewRecord, ViewStore
from shared.bus import Bus, Delivery, RetryLater, Unprocessable
from shared.logging import get_logger
from shared.messages import (
    CaseSnapshot,
    CaseState,
    HomeSnapshot,
    LookupSlackUser,
    Message,
    RefusalNotice,
    RenderAck,
    ShowTempPassword,
    SlackUserInfo,
    StartOffer,
    ViewRef,
    WorkflowResult,
)

log = get_logger(__name__)

LOOKUP_TTL = 300.0  # seconds a users.info answer is reused
LOOKUP_MAX = 10_000
PUSH_REFRESH_EVERY = 15.0  # seconds between re-renders of a waiting push (elapsed time)
MAX_REFRESHERS = 100  # live timers at once; beyond, the view still shows when the push was sent
TRIGGER_TOO_OLD = 300.0  # seconds: a snapshot this old (the responder was down) is not opened nor followed up


@dataclass(frozen=True)
class Outcome:
    """What happened to one snapshot (for tests and metrics)."""

    result: str
    view: ViewRef | None = None


class Responder:
    def __init__(
        self,
        slack: SlackClient,
        store: ViewStore,
        bus: Bus | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        push_refresh_every: float = PUSH_REFRESH_EVERY,
        lookup_ttl: float = LOOKUP_TTL,
    ) -> None:
        self.slack = slack
        self.store = store
        self.bus = bus
        self.offers = Offers(slack)
        self.clock = clock
        self.push_refresh_every = push_refresh_every
        self.lookup_ttl = lookup_ttl
        self.case_locks = KeyedLocks()
        self.home_locks = KeyedLocks()
        self._opened: dict[str, asyncio.Event] = {}
        self._lookups: dict[str, tuple[float, SlackUserInfo]] = {}
        self._refreshers: dict[str, asyncio.Task[None]] = {}

    async def stop(self) -> None:
        tasks = list(self._refreshers.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._refreshers.clear()

    # -- CASE_STREAM -----------------------------------------------------------------------

    async def on_case_message(self, message: Message, delivery: Delivery) -> None:
        """Consumer handler of ``helpdesk.case.>``: snapshots and App Home snapshots."""
        if isinstance(message, CaseSnapshot):
            await self.render_snapshot(message, redelivered=delivery.num_delivered > 1)
        elif isinstance(message, HomeSnapshot):
            await self.publish_home(message)
        elif isinstance(message, RefusalNotice):
            await self.show_refusal(message)
        elif isinstance(message, StartOffer):
            await self.offers.post(message)
        elif isinstance(message, WorkflowResult):
            await self.offers.complete(message)
        else:
            raise Unprocessable(f"unexpected message {type(message).__name__} on the case stream")

    async def show_refusal(self, notice: RefusalNotice) -> None:
        """Replace the modal of a refused click: "expired — start again", or "refused" (never silent)."""
        try:
            await self.slack.update_view(notice.view.view_id, views.render_refusal(notice.kind), None)
        except SlackRejected as exc:  # the modal was closed meanwhile: nothing left to tell
            log.info("responder.refusal_not_shown", error=exc.error)
        except SlackError as exc:
            raise RetryLater(_retry_delay(exc), str(exc)) from None

    async def render_snapshot(self, snapshot: CaseSnapshot, *, redelivered: bool = False) -> Outcome:
        """Render one snapshot (open or update), in case order; ``RetryLater`` if Slack is down."""
        async with self.case_locks.hold(snapshot.case_id):
            # A case's first snapshot, delivered once, has no view to look up: views.open goes out
            # without the KV round trip. Delivered again, it may have been opened: look.
            look = not snapshot.first or redelivered
            outcome = await self._render_locked(snapshot, look=look)
        metrics.RENDERS.labels(snapshot.state.value, outcome.result).inc()
        if outcome.result in {"opened", "updated"}:
            metrics.SNAPSHOT_LAG.observe(max(0.0, (self.clock() - snapshot.updated_at).total_seconds()))
        self._mark_opened(snapshot.case_id)
        log.info(
            "responder.snapshot",
            case_id=snapshot.case_id,
            revision=snapshot.revision,
            state=snapshot.state.value,
            result=outcome.result,
        )
        return outcome

    async def _render_locked(self, snapshot: CaseSnapshot, refresh: bool = False, look: bool = True) -> Outcome:
        found = await self.store.get(snapshot.case_id) if look else None
        record = found[0] if found else None
        if refresh and record is None:
            return Outcome("stale")
        if record is not None:
            behind = snapshot.revision < record.revision or (snapshot.revision == record.revision and not refresh)
            if behind or record.closed or (refresh and snapshot.revision != record.revision):
                return Outcome("stale")
        view = views.render_case(snapshot, now=self.clock())
        view_id = record.view_id if record else None
        if view_id is None and snapshot.view is not None and snapshot.view.view_id:
            view_id = snapshot.view.view_id
        if view_id is None:
            if record is not None and record.dead_trigger:
                return Outcome("no_view")
            if not snapshot.trigger_id:
                return Outcome("no_view")
            if (self.clock() - snapshot.updated_at).total_seconds() > TRIGGER_TOO_OLD:
                return Outcome("no_view")
            return await self._open(snapshot, view, found)
        try:
            ref = await self._update(snapshot.case_id, snapshot.revision, view_id, view, record, snapshot.view)
        except ViewGone:
            await self.store.save(snapshot.case_id, ViewRecord(snapshot.revision, view_id, closed=True), found)
            self._cancel_refresh(snapshot.case_id)
            return Outcome("gone")
        except (SlackUnavailable, SlackRateLimited) as exc:
            raise RetryLater(_retry_delay(exc), str(exc)) from None
        except SlackRejected as exc:
            return await self._trouble(snapshot, view_id, record, found, exc)
        if ref is None:
            return Outcome("stale")
        # CAS against what we read first: save() re-reads only if another replica wrote meanwhile.
        await self.store.save(snapshot.case_id, ViewRecord(snapshot.revision, ref.view_id, ref.hash), found)
        self._schedule_refresh(snapshot)
        return Outcome("updated", ref)

    async def _open(self, snapshot: CaseSnapshot, view: dict[str, Any], found: Found | None) -> Outcome:
        assert snapshot.trigger_id is not None
        try:
            ref = await self.slack.open_view(snapshot.trigger_id, view)
        except TriggerExpired as exc:
            if exc.error == "exchanged_trigger_id":
                # Another replica opened this case's modal a moment ago: render into its view.
                raise RetryLater(0.2, "trigger already exchanged") from None
            log.warning("responder.trigger_expired", case_id=snapshot.case_id, error=exc.error)
            await self._offer_reopen(snapshot)
            await self.store.save(snapshot.case_id, ViewRecord(snapshot.revision, dead_trigger=True), found)
            return Outcome("expired_trigger")
        except (SlackUnavailable, SlackRateLimited) as exc:
            raise RetryLater(_retry_delay(exc), str(exc)) from None
        except SlackRejected as exc:
            log.error("responder.open_rejected", case_id=snapshot.case_id, error=exc.error, details=exc.messages[:3])
            return Outcome("failed")
        await self.store.save(snapshot.case_id, ViewRecord(snapshot.revision, ref.view_id, ref.hash), found)
        self._schedule_refresh(snapshot)
        return Outcome("opened", ref)

    async def _update(
        self,
        case_id: str,
        revision: int,
        view_id: str,
        view: dict[str, Any],
        record: ViewRecord | None,
        hinted: ViewRef | None,
    ) -> ViewRef | None:
        """``views.update`` with the hash policy of the module docstring; None if a newer revision won."""
        tried: list[str | None] = []
        candidate: str | None = record.hash if record else (hinted.hash if hinted else None)
        snapshot_hash = hinted.hash if hinted and hinted.view_id == view_id else None
        for _attempt in range(2):
            tried.append(candidate)
            try:
                return await self.slack.update_view(view_id, view, candidate)
            except HashConflict:
                if candidate is None:
                    raise
            latest = await self.store.get(case_id)
            if latest is not None and latest[0].revision > revision:
                return None
            kv_hash = latest[0].hash if latest else None
            if kv_hash and kv_hash not in tried:
                candidate, label = kv_hash, "kv"
            elif snapshot_hash and snapshot_hash not in tried:
                candidate, label = snapshot_hash, "snapshot"
            else:
                candidate, label = None, "none"
            metrics.HASH_RETRIES.labels(label).inc()
            log.info("responder.hash_conflict", case_id=case_id, retry_with=label)
        return await self.slack.update_view(view_id, view, None)

    async def _trouble(
        self,
        snapshot: CaseSnapshot,
        view_id: str,
        record: ViewRecord | None,
        found: Found | None,
        exc: SlackRejected,
    ) -> Outcome:
        log.error("responder.update_rejected", case_id=snapshot.case_id, error=exc.error, details=exc.messages[:3])
        try:
            ref = await self.slack.update_view(
                view_id, views.render_trouble(snapshot.case_token, "Slack refused the view."), None
            )
        except SlackError:
            return Outcome("failed")
        await self.store.save(snapshot.case_id, ViewRecord(snapshot.revision, ref.view_id, ref.hash), found)
        return Outcome("failed", ref)

    async def _offer_reopen(self, snapshot: CaseSnapshot) -> None:
        """The modal could not open in time: give the agent a button that starts over."""
        text, blocks = views.expired_trigger_message(snapshot.query)
        agent = snapshot.agent.user_id
        try:
            if snapshot.channel_id and not snapshot.channel_id.startswith("D"):
                try:
                    await self.slack.post_ephemeral(snapshot.channel_id, agent, text, blocks)
                    return
                except SlackRejected as exc:  # e.g. the bot is not in that channel: fall back to a DM
                    log.info("responder.ephemeral_refused", case_id=snapshot.case_id, error=exc.error)
            await self.slack.post_message(agent, text, blocks)
        except SlackError as exc:
            log.warning("responder.reopen_offer_failed", case_id=snapshot.case_id, error=type(exc).__name__)

    # -- live refresh of time-sensitive views ------------------------------------------------

    def _refresh_delay(self, snapshot: CaseSnapshot) -> float | None:
        challenge = snapshot.challenge
        if snapshot.state is not CaseState.CHALLENGE_SENT or challenge is None:
            return None
        now = self.clock()
        if challenge.kind == "push":
            if challenge.expires_at is not None and challenge.expires_at <= now:
                return None
            return self.push_refresh_every
        if challenge.can_resend and challenge.resend_available_at is not None:
            wait = (challenge.resend_available_at - now).total_seconds()
            return wait + 0.05 if wait > 0 else None
        return None

    def _schedule_refresh(self, snapshot: CaseSnapshot) -> None:
        self._cancel_refresh(snapshot.case_id)
        delay = self._refresh_delay(snapshot)
        if delay is None or len(self._refreshers) >= MAX_REFRESHERS:
            return
        task = asyncio.create_task(self._refresh_later(snapshot, delay), name=f"refresh:{snapshot.case_id}")
        self._refreshers[snapshot.case_id] = task

    def _cancel_refresh(self, case_id: str) -> None:
        task = self._refreshers.pop(case_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _refresh_later(self, snapshot: CaseSnapshot, delay: float) -> None:
        # A timer, not a synchronisation wait: the view shows a clock (elapsed time, a countdown).
        await asyncio.sleep(delay)
        if self._refreshers.get(snapshot.case_id) is asyncio.current_task():
            del self._refreshers[snapshot.case_id]
        try:
            async with self.case_locks.hold(snapshot.case_id):
                await self._render_locked(snapshot, refresh=True)
        except (RetryLater, SlackError) as exc:
            log.info("responder.refresh_skipped", case_id=snapshot.case_id, reason=type(exc).__name__)

    # -- open-first for other work on the case ----------------------------------------------

    def _mark_opened(self, case_id: str) -> None:
        event = self._opened.pop(case_id, None)
        if event is not None:
            event.set()

    async def wait_until_rendered(self, case_id: str, timeout: float) -> None:
        """Wait (bounded) until the case's first snapshot was handled, so its views.open goes first."""
        if await self.store.get(case_id) is not None:
            return
        event = self._opened.setdefault(case_id, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            self._opened.pop(case_id, None)

    # -- ShowTempPassword (request/reply) ----------------------------------------------------

    async def show_temp_password(self, show: ShowTempPassword) -> RenderAck:
        """Put the temporary password in the agent's view once; the revision shown is marked on screen."""
        async with self.case_locks.hold(show.case_id):
            found = await self.store.get(show.case_id)
            record = found[0] if found else None
            if record is not None and show.revision <= record.revision:
                return RenderAck(ok=False, error="stale revision")
            view_id = (record.view_id if record else None) or (show.view.view_id if show.view else None)
            if view_id is None or (record is not None and record.closed):
                return RenderAck(ok=False, error="no open view for this case")
            self._cancel_refresh(show.case_id)
            try:
                ref = await self._update(
                    show.case_id, show.revision, view_id, views.render_temp_password(show), record, show.view
                )
            except SlackError as exc:
                code = exc.error if isinstance(exc, SlackRejected) else type(exc).__name__
                log.warning("responder.temp_password_not_shown", case_id=show.case_id, error=code)
                return RenderAck(ok=False, error=code)
            if ref is None:
                return RenderAck(ok=False, error="stale revision")
            await self.store.save(show.case_id, ViewRecord(show.revision, ref.view_id, ref.hash), found)
        log.info("responder.temp_password_shown", case_id=show.case_id, revision=show.revision)
        return RenderAck(ok=True)

    # -- LookupSlackUser (request/reply) -------------------------------------------------------

    async def lookup_user(self, request: LookupSlackUser) -> SlackUserInfo:
        """Slack user id → email and names, from ``users.info``, cached for ``lookup_ttl`` seconds."""
        now = time.monotonic()
        cached = self._lookups.get(request.user_id)
        if cached is not None and cached[0] > now:
            metrics.LOOKUPS.labels("cache").inc()
            return cached[1]
        try:
            user = await self.slack.user_info(request.user_id)
        except SlackRejected as exc:
            metrics.LOOKUPS.labels("error").inc()
            return SlackUserInfo(user_id=request.user_id, error=exc.error)
        except SlackError as exc:
            metrics.LOOKUPS.labels("error").inc()
            return SlackUserInfo(user_id=request.user_id, error=f"slack unavailable ({type(exc).__name__})")
        profile = user.get("profile") or {}
        info = SlackUserInfo(
            user_id=request.user_id,
            email=profile.get("email") or None,
            display_name=profile.get("display_name") or user.get("name") or None,
            real_name=profile.get("real_name") or user.get("real_name") or None,
            is_bot=bool(user.get("is_bot")),
            deleted=bool(user.get("deleted")),
            error=None if profile.get("email") or user.get("is_bot") else "no email (is users:read.email granted?)",
        )
        if len(self._lookups) >= LOOKUP_MAX:
            self._lookups = {k: v for k, v in self._lookups.items() if v[0] > now}
            if len(self._lookups) >= LOOKUP_MAX:
                self._lookups.clear()
        self._lookups[request.user_id] = (now + self.lookup_ttl, info)
        metrics.LOOKUPS.labels("slack").inc()
        return info

    # -- App Home ------------------------------------------------------------------------------

    async def publish_home(self, home: HomeSnapshot) -> None:
        """``views.publish`` the agent's App Home (start button, recent cases, dependencies)."""
        nats = "unknown" if self.bus is None else ("connected" if self.bus.is_connected else "disconnected")
        async with self.home_locks.hold(home.agent.user_id):
            view = views.render_home(home, views.HomeStatus(slack=self.slack.status.describe(), nats=nats))
            try:
                await self.slack.publish_home(home.agent.user_id, view)
            except (SlackUnavailable, SlackRateLimited) as exc:
                metrics.HOME_PUBLISHES.labels("retry").inc()
                raise RetryLater(_retry_delay(exc), str(exc)) from None
            except SlackRejected as exc:
                metrics.HOME_PUBLISHES.labels("rejected").inc()
                log.warning("responder.home_rejected", error=exc.error)
                return
        metrics.HOME_PUBLISHES.labels("ok").inc()


def _retry_delay(exc: SlackError) -> float:
    return max(1.0, exc.retry_after) if isinstance(exc, SlackRateLimited) else 2.0
