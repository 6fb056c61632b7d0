"""The two routes: Okta's telephony hook and the provider's delivery status callback.

``POST /telephony/okta`` runs, inside ``TELEPHONY_DEADLINE_MS`` counted from the request's arrival:
authenticate (401 otherwise) → validate (error object) → shed if the hook cannot serve it in time →
normalize the number and apply the country/type guards → claim the ``eventId`` in KV ("sending":
from here on the code may have gone out) together with the velocity limits per user, number and
prefix → send with failover → answer, and record the answer. A repeated ``eventId`` gets the first
answer, or ``PENDING`` while (or if ever) the first is unconfirmed — never a second send, never an
error that makes Okta send the code again. Every refusal and every send is an audit event; none
carries the code, a token or a full number.

When NATS cannot be reached the hook answers with the error object: Okta then sends the code through
its own providers, and no unlimited, unrecorded send leaves from here.

Under overload the hook sheds: a request that has waited so long that it can no longer be served
before its deadline, or one beyond ``MAX_IN_FLIGHT``, gets the error object at once (after a ledger
lookup, so a retry of a request that may have sent still gets ``PENDING``) — a fast answer Okta acts
on, instead of a late one it has given up on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

import orjson
import structlog
from aiohttp import web

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
from services.telephony_hook.ledger import Claim, EventLedger, LedgerUnavailable
from services.telephony_hook.numbers import Destination, NumberRefused, mask, normalize
from services.telephony_hook.provider import MAX_CONNECTIONS
from services.telephony_hook.velocity import Velocity
from shared.bus import Bus
from shared.logging import bind_correlation, get_logger
from shared.messages import AuditEvent
from shared.settings import Settings

log = get_logger(__name__)

Outcome = Literal["success", "failure", "denied", "refused", "pending", "info", "alert"]
Severity = Literal["info", "warning", "alert"]
_OUTCOMES: dict[str, Outcome] = {"SUCCESSFUL": "success", "PENDING": "pending", "FAILED": "failure"}
ANSWER_MARGIN = 0.15  # seconds kept after the last provider attempt to build and send the answer
GUARD_MARGIN = 0.05  # the hard stop, just before the deadline
REPEAT_MARGIN = 0.1  # a repeat stops waiting for the first answer this long before the deadline
MIN_BUDGET = 0.5  # seconds a request needs (ledger, limits, one provider attempt): less left → shed
# Requests served at once; more are shed: beyond the provider connections they would only queue for one.
MAX_IN_FLIGHT = MAX_CONNECTIONS
SHED_LOOKUP = 0.2  # at most this long for the ledger lookup of a shed request
LAG_INTERVAL = 0.05  # seconds between the event-loop lag samples
ARRIVED = web.RequestKey("telephony_arrived", float)
SUCCESS_STATES = frozenset({"delivered", "sent", "completed", "read"})
FAILURE_STATES = frozenset({"failed", "undelivered", "busy", "no-answer", "canceled"})
KNOWN_STATES = (
    SUCCESS_STATES | FAILURE_STATES | {"queued", "accepted", "sending", "ringing", "in-progress", "initiated"}
)
MAX_STATUS_FIELDS = 100  # a status callback has ~20


class HookUnavailable(Exception):
    """Raised when the idempotency ledger or the limits (NATS KV) cannot be used."""


@dataclass
class RequestState:
    """Where one request stands, for the answer given when its deadline cuts it short."""

    progress: Progress = field(default_factory=Progress)
    claimed: bool = False  # the eventId is ours: its answer is recorded in the ledger
    duplicate: bool = False  # a repeat: answered from the ledger, PENDING while unknown


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


class LoadGauge:
    """How loaded the event loop is: requests in flight, and how late a timer fires (the lag).

    A request is only seen once the loop gets to it: under load it has waited about one lag already,
    so its arrival is taken as ``seen − lag`` (the middleware's time is the earliest aiohttp gives).
    """

    def __init__(self, interval: float = LAG_INTERVAL) -> None:
        self.in_flight = 0
        self.lag = 0.0
        self._interval = interval
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._due = loop.time() + self._interval
        self._timer = loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        late = max(0.0, now - self._due)
        # Rise at once, decay over a few samples: one quiet tick does not end an overload.
        self.lag = late if late > self.lag else self.lag * 0.5 + late * 0.5
        self._due = now + self._interval
        self._timer = loop.call_at(self._due, self._tick)


def arrival_middleware() -> Callable[..., Awaitable[web.StreamResponse]]:
    """Stamps each request's arrival (for deadlines) and turns any escaped exception into a 4xx-free answer."""

    @web.middleware
    async def arrival(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        request[ARRIVED] = asyncio.get_running_loop().time()
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as exc:
            # Never a 5xx or a traceback: Okta gets the error object (it then delivers the code itself).
            log.error("telephony.internal_error", error=type(exc).__name__, path=request.path)
            if request.path == "/telephony/okta":
                cause = Cause("Internal error", "internal", "hook")
                return _json(error_answer("Internal error in the telephony hook", [cause]))
            return web.Response(status=400)

    return arrival


class TelephonyHook:
    """The request handlers and everything they use; built once per app in ``app.py``."""

    def __init__(
        self,
        settings: Settings,
        *,
        auth: HookAuth,
        dispatcher: Dispatcher,
        ledger: EventLedger,
        velocity: Velocity,
        bus: Bus,
        status_tokens: Mapping[str, str],
    ) -> None:
        self.settings = settings
        self.auth = auth
        self.dispatcher = dispatcher
        self.ledger = ledger
        self.velocity = velocity
        self.bus = bus
        self.deadline = settings.telephony_deadline_ms / 1000
        self.status_tokens = dict(status_tokens)
        self.background = Background()
        self.load = LoadGauge()
        self.primary_name = dispatcher.providers[0].name
        self._allowed = tuple(settings.telephony_allowed_countries)

    # -- POST /telephony/okta -----------------------------------------------------------------

    async def okta(self, request: web.Request) -> web.Response:
        """Okta's telephony hook: always HTTP 200 with a command or an error object, or 401."""
        structlog.contextvars.clear_contextvars()
        loop = asyncio.get_running_loop()
        now = loop.time()
        arrived = min(request.get(ARRIVED, now), now) - self.load.lag
        deadline = arrived + self.deadline
        failure = await self.auth.check(request.headers)
        if failure is not None:
            metrics.AUTH_FAILURES.labels("okta", failure).inc()
            metrics.REQUESTS.labels("unknown", "unauthorized").inc()
            log.warning("telephony.unauthorized", reason=failure, remote=request.remote)
            return _json(UNAUTHORIZED, status=401)
        try:
            hook = parse_request(await request.read())
        except web.HTTPRequestEntityTooLarge:
            return self._invalid(
                RequestInvalid(
                    "Malformed request: the body is too large",
                    [Cause("The body is too large", "too_large", "body")],
                )
            )
        except RequestInvalid as exc:
            return self._invalid(exc)
        bind_correlation(event_id=hook.event_id)
        channel = hook.message.channel
        if self.load.in_flight >= MAX_IN_FLIGHT or deadline - loop.time() < MIN_BUDGET:
            answer, label = await self._shed(hook, deadline)
        else:
            self.load.in_flight += 1
            try:
                answer, label = await self._serve(hook, deadline)
            finally:
                self.load.in_flight -= 1
        metrics.request_count(channel, label).inc()
        metrics.request_latency(channel).observe(loop.time() - arrived)
        return _json(answer)

    async def _serve(self, hook: HookRequest, deadline: float) -> tuple[dict[str, Any], str]:
        state = RequestState()
        try:
            async with asyncio.timeout_at(deadline - GUARD_MARGIN):
                answer, label = await self._handle(hook, deadline, state)
        except TimeoutError:
            answer, label = self._out_of_time(hook, state)
        except HookUnavailable as exc:
            log.error("telephony.unavailable", error=str(exc))
            metrics.REFUSALS.labels("nats_unavailable").inc()
            answer, label = (
                self._failure(hook, "Delivery state unavailable", "nats_unavailable", "hook"),
                "error",
            )
        except Exception as exc:
            # Never a 5xx or a traceback to Okta; the error object lets Okta deliver the code itself —
            # unless this eventId may have been sent already: then only PENDING is safe.
            log.error("telephony.internal_error", error=type(exc).__name__)
            if state.duplicate or state.progress.sending_to is not None:
                answer, label = self._pending(hook, "internal error after the send began"), "pending"
            else:
                answer, label = (
                    self._failure(hook, "Internal error in the telephony hook", "internal", "hook"),
                    "error",
                )
        if state.claimed:
            self.background.spawn(self.ledger.record(hook.event_id, answer), "ledger.record")
        return answer, label

    async def _shed(self, hook: HookRequest, deadline: float) -> tuple[dict[str, Any], str]:
        """Too late or too busy to serve: the error object at once — unless the eventId was seen before."""
        loop = asyncio.get_running_loop()
        metrics.REFUSALS.labels("overloaded").inc()
        log.warning("telephony.shed", in_flight=self.load.in_flight, lag_ms=round(self.load.lag * 1000))
        seen: Claim | None = None
        try:
            async with asyncio.timeout(max(0.0, min(SHED_LOOKUP, deadline - GUARD_MARGIN - loop.time()))):
                seen = await self.ledger.read(hook.event_id)
        except (TimeoutError, LedgerUnavailable):
            seen = None  # nothing known: the first request cannot have sent without writing it first
        if seen is not None:
            return seen.answer or self._pending(hook, "duplicate eventId; first request unconfirmed"), "duplicate"
        answer = self._failure(hook, "The telephony hook is overloaded", "overloaded", "hook")
        return answer, "error"

    def _invalid(self, exc: RequestInvalid) -> web.Response:
        metrics.REFUSALS.labels("malformed").inc()
        metrics.REQUESTS.labels("unknown", "error").inc()
        log.info("telephony.malformed", summary=exc.summary)
        return _json(error_answer(exc.summary, exc.causes))

    async def _repeat(
        self, hook: HookRequest, claim: Claim, deadline: float, state: RequestState
    ) -> tuple[dict[str, Any], str]:
        """A repeated ``eventId``: the first answer, waiting for it while the first may still be at work.

        Whatever the first request left — an answer, ``sending``, nothing readable — the repeat never
        gets an error object unless that was the first answer: the code may already be on its way.
        """
        state.duplicate = True
        answer = claim.answer
        if answer is None and time.time() - claim.claimed_at < self.deadline + 1:
            within = deadline - REPEAT_MARGIN - asyncio.get_running_loop().time()
            try:
                answer = await self.ledger.wait_answer(hook.event_id, within)
            except Exception as exc:  # the wait is a courtesy; PENDING is always a safe answer
                log.info("telephony.duplicate.wait_failed", error=type(exc).__name__)
        log.info("telephony.duplicate", answered=answer is not None)
        if answer is None:
            # The first request is still sending, or died after its claim: it may have gone out.
            answer = self._pending(hook, "duplicate eventId; first request unconfirmed")
        return answer, "duplicate"

    async def _handle(self, hook: HookRequest, deadline: float, state: RequestState) -> tuple[dict[str, Any], str]:
        message = hook.message
        settings = self.settings
        try:
            dest = normalize(message.phone_number, settings.telephony_default_region, self._allowed)
        except NumberRefused as exc:
            answer = self._failure(hook, exc.summary, exc.reason, exc.region or "data.messageProfile.phoneNumber")
            claim = await self._settle(hook, answer)
            if not claim.first:
                return await self._repeat(hook, claim, deadline, state)
            self._refused(hook, exc.reason, mask(message.phone_number), exc.region)
            return answer, "error"
        # The claim ("sending": the code may go out from here on) and the three counters, in one round
        # trip. A repeat may thus count once more against the limits; it is never refused by them.
        claimed, limited = await asyncio.gather(
            self.ledger.claim(hook.event_id),
            self.velocity.check(hook.user.user_id or hook.user.login, dest),
            return_exceptions=True,
        )
        if isinstance(claimed, BaseException):
            raise HookUnavailable(f"event ledger: {type(claimed).__name__}") from None
        if not claimed.first:
            return await self._repeat(hook, claimed, deadline, state)
        state.claimed = True
        if isinstance(limited, BaseException):
            raise HookUnavailable(f"limits: {type(limited).__name__}") from None
        if limited is not None:
            minutes = max(1, round(limited.retry_after / 60))
            reason = f"limit_{limited.kind}"
            summary = f"Too many codes sent per {limited.kind}; try again in about {minutes} min"
            self._refused(hook, reason, dest.masked, dest.region, severity="warning")
            return self._failure(hook, summary, reason, dest.region), "error"
        job = Job(
            channel=message.channel,
            to=dest.e164,
            body=sms_body(message.msg_template, message.otp_code) if message.channel == "sms" else "",
            twiml=twiml(message.otp_code, message.locale) if message.channel == "voice" else "",
            status_callback=settings.telephony_status_callback_url,
        )
        result = await self.dispatcher.deliver(job, deadline - ANSWER_MARGIN, state.progress)
        if isinstance(result, Delivered):
            return self._delivered(hook, dest, result), result.status.lower()
        return self._not_delivered(hook, dest, result), "error"

    async def _settle(self, hook: HookRequest, answer: dict[str, Any]) -> Claim:
        try:
            return await self.ledger.settle(hook.event_id, answer)
        except LedgerUnavailable as exc:
            raise HookUnavailable(f"event ledger: {exc}") from None

    def _refused(
        self,
        hook: HookRequest,
        reason: str,
        masked: str,
        region: str | None,
        severity: Severity = "info",
    ) -> None:
        metrics.REFUSALS.labels(reason).inc()
        log.warning("telephony.refused", reason=reason, number=masked, region=region)
        self._audit(hook, "refused", "refused", severity=severity, reason=reason, number=masked, region=region)

    def _pending(self, hook: HookRequest, metadata: str) -> dict[str, Any]:
        return success_answer("PENDING", self.primary_name, hook.event_id, metadata)

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

    def _out_of_time(self, hook: HookRequest, state: RequestState) -> tuple[dict[str, Any], str]:
        progress = state.progress
        if state.duplicate:
            log.warning("telephony.deadline", duplicate=True)
            return self._pending(hook, "duplicate eventId; first request unconfirmed"), "duplicate"
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
        """The provider's delivery status callback: signature checked, status published as audit.

        Hostile bodies get a 4xx: not a form (415), not UTF-8 or not parseable (400), unsigned (401).
        """
        structlog.contextvars.clear_contextvars()
        form = await self._status_form(request)
        if isinstance(form, web.Response):
            return form
        params = list(form.items())
        signature = request.headers.get("X-Twilio-Signature", "")
        try:
            url = self.settings.telephony_status_callback_url or str(request.url)
        except ValueError:  # a Host header no URL can be made of
            return self._bad_status("bad_url")
        account = form.get("AccountSid", "")
        tokens = [self.status_tokens[account]] if account in self.status_tokens else list(self.status_tokens.values())
        if not signature or not any(valid_twilio_signature(url, params, t, signature) for t in tokens):
            metrics.AUTH_FAILURES.labels("status", "bad_signature" if signature else "missing").inc()
            log.warning("telephony.status.unauthorized", has_signature=bool(signature))
            return web.Response(status=401)
        sid = form.get("MessageSid") or form.get("CallSid") or ""
        state = (form.get("MessageStatus") or form.get("CallStatus") or "").lower()
        channel = "sms" if form.get("MessageSid") else "voice"
        error_code = form.get("ErrorCode") or None
        outcome: Outcome = "success" if state in SUCCESS_STATES else "failure" if state in FAILURE_STATES else "info"
        metrics.STATUS_CALLBACKS.labels(state if state in KNOWN_STATES else "other").inc()
        bind_correlation(sid=sid[:64])
        log.info("telephony.status", status=state[:32], error_code=error_code and error_code[:16])
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

    async def _status_form(self, request: web.Request) -> dict[str, str] | web.Response:
        """The callback's form fields (the first of each name), decoded strictly; a 4xx response otherwise."""
        if request.content_type not in ("application/x-www-form-urlencoded", "application/octet-stream"):
            return self._bad_status("not_a_form", status=415)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._bad_status("too_large", status=413)
        try:
            pairs = parse_qsl(
                body.decode("utf-8"),
                keep_blank_values=True,
                encoding="utf-8",
                errors="strict",
                max_num_fields=MAX_STATUS_FIELDS,
            )
        except (UnicodeDecodeError, ValueError):
            return self._bad_status("malformed")
        form: dict[str, str] = {}
        for name, value in pairs:
            form.setdefault(name, value)
        return form

    @staticmethod
    def _bad_status(reason: str, status: int = 400) -> web.Response:
        metrics.AUTH_FAILURES.labels("status", reason).inc()
        log.warning("telephony.status.refused", reason=reason)
        return web.Response(status=status)


async def _publish(bus: Bus, event: AuditEvent) -> None:
    await bus.publish(event, msg_id=event.event_id)


UNAUTHORIZED: dict[str, Any] = {"error": {"errorSummary": "Unauthorized", "errorCauses": []}}


def _json(payload: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")
