"""HTTP plumbing shared by the gateway and the telephony hook: start/stop, health routes.

app = web.Application()
health_routes(app, ready=check_ready)        # GET /healthz, /readyz
service = HttpService("gateway", app, settings.host, settings.gateway_port)
await service.start(); ...; await service.stop()
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from shared.logging import get_logger

log = get_logger(__name__)

ReadyCheck = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]


def health_routes(app: web.Application, ready: ReadyCheck) -> None:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ok, checks = await ready()
        return web.json_response({"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    # No /metrics here: it is served on METRICS_PORT only (shared/observability.py), never on a
    # public port that the Ingress or Slack and Okta reach.


class HttpService:
    """An aiohttp app bound to host:port; ``stop`` finishes in-flight requests before closing."""

    def __init__(self, name: str, app: web.Application, host: str, port: int, shutdown_timeout: float = 5.0) -> None:
        self.name = name
        self.app = app
        self.host = host
        self.port = port
        self.shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=self.shutdown_timeout)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            server = getattr(site, "_server", None)
            if server is not None and server.sockets:
                self.port = int(server.sockets[0].getsockname()[1])
        log.info("http.listening", service=self.name, url=self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
