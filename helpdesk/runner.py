"""Run one or several services in this process, each with its own NATS connection.

``NATS_URL`` unset → an embedded nats-server (JetStream, state under ``NATS_STORE_DIR`` or a temp
dir) is started first and stopped last. SIGINT/SIGTERM stop the services in reverse order: ingress
first (stop accepting), then workers finish in-flight messages, then NATS connections drain.

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

from aiohttp import web

from shared.bus import Bus
from shared.http import HttpService, health_routes
from shared.logging import get_logger
from shared.natsserver import EmbeddedNats
from shared.settings import Settings

log = get_logger(__name__)


class Service(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


HTTP_SERVICES = frozenset({"gateway", "telephony-hook"})  # these serve /healthz /readyz /metrics themselves

# Service name → the module whose create_service(settings, bus) builds it. Ingress first.
SERVICES: dict[str, str] = {
    "okta-worker": "services.okta_worker.app",
    "slack-responder": "services.slack_responder.app",
    "telephony-hook": "services.telephony_hook.app",
    "gateway": "services.gateway.app",
}
ALL = list(SERVICES)


def create_service(name: str, settings: Settings, bus: Bus) -> Service:
    module = importlib.import_module(SERVICES[name])
    service: Service = module.create_service(settings, bus)
    return service


class ServiceGroup:
    def __init__(self, settings: Settings, names: list[str]) -> None:
        self.settings = settings
        self.names = names
        self.nats: EmbeddedNats | None = None
        self.buses: list[Bus] = []
        self.services: list[tuple[str, Service]] = []

    async def start(self) -> None:
        if not self.settings.nats_url:
            self.nats = EmbeddedNats(store_dir=self.settings.nats_store_dir)
            await self.nats.start()
            self.settings = self.settings.model_copy(update={"nats_url": self.nats.url})
        try:
            for name in self.names:
                bus = await Bus.connect(self.settings, name=name)
                self.buses.append(bus)
                await bus.ensure_streams()
                service = create_service(name, self.settings, bus)
                await service.start()
                self.services.append((name, service))
                log.info("service.started", service=name)
            if self.settings.metrics_port is not None and not HTTP_SERVICES & set(self.names):
                probe = self._probe_service()
                await probe.start()
                self.services.append(("metrics", probe))
            # Everything built at start-up (modules, settings, clients) lives as long as the process:
            # keep the collector from rescanning it on every cycle (cuts the hook's p99 under load).
            gc.freeze()
        except BaseException:
            await self.stop()
            raise

    def _probe_service(self) -> HttpService:
        """/healthz, /readyz and /metrics for a worker or responder process (METRICS_PORT)."""
        app = web.Application()

        async def ready() -> tuple[bool, dict[str, Any]]:
            checks = {bus.name: bus.is_connected for bus in self.buses}
            return all(checks.values()) and bool(checks), {"nats": checks}

        health_routes(app, ready=ready)
        assert self.settings.metrics_port is not None
        return HttpService("metrics", app, self.settings.host, self.settings.metrics_port)

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
    return ALL if arg == "run" else [arg]


def describe(group: ServiceGroup) -> dict[str, Any]:
    return {"services": [n for n, _ in group.services], "nats": group.settings.nats_url}
