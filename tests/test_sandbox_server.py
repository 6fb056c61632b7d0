"""`helpdesk sandbox`: the fakes on fixed ports are all the real services need — no credentials."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from helpdesk.check import run_checks
from helpdesk.runner import ServiceGroup
from helpdesk.sandbox_server import SandboxPorts, SandboxServer, sandbox_environment
from helpdesk.sandbox_stack import DEMO_SIGNING_SECRET
from sandbox.slack import AGENT_USER_ID
from sandbox.slack_agent import SlackAgent
from shared.bus import Bus
from shared.natsserver import free_port
from shared.settings import Settings


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxServer]:
    ports = SandboxPorts(slack=free_port(), okta=free_port(), provider=free_port(), fallback=free_port())
    server = SandboxServer("127.0.0.1", ports, health_port=free_port())
    await server.start()
    yield server
    await server.stop()


def settings_for(server: SandboxServer, nats_url: str, prefix: str, **extra: object) -> Settings:
    env = {k.lower(): v for k, v in sandbox_environment("127.0.0.1", server.ports).items()}
    return Settings(_env_file=None, nats_url=nats_url, nats_prefix=prefix, **env, **extra)  # type: ignore[call-arg]


async def test_sandbox_answers_health_and_every_check(sandbox: SandboxServer, nats_url: str, prefix: str) -> None:
    """`helpdesk check` with `helpdesk sandbox --print-env`'s settings finds nothing wrong."""
    assert sandbox.health is not None
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(f"{sandbox.health.url}/healthz")).status_code == 200
    settings = settings_for(sandbox, nats_url, prefix)
    findings = await run_checks(settings)
    problems = [f for f in findings if f.status == "problem"]
    assert problems == []
    assert {f.check for f in findings if f.status == "ok"} >= {"slack", "okta", "provider", "provider fallback"}


async def test_the_services_run_against_the_sandbox(
    sandbox: SandboxServer, nats_url: str, prefix: str, _logging: None
) -> None:
    """gateway, worker and responder with the sandbox's settings open the modal for a signed /helpdesk."""
    settings = settings_for(sandbox, nats_url, prefix, gateway_port=free_port())
    async with ServiceGroup(settings, ["okta-worker", "slack-responder", "gateway"]):
        agent = SlackAgent(
            f"http://127.0.0.1:{settings.gateway_port}", DEMO_SIGNING_SECRET, sandbox.slack, user_id=AGENT_USER_ID
        )
        response = await agent.slash_command("alice")
        assert response.status_code == 200
        await sandbox.slack.wait_for_call("POST", "/api/views.open", timeout=5)
    bus = await Bus.connect(settings, name="cleanup")
    try:
        for info in await bus.js.streams_info():
            if info.config.name and info.config.name.startswith(f"{prefix}_"):
                await bus.js.delete_stream(info.config.name)
    finally:
        await bus.close()
