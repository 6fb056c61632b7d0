"""The whole product on one real NATS: Slack's signed requests in, the fakes' APIs out."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import httpx
import pytest

from helpdesk.sandbox_stack import SandboxStack
from shared import ui
from shared.natsserver import free_port
from tests.settings_env import as_environment


@pytest.fixture
async def stack(nats_url: str, prefix: str, _logging: None) -> AsyncIterator[SandboxStack]:
    async with SandboxStack(nats_url=nats_url, prefix=prefix) as running:
        yield running


async def test_slash_command_opens_the_modal_with_the_same_trigger(stack: SandboxStack) -> None:
    """A signed /helpdesk POST → gateway → NATS → worker → NATS → responder → views.open with its trigger_id."""
    agent = stack.agent()
    form = agent.slash_command_form("alice")
    trigger = form["trigger_id"]
    response = await agent.post("/slack/commands", urlencode(form).encode())
    assert response.status_code == 200
    calls = await stack.slack.wait_for_call("POST", "/api/views.open", timeout=5)
    body = calls[0].json or calls[0].form
    assert body["trigger_id"] == trigger
    assert stack.slack.last_view_for(trigger) is not None


async def test_unsigned_request_reaches_nothing(stack: SandboxStack) -> None:
    """A request with a wrong signature is refused at the gateway; Slack's API is never called."""
    agent = stack.agent()
    agent.signing_secret = "not-the-secret-00000000000000000"
    response = await agent.slash_command("alice")
    assert response.status_code == 401
    assert stack.slack.calls_to("POST", "/api/views.open") == []


async def test_helpdesk_run_stops_gracefully_on_sigterm(nats_url: str, prefix: str) -> None:
    """`helpdesk run` starts every configured service (the four, and the audit sink: the sandbox has
    tickets) and exits 0 within a few seconds of SIGTERM."""
    async with SandboxStack(nats_url=nats_url, prefix=prefix, services=[]) as sandbox:
        assert sandbox.settings is not None
        env = {**os.environ, **as_environment(sandbox.settings)}
        env["LOG_FORMAT"] = "json"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "helpdesk.cli",
            "run",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stderr is not None
        started = 0
        while True:
            line = await asyncio.wait_for(proc.stderr.readline(), 20)
            assert line, "helpdesk run exited before starting its services"
            started += b'"service.started"' in line
            if b'"helpdesk.ready"' in line:
                break
        assert started == 5
        proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(proc.stderr.read(), 10)
        code = await asyncio.wait_for(proc.wait(), 10)
        assert code == 0
        assert b'"shutdown.requested"' in rest
        assert rest.count(b'"service.stopped"') == 5


async def test_expired_trigger_is_followed_up_in_the_channel_and_reopens(stack: SandboxStack) -> None:
    """A trigger that expired before views.open → an ephemeral in the agent's channel whose button opens the modal."""
    agent = stack.agent()
    form = agent.slash_command_form("alice")
    stack.slack.advance(3.5)  # Slack's trigger lives 3 s: this one is dead before the modal can open
    response = await agent.post("/slack/commands", urlencode(form).encode())
    assert response.status_code == 200
    await stack.slack.wait_for_call("POST", "/api/chat.postEphemeral", timeout=5)
    offer = stack.slack.ephemerals[-1]
    assert offer["channel"] == agent.channel_id and offer["user"] == agent.user_id
    await agent.click_message(offer["message"], ui.ACTION_START)
    opened = await stack.slack.wait_for_call("POST", "/api/views.open", count=2, timeout=5)
    assert stack.slack.last_view_for((opened[-1].json or opened[-1].form)["trigger_id"]) is not None


async def test_worker_process_serves_health_and_metrics(nats_url: str, prefix: str) -> None:
    """A worker-only process with METRICS_PORT answers /healthz, /readyz (NATS connected) and /metrics."""
    port = free_port()
    async with (
        SandboxStack(nats_url=nats_url, prefix=prefix, services=["okta-worker"], metrics_port=port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client,
    ):
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["nats"] == {"okta-worker": True}
        assert "helpdesk_okta_worker" in (await client.get("/metrics")).text
