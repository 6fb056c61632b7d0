"""What the responder remembers per case, in NATS KV so every replica agrees: the view and its revision.

    views = await ViewStore.open(bus)
    found = await views.get(case_id)          # (ViewRecord, kv revision) or None
    await views.put(case_id, record, found)   # compare-and-swap against what was read

A record says which Slack view shows the case, the hash Slack gave for it last, and the case
revision on screen. Snapshots at or below that revision are dropped, which is what keeps the flow
from ever going backwards, whichever replica handles the next snapshot. Nothing secret is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, replace

import orjson
from nats.js.api import StorageType
from nats.js.errors import APIError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from shared.bus import Bus, kv_read
from shared.limits import kv_key

VIEWS_BUCKET = "views"
VIEWS_TTL = 24 * 3600  # a case token lives 1 h; a day covers any straggler


@dataclass(frozen=True)
class ViewRecord:
    """The case's modal as last rendered (``view_id`` None: it never opened, or it was closed)."""

    revision: int
    view_id: str | None = None
    hash: str | None = None
    dead_trigger: bool = False  # views.open failed for good: the agent got a re-open button instead
    closed: bool = False  # Slack said the view is gone (the agent closed the modal)

    def evolve(self, **changes: object) -> ViewRecord:
        return replace(self, **changes)  # type: ignore[arg-type]


Found = tuple[ViewRecord, int]


class ViewStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, bus: Bus, bucket: str = VIEWS_BUCKET) -> ViewStore:
        # In memory (see shared/bus.py): after a NATS restart the records are gone, and the next
        # snapshot of a case finds its view from the agent's last click (the snapshot's view hint).
        return cls(await bus.key_value(bucket, ttl=VIEWS_TTL, storage=StorageType.MEMORY))

    async def get(self, case_id: str) -> Found | None:
        found = await kv_read(self.kv, kv_key(case_id))
        if found is None:
            return None
        value, revision = found
        return ViewRecord(**orjson.loads(value)), revision

    async def put(self, case_id: str, record: ViewRecord, found: Found | None) -> bool:
        """Write ``record`` if nobody wrote since ``found`` was read; False when another writer won."""
        value = orjson.dumps(asdict(record))
        try:
            if found is None:
                await self.kv.create(kv_key(case_id), value)
            else:
                await self.kv.update(kv_key(case_id), value, last=found[1])
        except (KeyWrongLastSequenceError, APIError):
            return False
        return True

    async def save(self, case_id: str, record: ViewRecord, found: Found | None) -> None:
        """Write ``record`` unless a newer case revision got there first (then theirs stands)."""
        for _ in range(5):
            if await self.put(case_id, record, found):
                return
            found = await self.get(case_id)
            if found is not None and found[0].revision > record.revision:
                return


class KeyedLocks:
    """One asyncio lock per key (a case, an agent), forgotten when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)
