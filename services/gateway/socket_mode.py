"""Socket Mode: the same gateway behind slack_sdk's aiohttp ``SocketModeClient``, for sites with no public URL.

Slack delivers the very payloads of the HTTP routes over a websocket opened with the app-level
token (``SLACK_APP_TOKEN``, ``xapp-…``). Each envelope goes through :meth:`Gateway.handle_socket`
and is acknowledged with its ``envelope_id`` and, where Slack expects one, the answer as the ack
payload (the options menu, a ``response_action``, an ephemeral text).

    runner = SocketModeRunner(settings.secret("SLACK_APP_TOKEN"), gateway, api_url=settings.slack_api_url)
    await runner.start()      # connects in the background, retrying; reconnects by itself afterwards
    ...
    await runner.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from services.gateway.dispatch import Gateway
from shared.logging import get_logger

log = get_logger(__name__)

MAX_BACKOFF = 30.0


class SocketModeListener:
    """A ``socket_mode_request_listeners`` entry: dispatch the envelope, then ack it with the answer."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, client: Any, request: SocketModeRequest) -> None:
        reply = await self.gateway.handle_socket(request.type, request.payload)
        body = reply.body if request.type != "events_api" else None
        await client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id, payload=body))


class SocketModeRunner:
    """Owns one ``SocketModeClient``: connect (retrying with backoff) on start, close on stop."""

    def __init__(
        self,
        app_token: str,
        gateway: Gateway,
        api_url: str,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        self._app_token = app_token
        self.api_url = api_url
        self.listener = SocketModeListener(gateway)
        self._factory = client_factory or self._default_client
        self.client: Any = None
        self._connect_task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def __repr__(self) -> str:
        return f"SocketModeRunner(api_url={self.api_url!r})"

    def _default_client(self) -> SocketModeClient:
        return SocketModeClient(app_token=self._app_token, web_client=AsyncWebClient(base_url=self.api_url))

    async def start(self) -> None:
        self.client = self._factory()
        self.client.socket_mode_request_listeners.append(self.listener)
        self._connect_task = asyncio.create_task(self._connect(), name="socket-mode-connect")

    async def _connect(self) -> None:
        delay = 1.0
        while True:
            try:
                await self.client.connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("gateway.socket_mode.connect_failed", error=type(exc).__name__, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            log.info("gateway.socket_mode.connected")
            self.connected.set()
            return

    async def stop(self) -> None:
        if self._connect_task is not None:
            self._connect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connect_task
            self._connect_task = None
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()
            self.client = None
