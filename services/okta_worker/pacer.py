"""When a pending push is polled next: a steady grid, slower when Okta's rate-limit budget runs low.

pacer = PollPacer(settings.push_poll_interval, await bus.key_value(RATE_BUCKET, ttl=120), okta)
raise RetryLater(pacer.delay(since_first=12.1), "push waiting")
"""

from __future__ import annotations

import asyncio
import random
import time

import orjson
from nats.js.kv import KeyValue

from services.okta_worker.okta_client import OktaClient, RateLimit
from shared.logging import get_logger

log = get_logger(__name__)

RATE_BUCKET = "okta_rate"


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
