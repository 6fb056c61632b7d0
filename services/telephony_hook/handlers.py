"""The two routes: Okta's telephony hook and the provider's delivery status callback.

``POST /telephony/okta`` runs, inside ``TELEPHONY_DEADLINE_MS``:
authenticate (401 otherwise) → validate (error object) → claim the ``eventId`` in KV (a repeat gets
the first answer, never a second send) → normalize the number and apply the country/type guards →
velocity limits per user, number and prefix (shared counters in KV) → send with failover → answer.
Every refusal and every send is an audit event; none carries the code, a token or a full number.

When NATS cannot be reached the hook answers with the error object: Okta then sends the code through
its own providers, and no unlimited, unrecorded send leaves from here.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import zlib
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import structlog
from aiohttp import web
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.telephony_hook import metrics
from services.telephony_hook.auth import HookAuth, valid_twilio_signature
from services.telephony_hook.content import sms_body, twiml
from services.telephony_hook.contract import (
    Cause,
    HookRequest,
    RequestInvalid,
    error_answer,
    parse_request,
    success_answer,
)
from services.telephony_hook.delivery import Delivered, Dispatcher, Job, NotDelivered, Progress
from services.telephony_hook.numbers import Destination, NumberRefused, mask, normalize
from shared.bus import Bus
from shared.limits import LimitDecision, RateLimiter
from shared.logging import bind_correlation, get_logger
from shared.messages import AuditEvent
from shared.settings import Settings

log = get_logger(__name__)

Outcome = Literal["success", "failure", "denied", "refused", "pending", "info", "alert"]
Severity = Literal["info", "warning", "alert"]
_OUTCOMES: dict[str, Outcome] = {"SUCCESSFUL": "success", "PENDING": "pending", "FAILED": "failure"}
LIMIT_LOCK_STRIPES = 64
ANSWER_MARGIN = 0.15  # seconds kept after the last provider attempt to build and send the answer
GUARD_MARGIN = 0.05  # the hard stop, just before the deadline
SUCCESS_STATES = frozenset({"delivered", "sent", "completed", "read"})
FAILURE_STATES = frozenset({"failed", "undelivered", "busy", "no-answer", "canceled"})
KNOWN_STATES = (
    SUCCESS_STATES | FAILURE_STATES | {"queued", "accepted", "sending", "ringing", "in-progress", "initiated"}
)


class HookUnavailable(Exception):
    """Raised when the idempotency ledger or the limits (NATS KV) cannot be used."""


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming an ``eventId``: ours to send, or someone's earlier answer (or work)."""

    first: bool
    answer: dict[str, Any] | None = None
    claimed_at: float | None = None


class EventLedger:
    """``eventId`` → the answer given, in a KV bucket whose entries live 10 minutes."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @staticmethod
    def key(event_id: str) -> str:
        return "e." + hashlib.sha256(event_id.encode()).hexdigest()[:40]

    async def claim(self, event_id: str) -> Claim:
        key = self.key(event_id)
        marker = orjson.dumps({"state": "in_flight", "at": time.time()})
        try:
            await self.kv.create(key, marker)
            return Claim(first=True)
        except KeyWrongLastSequenceError:
            pass
        except Exception as exc:
            raise HookUnavailable(f"event ledger: {type(exc).__name__}") from None
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return Claim(first=False)
        except Exception as exc:
            raise HookUnavailable(f"event ledger: {type(exc).__name__}") from None
        return self._claim_from(entry.value)

    @staticmethod
    def _claim_from(value: bytes | None) -> Claim:
        try:
            data = orjson.loads(value or b"{}")
        except orjson.JSONDecodeError:
            data = {}
        if data.get("state") == "done" and isinstance(data.get("answer"), dict):
            return Claim(first=False, answer=data["answer"])
        return Claim(first=False, claimed_at=float(data.get("at") or 0.0))

    async def record(self, event_id: str, answer: dict[str, Any]) -> None:
        await self.kv.put(self.key(event_id), orjson.dumps({"state": "done", "answer": answer}))

    async def wait_answer(self, event_id: str, within: float) -> dict[str, Any] | None:
        """The first request's answer, as soon as it is recorded, or ``None`` after ``within`` seconds."""
        if within <= 0:
            return None
        watcher = await self.kv.watch(self.key(event_id))
        try:
            async with asyncio.timeout(within):
                async for entry in watcher:
                    if entry is not None and (claim := self._claim_from(entry.value)).answer is not None:
                        return claim.answer
        except TimeoutError:
            return None
        finally:
            await watcher.stop()
        return None


class Background:
    """Fire-and-forget work (audit publishes, ledger writes) that must not delay an answer."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        async def guarded() -> None:
            try:
                await coro
            except Exception as exc:
                log.warning("telephony.background_failed", what=what, error=type(exc).__name__)

        task = asyncio.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, grace: float = 5.0) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)


@dataclass
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


class TelephonyHook:
    """The request handlers and everything they use; built once per app in ``app.py``."""

    def __init__(
        self,
        settings: Settings,
        *,
        auth: HookAuth,
        dispatcher: Dispatcher,
        ledger: EventLedger,
        limiter: RateLimiter,
        bus: Bus,
        status_tokens: Mapping[str, str],
    ) -> None:
        self.settings = settings
        self.auth = auth
        self.dispatcher = dispatcher
        self.ledger = ledger
        self.limiter = limiter
        self.bus = bus
        self.limits = Limits.from_settings(settings)
        self.deadline = settings.telephony_deadline_ms / 1000
        self.status_tokens = dict(status_tokens)
        self.background = Background()
        self.primary_name = dispatcher.providers[0].name
        self._key_locks = [asyncio.Lock() for _ in range(LIMIT_LOCK_STRIPES)]

    # -- POST /telephony/okta -----------------------------------------------------------------

    async def okta(self, request: web.Request) -> web.Response:
        """Okta's telephony hook: always HTTP 200 with a command or an error object, or 401."""
        structlog.contextvars.clear_contextvars()
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.deadline
        failure = await self.auth.check(request.headers)
        if failure is not None:
            metrics.AUTH_FAILURES.labels("okta", failure).inc()
            metrics.REQUESTS.labels("unknown", "unauthorized").inc()
            log.warning("telephony.unauthorized", reason=failure, remote=request.remote)
            return _json({"error": {"errorSummary": "Unauthorized", "errorCauses": []}}, status=401)
        try:
            hook = parse_request(await request.read())
        except web.HTTPRequestEntityTooLarge:
            return self._invalid(
                RequestInvalid(
                    "Malformed request: the body is too large",
                    [Cause("The body is too large", "too_large", "body")],
                ),
                started,
            )
        except RequestInvalid as exc:
            return self._invalid(exc, started)
        bind_correlation(event_id=hook.event_id)
        channel = hook.message.channel
        progress = Progress()
        claimed = False
        try:
            async with asyncio.timeout_at(deadline - GUARD_MARGIN):
                claim = await self.ledger.claim(hook.event_id)
                if not claim.first:
                    answer, label = await self._repeat(hook, claim, deadline)
                    metrics.REQUESTS.labels(channel, label).inc()
                    metrics.REQUEST_LATENCY.labels(channel).observe(loop.time() - started)
                    return _json(answer)
                claimed = True
                answer, label = await self._handle(hook, deadline, progress)
        except TimeoutError:
            answer, label = self._out_of_time(hook, progress)
        except HookUnavailable as exc:
            log.error("telephony.unavailable", error=str(exc))
            metrics.REFUSALS.labels("nats_unavailable").inc()
            answer, label = (
                self._failure(hook, "Delivery state unavailable", "nats_unavailable", "hook"),
                "error",
            )
        except Exception as exc:
            # Never a 5xx or a traceback to Okta; the error object lets Okta deliver the code itself.
            log.error("telephony.internal_error", error=type(exc).__name__)
            answer, label = (
                self._failure(hook, "Internal error in the telephony hook", "internal", "hook"),
                "error",
            )
        if claimed:
            self.background.spawn(self.ledger.record(hook.event_id, answer), "ledger.record")
        metrics.REQUESTS.labels(channel, label).inc()
        metrics.REQUEST_LATENCY.labels(channel).observe(loop.time() - started)
        return _json(answer)

    def _invalid(self, exc: RequestInvalid, started: float) -> web.Response:
        metrics.REFUSALS.labels("malformed").inc()
        metrics.REQUESTS.labels("unknown", "error").inc()
        log.info("telephony.malformed", summary=exc.summary)
        return _json(error_answer(exc.summary, exc.causes))

    async def _repeat(self, hook: HookRequest, claim: Claim, deadline: float) -> tuple[dict[str, Any], str]:
        """A repeated ``eventId``: the first answer, waiting for it while the first is still at work."""
        answer = claim.answer
        if answer is None and claim.claimed_at is not None and time.time() - claim.claimed_at < self.deadline + 1:
            answer = await self.ledger.wait_answer(
                hook.event_id, deadline - GUARD_MARGIN - asyncio.get_running_loop().time()
            )
        log.info("telephony.duplicate", answered=answer is not None)
        if answer is None:
            # The first request is still sending (or died mid-send): it may have gone out.
            answer = success_answer(
                "PENDING", self.primary_name, hook.event_id, "duplicate eventId; first request unconfirmed"
            )
        return answer, "duplicate"

    async def _handle(self, hook: HookRequest, deadline: float, progress: Progress) -> tuple[dict[str, Any], str]:
        message = hook.message
        settings = self.settings
        try:
            dest = normalize(
                message.phone_number, settings.telephony_default_region, settings.telephony_allowed_countries
            )
        except NumberRefused as exc:
            return self._refuse(hook, exc.reason, exc.summary, exc.region, mask(message.phone_number)), "error"
        if (refusal := await self._over_limit(hook, dest)) is not None:
            return refusal, "error"
        job = Job(
            channel=message.channel,
            to=dest.e164,
            body=sms_body(message.msg_template, message.otp_code) if message.channel == "sms" else "",
            twiml=twiml(message.otp_code, message.locale) if message.channel == "voice" else "",
            status_callback=settings.telephony_status_callback_url,
        )
        result = await self.dispatcher.deliver(job, deadline - ANSWER_MARGIN, progress)
        if isinstance(result, Delivered):
            return self._delivered(hook, dest, result), result.status.lower()
        return self._not_delivered(hook, dest, result), "error"

    async def _over_limit(self, hook: HookRequest, dest: Destination) -> dict[str, Any] | None:
        user_key = hook.user.user_id or hook.user.login
        checks = [
            ("user", f"user:{user_key}", self.limits.per_user) if user_key else None,
            ("number", f"number:{dest.e164}", self.limits.per_number),
            ("prefix", f"prefix:{dest.prefix}", self.limits.per_prefix),
        ]
        active = [c for c in checks if c is not None]

        async def hit(key: str, limit: int) -> LimitDecision:
            # One hit per key at a time in this process: the counter is a compare-and-swap in KV,
            # and a hot key (a busy prefix) would otherwise burn its retries on our own requests.
            async with self._key_locks[zlib.crc32(key.encode()) % len(self._key_locks)]:
                return await self.limiter.hit(key, limit=limit, window=self.limits.window)

        try:
            # The three counters are independent: check them concurrently (one KV round trip each, not
            # three in a row). A refused send may then still count against the other keys — for
            # toll-fraud limits that errs on the safe side.
            decisions = await asyncio.gather(*(hit(key, limit) for _, key, limit in active))
        except Exception as exc:
            raise HookUnavailable(f"limits: {type(exc).__name__}") from None
        for (kind, _key, _limit), decision in zip(active, decisions, strict=True):
            if not decision.allowed:
                minutes = max(1, round(decision.retry_after / 60))
                summary = f"Too many codes sent per {kind}; try again in about {minutes} min"
                return self._refuse(hook, f"limit_{kind}", summary, dest.region, dest.masked, severity="warning")
        return None

    def _refuse(
        self,
        hook: HookRequest,
        reason: str,
        summary: str,
        region: str | None,
        masked: str,
        severity: Severity = "info",
    ) -> dict[str, Any]:
        metrics.REFUSALS.labels(reason).inc()
        log.warning("telephony.refused", reason=reason, number=masked, region=region)
        self._audit(
            hook,
            "refused",
            "refused",
            severity=severity,
            reason=reason,
            number=masked,
            region=region,
        )
        return self._failure(hook, summary, reason, region or "data.messageProfile.phoneNumber")

    def _delivered(self, hook: HookRequest, dest: Destination, result: Delivered) -> dict[str, Any]:
        metadata = f"duration={result.duration_ms}ms; attempts={result.attempts}"
        if result.provider_status:
            metadata += f"; providerStatus={result.provider_status}"
        else:
            metadata += "; unconfirmed: the provider did not answer after the request was sent"
        outcome = _OUTCOMES[result.status]
        log.info(
            "telephony.sent",
            status=result.status,
            provider=result.provider,
            sid=result.sid,
            number=dest.masked,
            attempts=result.attempts,
            duration_ms=result.duration_ms,
        )
        self._audit(
            hook,
            {"SUCCESSFUL": "sent", "PENDING": "pending", "FAILED": "failed"}[result.status],
            outcome,
            provider=result.provider,
            sid=result.sid,
            number=dest.masked,
            region=dest.region,
            attempts=result.attempts,
            duration_ms=result.duration_ms,
        )
        # Without a sid (the provider never answered) our eventId is the only reference there is.
        return success_answer(result.status, result.provider, result.sid or hook.event_id, metadata)

    def _not_delivered(self, hook: HookRequest, dest: Destination, result: NotDelivered) -> dict[str, Any]:
        reason = f"provider_{result.reason}" + (f"_{result.code}" if result.code else "")
        summary = {
            "rejected": f"Provider refused the message (code {result.code})",
            "unavailable": "Provider unavailable",
            "timeout": "Provider did not answer in time",
            "no_time": "No time left to reach a provider",
        }[result.reason]
        metrics.REFUSALS.labels(f"provider_{result.reason}").inc()
        log.warning(
            "telephony.not_delivered",
            reason=reason,
            provider=result.provider,
            number=dest.masked,
            attempts=result.attempts,
            duration_ms=result.duration_ms,
        )
        self._audit(
            hook,
            "not_delivered",
            "failure",
            severity="warning",
            reason=reason,
            provider=result.provider,
            code=result.code,
            number=dest.masked,
            region=dest.region,
            attempts=result.attempts,
        )
        return self._failure(hook, summary, reason, dest.region)

    def _out_of_time(self, hook: HookRequest, progress: Progress) -> tuple[dict[str, Any], str]:
        if progress.sending_to is not None:
            log.warning("telephony.deadline", sending=True, provider=progress.sending_to)
            self._audit(hook, "pending", "pending", provider=progress.sending_to, reason="deadline")
            metadata = f"deadline reached while sending; attempts={progress.attempts}"
            return success_answer("PENDING", progress.sending_to, hook.event_id, metadata), "pending"
        log.warning("telephony.deadline", sending=False)
        metrics.REFUSALS.labels("deadline").inc()
        return self._failure(hook, "No time left to reach a provider", "deadline", "hook"), "error"

    def _failure(self, hook: HookRequest, cause: str, reason: str, location: str) -> dict[str, Any]:
        what = "SMS" if hook.message.channel == "sms" else "voice call"
        return error_answer(f"Failed to deliver {what} OTP to {hook.user_label}", [Cause(cause, reason, location)])

    def _audit(
        self, hook: HookRequest, verb: str, outcome: Outcome, severity: Severity = "info", **details: Any
    ) -> None:
        event = AuditEvent(
            category="telephony",
            action=f"{hook.message.channel}.{verb}",
            outcome=outcome,
            actor="okta",
            target=hook.user.login or hook.user.user_id,
            case_id=None,
            severity=severity,
            details={"event_id": hook.event_id, "request_type": hook.request_type, **details},
        )
        self.background.spawn(_publish(self.bus, event), "audit")

    # -- POST /telephony/status ---------------------------------------------------------------

    async def status(self, request: web.Request) -> web.Response:
        """The provider's delivery status callback: signature checked, status published as audit."""
        structlog.contextvars.clear_contextvars()
        form = await request.post()
        params = [(k, str(v)) for k, v in form.items()]
        signature = request.headers.get("X-Twilio-Signature", "")
        url = self.settings.telephony_status_callback_url or str(request.url)
        account = str(form.get("AccountSid", ""))
        tokens = [self.status_tokens[account]] if account in self.status_tokens else list(self.status_tokens.values())
        if not signature or not any(valid_twilio_signature(url, params, t, signature) for t in tokens):
            metrics.AUTH_FAILURES.labels("status", "bad_signature" if signature else "missing").inc()
            log.warning("telephony.status.unauthorized", has_signature=bool(signature))
            return web.Response(status=401)
        sid = str(form.get("MessageSid") or form.get("CallSid") or "")
        state = str(form.get("MessageStatus") or form.get("CallStatus") or "").lower()
        channel = "sms" if form.get("MessageSid") else "voice"
        error_code = str(form.get("ErrorCode") or "") or None
        outcome: Outcome = "success" if state in SUCCESS_STATES else "failure" if state in FAILURE_STATES else "info"
        metrics.STATUS_CALLBACKS.labels(state if state in KNOWN_STATES else "other").inc()
        bind_correlation(sid=sid)
        log.info("telephony.status", status=state, error_code=error_code)
        event = AuditEvent(
            category="telephony",
            action=f"{channel}.delivery",
            outcome=outcome,
            actor="provider",
            target=None,
            case_id=None,
            severity="warning" if outcome == "failure" else "info",
            details={"sid": sid, "status": state, "error_code": error_code, "account_sid": account or None},
        )
        self.background.spawn(_publish(self.bus, event), "audit")
        return web.Response(status=204)


async def _publish(bus: Bus, event: AuditEvent) -> None:
    await bus.publish(event, msg_id=event.event_id)


def _json(payload: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")
