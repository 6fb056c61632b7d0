"""Run one or several services in this process, each with its own NATS connection.

``embedded=True`` (``helpdesk run``) and ``NATS_URL`` unset → an embedded nats-server (JetStream,
state under ``NATS_STORE_DIR`` or a temp dir) is started first and stopped last; a single service
(``embedded=False``) without ``NATS_URL`` is a :class:`MissingSetting`. ``optional=True`` skips a
service whose settings are absent, saying why, instead of refusing to start. SIGINT/SIGTERM stop the
services in reverse order: ingress first (stop accepting), then workers finish in-flight messages,
then NATS connections drain.

Each service declares only the streams it publishes into (``OWNED_STREAMS``): with the
least-privilege NATS users of ``deploy/nats/`` it may create nothing else; a consumer whose stream
is not there yet waits for it.

    async with ServiceGroup(settings, ["gateway", "okta-worker"]) as group:
        await group.wait_for_signal()
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import signal
from types import TracebackType
from typing import Any, Protocol

from shared.bus import AUDIT_STREAM, CASE_STREAM, CMD_STREAM, JOB_STREAM, NOTIFY_STREAM, Bus, StreamSpec
from shared.logging import get_logger, redact_url
from shared.natsserver import EmbeddedNats
from shared.settings import MissingSetting, Settings

log = get_logger(__name__)


class Service(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


# Service name → the module whose create_service(settings, bus) builds it. Ingress first.
SERVICES: dict[str, str] = {
    "okta-worker": "services.okta_worker.app",
    "slack-responder": "services.slack_responder.app",
    "telephony-hook": "services.telephony_hook.app",
    "gateway": "services.gateway.app",
}
ALL = list(SERVICES)
# Beside the case path, off the core four: ticket notes and the audit webhook (skipped by `run` unless set).
SERVICES["audit-sink"] = "services.audit_sink.app"

# The streams each service declares (creates, updates, re-creates after a server restart): those it
# publishes into. Its NATS user may manage these and no other (deploy/nats/nats-server.conf).
OWNED_STREAMS: dict[str, tuple[StreamSpec, ...]] = {
    "gateway": (CMD_STREAM,),
    "okta-worker": (JOB_STREAM, CASE_STREAM, NOTIFY_STREAM, AUDIT_STREAM),
    "slack-responder": (),
    "telephony-hook": (AUDIT_STREAM,),
    "audit-sink": (AUDIT_STREAM,),  # ticket.note_failed
}


def create_service(name: str, settings: Settings, bus: Bus) -> Service:
    module = importlib.import_module(SERVICES[name])
    service: Service = module.create_service(settings, bus)
    return service


class ServiceGroup:
    def __init__(self, settings: Settings, names: list[str], *, embedded: bool = True, optional: bool = False) -> None:
        self.settings = settings
        self.names = names
        self.embedded = embedded
        self.optional = optional
        self.nats: EmbeddedNats | None = None
        self.buses: list[Bus] = []
        self.services: list[tuple[str, Service]] = []
        self.skipped: dict[str, MissingSetting] = {}  # service → why it was not started (optional=True)

    async def start(self) -> None:
        if not self.settings.nats_url:
            if not self.embedded:
                raise MissingSetting("NATS_URL")
            self.nats = EmbeddedNats(store_dir=self.settings.nats_store_dir)
            await self.nats.start()
            self.settings = self.settings.model_copy(update={"nats_url": self.nats.url})
        try:
            for name in self.names:
                bus = await Bus.connect(self.settings, name=name)
                self.buses.append(bus)
                try:
                    service = create_service(name, self.settings, bus)
                except MissingSetting as exc:
                    if not self.optional:
                        raise
                    self.buses.remove(bus)
                    await bus.close()
                    self.skipped[name] = exc
                    log.warning("service.skipped", service=name, missing=list(exc.names), reason=str(exc))
                    continue
                await bus.ensure_streams(OWNED_STREAMS[name])
                await service.start()
                self.services.append((name, service))
                log.info("service.started", service=name)
            if self.names and not self.services:
                raise MissingSetting(*dict.fromkeys(n for exc in self.skipped.values() for n in exc.names))
            # Everything built at start-up (modules, settings, clients) lives as long as the process:
            # keep the collector from rescanning it on every cycle (cuts the hook's p99 under load).
            gc.freeze()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        # Ingress (gateway, hook) was started last: stop it first so nothing new comes in.
        for name, service in reversed(self.services):
            try:
                await asyncio.wait_for(service.stop(), 10)
            except Exception:
                log.exception("service.stop_failed", service=name)
            else:
                log.info("service.stopped", service=name)
        self.services.clear()
        for bus in self.buses:
            with contextlib.suppress(Exception):
                await bus.close()
        self.buses.clear()
        if self.nats is not None:
            await self.nats.stop()
            self.nats.cleanup()
            self.nats = None

    async def run_until_signal(self) -> None:
        """Start, serve until SIGINT/SIGTERM, stop. Signals are caught from the very start, so a
        signal during start-up also ends in a clean stop, never in a killed process."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            starting = asyncio.create_task(self.start())
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if starting.done():
                starting.result()  # re-raise a start-up failure (start() has cleaned up)
                log.info("helpdesk.ready", **describe(self))
                await stopped
            else:
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
            log.info("shutdown.requested")
        finally:
            stopped.cancel()
            await self.stop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def __aenter__(self) -> ServiceGroup:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def service_names(arg: str) -> list[str]:
    return ["audit-sink", *ALL] if arg == "run" else [arg]


def describe(group: ServiceGroup) -> dict[str, Any]:
    """What the ``helpdesk.ready`` line says: the services running, those skipped, NATS (no credentials)."""
    return {
        "services": [n for n, _ in group.services],
        "skipped": sorted(group.skipped),
        "nats": redact_url(group.settings.nats_url or ""),
    }
