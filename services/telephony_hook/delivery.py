"""Delivery policy: one send, retried only when surely unprocessed, failed over once, inside a deadline.

    dispatcher = Dispatcher([primary, fallback])
    result = await dispatcher.deliver(job, deadline=loop.time() + 2.4)
    if isinstance(result, Delivered): ...   # SUCCESSFUL / PENDING / FAILED, with the provider's sid
    else: ...                               # NotDelivered: nothing went out, Okta may use its own provider

The rules, in order, for each attempt:

1. A request that may have been processed (it went out, then timed out or the connection broke) is
   never sent again, to any provider: the answer is ``PENDING`` (Twilio has no idempotency key).
2. A refusal about the recipient (invalid number, opted out, not SMS-capable) ends the delivery:
   another provider must not be used to get around it.
3. Connection failures and 20429 are retried on the same provider (at most ``retries`` times, short
   backoff) while time remains; anything else fails over to the next provider.
4. While a fallback remains, the current provider gets the time left minus ``fallback_reserve``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from services.telephony_hook import metrics
from services.telephony_hook.contract import Channel, Status
from services.telephony_hook.provider import (
    ProviderClient,
    ProviderError,
    ProviderRejected,
    ProviderTimeout,
    Sent,
)

# Twilio codes about the recipient itself: no provider may deliver, and none should try.
RECIPIENT_FINAL = frozenset({21211, 21217, 21407, 21610, 21612, 21614})
FAILED_STATES = frozenset({"failed", "undelivered", "canceled", "busy", "no-answer"})
MIN_ATTEMPT = 0.1  # seconds: less than this left is not worth a request


@dataclass(frozen=True)
class Job:
    """One code to deliver: ``body`` for an SMS, ``twiml`` for a call; ``to`` in E.164."""

    channel: Channel
    to: str
    body: str = field(default="", repr=False)
    twiml: str = field(default="", repr=False)
    status_callback: str | None = None


@dataclass(frozen=True)
class Delivered:
    """The provider took the message (``SUCCESSFUL``), may have (``PENDING``) or failed it (``FAILED``)."""

    status: Status
    provider: str
    sid: str | None
    attempts: int
    duration_ms: int
    provider_status: str | None = None


@dataclass(frozen=True)
class NotDelivered:
    """Nothing went out; ``reason``: ``rejected`` with a ``code``, ``unavailable``, ``timeout``, ``no_time``.

    ``reason`` ``no_time`` means no provider could be tried before the deadline.
    """

    reason: Literal["rejected", "unavailable", "timeout", "no_time"]
    provider: str
    code: int | None
    attempts: int
    duration_ms: int


@dataclass
class Progress:
    """What is in flight right now, for a caller whose own deadline cancels :meth:`Dispatcher.deliver`."""

    sending_to: str | None = None
    attempts: int = 0


class Dispatcher:
    """Sends a :class:`Job` through the providers, in order, by the rules in the module docstring."""

    def __init__(
        self,
        providers: list[ProviderClient],
        *,
        retries: int = 2,
        backoff: float = 0.05,
        fallback_reserve: float = 0.8,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not providers:
            raise ValueError("at least one provider is needed")
        self.providers = providers
        self.retries = retries
        self.backoff = backoff
        self.fallback_reserve = fallback_reserve
        self._clock = clock

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    async def deliver(self, job: Job, deadline: float, progress: Progress | None = None) -> Delivered | NotDelivered:
        """Deliver ``job`` before ``deadline`` (event-loop time)."""
        progress = progress or Progress()
        started = self._now()
        last: ProviderError | None = None
        last_provider = self.providers[0].name
        for index, provider in enumerate(self.providers):
            has_next = index + 1 < len(self.providers)
            tries = 0
            last_provider = provider.name
            while True:
                remaining = deadline - self._now()
                budget = remaining - (min(self.fallback_reserve, remaining / 2) if has_next else 0.0)
                if budget < MIN_ATTEMPT:
                    break
                tries += 1
                progress.attempts += 1
                try:
                    sent = await self._attempt(provider, job, budget, progress)
                except ProviderError as err:
                    elapsed = self._ms(started)
                    if err.maybe_sent:
                        return Delivered("PENDING", provider.name, None, progress.attempts, elapsed)
                    if isinstance(err, ProviderRejected) and err.code in RECIPIENT_FINAL:
                        return NotDelivered("rejected", provider.name, err.code, progress.attempts, elapsed)
                    last = err
                    if err.retryable and tries <= self.retries:
                        pause = self.backoff * 2 ** (tries - 1)
                        if deadline - self._now() - pause >= MIN_ATTEMPT:
                            await asyncio.sleep(pause)
                            continue
                    break
                status: Status = "FAILED" if sent.status in FAILED_STATES else "SUCCESSFUL"
                return Delivered(status, provider.name, sent.sid, progress.attempts, self._ms(started), sent.status)
        return self._not_delivered(last, last_provider, progress.attempts, self._ms(started))

    async def _attempt(self, provider: ProviderClient, job: Job, budget: float, progress: Progress) -> Sent:
        loop_started = self._now()
        outcome = "sent"
        progress.sending_to = provider.name
        try:
            if job.channel == "voice":
                return await provider.start_call(job.to, job.twiml, budget, job.status_callback)
            return await provider.send_sms(job.to, job.body, budget, job.status_callback)
        except ProviderError as err:
            outcome = _outcome(err)
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            progress.sending_to = None if outcome != "cancelled" else provider.name
            metrics.send_count(provider.name, job.channel, outcome).inc()
            metrics.provider_latency(provider.name, job.channel).observe(self._now() - loop_started)

    def _ms(self, started: float) -> int:
        return int((self._now() - started) * 1000)

    @staticmethod
    def _not_delivered(err: ProviderError | None, provider: str, attempts: int, duration_ms: int) -> NotDelivered:
        if err is None:
            return NotDelivered("no_time", provider, None, attempts, duration_ms)
        if isinstance(err, ProviderRejected):
            return NotDelivered("rejected", err.provider, err.code, attempts, duration_ms)
        reason: Literal["timeout", "unavailable"] = "timeout" if isinstance(err, ProviderTimeout) else "unavailable"
        return NotDelivered(reason, err.provider, None, attempts, duration_ms)


def _outcome(err: ProviderError) -> str:
    if err.maybe_sent:
        return "maybe_sent"
    if isinstance(err, ProviderRejected):
        return "rejected"
    return "unavailable"
