"""Wiring of the Slack responder: settings → Slack client, KV, consumers and request/reply services.

    bus = await Bus.connect(settings, name="slack-responder")
    await bus.ensure_streams()
    service = create_service(settings, bus)      # MissingSetting at once without SLACK_BOT_TOKEN
    await service.start()
    ...
    await service.stop(); await bus.close()

Consumes ``helpdesk.case.>`` (durable ``slack-responder``), ``helpdesk.notify.>`` (durable
``slack-notify``: approval requests, notices to target users, security alerts; always on, the worker
decides whom to tell) and, when ``SLACK_AUDIT_CHANNEL`` is set, ``audit.>`` (durable ``slack-audit``);
serves ``slack.users.lookup`` and ``helpdesk.render.temp_password`` in the queue group
``slack-responder``. The durables start at new messages when first created, so a first deployment
does not replay a day of old cases or notices into Slack. The bus belongs to the caller.
"""

from __future__ import annotations

from services.slack_responder.audit import AuditThreads
from services.slack_responder.handlers import Responder
from services.slack_responder.notices import Notices
from services.slack_responder.slack_client import SlackClient
from services.slack_responder.store import ViewStore
from shared.bus import AUDIT_STREAM, CASE_STREAM, NOTIFY_STREAM, Bus, Subscription
from shared.logging import get_logger
from shared.messages import LookupSlackUser, ShowTempPassword
from shared.settings import Settings

log = get_logger(__name__)

CASE_DURABLE = "slack-responder"
AUDIT_DURABLE = "slack-audit"
NOTIFY_DURABLE = "slack-notify"
QUEUE = "slack-responder"


class ResponderService:
    """The responder's lifecycle: ``start`` subscribes everything, ``stop`` lets in-flight work finish."""

    def __init__(self, settings: Settings, bus: Bus) -> None:
        self.settings = settings
        self.bus = bus
        self.slack: SlackClient | None = None
        self.responder: Responder | None = None
        self.audit: AuditThreads | None = None
        self.notices: Notices | None = None
        self._subscriptions: list[Subscription] = []

    async def start(self) -> None:
        self.slack = SlackClient.from_settings(self.settings)
        store = await ViewStore.open(self.bus)
        self.responder = Responder(self.slack, store, self.bus)
        await self.bus.serve(LookupSlackUser, self.responder.lookup_user, queue=QUEUE)
        await self.bus.serve(ShowTempPassword, self.responder.show_temp_password, queue=QUEUE)
        self._subscriptions.append(
            await self.bus.consume(
                CASE_STREAM, CASE_DURABLE, self.responder.on_case_message, max_deliver=5, deliver_new=True
            )
        )
        self.notices = Notices(self.slack, await Notices.bucket(self.bus))
        # A few in flight: chat.postMessage is ~1/s per channel, and a redelivery must find the record.
        self._subscriptions.append(
            await self.bus.consume(
                NOTIFY_STREAM, NOTIFY_DURABLE, self.notices.on_notice, max_in_flight=4, max_deliver=10, deliver_new=True
            )
        )
        if self.settings.slack_audit_channel:
            kv = await AuditThreads.bucket(self.bus)
            self.audit = AuditThreads(
                self.slack, kv, self.settings.slack_audit_channel, wait_for_case=self.responder.wait_until_rendered
            )
            # chat.postMessage is ~1/s per channel: a few in flight is all the channel takes.
            self._subscriptions.append(
                await self.bus.consume(
                    AUDIT_STREAM, AUDIT_DURABLE, self.audit.on_event, max_in_flight=4, max_deliver=10, deliver_new=True
                )
            )
        log.info("responder.ready", audit_channel=bool(self.settings.slack_audit_channel))

    async def stop(self) -> None:
        for sub in self._subscriptions:
            await sub.stop()
        self._subscriptions.clear()
        if self.responder is not None:
            await self.responder.stop()
        if self.slack is not None:
            await self.slack.close()


def create_service(settings: Settings, bus: Bus) -> ResponderService:
    """The responder on a connected ``bus``; raises ``MissingSetting`` at once without a bot token."""
    settings.require("SLACK_BOT_TOKEN")
    return ResponderService(settings, bus)
