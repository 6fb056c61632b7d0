"""The two consumers of the audit stream: ticket notes and the webhook. Each handler takes one event.

    tickets = TicketNotes(bus, await TicketNotes.bucket(bus), servicenow=snow, jira=None)
    await bus.consume(AUDIT_STREAM, "audit-sink-tickets", tickets.on_event, deliver_new=True)
    hook = WebhookSink(WebhookClient(url, secret))
    await bus.consume(AUDIT_STREAM, "audit-sink-webhook", hook.on_event, deliver_new=True)

A failure never blocks a case: these run on their own durables, beside the case path. A temporary
failure (timeout, 5xx, 429) naks the event with a delay — the server's ``Retry-After`` when it gave
one, else an exponential backoff — until ``max_deliver`` deliveries, then gives up. A permanent one
(no such ticket, bad credentials, a refused body) is logged and acked at once; for a ticket note it
is also recorded as a ``ticket.note_failed`` audit event (category ``case``), which the responder can
show the agent.

Each note is recorded in KV (``audit_sink``, key ``note.<event_id>``): ``writing`` before the call,
``written`` before the event is acked, so a redelivered event writes no second note. A delivery that
finds ``writing`` (the call timed out or the sink died: the ticket system may have the note) looks
for the note in the ticket first, and writes it only if it is not there. The closing note sums up the case from a record
per case (``case.<case_id>``) that the verified and action events of the case fill in.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import orjson
from nats.js.errors import APIError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.audit_sink.errors import PermanentFailure, TemporaryFailure
from services.audit_sink.jira import JiraClient
from services.audit_sink.notes import CaseSummary, Ticket, note_text, summarize, ticket_of, wants_note
from services.audit_sink.servicenow import ServiceNowClient
from services.audit_sink.webhook import WebhookClient
from shared.bus import Bus, Delivery, RetryLater, kv_read
from shared.limits import kv_key
from shared.logging import get_logger
from shared.messages import Actor, AuditEvent, Message, TicketNoteFailed

log = get_logger(__name__)

BUCKET = "audit_sink"
RECORD_TTL = 30 * 24 * 3600  # longer than any retry goes on
MAX_DELIVER = 100  # with the backoff below: about a day of trying before giving up
BACKOFF_BASE = 2.0
MAX_BACKOFF = 900.0
NOTE_FAILED = "ticket.note_failed"
WRITING = "writing"  # a note record while its call is out: the ticket system may have it or not


def backoff(delivered: int, retry_after: float | None, base: float = BACKOFF_BASE) -> float:
    """Seconds before the next try: what the server asked for, else ``base`` doubling per delivery
    (capped at 15 minutes), with up to 10 % jitter so that replicas do not retry in step."""
    doubling = min(base * 2 ** max(delivered - 1, 0), MAX_BACKOFF)
    delay = max(retry_after, 0.1) if retry_after is not None else doubling
    return delay * (1 + random.uniform(0, 0.1))


class CaseLocks:
    """One asyncio lock per case in this process: a case's notes go out one at a time, in order."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def run(self, key: str, work: Callable[[], Awaitable[None]]) -> None:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                await work()
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class TicketNotes:
    """Writes a note into the case's ticket for the events that matter (``notes.NOTE_ACTIONS``)."""

    def __init__(
        self,
        bus: Bus,
        kv: KeyValue,
        *,
        servicenow: ServiceNowClient | None = None,
        jira: JiraClient | None = None,
        max_deliver: int = MAX_DELIVER,
        backoff_base: float = BACKOFF_BASE,
    ) -> None:
        self.bus = bus
        self.kv = kv
        self.servicenow = servicenow
        self.jira = jira
        self.max_deliver = max_deliver
        self.backoff_base = backoff_base
        self.locks = CaseLocks()

    @staticmethod
    async def bucket(bus: Bus) -> KeyValue:
        return await bus.key_value(BUCKET, ttl=RECORD_TTL)

    async def on_event(self, message: Message, delivery: Delivery) -> None:
        """Consumer handler of ``audit.>`` (durable ``audit-sink-tickets``)."""
        if not isinstance(message, AuditEvent) or not wants_note(message):
            return
        ticket = ticket_of(message)
        if ticket is None:
            return
        if self._client(ticket) is None:
            log.debug("audit_sink.note_skipped", system=ticket.system, why="not configured")
            return
        await self.locks.run(message.case_id or message.event_id, lambda: self._note(message, ticket, delivery))

    def _client(self, ticket: Ticket) -> ServiceNowClient | JiraClient | None:
        return self.servicenow if ticket.system == "servicenow" else self.jira

    async def _note(self, event: AuditEvent, ticket: Ticket, delivery: Delivery) -> None:
        key = f"note.{event.event_id}"
        found = await kv_read(self.kv, key)
        earlier = _status(found[0]) if found is not None else None
        if earlier is not None and earlier != WRITING:
            return  # written (or given up on) by an earlier delivery
        summary = await self._remember(event)
        text = note_text(event, summary)
        try:
            if earlier == WRITING and await self._there(ticket, text):
                # An earlier attempt reached the ticket system and its answer was lost (a timeout):
                # the note is there, so it is not written twice.
                await self.kv.put(key, _record("written", ticket, ref="found"))
                log.info("audit_sink.note_found", system=ticket.system, ticket=ticket.id, event_action=event.action)
                return
            if earlier is None:
                await self.kv.put(key, _record(WRITING, ticket))
            try:
                ref = await self._write(ticket, text)
            except TemporaryFailure as exc:
                if exc.status is not None:  # an answer (429, 5xx): nothing was written, nothing to look for
                    await self.kv.delete(key)
                raise
        except PermanentFailure as exc:
            await self._failed(event, ticket, key, exc.status, exc.reason, exc.message)
            return
        except TemporaryFailure as exc:
            if delivery.num_delivered >= self.max_deliver:
                await self._failed(event, ticket, key, exc.status, "gave_up", exc.message)
                return
            delay = backoff(delivery.num_delivered, exc.retry_after, self.backoff_base)
            log.info(
                "audit_sink.note_retry",
                system=ticket.system,
                ticket=ticket.id,
                status=exc.status,
                error=exc.message,
                retry_in=round(delay, 2),
                deliveries=delivery.num_delivered,
            )
            raise RetryLater(delay, exc.message) from None
        await self.kv.put(key, _record("written", ticket, ref=ref))
        log.info("audit_sink.note_written", system=ticket.system, ticket=ticket.id, event_action=event.action)

    async def _there(self, ticket: Ticket, text: str) -> bool:
        if ticket.system == "servicenow":
            assert self.servicenow is not None
            return await self.servicenow.has_work_note(ticket.id, text)
        assert self.jira is not None
        return await self.jira.has_comment(ticket.id, text)

    async def _write(self, ticket: Ticket, text: str) -> str:
        if ticket.system == "servicenow":
            assert self.servicenow is not None
            record = await self.servicenow.add_work_note(ticket.id, text)
            return f"{record.table}/{record.sys_id}"
        assert self.jira is not None
        return await self.jira.add_comment(ticket.id, text)

    async def _failed(
        self, event: AuditEvent, ticket: Ticket, key: str, status: int | None, reason: str, error: str
    ) -> None:
        """Give up on this note: log it, record it, and publish ``ticket.note_failed`` for the agent."""
        log.warning(
            "audit_sink.note_failed",
            system=ticket.system,
            ticket=ticket.id,
            status=status,
            reason=reason,
            error=error,
            event_action=event.action,
        )
        failed = AuditEvent(
            category="case",
            action=NOTE_FAILED,
            outcome="failure",
            severity="warning",
            actor=event.actor,
            target=event.target,
            case_id=event.case_id,
            details={
                "ticket": ticket.id,
                "system": ticket.system,
                "status": status,
                "reason": reason,
                "for_event": event.event_id,
                "for_action": event.action,
                "agent_email": event.details.get("agent_email"),
            },
        )
        await self.bus.publish(failed, msg_id=f"{event.event_id}:{NOTE_FAILED}")
        if event.case_id and event.actor:  # the agent sees it in the case's modal, if still open
            warn = TicketNoteFailed(
                agent=Actor(user_id=event.actor), case_id=event.case_id, ticket=ticket.id, reason=reason
            )
            await self.bus.publish(warn, msg_id=f"{event.event_id}:{NOTE_FAILED}:agent")
        await self.kv.put(key, _record("failed", ticket, reason=reason))

    async def _remember(self, event: AuditEvent) -> CaseSummary:
        """The case's summary before ``event``; a verified or action event is added to it (once)."""
        if event.case_id is None:
            return CaseSummary()
        key = f"case.{kv_key(event.case_id)}"
        for _ in range(5):
            found = await kv_read(self.kv, key)
            stored = orjson.loads(found[0]) if found else {"verified": None, "actions": {}}
            before = CaseSummary(verified=stored["verified"], actions=list(stored["actions"].values()))
            after = summarize(before, event)
            if after == before or event.event_id in stored["actions"]:
                return before
            if after.verified != before.verified:
                stored["verified"] = after.verified
            if len(after.actions) > len(before.actions):
                stored["actions"][event.event_id] = after.actions[-1]
            value = orjson.dumps(stored)
            try:
                if found is None:
                    await self.kv.create(key, value)
                else:
                    await self.kv.update(key, value, last=found[1])
            except (KeyWrongLastSequenceError, APIError):
                continue  # another replica wrote the summary meanwhile: read it again
            return before
        return CaseSummary()


class WebhookSink:
    """POSTs every audit event to ``AUDIT_WEBHOOK_URL``, at least once."""

    def __init__(
        self, client: WebhookClient, *, max_deliver: int = MAX_DELIVER, backoff_base: float = BACKOFF_BASE
    ) -> None:
        self.client = client
        self.max_deliver = max_deliver
        self.backoff_base = backoff_base

    async def on_event(self, message: Message, delivery: Delivery) -> None:
        """Consumer handler of ``audit.>`` (durable ``audit-sink-webhook``)."""
        if not isinstance(message, AuditEvent):
            return
        try:
            await self.client.deliver(message)
        except PermanentFailure as exc:
            log.warning("audit_sink.webhook_rejected", status=exc.status, event_id=message.event_id)
            return
        except TemporaryFailure as exc:
            if delivery.num_delivered >= self.max_deliver:
                log.error(
                    "audit_sink.webhook_gave_up",
                    status=exc.status,
                    error=exc.message,
                    event_id=message.event_id,
                    deliveries=delivery.num_delivered,
                )
                return
            delay = backoff(delivery.num_delivered, exc.retry_after, self.backoff_base)
            log.info(
                "audit_sink.webhook_retry",
                status=exc.status,
                error=exc.message,
                retry_in=round(delay, 2),
                deliveries=delivery.num_delivered,
            )
            raise RetryLater(delay, exc.message) from None
        log.debug("audit_sink.webhook_delivered", event_id=message.event_id)


def _status(value: bytes | None) -> str | None:
    try:
        record = orjson.loads(value or b"{}")
    except orjson.JSONDecodeError:
        return None
    return record.get("status") if isinstance(record, dict) else None


def _record(status: str, ticket: Ticket, **extra: Any) -> bytes:
    at = datetime.now(UTC).isoformat()
    return orjson.dumps({"status": status, **asdict(ticket), "at": at, **extra})
