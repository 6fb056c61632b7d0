"""Toll-fraud velocity limits per user, number and number range, shared by every replica through NATS KV.

    velocity = Velocity(limiter, Limits.from_settings(settings))
    refused = await velocity.check(user_key="00u123", dest=destination)   # None, or the kind refused
    refused.kind, refused.retry_after                                     # "prefix", 412.0

The counters are :class:`shared.limits.RateLimiter`'s fixed windows. The three of one request are
counted concurrently (one round trip, not three in a row). Concurrent requests on one key — every
code to a busy range such as ``+1415`` — are gathered: while one compare-and-swap on a key is in
flight, the hits that arrive for it wait and then go together in the next one, which counts as many
as the limit leaves room for. A hot key thus costs one write per round trip, not one per request, and
requests do not queue behind each other's writes.

A request refused on one key may still have been counted on the others: for toll-fraud limits that
errs on the safe side.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from services.telephony_hook.numbers import Destination
from shared.limits import LimitGrant, RateLimiter
from shared.settings import Settings


@dataclass(frozen=True)
class Limits:
    per_user: int
    per_number: int
    per_prefix: int
    window: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            per_user=settings.telephony_limit_per_user,
            per_number=settings.telephony_limit_per_number,
            per_prefix=settings.telephony_limit_per_prefix,
            window=settings.telephony_limit_window,
        )


@dataclass(frozen=True)
class Refused:
    """A limit reached: ``kind`` is ``user``, ``number`` or ``prefix``."""

    kind: str
    retry_after: float


class Velocity:
    """The three limits of one request, checked together; hits on one key gathered into one write."""

    def __init__(self, limiter: RateLimiter, limits: Limits) -> None:
        self.limiter = limiter
        self.limits = limits
        # key → hits waiting for the next write on it (present while a write on the key is in flight)
        self._waiting: dict[str, list[asyncio.Future[float | None]]] = {}

    async def check(self, user_key: str | None, dest: Destination) -> Refused | None:
        """Count one code for this user, number and range; the first limit reached, if any.

        Raises what the KV raises (the caller answers that NATS is unavailable).
        """
        limits = self.limits
        checks = [
            ("number", f"number:{dest.e164}", limits.per_number),
            ("prefix", f"prefix:{dest.prefix}", limits.per_prefix),
        ]
        if user_key:
            checks.insert(0, ("user", f"user:{user_key}", limits.per_user))
        refusals = await asyncio.gather(*(self.hit(key, limit) for _, key, limit in checks))
        for (kind, _, _), retry_after in zip(checks, refusals, strict=True):
            if retry_after is not None:
                return Refused(kind, retry_after)
        return None

    async def hit(self, key: str, limit: int) -> float | None:
        """Count one event for ``key``: ``None`` if allowed, else the seconds until its window ends."""
        waiting = self._waiting.get(key)
        if waiting is not None:  # a write on this key is in flight: join the next one
            future: asyncio.Future[float | None] = asyncio.get_running_loop().create_future()
            waiting.append(future)
            return await future
        self._waiting[key] = []
        try:
            grant = await self.limiter.hit_many(key, 1, limit, self.limits.window)
        finally:
            self._next_round(key, limit)
        return None if grant.granted == 1 else grant.window_left

    def _next_round(self, key: str, limit: int) -> None:
        waiting = self._waiting.get(key)
        if waiting is None:
            return
        live = [f for f in waiting if not f.done()]
        if not live:
            del self._waiting[key]
            return
        self._waiting[key] = []
        task = asyncio.get_running_loop().create_task(self._round(key, limit, live))
        task.add_done_callback(_retrieve)

    async def _round(self, key: str, limit: int, futures: list[asyncio.Future[float | None]]) -> None:
        try:
            grant: LimitGrant = await self.limiter.hit_many(key, len(futures), limit, self.limits.window)
        except Exception as exc:
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
        else:
            for index, future in enumerate(futures):
                if not future.done():  # one that gave up (its deadline) may have been counted: errs safe
                    future.set_result(None if index < grant.granted else grant.window_left)
        finally:
            self._next_round(key, limit)


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # already handed to the waiters; read here so asyncio does not log it
