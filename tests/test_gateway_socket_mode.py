"""Socket Mode: slack_sdk's real SocketModeClient, connected over a websocket to a local stand-in for Slack."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from sandbox.slack import AGENT_USER_ID
from sandbox.slack_agent import SlackAgent
from services.gateway.app import SOCKET_MODE, create_app
from shared.bus import Bus
from shared.messages import HomeOpened, OpenCase, SearchUsers, SearchUsersReply, UserOption
from shared.settings import Settings
from shared.tokens import CaseTokens
from shared.ui import ACTION_CODE, ACTION_SELECT_USER, BLOCK_CODE, CALLBACK_CODE
from tests.conftest import CASE_SECRET, SIGNING_SECRET
from tests.test_gateway_routes import published

APP_TOKEN = "xapp-1-A0HELPDESK-000000000-socketmodetoken"


class SlackSocketSide:
    """Slack's end of Socket Mode: ``apps.connections.open`` and the websocket that carries envelopes."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.app.router.add_post("/api/apps.connections.open", self._open)
        self.app.router.add_get("/link", self._link)
        self.acks: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.tokens_seen: list[str] = []
        self.server: TestServer | None = None

    async def start(self) -> str:
        self.server = TestServer(self.app, host="127.0.0.1")
        await self.server.start_server()
        return str(self.server.make_url("/api/"))

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()

    async def _open(self, request: web.Request) -> web.Response:
        self.tokens_seen.append(request.headers.get("Authorization", ""))
        assert self.server is not None
        url = str(self.server.make_url("/link")).replace("http://", "ws://")
        return web.json_response({"ok": True, "url": url})

    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(orjson.dumps({"type": "hello", "num_connections": 1}).decode())

        async def pump() -> None:
            while True:
                await ws.send_str(orjson.dumps(await self.outbox.get()).decode())

        sender = asyncio.create_task(pump())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self.acks.put(orjson.loads(msg.data))
        finally:
            sender.cancel()
        return ws

    async def deliver(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one envelope and wait for the app's ack of it."""
        envelope_id = str(uuid.uuid4())
        await self.outbox.put(
            {"envelope_id": envelope_id, "type": kind, "payload": payload, "accepts_response_payload": True}
        )
        ack = await asyncio.wait_for(self.acks.get(), 5.0)
        assert ack["envelope_id"] == envelope_id
        return ack


@pytest.fixture
async def slack_side() -> AsyncIterator[SlackSocketSide]:
    side = SlackSocketSide()
    yield side
    await side.stop()


@pytest.fixture
async def socket_app(settings: Settings, bus: Bus, slack_side: SlackSocketSide) -> AsyncIterator[TestServer]:
    api_url = await slack_side.start()
    socket_settings = settings.model_copy(update={"slack_app_token": SecretStr(APP_TOKEN), "slack_api_url": api_url})
    server = TestServer(create_app(socket_settings, bus), host="127.0.0.1")
    await server.start_server()
    await asyncio.wait_for(server.app[SOCKET_MODE].connected.wait(), 10.0)
    yield server
    await server.close()


def agent() -> SlackAgent:
    """Only used to build Slack's payloads; Socket Mode carries them instead of HTTP."""
    return SlackAgent("http://unused.invalid", SIGNING_SECRET)


def code_view(token: str) -> dict[str, Any]:
    return {
        "id": "V0SOCKET01",
        "hash": "1700000000.abcd",
        "type": "modal",
        "callback_id": CALLBACK_CODE,
        "private_metadata": token,
        "title": {"type": "plain_text", "text": "Verify caller"},
        "blocks": [
            {"type": "input", "block_id": BLOCK_CODE, "element": {"type": "plain_text_input", "action_id": ACTION_CODE}}
        ],
        "state": {"values": {}},
    }


async def test_socket_mode_connects_with_the_app_token(socket_app: TestServer, slack_side: SlackSocketSide) -> None:
    """With SLACK_APP_TOKEN set the gateway opens a Socket Mode connection using that token."""
    assert slack_side.tokens_seen == [f"Bearer {APP_TOKEN}"]


async def test_slash_command_over_socket_mode(socket_app: TestServer, slack_side: SlackSocketSide, bus: Bus) -> None:
    """A slash_commands envelope is published like the HTTP route and acked with its envelope id."""
    form = agent().slash_command_form("alice")
    ack = await slack_side.deliver("slash_commands", form)
    assert "payload" not in ack
    [(command, headers)] = await published(bus)
    assert isinstance(command, OpenCase) and command.query == "alice"
    assert headers["Nats-Msg-Id"] == f"open:{form['trigger_id']}"


async def test_unknown_command_help_is_the_ack_payload(socket_app: TestServer, slack_side: SlackSocketSide) -> None:
    """The ephemeral help rides in the ack payload."""
    ack = await slack_side.deliver("slash_commands", agent().slash_command_form("", command="/nope"))
    assert ack["payload"]["response_type"] == "ephemeral"


async def test_options_are_the_ack_payload(socket_app: TestServer, slack_side: SlackSocketSide, bus: Bus) -> None:
    """A block_suggestion envelope is answered with the options menu in the ack."""

    async def respond(request: SearchUsers) -> SearchUsersReply:
        return SearchUsersReply(options=[UserOption(id="00u1alice", label="Alice Doe")])

    await bus.serve(SearchUsers, respond, queue="okta-worker")
    token = CaseTokens(CASE_SECRET).issue("c_sock", AGENT_USER_ID)
    sim = agent()
    payload = {
        **sim._envelope("block_suggestion"),
        "action_id": ACTION_SELECT_USER,
        "block_id": "user_search",
        "value": "ali",
        "view": code_view(token),
    }
    ack = await slack_side.deliver("interactive", payload)
    assert ack["payload"]["options"][0]["value"] == "00u1alice"


async def test_code_errors_are_the_ack_payload(socket_app: TestServer, slack_side: SlackSocketSide, bus: Bus) -> None:
    """A malformed code submitted over Socket Mode gets ``response_action: errors`` in the ack; nothing is published."""
    token = CaseTokens(CASE_SECRET).issue("c_sock", AGENT_USER_ID)
    view = code_view(token)
    view["state"] = {"values": {BLOCK_CODE: {ACTION_CODE: {"type": "plain_text_input", "value": "12ab"}}}}
    payload = {**agent()._envelope("view_submission"), "view": view}
    ack = await slack_side.deliver("interactive", payload)
    assert ack["payload"]["response_action"] == "errors"
    assert await published(bus) == []


async def test_app_home_opened_over_socket_mode(socket_app: TestServer, slack_side: SlackSocketSide, bus: Bus) -> None:
    """An events_api envelope is published and acked without a payload."""
    ack = await slack_side.deliver("events_api", agent().app_home_opened_body(event_id="Ev0SOCK01"))
    assert "payload" not in ack
    [(command, headers)] = await published(bus)
    assert isinstance(command, HomeOpened)
    assert headers["Nats-Msg-Id"] == "event:Ev0SOCK01"
