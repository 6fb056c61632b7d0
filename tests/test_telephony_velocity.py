"""The hook's velocity limits on a real NATS: one write for many hits on a hot key, exact across replicas."""

from __future__ import annotations

import asyncio

from services.telephony_hook.numbers import normalize
from services.telephony_hook.velocity import Limits, Velocity
from shared.bus import Bus
from shared.limits import RateLimiter
from shared.settings import Settings


async def test_hit_many_counts_what_the_limit_leaves(bus: Bus) -> None:
    """hit_many counts up to the limit in one write and refuses the rest; the counter is hit()'s."""
    limiter = await RateLimiter.create(bus, "limits")
    first = await limiter.hit_many("prefix:+1415", 3, limit=5, window=60)
    assert (first.granted, first.count) == (3, 3)
    second = await limiter.hit_many("prefix:+1415", 4, limit=5, window=60)
    assert (second.granted, second.count) == (2, 5) and 0 < second.window_left <= 60
    assert (await limiter.hit_many("prefix:+1415", 1, limit=5, window=60)).granted == 0
    assert not (await limiter.hit("prefix:+1415", limit=5, window=60)).allowed
    assert await limiter.count("prefix:+1415") == 5


async def test_hit_many_across_limiters(bus: Bus, settings: Settings) -> None:
    """Two limiters on their own connections (two replicas) share the counter exactly."""
    other = await Bus.connect(settings, name="replica-2")
    try:
        a = await RateLimiter.create(bus, "limits")
        b = await RateLimiter.create(other, "limits")
        grants = await asyncio.gather(*(lim.hit_many("number:+14155552671", 2, 7, 60) for lim in (a, b, a, b)))
        assert sum(g.granted for g in grants) == 7
    finally:
        await other.close()


async def test_concurrent_hits_on_one_key_share_writes(bus: Bus, settings: Settings) -> None:
    """Fifty concurrent requests in one number range, on two replicas: exactly the limit is allowed, and
    the range's counter takes far fewer writes than requests."""
    other = await Bus.connect(settings, name="replica-2")
    try:
        limits = Limits(per_user=100, per_number=100, per_prefix=20, window=60)
        replicas = [Velocity(await RateLimiter.create(b, "limits"), limits) for b in (bus, other)]
        writes = 0
        for velocity in replicas:
            original = velocity.limiter.hit_many

            async def counted(*args: object, _original: object = original, **kwargs: object) -> object:
                nonlocal writes
                if str(args[0]).startswith("prefix:"):
                    writes += 1
                return await _original(*args, **kwargs)  # type: ignore[operator]

            velocity.limiter.hit_many = counted  # type: ignore[method-assign]
        numbers = [normalize(f"+1415555{2000 + i:04d}") for i in range(50)]
        outcomes = await asyncio.gather(*(replicas[i % 2].check(f"00u{i}", dest) for i, dest in enumerate(numbers)))
        assert sum(o is None for o in outcomes) == 20
        assert {o.kind for o in outcomes if o is not None} == {"prefix"}
        assert writes < 25, writes
    finally:
        await other.close()
