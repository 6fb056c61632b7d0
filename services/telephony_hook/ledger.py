"""The ``eventId`` ledger: what was done for each of Okta's requests, shared by every replica (NATS KV).

    ledger = EventLedger(kv)
    claim = await ledger.claim(event_id)              # before anything may be sent
    if claim.first: ... send ...; await ledger.record(event_id, answer)
    else: claim.answer                                # the first answer, or None: it may have been sent

One key per ``eventId`` (``e.`` + a hash), remembered 10 minutes (the bucket's TTL), in two states:

* ``sending`` — written by :meth:`claim`, *before* anything can reach a provider: from then on the code
  may have been sent. An entry that stays so (the process died, was killed mid-send, lost NATS before
  recording) means "maybe sent" for ever: a retry is answered ``PENDING``, never with an error that
  would make Okta send the code again through its own provider.
* ``done`` — the answer given, byte for byte what a retry gets. A request refused before anything
  could be sent goes straight to this state (:meth:`settle`).

The claim is a create-only write, so of concurrent requests with one ``eventId`` on any replicas
exactly one owns it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import orjson
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from shared.bus import kv_read

SENDING = "sending"
DONE = "done"


class LedgerUnavailable(Exception):
    """Raised when the ledger (NATS KV) cannot be read or written."""


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming an ``eventId``: ours (``first``), or an earlier request's.

    For an earlier request: ``answer`` is its answer when recorded, else ``None`` (it may have sent);
    ``claimed_at`` is when it claimed the ``eventId`` (epoch seconds; 0 when unknown).
    """

    first: bool
    answer: dict[str, Any] | None = None
    claimed_at: float = 0.0


class EventLedger:
    """``eventId`` → ``sending`` or the answer given, in a KV bucket whose entries live 10 minutes."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @staticmethod
    def key(event_id: str) -> str:
        return "e." + hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()[:40]

    async def claim(self, event_id: str) -> Claim:
        """Write ``sending`` for ``event_id`` unless some request did first (then: what it left)."""
        return await self._create(event_id, orjson.dumps({"state": SENDING, "at": time.time()}))

    async def settle(self, event_id: str, answer: dict[str, Any]) -> Claim:
        """Record ``answer`` for an ``event_id`` nothing was sent for, unless some request claimed it first."""
        return await self._create(event_id, _done(answer))

    async def record(self, event_id: str, answer: dict[str, Any]) -> None:
        """The answer of the request that claimed ``event_id``."""
        await self.kv.put(self.key(event_id), _done(answer))

    async def read(self, event_id: str) -> Claim | None:
        """What a request left for ``event_id``, or ``None`` when nothing is recorded."""
        try:
            found = await kv_read(self.kv, self.key(event_id))
        except Exception as exc:
            raise LedgerUnavailable(type(exc).__name__) from None
        return None if found is None else _claim_from(found[0])

    async def wait_answer(self, event_id: str, within: float) -> dict[str, Any] | None:
        """The first request's answer, as soon as it is recorded, or ``None`` after ``within`` seconds."""
        if within <= 0:
            return None
        watcher = await self.kv.watch(self.key(event_id))
        try:
            async with asyncio.timeout(within):
                async for entry in watcher:
                    if entry is not None and (claim := _claim_from(entry.value)).answer is not None:
                        return claim.answer
        except TimeoutError:
            return None
        finally:
            await watcher.stop()
        return None

    async def _create(self, event_id: str, value: bytes) -> Claim:
        key = self.key(event_id)
        try:
            await self.kv.create(key, value)
            return Claim(first=True)
        except KeyWrongLastSequenceError:
            pass
        except Exception as exc:
            raise LedgerUnavailable(type(exc).__name__) from None
        try:
            found = await kv_read(self.kv, key)
        except Exception as exc:
            raise LedgerUnavailable(type(exc).__name__) from None
        # Gone again (expired in between): still not ours to send; treat it as unconfirmed.
        return Claim(first=False) if found is None else _claim_from(found[0])


def _done(answer: dict[str, Any]) -> bytes:
    return orjson.dumps({"state": DONE, "answer": answer})


def _claim_from(value: bytes | None) -> Claim:
    try:
        data = orjson.loads(value or b"{}")
    except orjson.JSONDecodeError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    if data.get("state") == DONE and isinstance(data.get("answer"), dict):
        return Claim(first=False, answer=data["answer"])
    at = data.get("at")
    return Claim(first=False, claimed_at=float(at) if isinstance(at, int | float) else 0.0)
