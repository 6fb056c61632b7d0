"""``helpdesk sandbox``: the fakes of Slack, Okta and the SMS/voice providers, with the demo data, on
fixed ports — so the real services run end to end with no credentials (``docker compose --profile
sandbox up``, or four terminals on a laptop).

    server = SandboxServer(host="0.0.0.0")
    await server.start()                   # Slack :9101, Okta :9102, provider :9103, fallback :9104
    env = sandbox_environment("sandbox")   # the settings that point the services at it
    ...
    await server.stop()

The credentials below are the sandbox's own, known to everyone: never use them for anything real.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass

from aiohttp import web

from helpdesk.sandbox_stack import DEMO_FROM, DEMO_HOOK_AUTH, DEMO_SIGNING_SECRET
from sandbox.okta import DEFAULT_API_TOKEN, FakeOkta
from sandbox.slack import (
    APPROVALS_CHANNEL_ID,
    AUDIT_CHANNEL_ID,
    DEFAULT_BOT_TOKEN,
    SECURITY_CHANNEL_ID,
    FakeSlack,
)
from sandbox.telephony import FakeTwilio
from shared.http import HttpService, health_routes
from shared.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class SandboxPorts:
    slack: int = 9101
    okta: int = 9102
    provider: int = 9103
    fallback: int = 9104


PORTS = SandboxPorts()
PROVIDER_SID = "AC5a4db0c05a4db0c05a4db0c05a4db0c0"
PROVIDER_TOKEN = "sandbox-provider-token-0000000001"
FALLBACK_SID = "ACfa11bac0fa11bac0fa11bac0fa11bac0"
FALLBACK_TOKEN = "sandbox-fallback-token-0000000002"
# Signs case tokens between the sandboxed services: public, like every value here.
CASE_SECRET = "sandbox-case-token-secret-not-for-production"


def sandbox_environment(host: str = "127.0.0.1", ports: SandboxPorts = PORTS) -> dict[str, str]:
    """The settings that point every service at a sandbox served on ``host``."""
    return {
        "SLACK_API_URL": f"http://{host}:{ports.slack}/api/",
        "SLACK_BOT_TOKEN": DEFAULT_BOT_TOKEN,
        "SLACK_SIGNING_SECRET": DEMO_SIGNING_SECRET,
        "SLACK_AUDIT_CHANNEL": AUDIT_CHANNEL_ID,
        "SLACK_APPROVALS_CHANNEL": APPROVALS_CHANNEL_ID,
        "SLACK_SECURITY_CHANNEL": SECURITY_CHANNEL_ID,
        "OKTA_ORG_URL": f"http://{host}:{ports.okta}",
        "OKTA_API_TOKEN": DEFAULT_API_TOKEN,
        "OKTA_PROTECTED_GROUPS": "Admins",
        "OKTA_VERIFY_ATTRIBUTES": "employeeNumber",
        "CASE_TOKEN_SECRET": CASE_SECRET,
        "TELEPHONY_HOOK_AUTH": DEMO_HOOK_AUTH,
        "TELEPHONY_PROVIDER_URL": f"http://{host}:{ports.provider}",
        "TELEPHONY_ACCOUNT_SID": PROVIDER_SID,
        "TELEPHONY_AUTH_TOKEN": PROVIDER_TOKEN,
        "TELEPHONY_FROM": DEMO_FROM,
        "TELEPHONY_FALLBACK_URL": f"http://{host}:{ports.fallback}",
        "TELEPHONY_FALLBACK_ACCOUNT_SID": FALLBACK_SID,
        "TELEPHONY_FALLBACK_AUTH_TOKEN": FALLBACK_TOKEN,
        "TELEPHONY_FALLBACK_FROM": DEMO_FROM,
    }


class SandboxServer:
    """The four fakes on fixed ports, and ``/healthz`` on ``health_port`` (the image's healthcheck)."""

    def __init__(self, host: str = "127.0.0.1", ports: SandboxPorts = PORTS, health_port: int | None = None) -> None:
        self.host = host
        self.ports = ports
        self.slack = FakeSlack()
        self.okta = FakeOkta.with_demo_data()
        self.provider = FakeTwilio(PROVIDER_SID, PROVIDER_TOKEN)
        self.fallback = FakeTwilio(FALLBACK_SID, FALLBACK_TOKEN)
        self.health: HttpService | None = None
        if health_port is not None:
            app = web.Application()

            async def ready() -> tuple[bool, dict[str, object]]:
                return True, {"sandbox": "ok"}

            health_routes(app, ready=ready)
            self.health = HttpService("sandbox-health", app, host, health_port)

    async def start(self) -> dict[str, str]:
        urls = {
            "slack": await self.slack.start(self.host, self.ports.slack),
            "okta": await self.okta.start(self.host, self.ports.okta),
            "provider": await self.provider.start(self.host, self.ports.provider),
            "fallback": await self.fallback.start(self.host, self.ports.fallback),
        }
        if self.health is not None:
            await self.health.start()
        log.info("sandbox.ready", **urls)
        return urls

    async def stop(self) -> None:
        if self.health is not None:
            await self.health.stop()
        for fake in (self.fallback, self.provider, self.okta, self.slack):
            await fake.stop()

    async def serve_until_signal(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            await stop.wait()
        finally:
            with contextlib.suppress(Exception):
                await self.stop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
