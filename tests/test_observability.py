"""Every service serves /healthz, /readyz and /metrics on METRICS_PORT, never on its public port;
the metrics carry the release and the NATS connection's state and reconnects."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

import httpx

from helpdesk import __version__
from helpdesk.sandbox_stack import SandboxStack
from shared.bus import Bus
from shared.natsserver import EmbeddedNats, free_port
from shared.observability import OpsEndpoint
from tests.settings_env import as_environment


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in Prometheus text, or None."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_gateway_process_serves_metrics_apart_from_its_public_port(nats_url: str, prefix: str) -> None:
    """A gateway with METRICS_PORT: /metrics there (build info, NATS connected, request counters), 404
    on the public port that Slack reaches."""
    port = free_port()
    async with (
        SandboxStack(nats_url=nats_url, prefix=prefix, services=["gateway"], metrics_port=port) as stack,
        httpx.AsyncClient(timeout=5) as client,
    ):
        await stack.agent().slash_command("alice")
        ops = f"http://127.0.0.1:{port}"
        assert (await client.get(f"{ops}/healthz")).json() == {"status": "ok"}
        ready = (await client.get(f"{ops}/readyz")).json()
        assert ready["checks"] == {"nats": {"gateway": True}, "services": ["gateway"]}
        text = (await client.get(f"{ops}/metrics")).text
        assert sample(text, "helpdesk_build_info", version=__version__) == 1.0
        assert sample(text, "helpdesk_nats_connected", client="gateway") == 1.0
        assert sample(text, "helpdesk_nats_reconnects_total", client="gateway") == 0.0
        assert "helpdesk_gateway_requests_total" in text
        assert (await client.get(f"{stack.gateway_url}/metrics")).status_code == 404
        assert (await client.get(f"{stack.gateway_url}/healthz")).status_code == 200


async def test_reconnects_are_counted_and_the_state_shown(_logging: None) -> None:
    """A NATS restart: the connection shows 0 while it is down, then 1 and one more reconnect."""
    server = EmbeddedNats()
    await server.start()
    port = free_port()
    try:
        async with (
            SandboxStack(nats_url=server.url, services=["slack-responder"], metrics_port=port),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client,
        ):
            await server.stop()
            for _ in range(100):
                text = (await client.get("/metrics")).text
                if sample(text, "helpdesk_nats_connected", client="slack-responder") == 0.0:
                    break
                await asyncio.sleep(0.05)
            assert sample(text, "helpdesk_nats_connected", client="slack-responder") == 0.0
            assert (await client.get("/readyz")).status_code == 503
            await server.start()
            for _ in range(200):
                text = (await client.get("/metrics")).text
                if sample(text, "helpdesk_nats_reconnects_total", client="slack-responder") == 1.0:
                    break
                await asyncio.sleep(0.05)
            assert sample(text, "helpdesk_nats_reconnects_total", client="slack-responder") == 1.0
            assert sample(text, "helpdesk_nats_connected", client="slack-responder") == 1.0
    finally:
        await server.stop()
        server.cleanup()


@dataclass
class Nothing:
    buses: list[Bus] = field(default_factory=list)
    services: list[tuple[str, Any]] = field(default_factory=list)


async def test_not_ready_until_the_services_have_started() -> None:
    """Up first: /healthz answers while /readyz says 503 until a service runs on a connected bus."""
    port = free_port()
    ops = OpsEndpoint(Nothing(), "127.0.0.1", port)
    await ops.start()
    try:
        async with httpx.AsyncClient(base_url=ops.url, timeout=5) as client:
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 503
            assert "helpdesk_build_info" in (await client.get("/metrics")).text
    finally:
        await ops.stop()


async def test_service_command_serves_metrics_port(nats_url: str, prefix: str) -> None:
    """`helpdesk okta-worker` with METRICS_PORT answers /readyz and /metrics there, and stops on SIGTERM."""
    async with SandboxStack(nats_url=nats_url, prefix=prefix, services=[]) as sandbox:
        assert sandbox.settings is not None
        env = {**os.environ, **as_environment(sandbox.settings)}
        port = free_port()
        env.update(METRICS_PORT=str(port), LOG_FORMAT="json")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "helpdesk.cli",
            "okta-worker",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as client:
                for _ in range(200):
                    try:
                        if (await client.get("/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.05)
                text = (await client.get("/metrics")).text
                assert sample(text, "helpdesk_nats_connected", client="okta-worker") == 1.0
                assert "helpdesk_okta_worker_commands_total" in text or "helpdesk_okta_worker" in text
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 15) == 0
