"""NATS stopped mid-test: Slack still gets an answer inside 3 s, and the gateway recovers by itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from prometheus_client import REGISTRY

from sandbox.slack import FakeSlack
from shared.bus import Bus
from shared.messages import OpenCase
from shared.natsserver import EmbeddedNats
from tests.test_gateway_routes import Workspace, fake_slack, published, workspace  # noqa: F401

UNAVAILABLE = "Helpdesk is temporarily unavailable, try again in a minute."


async def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait for a condition of the NATS client: nats-py offers no awaitable for its connection state."""

    async def check() -> None:
        while not condition():  # noqa: ASYNC110 - a state to observe, not an event we could be handed
            await asyncio.sleep(0.02)

    await asyncio.wait_for(check(), timeout)


def publish_failures() -> float:
    return REGISTRY.get_sample_value("helpdesk_gateway_publish_failures_total", {"subject": "helpdesk.cmd.open"}) or 0.0


async def test_nats_down_then_back(
    nats_server: EmbeddedNats | None,
    workspace: Workspace,  # noqa: F811
    fake_slack: FakeSlack,  # noqa: F811
    bus: Bus,
) -> None:
    """While NATS is down commands, options and readiness answer fast; after a restart commands flow again."""
    assert nats_server is not None, "this test stops and restarts the embedded nats-server"
    view = await workspace.open_view()
    failures_before = publish_failures()
    try:
        await nats_server.stop()
        await wait_until(lambda: not bus.is_connected)

        started = time.perf_counter()
        response = await workspace.agent.slash_command("alice")
        assert time.perf_counter() - started < 3.0
        assert response.status_code == 200
        assert response.json() == {"response_type": "ephemeral", "text": UNAVAILABLE}

        started = time.perf_counter()
        menu = (await workspace.agent.options("alice", view)).json()["options"]
        assert time.perf_counter() - started < 3.0
        assert [o["text"]["text"] for o in menu] == ["search unavailable — try again"]

        submitted = await workspace.agent.shortcut()
        assert submitted.status_code == 200

        ready = await workspace.agent.http.get(f"{workspace.url}/readyz")
        assert ready.status_code == 503
        assert publish_failures() == failures_before + 2
    finally:
        await nats_server.start()
    await wait_until(lambda: bus.is_connected)

    response = await workspace.agent.slash_command("bob")
    assert response.status_code == 200 and response.content == b""
    commands = [c for c, _ in await published(bus)]
    assert len(commands) == 1
    assert isinstance(commands[0], OpenCase) and commands[0].query == "bob"
    assert (await workspace.agent.http.get(f"{workspace.url}/readyz")).status_code == 200
