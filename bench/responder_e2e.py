"""End-to-end benchmark on loopback: a signed ``/helpdesk`` → gateway → worker → responder → ``views.open``.

    .venv/bin/python bench/responder_e2e.py                 # 50 and 200 commands/s, 10 s each
    .venv/bin/python bench/responder_e2e.py --seconds 3 --rates 50 200 400 --agents 20

Everything runs as ``helpdesk run`` would (one process, the four real ``create_service``), against
the sandbox fakes of Slack, Okta and Twilio and an embedded nats-server. The load generator shares
that event loop, so the figures include its own cost: they are an upper bound.

Commands come from ``--agents`` help-desk agents in turn (each a Slack user and an Okta member of
the Helpdesk group in the fakes), as a real help desk's load would.

Open loop: command *i* is sent at ``start + i / rate`` whether or not earlier ones finished. For each
command we measure, from the moment its signed POST starts:

* ``ack``    the gateway's HTTP 200 (Slack's limit: 3,000 ms);
* ``open``   the fake Slack receiving ``views.open`` with that command's trigger_id (target p99 ≤ 25 ms);
* ``search`` the fake Slack receiving the first ``views.update`` of that modal (the user search view).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402

from helpdesk.sandbox_stack import SandboxStack  # noqa: E402
from shared.logging import configure_logging  # noqa: E402

WARMUP = 20


def add_agents(stack: SandboxStack, count: int) -> list[str]:
    """``count`` agents known to the fake Slack and in the fake Okta's Helpdesk group; their Slack ids."""
    ids = []
    for n in range(1, count + 1):
        user_id, email = f"U0BENCH{n:03d}", f"bench-agent-{n:03d}@example.com"
        stack.slack.add_user(user_id, email, f"Bench Agent {n}", f"bench{n}")
        stack.okta.add_user(email, "Bench", f"Agent {n}", groups=["Helpdesk"])
        ids.append(user_id)
    return ids


@dataclass
class Probe:
    """Arrival times at the fake Slack, per trigger_id (views.open) and per view id (first views.update)."""

    opened: dict[str, float] = field(default_factory=dict)
    updated: dict[str, float] = field(default_factory=dict)
    waiters: dict[str, asyncio.Future[float]] = field(default_factory=dict)

    def wrap_open(self, handler: Callable[[dict[str, Any]], Awaitable[web.Response]]) -> Any:
        async def views_open(args: dict[str, Any]) -> web.Response:
            now = time.perf_counter()
            trigger = str(args.get("trigger_id", ""))
            self.opened.setdefault(trigger, now)
            waiter = self.waiters.get(trigger)
            if waiter is not None and not waiter.done():
                waiter.set_result(now)
            return await handler(args)

        return views_open

    def wrap_update(self, handler: Callable[[dict[str, Any]], Awaitable[web.Response]]) -> Any:
        async def views_update(args: dict[str, Any]) -> web.Response:
            self.updated.setdefault(str(args.get("view_id", "")), time.perf_counter())
            return await handler(args)

        return views_update


@dataclass
class Result:
    rate: int
    sent: int
    ack: list[float]
    opened: list[float]
    search: list[float]
    failures: int
    wall: float
    cpu: float

    @staticmethod
    def pct(values: list[float], q: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def lines(self) -> list[str]:
        out = [
            f"{self.rate:>4}/s  sent={self.sent:>5}  failed={self.failures:>3}  "
            f"achieved={self.sent / self.wall:6.1f}/s  cpu={100 * self.cpu / self.wall:5.1f}%"
        ]
        for name, values in (("ack", self.ack), ("open", self.opened), ("search", self.search)):
            out.append(
                f"        {name:<7} n={len(values):>5}  p50={self.pct(values, 0.5):7.2f} ms  "
                f"p99={self.pct(values, 0.99):7.2f} ms  max={self.pct(values, 1.0):7.2f} ms"
            )
        return out


async def run_rate(stack: SandboxStack, probe: Probe, agent_ids: list[str], rate: int, seconds: float) -> Result:
    agents = [stack.agent(user_id) for user_id in agent_ids]
    count = int(rate * seconds)
    acks: list[float] = []
    opens: list[float] = []
    started: dict[str, float] = {}
    failures = 0
    loop = asyncio.get_running_loop()

    async def one(index: int) -> None:
        nonlocal failures
        agent = agents[index % len(agents)]
        form = agent.slash_command_form(f"user{index % 50}")
        trigger = form["trigger_id"]
        waiter: asyncio.Future[float] = loop.create_future()
        probe.waiters[trigger] = waiter
        body = urlencode(form).encode()
        t0 = time.perf_counter()
        started[trigger] = t0
        try:
            response = await agent.post("/slack/commands", body)
            acks.append(time.perf_counter() - t0)
            if response.status_code != 200:
                failures += 1
                return
            opened_at = await asyncio.wait_for(waiter, 3.0)
            opens.append(opened_at - t0)
        except Exception:
            failures += 1
        finally:
            probe.waiters.pop(trigger, None)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    tasks = []
    for index in range(count):
        delay = wall0 + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # the open-loop schedule
        tasks.append(asyncio.create_task(one(index)))
    await asyncio.gather(*tasks)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    # The search view follows the open; give the last ones a moment to arrive, then read them.
    await _settle(stack, probe, started)
    search = []
    for trigger, t0 in started.items():
        view_id = stack.slack._trigger_views.get(trigger)
        if view_id is not None and view_id in probe.updated:
            search.append(probe.updated[view_id] - t0)
    for agent in agents:
        await agent.aclose()
    return Result(rate, count, acks, opens, search, failures, wall, cpu)


async def _settle(stack: SandboxStack, probe: Probe, started: dict[str, float], timeout: float = 3.0) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        views = [stack.slack._trigger_views.get(t) for t in started]
        if all(v is None or v in probe.updated for v in views):
            return
        stack.slack.call_event.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stack.slack.call_event.wait(), deadline - time.perf_counter())


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rates", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--no-audit", action="store_true", help="run without an audit channel")
    args = parser.parse_args()
    configure_logging("WARNING", "json")
    logging.getLogger().setLevel(logging.WARNING)

    overrides: dict[str, Any] = {"slack_audit_channel": None} if args.no_audit else {}
    stack = SandboxStack(**overrides)
    agent_ids = add_agents(stack, args.agents)
    async with stack:
        probe = Probe()
        methods = stack.slack._methods
        methods["views.open"] = probe.wrap_open(methods["views.open"])
        methods["views.update"] = probe.wrap_update(methods["views.update"])
        await run_rate(stack, probe, agent_ids, rate=WARMUP, seconds=1.0)  # warm caches (agent authorization)
        print(
            f"helpdesk e2e ({args.agents} agents): signed /helpdesk → gateway → okta_worker → "
            "slack_responder → views.open"
        )
        for rate in args.rates:
            result = await run_rate(stack, probe, agent_ids, rate=rate, seconds=args.seconds)
            print("\n".join(result.lines()), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
