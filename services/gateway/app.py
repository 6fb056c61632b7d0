"""Wiring of the gateway: settings → verifier, rules, bus → aiohttp routes (and Socket Mode if asked).

    bus = await Bus.connect(settings, name="gateway")
    await bus.ensure_streams()
    service = create_service(settings, bus)      # HttpService on HOST:GATEWAY_PORT
    await service.start()
    ...
    await service.stop(); await bus.close()

Routes: ``POST /slack/commands``, ``/slack/interactions``, ``/slack/options``, ``/slack/events``;
``GET /healthz``, ``/readyz`` (NATS connected, streams present); ``/metrics`` is on ``METRICS_PORT``
only (shared/observability.py), never on this public port. With
``SLACK_APP_TOKEN`` set, a Socket Mode client runs beside them (started and stopped with the app).
The bus belongs to the caller.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from slack_sdk.signature import Clock

from services.gateway.dispatch import Gateway
from services.gateway.handlers import Rules
from services.gateway.routes import add_slack_routes
from services.gateway.slack_request import MAX_BODY, RequestVerifier
from services.gateway.socket_mode import SocketModeRunner
from shared.bus import Bus
from shared.http import HttpService, health_routes
from shared.settings import MissingSetting, Settings

GATEWAY = web.AppKey("gateway", Gateway)
SOCKET_MODE = web.AppKey("socket_mode", SocketModeRunner)


def socket_mode_enabled(settings: Settings) -> bool:
    try:
        settings.require("SLACK_APP_TOKEN")
    except MissingSetting:
        return False
    return True


def create_gateway(settings: Settings, bus: Bus, clock: Clock | None = None) -> Gateway:
    """The transport-free core (``MissingSetting`` at once without the signing or case-token secret)."""
    settings.require("SLACK_SIGNING_SECRET", "CASE_TOKEN_SECRET")
    previous = settings.slack_signing_secret_previous
    verifier = RequestVerifier(
        settings.secret("SLACK_SIGNING_SECRET"),
        clock=clock,
        previous_secret=previous.get_secret_value() if previous is not None else None,
    )
    return Gateway(bus, Rules.from_settings(settings), verifier)


def create_app(settings: Settings, bus: Bus, clock: Clock | None = None) -> web.Application:
    gateway = create_gateway(settings, bus, clock)
    app = web.Application(client_max_size=MAX_BODY)
    app[GATEWAY] = gateway
    add_slack_routes(app, gateway)

    async def socket_mode_ctx(app: web.Application) -> AsyncIterator[None]:
        runner = SocketModeRunner(settings.secret("SLACK_APP_TOKEN"), gateway, api_url=settings.slack_api_url)
        app[SOCKET_MODE] = runner
        await runner.start()
        yield
        await runner.stop()

    if socket_mode_enabled(settings):
        app.cleanup_ctx.append(socket_mode_ctx)

    async def ready() -> tuple[bool, dict[str, object]]:
        connected = bus.is_connected
        streams = connected and await bus.streams_present()
        return streams, {"nats": "ok" if connected else "disconnected", "streams": "ok" if streams else "missing"}

    health_routes(app, ready=ready)
    return app


def create_service(settings: Settings, bus: Bus) -> HttpService:
    """The gateway as an :class:`HttpService` on ``HOST``:``GATEWAY_PORT``."""
    return HttpService("gateway", create_app(settings, bus), settings.host, settings.gateway_port)
