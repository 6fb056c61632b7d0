"""Where the worker keeps cases and each agent's recent cases: KV buckets written with compare-and-swap.

store = CaseStore(await bus.key_value(CASES_BUCKET, ttl=CASES_TTL))
before, after = await store.update(case_id, lambda c: engine.refreshed(c, now))
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from services.okta_worker import metrics
from services.okta_worker.case import Case, StaleEvent
from shared.bus import BusError, kv_read
from shared.limits import kv_key
from shared.logging import get_logger
from shared.messages import RecentCase

log = get_logger(__name__)

CASES_BUCKET = "cases"
CASES_TTL = 24 * 3600.0
AGENTS_BUCKET = "agent_cases"
AGENTS_TTL = 30 * 24 * 3600.0
RECENT_KEEP = 10


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
