"""When a pending push is polled next: often in its first seconds, then on a steady grid, always inside
Okta's rate-limit budget and with a reserve of it left to the agents.

pacer = PollPacer(settings.push_poll_interval, await bus.key_value(RATE_BUCKET, ttl=120), okta)
raise RetryLater(pacer.delay(since_first=12.1), "push waiting")
"""

from __future__ import annotations

import asyncio
import bisect
import random
import time

import orjson
from nats.js.kv import KeyValue

from services.okta_worker.okta_client import USERS_BUCKET, OktaClient, RateLimit
from shared.logging import get_logger

log = get_logger(__name__)

RATE_BUCKET = "okta_rate"
WINDOW = 60.0  # Okta's rate-limit window, seconds


class PollPacer:
    """When a push's next poll happens: soon while the user is likely answering, then every interval,
    later when Okta's budget is short.

    Polls of one push fall on a grid (first poll + k × step), so the user's wait between two polls
    stays one step however long a job queued. The step is short (``EARLY_STEP``, a divisor of the
    interval so both grids share their ticks) for the push's first ``EARLY_FOR`` seconds — most people
    approve within 5–20 s — while the budget allows it, and the interval after that. JetStream brings a
    job back ``lead`` seconds before its tick and the worker waits out the rest itself: a redelivery is
    a few to a hundred ms late under load, an event-loop timer is not.

    Budget: push polls count against Okta's ``/api/v1/users`` bucket, with the agents' searches,
    challenges, codes and actions. Polls never spend the last ``RESERVE`` of it: what is left above the
    reserve in this one-minute window, less the polls already booked into it, is spread evenly over the
    time left, and once none is left the polls move to the next window. So agent-facing calls find
    budget at once and nobody sees a 429, however many pushes are pending; those pushes are polled less
    often instead (every pending / budget seconds), each in turn.

    Every replica writes the bucket's headers it last saw to KV ``okta_rate`` (at most once a second)
    and reads the others' there, so all replicas slow down together.
    """

    EARLY_FOR = 20.0  # seconds after the first poll with the short step
    EARLY_STEP = 0.75  # about this; the exact step divides the interval
    EARLY_MAX_RATE = 100.0  # polls/s of this replica above which no push gets the short step (CPU)
    RESERVE = 0.20  # share of the bucket's limit polls leave to agent-facing calls
    CATCH_UP = 0.10  # at most this share of a step is made up per poll

    def __init__(self, interval: float, kv: KeyValue | None, okta: OktaClient, *, bucket: str = USERS_BUCKET) -> None:
        self.interval = interval
        self.step = interval / max(1, round(interval / self.EARLY_STEP))
        self.lead = min(0.2, interval * 0.1)
        self.kv = kv
        self.okta = okta
        self.bucket = bucket
        self.shared: RateLimit | None = None
        self.poll_rate = 0.0  # polls booked by this replica in the last whole second
        self._second = 0
        self._in_second = 0
        self._pointer = 0.0  # when the budget binds, the next poll's earliest time
        self._booked: list[float] = []  # polls booked and not yet due, sorted
        self._sent: list[float] = []  # when polls went out (``until_tick``), the last minute's
        self._synced_at = 0.0
        self._sync_task: asyncio.Task[None] | None = None

    # -- the budget -------------------------------------------------------------------------------

    def budget(self, now: float | None = None) -> RateLimit | None:
        """The tightest view of the bucket: this replica's last headers or the shared ones.

        Headers from a window that has ended stand for a fresh window: the full limit until one minute later.
        """
        now = time.time() if now is None else now
        seen: list[RateLimit] = []
        for r in (self.okta.rates.get(self.bucket), self.shared):
            if r is None or r.limit <= 0:
                continue
            if r.reset <= now:
                windows = int((now - r.reset) // WINDOW) + 1
                r = RateLimit(r.limit, r.limit, r.reset + windows * WINDOW, r.seen_at)
            seen.append(r)
        if not seen:
            return None
        return min(seen, key=lambda r: r.remaining / r.limit)

    def quota(self, rate: RateLimit, now: float) -> float:
        """Polls this window can still take: what is left above the reserve, less the polls booked in it
        and those sent since the headers were seen (a push's first poll, polls still out)."""
        self._forget(now)
        booked = bisect.bisect_left(self._booked, rate.reset)
        since = max(rate.seen_at, rate.reset - WINDOW)
        unseen = len(self._sent) - bisect.bisect_right(self._sent, since)
        return rate.remaining - self.RESERVE * rate.limit - booked - unseen

    # -- pacing -----------------------------------------------------------------------------------

    def delay(self, now: float | None = None, since_first: float | None = None, spent: float = 0.0) -> float:
        """Seconds until the next poll: the next tick of the push's grid (``since_first``: seconds since
        its first poll), else one interval from when this poll started (``spent`` seconds ago); later
        when the budget is short."""
        now = time.time() if now is None else now
        if now - self._synced_at > 1.0 and self.kv is not None and self._sync_task is None:
            self._synced_at = now
            self._sync_task = asyncio.create_task(self._sync())
        self._count(now)
        rate = self.budget(now)
        early = since_first is not None and since_first < self.EARLY_FOR and self.early_allowed(rate, now)
        step = self.step if early else self.interval
        # Queueing and redelivery make each poll a little late; left alone that adds up, and the gap
        # between two polls (the user's wait for the case to move on) grows past the step. So aim at
        # the push's grid (first poll + k × step), closing at most a tenth of the step per poll, so that
        # polls late after a burst or a restart come back without crowding Okta.
        if since_first is None:
            want = step - min(spent, step * self.CATCH_UP)
        else:
            behind = since_first % step
            want = step - min(behind, step * self.CATCH_UP) - self.lead
        return self._book(now, now + want, rate) - now

    def early_allowed(self, rate: RateLimit | None, now: float) -> bool:
        """The short step, only while this replica polls at a pace the budget can keep up until the reset."""
        if self.poll_rate >= self.EARLY_MAX_RATE:
            return False
        if rate is None:
            return True
        return self.poll_rate < self.quota(rate, now) / max(1.0, rate.reset - now)

    def _book(self, now: float, at: float, rate: RateLimit | None) -> float:
        """The moment this poll may go: ``at`` if the budget allows, else the next free slot."""
        if rate is not None:
            quota = self.quota(rate, now)
            if quota >= 1:
                start = max(self._pointer, now)
                spacing = max(rate.reset - start, 0.05) / quota
            else:  # this window's polls are spent: the next window, at its pace
                start = max(self._pointer, rate.reset + random.uniform(0.0, 0.5))
                spacing = WINDOW / max(1.0, rate.limit * (1 - self.RESERVE))
            at = max(at, start)
            self._pointer = start + spacing
        bisect.insort(self._booked, at)
        return at

    def _forget(self, now: float) -> None:
        """Booked polls that are due now have gone out (``_sent`` counts them until the headers do)."""
        del self._booked[: bisect.bisect_right(self._booked, now)]
        del self._sent[: bisect.bisect_left(self._sent, now - WINDOW)]

    def _count(self, now: float) -> None:
        second = int(now)
        if second != self._second:
            self.poll_rate = float(self._in_second) if second == self._second + 1 else 0.0
            self._second, self._in_second = second, 0
        self._in_second += 1

    def until_tick(self, since_first: float, now: float | None = None) -> float:
        """Seconds to wait for the grid's next tick when a job came back early (0: poll now).

        Called before every poll, a push's first included, so the poll is counted against the budget
        until Okta's headers count it.
        """
        now = time.time() if now is None else now
        step = self.step if since_first < self.EARLY_FOR else self.interval
        ahead = -since_first % step
        wait = ahead if 0 < ahead <= 2 * self.lead else 0.0
        bisect.insort(self._sent, now + wait)
        return wait

    async def _sync(self) -> None:
        assert self.kv is not None
        try:
            mine = self.okta.rates.get(self.bucket)
            if mine is not None:
                await self.kv.put("users", orjson.dumps(mine.__dict__))
            entry = await self.kv.get("users")
            if entry.value:
                self.shared = RateLimit(**orjson.loads(entry.value))
        except Exception as exc:  # the budget is advisory: never fail a poll over it
            log.debug("okta.rate.sync_failed", error=type(exc).__name__)
        finally:
            self._sync_task = None
