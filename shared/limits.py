"""Fixed-window counters in NATS KV, shared by every replica: challenge limits, SMS velocity limits.

Each window is one key created with a per-key TTL, so it disappears by itself when the window ends.
Increments are compare-and-swap writes that carry the remaining TTL: ``kv.update`` would write a
revision *without* TTL (see reference/tooling.md), so we publish to ``$KV.<bucket>.<key>`` with
``Nats-Expected-Last-Subject-Sequence`` and ``msg_ttl`` instead.

A limiter remembers the counters it wrote last (value and revision), so a hit is usually one write and
no read: a compare-and-swap on the remembered revision (or on "no such key" for a counter it does not
know). The server accepts it only when nobody wrote since, i.e. when the remembered value is the
current one; otherwise the hit reads the counter and goes on as before.

    limiter = await RateLimiter.create(bus, "challenge_limits")
    decision = await limiter.hit("target:00u123", limit=5, window=3600)
    if not decision.allowed:
        ...  # decision.retry_after seconds until the window ends
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

import orjson
from nats.js.errors import APIError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from shared.bus import Bus, BusError, kv_read

_KEY_OK = re.compile(r"[^-/_.a-zA-Z0-9]")
KNOWN_COUNTERS = 4096  # counters remembered per limiter (the least recently written are forgotten)


def kv_key(raw: str) -> str:
    """A KV-safe key: other characters (``+``, ``@``, ``:``…) become ``=XX`` hex escapes."""
    return _KEY_OK.sub(lambda m: "".join(f"={b:02X}" for b in m.group().encode()), raw)


@dataclass(frozen=True)
class LimitDecision:
    allowed: bool
    count: int
    retry_after: float


@dataclass(frozen=True)
class LimitGrant:
    """The outcome of :meth:`RateLimiter.hit_many`: the first ``granted`` of the events were counted.

    ``window_left``: seconds until the counter's window ends (when a refused event may be tried again).
    """

    granted: int
    count: int
    window_left: float


class RateLimiter:
    def __init__(self, kv: KeyValue, bucket: str, bus: Bus) -> None:
        self.kv = kv
        self.bucket = bucket
        self.bus = bus
        # key → (count, reset, revision) as this limiter last wrote it; only a hint for the first write.
        self._known: dict[str, tuple[int, float, int]] = {}

    @classmethod
    async def create(cls, bus: Bus, name: str) -> RateLimiter:
        kv = await bus.key_value(name, history=1)
        return cls(kv, bus.bucket_name(name), bus)

    async def count(self, key: str) -> int:
        entry = await self._get(kv_key(key))
        if entry is None:
            return 0
        count, reset = entry[0], entry[1]
        return count if reset > time.time() else 0

    async def hit(self, key: str, limit: int, window: int) -> LimitDecision:
        """Count one event for ``key``; refused (and not counted) once ``limit`` is reached in the window."""
        safe = kv_key(key)
        if (decision := await self._hit_known(safe, limit, window)) is not None:
            return decision
        for _ in range(20):
            now = time.time()
            current = await self._get(safe)
            if current is None or current[1] <= now:
                reset = now + window
                value = orjson.dumps({"n": 1, "reset": reset})
                try:
                    if current is None:
                        revision = await self.kv.create(safe, value, msg_ttl=max(1, int(window)))
                    else:
                        revision = await self._cas(safe, value, current[2], window)
                except (KeyWrongLastSequenceError, APIError):
                    continue  # another replica wrote first: read again
                self._remember(safe, 1, reset, revision)
                return LimitDecision(allowed=limit >= 1, count=1, retry_after=0.0 if limit >= 1 else window)
            count, reset, revision = current
            if count >= limit:
                return LimitDecision(allowed=False, count=count, retry_after=max(0.0, reset - now))
            value = orjson.dumps({"n": count + 1, "reset": reset})
            try:
                revision = await self._cas(safe, value, revision, max(1, math.ceil(reset - now)))
            except (KeyWrongLastSequenceError, APIError):
                continue
            self._remember(safe, count + 1, reset, revision)
            return LimitDecision(allowed=True, count=count + 1, retry_after=0.0)
        raise BusError(f"limit counter {key!r} too contended")

    async def hit_many(self, key: str, n: int, limit: int, window: int) -> LimitGrant:
        """Count up to ``n`` events for ``key`` in one compare-and-swap: as many as the limit leaves room for.

        The same counter (key, value, TTL) as :meth:`hit`, for a caller that gathers the hits of
        concurrent requests on a hot key (a busy number range) into one write. ``granted`` says how many
        of the ``n`` were counted; the others are refused.
        """
        safe = kv_key(key)
        now = time.time()
        current = self._known.pop(safe, None)  # a remembered counter, or a guess that there is none
        for _ in range(20):
            if current is None or current[1] <= now:
                count, reset, revision, ttl = 0, now + window, current[2] if current else 0, float(window)
            else:
                count, reset, revision, ttl = current[0], current[1], current[2], current[1] - now
            if count >= limit:
                # Within a running window a counter only grows: a count at the limit is final.
                if current is not None:
                    self._remember(safe, *current)
                return LimitGrant(0, count, max(0.0, reset - now))
            granted = min(n, limit - count)
            try:
                written = await self._cas(safe, orjson.dumps({"n": count + granted, "reset": reset}), revision, ttl)
            except (KeyWrongLastSequenceError, APIError):
                current = await self._get(safe)  # someone else wrote: read it and go again
                now = time.time()
                continue
            self._remember(safe, count + granted, reset, written)
            return LimitGrant(granted, count + granted, max(0.0, reset - now))
        raise BusError(f"limit counter {key!r} too contended")

    async def _hit_known(self, safe: str, limit: int, window: int) -> LimitDecision | None:
        """The hit as one compare-and-swap on what this limiter wrote last; ``None`` to read and retry.

        A counter it does not know is created (revision 0: only if absent), exactly as a read that
        finds nothing would; a known one below its limit in a running window gets its next count on
        the remembered revision. Refusals and new windows always go through a read.
        """
        now = time.time()
        known = self._known.pop(safe, None)  # popped: a concurrent hit on this key takes the read path
        if known is None:
            count, reset, revision, ttl = 1, now + window, 0, max(1, int(window))
        elif known[0] < limit and known[1] > now:
            count, reset, revision, ttl = known[0] + 1, known[1], known[2], max(1, math.ceil(known[1] - now))
        else:
            return None
        try:
            written = await self._cas(safe, orjson.dumps({"n": count, "reset": reset}), revision, ttl)
        except (KeyWrongLastSequenceError, APIError):
            return None  # someone else wrote (or a delete marker sits there): read it
        self._remember(safe, count, reset, written)
        if count == 1:
            return LimitDecision(allowed=limit >= 1, count=1, retry_after=0.0 if limit >= 1 else window)
        return LimitDecision(allowed=True, count=count, retry_after=0.0)

    def _remember(self, safe: str, count: int, reset: float, revision: int) -> None:
        self._known.pop(safe, None)
        if len(self._known) >= KNOWN_COUNTERS:
            del self._known[next(iter(self._known))]
        self._known[safe] = (count, reset, revision)

    async def _get(self, key: str) -> tuple[int, float, int] | None:
        found = await kv_read(self.kv, key)
        if found is None:
            return None
        value, revision = found
        data = orjson.loads(value)
        return int(data["n"]), float(data["reset"]), revision

    async def _cas(self, key: str, value: bytes, revision: int, ttl: float) -> int:
        """Write ``value`` only if the key's last revision is ``revision`` (0: absent); the new revision."""
        ack = await self.bus.js.publish(
            f"$KV.{self.bucket}.{key}",
            value,
            msg_ttl=max(1, math.ceil(ttl)),
            headers={"Nats-Expected-Last-Subject-Sequence": str(revision)},
        )
        return ack.seq
