"""Wiring of the audit sink: settings → clients, the KV record of notes, two durable consumers.

    bus = await Bus.connect(settings, name="audit-sink")
    await bus.ensure_streams((AUDIT_STREAM,))
    service = create_service(settings, bus)   # MissingSetting when nothing (or half of something) is set
    await service.start()
    ...
    await service.stop(); await bus.close()

Consumes ``audit.>`` twice, each on its own durable so that a slow ticket system never holds up the
webhook nor the other way round: ``audit-sink-tickets`` when ``SERVICENOW_URL`` or ``JIRA_URL`` is
set (a note in the case's ticket), ``audit-sink-webhook`` when ``AUDIT_WEBHOOK_URL`` is set (every
event, signed). Both start at new events when first created, so a first deployment does not replay
the stream's past into a SIEM or old tickets. Publishes ``audit.case.ticket.note_failed``.
The bus belongs to the caller.
"""

from __future__ import annotations

from services.audit_sink.handlers import BACKOFF_BASE, MAX_DELIVER, TicketNotes, WebhookSink
from services.audit_sink.jira import JiraClient
from services.audit_sink.servicenow import ServiceNowClient
from services.audit_sink.webhook import WebhookClient
from shared.bus import AUDIT_STREAM, Bus, Handler, Subscription
from shared.logging import get_logger
from shared.settings import MissingSetting, Settings

log = get_logger(__name__)

TICKETS_DURABLE = "audit-sink-tickets"
WEBHOOK_DURABLE = "audit-sink-webhook"
MAX_ACK_PENDING = 10_000  # events waiting for their retry delay count: room for an outage of hours


class NothingToSink(MissingSetting):
    """Raised by :func:`create_service` when no ticket system and no webhook is configured."""

    def __init__(self) -> None:
        super().__init__("SERVICENOW_URL", "JIRA_URL", "AUDIT_WEBHOOK_URL")
        self.args = ("none of SERVICENOW_URL, JIRA_URL, AUDIT_WEBHOOK_URL is set: no ticket notes, no audit webhook",)


class AuditSinkService:
    """The sink's lifecycle: ``start`` opens the clients and consumers, ``stop`` lets in-flight work end."""

    def __init__(
        self, settings: Settings, bus: Bus, *, max_deliver: int = MAX_DELIVER, backoff_base: float = BACKOFF_BASE
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.max_deliver = max_deliver
        self.backoff_base = backoff_base
        self.servicenow: ServiceNowClient | None = None
        self.jira: JiraClient | None = None
        self.webhook: WebhookClient | None = None
        self.tickets: TicketNotes | None = None
        self._subscriptions: list[Subscription] = []

    async def start(self) -> None:
        settings = self.settings
        if settings.servicenow_url:
            self.servicenow = ServiceNowClient.from_settings(settings)
        if settings.jira_url:
            self.jira = JiraClient.from_settings(settings)
        if self.servicenow is not None or self.jira is not None:
            self.tickets = TicketNotes(
                self.bus,
                await TicketNotes.bucket(self.bus),
                servicenow=self.servicenow,
                jira=self.jira,
                max_deliver=self.max_deliver,
                backoff_base=self.backoff_base,
            )
            self._subscriptions.append(await self._consume(TICKETS_DURABLE, self.tickets.on_event))
        if settings.audit_webhook_url:
            self.webhook = WebhookClient(settings.audit_webhook_url, settings.secret("AUDIT_WEBHOOK_SECRET"))
            sink = WebhookSink(self.webhook, max_deliver=self.max_deliver, backoff_base=self.backoff_base)
            self._subscriptions.append(await self._consume(WEBHOOK_DURABLE, sink.on_event))
        log.info(
            "audit_sink.ready",
            servicenow=self.servicenow is not None,
            jira=self.jira is not None,
            webhook=self.webhook is not None,
        )

    async def _consume(self, durable: str, handler: Handler) -> Subscription:
        return await self.bus.consume(
            AUDIT_STREAM,
            durable,
            handler,
            max_deliver=self.max_deliver,
            max_in_flight=8,
            ack_wait=60.0,
            deliver_new=True,
            max_ack_pending=MAX_ACK_PENDING,
        )

    async def stop(self) -> None:
        for sub in self._subscriptions:
            await sub.stop()
        self._subscriptions.clear()
        for client in (self.servicenow, self.jira, self.webhook):
            if client is not None:
                await client.close()


def create_service(settings: Settings, bus: Bus) -> AuditSinkService:
    """The sink on a connected ``bus``; ``MissingSetting`` when nothing is configured, or a part is
    configured without its credentials (``helpdesk run`` then skips the sink, naming what is missing)."""
    if not (settings.servicenow_url or settings.jira_url or settings.audit_webhook_url):
        raise NothingToSink()
    if settings.servicenow_url:
        has_token = settings.servicenow_token is not None and settings.servicenow_token.get_secret_value()
        has_password = settings.servicenow_password is not None and settings.servicenow_password.get_secret_value()
        if not has_token and not (settings.servicenow_user and has_password):
            raise MissingSetting("SERVICENOW_USER + SERVICENOW_PASSWORD", "SERVICENOW_TOKEN")
    if settings.jira_url:
        settings.require("JIRA_EMAIL", "JIRA_API_TOKEN")
    if settings.audit_webhook_url:
        settings.require("AUDIT_WEBHOOK_SECRET")
    return AuditSinkService(settings, bus)
