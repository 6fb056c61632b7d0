"""Wiring of the telephony hook: settings → providers, auth, KV ledger, limits → aiohttp routes.

    bus = await Bus.connect(settings, name="telephony-hook")
    await bus.ensure_streams()
    service = create_service(settings, bus)      # HttpService on TELEPHONY_HOOK_PORT
    await service.start()
    ...
    await service.stop(); await bus.close()

Routes: ``POST /telephony/okta``, ``POST /telephony/status``, ``GET /healthz``, ``/readyz``, ``/metrics``.
The HTTP clients (aiohttp for the providers, httpx for the issuer's keys), the KV buckets, the load
gauge and the background work open and close together in one cleanup context; the bus belongs to the
caller.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from aiohttp import web

from services.telephony_hook.auth import HookAuth
from services.telephony_hook.delivery import Dispatcher
from services.telephony_hook.handlers import TelephonyHook, arrival_middleware
from services.telephony_hook.ledger import EventLedger
from services.telephony_hook.provider import ProviderClient, ProviderConfig, provider_session
from services.telephony_hook.velocity import Limits, Velocity
from shared.bus import Bus
from shared.http import HttpService, health_routes
from shared.limits import RateLimiter
from shared.logging import get_logger
from shared.settings import MissingSetting, Settings

log = get_logger(__name__)

SETTINGS = web.AppKey("settings", Settings)
BUS = web.AppKey("bus", Bus)
HOOK = web.AppKey("telephony_hook", TelephonyHook)

EVENTS_BUCKET = "telephony_events"
EVENTS_TTL = 600  # seconds an eventId is remembered (Okta never repeats one later than that)
LIMITS_BUCKET = "telephony_limits"
MAX_BODY = 64 * 1024  # Okta's request is ~1 KB


def check_settings(settings: Settings) -> list[ProviderConfig]:
    """The provider accounts, in failover order; ``MissingSetting`` for anything the hook cannot lack."""
    providers = [ProviderConfig.primary(settings)]
    if (fallback := ProviderConfig.fallback(settings)) is not None:
        providers.append(fallback)
    has_header = settings.telephony_hook_auth is not None and settings.telephony_hook_auth.get_secret_value()
    if not has_header and not settings.telephony_hook_issuer:
        raise MissingSetting("TELEPHONY_HOOK_AUTH", "TELEPHONY_HOOK_ISSUER")
    if settings.telephony_hook_issuer:
        settings.require("TELEPHONY_HOOK_AUDIENCE")
    return providers


def create_app(settings: Settings, bus: Bus) -> web.Application:
    """The hook's aiohttp app on a connected ``bus`` (``MissingSetting`` at once if misconfigured)."""
    providers = check_settings(settings)
    app = web.Application(client_max_size=MAX_BODY, middlewares=[arrival_middleware()])
    app[SETTINGS] = settings
    app[BUS] = bus

    async def hook_ctx(app: web.Application) -> AsyncIterator[None]:
        http = httpx.AsyncClient(headers={"User-Agent": "helpdesk-verify-telephony-hook"})  # the issuer's JWKS
        sends = provider_session()
        clients = [ProviderClient(config, sends) for config in providers]
        events = await bus.key_value(EVENTS_BUCKET, ttl=EVENTS_TTL)
        limiter = await RateLimiter.create(bus, LIMITS_BUCKET)
        hook = TelephonyHook(
            settings,
            auth=HookAuth.from_settings(settings, http),
            dispatcher=Dispatcher(clients),
            ledger=EventLedger(events),
            velocity=Velocity(limiter, Limits.from_settings(settings)),
            bus=bus,
            status_tokens={c.account_sid: c.auth_token.get_secret_value() for c in providers},
        )
        app[HOOK] = hook
        hook.load.start()
        if hook.auth.verifier is not None:
            try:
                await hook.auth.verifier.jwks.refresh()  # warm the key cache; a failure is retried per token
            except Exception as exc:
                log.warning("telephony.jwks.prefetch_failed", error=type(exc).__name__)
        log.info("telephony.ready", providers=[c.name for c in providers])
        yield
        hook.load.stop()
        await hook.background.drain()
        await sends.close()
        await http.aclose()

    async def okta(request: web.Request) -> web.StreamResponse:
        return await request.app[HOOK].okta(request)

    async def status(request: web.Request) -> web.StreamResponse:
        return await request.app[HOOK].status(request)

    async def ready() -> tuple[bool, dict[str, object]]:
        connected = bus.is_connected
        return connected, {"nats": "ok" if connected else "disconnected", "providers": len(providers)}

    app.cleanup_ctx.append(hook_ctx)
    app.router.add_post("/telephony/okta", okta)
    app.router.add_post("/telephony/status", status)
    health_routes(app, ready=ready)
    return app


def create_service(settings: Settings, bus: Bus) -> HttpService:
    """The hook as an :class:`HttpService` on ``HOST``:``TELEPHONY_HOOK_PORT``."""
    return HttpService("telephony-hook", create_app(settings, bus), settings.host, settings.telephony_hook_port)
