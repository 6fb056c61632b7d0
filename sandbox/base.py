"""What every fake SaaS API shares: a recorded list of calls and start/stop on a free loopback port.

fake = FakeOkta()
url = await fake.start()          # "http://127.0.0.1:54321"
...                               # point the code under test at url
assert fake.calls_to("POST", "/api/v1/users/00u1/lifecycle/unlock")
await fake.stop()
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs

import orjson
from aiohttp import web
from multidict import CIMultiDict

T = TypeVar("T")


@dataclass(frozen=True)
class RecordedCall:
    """One request a fake received, kept for tests and the demo transcript to inspect."""

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]  # case-insensitive, as HTTP header names are
    body: bytes
    form: dict[str, str] = field(default_factory=dict)
    json: Any = None


class FakeService:
    """Base of the fakes: an aiohttp app whose every request is recorded before it is answered."""

    def __init__(self) -> None:
        self.calls: list[RecordedCall] = []
        self.app = web.Application(middlewares=[self._record])
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.call_event = asyncio.Event()

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        form: dict[str, str] = {}
        payload: Any = None
        ctype = request.headers.get("Content-Type", "")
        if "application/x-www-form-urlencoded" in ctype:
            form = {k: v[-1] for k, v in parse_qs(body.decode(errors="replace"), keep_blank_values=True).items()}
        elif body:
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError:
                payload = None
        self.calls.append(
            RecordedCall(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=CIMultiDict(request.headers),
                body=body,
                form=form,
                json=payload,
            )
        )
        self.call_event.set()
        return await handler(request)

    def calls_to(self, method: str, path: str) -> list[RecordedCall]:
        return [c for c in self.calls if c.method == method and c.path == path]

    async def until(self, check: Callable[[], T], timeout: float = 5.0) -> T:
        """Wait, woken by each request this fake receives (no sleeps), until ``check()`` is truthy; its value."""

        async def _wait() -> T:
            while not (found := check()):
                self.call_event.clear()
                await self.call_event.wait()
            return found

        return await asyncio.wait_for(_wait(), timeout)

    async def wait_for_call(self, method: str, path: str, count: int = 1, timeout: float = 5.0) -> list[RecordedCall]:
        """Wait until ``count`` calls to ``method path`` have arrived (event-driven, no sleeps)."""
        await self.until(lambda: len(self.calls_to(method, path)) >= count, timeout)
        return self.calls_to(method, path)

    async def start(self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None) -> str:
        """Serve on ``host:port`` (0: a free port), over TLS with ``ssl_context``; returns the base URL."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
        await site.start()
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr,attr-defined]
        bound_port = sockets[0].getsockname()[1] if sockets else port
        self.url = f"{'https' if ssl_context else 'http'}://{host}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, headers=headers, content_type="application/json")
