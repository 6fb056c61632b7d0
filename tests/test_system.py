"""The product as operators run it: each service its own `helpdesk <service>` process (two workers),
nats-server with the shipped least-privilege users, TLS and a file store; the SaaS fakes here.

A push verification goes end to end through the gateway's HTTP routes, signed like Slack; the worker
polling the push is killed with SIGKILL and nats-server is restarted on the same store while the
push waits; the verification still completes, with exactly one push sent and no secret in any log.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpdesk.demo import Demo, Transcript, has_action, has_text, secrets_in_logs
from helpdesk.sandbox_stack import SandboxStack
from sandbox import okta_data as org
from sandbox.okta import PushOutcome
from shared import ui
from shared.natsserver import free_port
from shared.settings import Settings
from tests.secure_nats import SecureNats
from tests.settings_env import as_environment

pytestmark = pytest.mark.timeout(180)
POLLS = re.compile(rb'^helpdesk_okta_worker_push_polls_total\{result="WAITING"\} ([0-9.e+]+)$', re.M)


class Process:
    """One `helpdesk <command>` process; its stderr (JSON log lines) is collected as it comes."""

    def __init__(self, name: str, command: str, env: dict[str, str]) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.lines: list[bytes] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "helpdesk.cli",
            self.command,
            env=self.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.lines.append(line)

    @property
    def log(self) -> str:
        return b"".join(self.lines).decode(errors="replace")

    def said(self, event: str) -> bool:
        return any(f'"event":"{event}"'.encode() in line for line in self.lines)

    async def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)
        return self.proc.returncode


async def until(probe: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``probe`` (sync or async) until it returns something truthy, or fail naming ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)  # polling a condition, with a deadline


def environment(settings: Settings, secure: SecureNats, user: str, **extra: str) -> dict[str, str]:
    """What an operator sets for one service: the product's settings, NATS as `user` (TLS, password file)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "SLACK_", "OKTA_", "TELEPHONY_"))}
    env.update({k: v for k, v in as_environment(settings).items() if not k.startswith("NATS_")})
    env.update(secure.env_for(user))
    env.update({"LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG", **extra})
    return env


async def metric(client: httpx.AsyncClient, port: int) -> float:
    """How many WAITING polls the worker on ``port`` made (its /metrics on METRICS_PORT)."""
    try:
        body = (await client.get(f"http://127.0.0.1:{port}/metrics")).content
    except httpx.HTTPError:
        return -1.0
    found = POLLS.search(body)
    return float(found.group(1)) if found else 0.0


@pytest.fixture
async def secure(tmp_path: Path) -> AsyncIterator[SecureNats]:
    server = SecureNats(tmp_path)
    await server.server.start()
    yield server
    await server.server.stop()


async def test_push_survives_a_killed_worker_and_a_nats_restart(secure: SecureNats, tmp_path: Path) -> None:
    """Five processes on a least-privilege, TLS, file-store NATS: a push waits while its worker is
    SIGKILLed and nats-server restarts; it still completes, once, and no log holds a secret."""
    async with SandboxStack(nats_url=secure.url, services=[], push_poll_interval=0.3) as stack:
        assert stack.settings is not None
        okta = stack.okta
        okta.push_outcome[org.ALICE_PUSH] = PushOutcome(None)  # the caller answers when the test says so
        worker_ports = [free_port(), free_port()]
        processes = [
            Process("gateway", "gateway", environment(stack.settings, secure, "gateway")),
            *(
                Process(
                    f"worker-{n}",
                    "okta-worker",
                    environment(stack.settings, secure, "okta-worker", METRICS_PORT=str(port)),
                )
                for n, port in enumerate(worker_ports, 1)
            ),
            Process("responder", "slack-responder", environment(stack.settings, secure, "slack-responder")),
            Process("hook", "telephony-hook", environment(stack.settings, secure, "telephony-hook")),
        ]
        try:
            await asyncio.gather(*(p.start() for p in processes))
            for p in processes:
                await until(lambda p=p: p.said("helpdesk.ready"), f"{p.name} ready", timeout=60)
            demo = Demo(stack, Transcript(io.StringIO()))

            view = await demo.open_case("alice")
            view = await demo.choose_user(view, "alice", org.ALICE)
            await demo.agent.click(view, ui.ACTION_CHALLENGE, org.ALICE_PUSH)
            push = await until(lambda: okta.last_push(org.ALICE), "the push at Okta")
            view = await demo.view_until(view["id"], has_text(str(push.correct_answer)), timeout=15)

            # The worker polling the push: its WAITING count grows.
            async with httpx.AsyncClient(timeout=2) as client:
                before = [await metric(client, port) for port in worker_ports]

                async def polling() -> int | None:
                    now = [await metric(client, port) for port in worker_ports]
                    grew = [n for n, (a, b) in enumerate(zip(before, now, strict=True)) if b > a]
                    return grew[-1] + 1 if grew else None

                holder = await until(polling, "a worker polling the push")
            victim = processes[holder]
            assert await victim.stop(signal.SIGKILL) == -signal.SIGKILL

            await secure.server.restart()  # same port, same store: file streams and buckets come back
            gateway_ready = f"http://127.0.0.1:{stack.settings.gateway_port}/readyz"
            async with httpx.AsyncClient(timeout=2) as client:

                async def ready() -> bool:
                    with contextlib.suppress(httpx.HTTPError):
                        return (await client.get(gateway_ready)).status_code == 200
                    return False

                await until(ready, "the gateway ready again after the NATS restart")

            okta.resolve_push(push.id, "SUCCESS")
            view = await demo.view_until(view["id"], has_action(ui.ACTION_RUN), timeout=60)
            await demo.agent.click(view, ui.ACTION_RUN, "temp_password")
            await until(lambda: okta.issued_temp_passwords, "a temporary password issued after the restart")
            await demo.view_until(view["id"], has_action(ui.ACTION_REFRESH), timeout=30)
        finally:
            codes = {p.name: await p.stop() for p in processes}
            for p in processes:  # kept beside the server's log for a failed run
                (tmp_path / f"{p.name}.log").write_text(p.log)
            (tmp_path / "okta.calls").write_text("\n".join(f"{c.method} {c.path}" for c in okta.calls))
        assert okta.push_count(org.ALICE) == 1
        verify_calls = [
            c for c in okta.calls if c.method == "POST" and c.path.endswith(f"/factors/{org.ALICE_PUSH}/verify")
        ]
        assert len(verify_calls) == 1
        assert {name: code for name, code in codes.items() if name != victim.name} == dict.fromkeys(
            (p.name for p in processes if p is not victim), 0
        )
        logs = "\n".join(p.log for p in processes) + secure.log_file.read_text()
        assert secrets_in_logs(logs, stack) == []
        for secret in (*secure.passwords.values(), stack.settings.secret("CASE_TOKEN_SECRET")):
            assert secret not in logs
        assert secure.violations() == []
