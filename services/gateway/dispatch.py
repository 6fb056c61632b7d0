"""The gateway's core, for HTTP and Socket Mode alike: verify, classify, publish, answer.

    gateway = Gateway(bus, Rules.from_settings(settings), RequestVerifier(signing_secret))
    reply = await gateway.handle(SlackRequest("commands", body, headers))   # HTTP routes
    reply = await gateway.handle_socket("slash_commands", payload)          # Socket Mode envelopes

Every accepted request becomes exactly one JetStream message whose ``Nats-Msg-Id`` derives from
Slack's ids, and Slack is answered only once JetStream has it. If NATS is unreachable the answer
still comes inside Slack's 3 s (``PUBLISH_DEADLINE``): the decision's ``unavailable`` reply.
Nothing is ever answered with a 5xx.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from services.gateway import metrics, views
from services.gateway.handlers import (
    SLASH_COMMAND_FIELDS,
    Answer,
    Decision,
    Publish,
    Reply,
    Rules,
    on_block_suggestion,
    on_event,
    on_interaction,
    on_slash_command,
)
from services.gateway.slack_request import (
    MalformedRequest,
    RequestVerifier,
    SignatureRejected,
    SlackRequest,
    is_ssl_check,
    parse_form,
    parse_json,
    parse_payload,
)
from shared.bus import Bus, BusUnavailable
from shared.logging import bind_correlation, get_logger, new_unit_of_work
from shared.messages import Command, Encoded, SearchUsersReply

log = get_logger(__name__)

PUBLISH_DEADLINE = 2.0  # seconds from the start of a publish to giving up (Slack allows 3 s in all)
RECONNECT_GRACE = 1.0  # how long a request waits for a dropped NATS connection to come back
SEARCH_DEADLINE = 2.5  # the user search's request/reply deadline
OPTIONS_TTL = 10.0
OPTIONS_CACHE_SIZE = 2048

ROUTES = ("commands", "interactions", "options", "events")
UNAUTHORIZED = Reply(401, {"ok": False, "error": "invalid_signature"})

# Socket Mode envelope type → the HTTP route whose payloads it carries.
SOCKET_ROUTES = {"slash_commands": "commands", "interactive": "interactions", "events_api": "events"}


class OptionsCache:
    """Recent user-search menus per agent and query: typing does not hammer Okta. Bounded, expiring."""

    def __init__(
        self,
        ttl: float = OPTIONS_TTL,
        max_entries: int = OPTIONS_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, dict[str, Any]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, agent_id: str, query: str) -> dict[str, Any] | None:
        key = (agent_id, query.casefold())
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self.clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, agent_id: str, query: str, menu: dict[str, Any]) -> None:
        key = (agent_id, query.casefold())
        self._entries[key] = (self.clock() + self.ttl, menu)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class Gateway:
    """Turns verified Slack requests into commands on the bus and answers Slack."""

    def __init__(
        self,
        bus: Bus,
        rules: Rules,
        verifier: RequestVerifier,
        *,
        cache: OptionsCache | None = None,
        publish_deadline: float = PUBLISH_DEADLINE,
        reconnect_grace: float = RECONNECT_GRACE,
        search_deadline: float = SEARCH_DEADLINE,
    ) -> None:
        self.bus = bus
        self.rules = rules
        self.verifier = verifier
        self.cache = cache or OptionsCache()
        self.publish_deadline = publish_deadline
        self.reconnect_grace = min(reconnect_grace, publish_deadline)
        self.search_deadline = search_deadline
        # Pre-bound metric children: the hot path does no label lookups.
        self._requests = {
            (route, outcome): metrics.REQUESTS.labels(route, outcome)
            for route in ROUTES
            for outcome in (
                "accepted",
                "duplicate",
                "answered",
                "ignored",
                "refused",
                "invalid",
                "unauthorized",
                "too_large",
                "unavailable",
                "error",
            )
        }
        self._latency = {route: metrics.ACK_LATENCY.labels(route) for route in ROUTES}

    # -- entry points ---------------------------------------------------------------------------

    def record(self, route: str, outcome: str, started: float) -> None:
        """Count one answered request and its ack latency (``started`` from ``time.perf_counter``)."""
        self._requests[(route, outcome)].inc()
        self._latency[route].observe(time.perf_counter() - started)

    async def handle(self, request: SlackRequest, started: float | None = None) -> Reply:
        """One HTTP request on ``request.route``: the reply for Slack (never a 5xx)."""
        started = time.perf_counter() if started is None else started
        new_unit_of_work()
        reply, outcome = await self._handle(request)
        self.record(request.route, outcome, started)
        return reply

    async def handle_socket(self, envelope_type: str, payload: dict[str, Any]) -> Reply:
        """One Socket Mode envelope (already authenticated by the websocket): the ack payload."""
        started = time.perf_counter()
        new_unit_of_work()
        route = SOCKET_ROUTES.get(envelope_type)
        if route is None:
            return Reply()
        if route == "interactions" and payload.get("type") == "block_suggestion":
            route = "options"
        elif route == "commands":  # a form as a dict: its values as the strings an HTTP form has
            payload = {str(k): v if isinstance(v, str) else str(v) for k, v in payload.items()}
        reply, outcome = await self._guarded(route, payload)
        self.record(route, outcome, started)
        return reply

    # -- routing --------------------------------------------------------------------------------

    async def _handle(self, request: SlackRequest) -> tuple[Reply, str]:
        if request.route == "commands" and is_ssl_check(request.body):
            return Reply(), "answered"
        try:
            self.verifier.verify(request)
        except SignatureRejected as exc:
            metrics.REJECTIONS.labels(exc.reason).inc()
            log.warning("gateway.signature_rejected", route=request.route, reason=exc.reason, retry=request.retry_num)
            return UNAUTHORIZED, "unauthorized"
        try:
            if request.route == "commands":
                payload: dict[str, Any] = parse_form(request.body, keep=SLASH_COMMAND_FIELDS)
            elif request.route == "events":
                payload = parse_json(request.body)
            else:
                payload = parse_payload(request.body)
        except MalformedRequest as exc:
            return self._malformed(request.route, exc)
        return await self._guarded(request.route, payload)

    async def _guarded(self, route: str, payload: dict[str, Any]) -> tuple[Reply, str]:
        try:
            return await self._dispatch(route, payload)
        except MalformedRequest as exc:
            return self._malformed(route, exc)
        except Exception:
            # A bug, not Slack's fault: logged with its traceback, answered without a 5xx.
            log.exception("gateway.failed", route=route)
            return Reply(400, {"ok": False, "error": "unprocessable"}), "error"

    async def _dispatch(self, route: str, payload: dict[str, Any]) -> tuple[Reply, str]:
        if route == "commands":  # a str → str form (parse_form, or handle_socket's)
            return await self.execute(on_slash_command(payload, self.rules))
        if route == "events":
            return await self.execute(on_event(payload))
        if payload.get("type") == "block_suggestion":
            return await self.options(payload)
        return await self.execute(on_interaction(payload, self.rules))

    def _malformed(self, route: str, exc: MalformedRequest) -> tuple[Reply, str]:
        metrics.REJECTIONS.labels(exc.reason).inc()
        log.info("gateway.malformed", route=route, reason=exc.reason)
        return Reply(400, {"ok": False, "error": exc.reason}), "invalid"

    # -- publishing -----------------------------------------------------------------------------

    async def execute(self, decision: Decision) -> tuple[Reply, str]:
        if isinstance(decision, Answer):
            if decision.outcome in ("refused", "invalid"):
                metrics.REJECTIONS.labels(decision.reason).inc()
                log.info(f"gateway.{decision.outcome}", reason=decision.reason)
            return decision.reply, decision.outcome
        return await self._publish(decision)

    async def _publish(self, decision: Publish) -> tuple[Reply, str]:
        command = decision.command
        if decision.case_id:
            bind_correlation(case_id=decision.case_id)
        try:
            fresh = await self.publish(command, decision.msg_id)
        except Exception as exc:  # BusUnavailable, or any JetStream API error: Slack still gets an answer
            metrics.PUBLISH_FAILURES.labels(command.subject()).inc()
            log.warning("gateway.publish_failed", subject=command.subject(), error=type(exc).__name__)
            return decision.unavailable, "unavailable"
        return decision.reply, "accepted" if fresh else "duplicate"

    async def publish(self, command: Command | Encoded, msg_id: str) -> bool:
        """Publish within ``publish_deadline``; while NATS reconnects, wait up to ``reconnect_grace``.

        Returns False for a duplicate (the same Slack ids within JetStream's window).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_deadline
        grace_end = loop.time() + self.reconnect_grace
        while not self.bus.is_connected:
            # Publishing now would only queue in the client and might reach the worker long after
            # Slack was told "unavailable"; a blip shorter than the grace is ridden out instead.
            if loop.time() >= grace_end:
                raise BusUnavailable("NATS is not connected")
            await asyncio.sleep(0.05)
        return await self.bus.publish(command, msg_id=msg_id, timeout=max(0.05, deadline - loop.time()))

    # -- options --------------------------------------------------------------------------------

    async def options(self, payload: dict[str, Any]) -> tuple[Reply, str]:
        decision = on_block_suggestion(payload, self.rules)
        if isinstance(decision, Answer):
            metrics.OPTIONS.labels(decision.outcome if decision.outcome == "refused" else "empty").inc()
            if decision.outcome == "refused":
                metrics.REJECTIONS.labels(decision.reason).inc()
                log.info("gateway.refused", reason=decision.reason)
            return decision.reply, decision.outcome
        agent_id = decision.agent.user_id
        cached = self.cache.get(agent_id, decision.query)
        if cached is not None:
            metrics.OPTIONS.labels("cache").inc()
            return Reply(body=cached), "answered"
        try:
            if not self.bus.is_connected:
                raise BusUnavailable("NATS is not connected")
            reply = await self.bus.request(decision, SearchUsersReply, timeout=self.search_deadline)
        except Exception as exc:
            metrics.OPTIONS.labels("unavailable").inc()
            metrics.PUBLISH_FAILURES.labels(decision.SUBJECT).inc()
            log.warning("gateway.search_unavailable", error=type(exc).__name__)
            menu = views.single_option(views.SEARCH_UNAVAILABLE, views.UNAVAILABLE_OPTION_VALUE)
            return Reply(body=menu), "unavailable"
        if reply.error:
            metrics.OPTIONS.labels("search_error").inc()
            menu = views.single_option(f"search failed: {reply.error}", views.UNAVAILABLE_OPTION_VALUE)
            return Reply(body=menu), "answered"
        menu = views.options_payload(reply.options)
        self.cache.put(agent_id, decision.query, menu)
        metrics.OPTIONS.labels("search").inc()
        return Reply(body=menu), "answered"
