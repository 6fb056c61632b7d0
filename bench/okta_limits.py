"""Benchmark: push verification under Okta's real rate limits, with agents at work, on loopback.

    .venv/bin/python bench/okta_limits.py                  # ~2.5 min, prints its figures, stops by itself
    .venv/bin/python bench/okta_limits.py --pushes 50 --seconds 40

The okta worker (the real ``OktaWorkerService``) runs in this process against ``FakeOkta`` holding
Okta's published per-minute buckets (``OKTA_RATE_LIMITS``: ``/api/v1/users`` at 600 a minute, shared
by searches, factor lists, challenges and push polls; the System Log at 120…) and its own nats-server.
The responder's two request/reply answers are stubs. Two scenes, one after the other:

* low load: 3 agents, one verification after another: open a case, search, pick the user, send a
  push; the user approves 3–12 s later. Measured: approve → verified (the case stored VERIFIED).
* under load: 200 pushes pending at once (started over the last 20 s, each approved at a random
  moment of the scene) while 20 agents open cases, search, pick users and send pushes (each agent
  every 20–40 s, the users approving 5–20 s later). Measured: 429s Okta answered (per bucket), the
  slowest agent-facing call (the whole call: NATS, worker, Okta — an upper bound of any wait for
  budget), the fewest ``/api/v1/users`` calls left in a window, pushes concluded, approve → verified
  p50/p99 and the gap between two polls of one of the 200 pending pushes as Okta saw it (their
  effective poll interval: 200 pushes cannot be polled every 3 s on 600 calls a minute; the agents'
  own pushes, polled every 0.75 s in their first seconds, are left out of it).

With ``BENCH_RESULTS=<file>`` the figures are appended to that file as one JSON line (``bench/report.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._cases import CHALLENGE_ID, pending_push_case, send_push
from sandbox.okta import DEFAULT_API_TOKEN, OKTA_RATE_LIMITS, USERS_BUCKET, FakeOkta, PushOutcome
from services.okta_worker.app import OktaWorkerService, check_settings
from services.okta_worker.case import CaseEngine
from services.okta_worker.store import CASES_BUCKET
from shared.bus import Bus
from shared.logging import configure_logging
from shared.messages import (
    Actor,
    CaseSnapshot,
    CaseState,
    ChallengeFactor,
    CloseCase,
    LookupSlackUser,
    Message,
    OpenCase,
    PollPush,
    RenderAck,
    SearchUsers,
    SearchUsersReply,
    SelectUser,
    ShowTempPassword,
    SlackUserInfo,
    ViewRef,
)
from shared.natsserver import EmbeddedNats
from shared.settings import Settings

AGENT_EMAIL = "agent@example.com"  # the demo org's Helpdesk member
VIEW = ViewRef(view_id="V0BENCH001", hash="h1")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Cases:
    """Every case snapshot the worker publishes: when each case reached each state."""

    def __init__(self) -> None:
        self.reached: dict[tuple[str, CaseState], float] = {}
        self.by_trigger: dict[str, str] = {}
        self.snapshots: dict[str, CaseSnapshot] = {}
        self.changed = asyncio.Event()

    def seen(self, snap: CaseSnapshot) -> None:
        self.reached.setdefault((snap.case_id, snap.state), time.time())
        if snap.trigger_id:
            self.by_trigger.setdefault(snap.trigger_id, snap.case_id)
        self.snapshots[snap.case_id] = snap
        self.changed.set()

    async def until(self, probe: Any, timeout: float) -> Any:
        async def loop() -> Any:
            while not (found := probe()):
                self.changed.clear()
                await self.changed.wait()
            return found

        return await asyncio.wait_for(loop(), timeout)

    async def state(self, case_id: str, state: CaseState, timeout: float = 30.0) -> float:
        result: float = await self.until(lambda: self.reached.get((case_id, state)), timeout)
        return result


class Scene:
    """One worker, one FakeOkta, the agents' figures."""

    def __init__(self, okta: FakeOkta, bus: Bus, cases: Cases) -> None:
        self.okta = okta
        self.bus = bus
        self.cases = cases
        self.calls: dict[str, list[float]] = defaultdict(list)  # agent-facing call → seconds
        self.approve_to_verified: list[float] = []
        self.failures: list[str] = []

    async def verification(self, slack_id: str, login: str, user_id: str, factor_id: str, approve: float) -> None:
        """One agent's case: open, search, pick the user, send a push; the user approves after ``approve`` s."""
        agent = Actor(user_id=slack_id)
        trigger = f"{uuid.uuid4().int % 10**12}.42.bench"
        started = time.time()
        await self.bus.publish(OpenCase(agent=agent, trigger_id=trigger), msg_id=uuid.uuid4().hex)
        case_id = await self.cases.until(lambda: self.cases.by_trigger.get(trigger), 30)
        self.calls["open"].append(await self.cases.state(case_id, CaseState.SEARCHING) - started)
        snap = self.cases.snapshots[case_id]
        started = time.time()
        reply = await self.bus.request(
            SearchUsers(query=login.split("@")[0], agent=agent), SearchUsersReply, timeout=10
        )
        self.calls["search"].append(time.time() - started)
        if not any(o.id == user_id for o in reply.options):
            self.failures.append(f"search for {login} did not find the user")
        token = snap.case_token
        started = time.time()
        await self.bus.publish(
            SelectUser(agent=agent, case_token=token, view=VIEW, okta_user_id=user_id), msg_id=uuid.uuid4().hex
        )
        self.calls["select"].append(await self.cases.state(case_id, CaseState.FACTORS) - started)
        token = self.cases.snapshots[case_id].case_token
        started = time.time()
        await self.bus.publish(
            ChallengeFactor(agent=agent, case_token=token, view=VIEW, factor_id=factor_id), msg_id=uuid.uuid4().hex
        )
        self.calls["challenge"].append(await self.cases.state(case_id, CaseState.CHALLENGE_SENT) - started)
        tx = next(t for t in reversed(self.okta.pushes) if t.user_id == user_id)
        await asyncio.sleep(approve)
        self.okta.resolve_push(tx.id, "SUCCESS")
        approved = time.time()
        try:
            verified = await self.cases.state(case_id, CaseState.VERIFIED, timeout=120)
        except TimeoutError:
            self.failures.append(f"case {case_id} not verified")
            return
        self.approve_to_verified.append(verified - approved)
        token = self.cases.snapshots[case_id].case_token
        await self.bus.publish(CloseCase(agent=agent, case_token=token, view=VIEW), msg_id=uuid.uuid4().hex)

    async def agent(
        self,
        index: int,
        users: list[tuple[str, str, str]],
        until: float,
        approve: tuple[float, float],
        think: tuple[float, float],
    ) -> None:
        rng = random.Random(index)
        await asyncio.sleep(rng.uniform(0, think[1] - think[0]))  # the agents do not all start together
        for login, user_id, factor_id in users:
            if time.time() >= until:
                return
            try:
                await self.verification(f"U0BENCHAG{index:02d}", login, user_id, factor_id, rng.uniform(*approve))
            except TimeoutError:
                self.failures.append(f"agent {index}: a step timed out")
            await asyncio.sleep(rng.uniform(*think))


async def seed_pending(okta: FakeOkta, settings: Settings, bus: Bus, n: int) -> dict[str, str]:
    """``n`` cases in CHALLENGE_SENT with a push WAITING in Okta, as if started over the last 20 s."""
    cases_kv = await bus.key_value(CASES_BUCKET)
    engine = CaseEngine(settings, check_settings(settings)[1])
    now = datetime.now(UTC)
    tx_by_case: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=okta.url, headers={"Authorization": f"SSWS {DEFAULT_API_TOKEN}"}) as http:
        for i in range(n):
            user = okta.add_user(f"pending{i:04d}@example.com", "Pending", f"User{i}")
            factor = okta.add_factor(user.id, "push")
            case_id = f"c_pending_{i:04d}"
            body, tx_by_case[case_id] = await send_push(http, user.id, factor.id)
            poll_url = body["_links"]["poll"]["href"]
            case = pending_push_case(
                engine,
                case_id,
                f"U0BENCHOLD{i % 20:02d}",
                user.id,
                user.login,
                factor.id,
                body,
                now,
                now + timedelta(minutes=10),
            )
            await cases_kv.create(case_id, case.model_dump_json().encode())
            started = now - timedelta(seconds=random.uniform(0, 20))
            job = PollPush(
                case_id=case_id,
                challenge_id=CHALLENGE_ID,
                poll_url=poll_url,
                expires_at=now + timedelta(minutes=10),
                first_poll_at=started,
            )
            await bus.publish(job, msg_id=f"poll:{case_id}")
    return tx_by_case


def agent_users(okta: FakeOkta, agents: int, per_agent: int, tag: str) -> list[list[tuple[str, str, str]]]:
    out = []
    for a in range(agents):
        mine = []
        for k in range(per_agent):
            user = okta.add_user(f"{tag}{a:02d}k{k:02d}@example.com", "Caller", f"{tag.upper()}{a}x{k}")
            mine.append((user.login, user.id, okta.add_factor(user.id, "push").id))
        out.append(mine)
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    limits = dict(OKTA_RATE_LIMITS)
    limits[USERS_BUCKET] = args.users_limit
    okta = FakeOkta.with_demo_data(limits=limits)
    okta.default_push_outcome = PushOutcome(None)  # WAITING until the bench approves it
    # The gaps between two polls of one push (with its transaction id) and the fewest /api/v1/users
    # calls left, as Okta sees them.
    last_poll: dict[str, float] = {}
    gaps: list[tuple[str, float]] = []
    low_water = [args.users_limit]
    from aiohttp import web

    @web.middleware
    async def observe(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method == "GET" and "/transactions/" in request.path:
            now = time.monotonic()
            if (last := last_poll.get(request.path)) is not None:
                gaps.append((request.path.rsplit("/", 1)[1], now - last))
            last_poll[request.path] = now
        response = await handler(request)
        low_water[0] = min(low_water[0], okta.bucket_remaining(USERS_BUCKET))
        return response

    okta.app.middlewares.append(observe)
    results: dict[str, Any] = {"bench": "okta_limits", "users_limit": args.users_limit, "pushes": args.pushes}
    async with EmbeddedNats() as server:
        await okta.start()
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            nats_url=server.url,
            nats_prefix="b" + uuid.uuid4().hex[:8],
            case_token_secret="bench-case-token-secret-0123456789abcdef",
            okta_org_url=okta.url,
            okta_api_token=DEFAULT_API_TOKEN,
            okta_protected_groups=["Admins"],
            push_poll_interval=args.interval,
            push_max_wait=600,
        )
        bus = await Bus.connect(settings, name="bench")
        await bus.ensure_streams()
        cases = Cases()

        async def on_case(msg: Any) -> None:
            if bus.unprefixed(msg.subject) == CaseSnapshot.SUBJECT:
                cases.seen(CaseSnapshot.decode_bytes(msg.data))

        async def lookup(request: LookupSlackUser) -> Message:
            return SlackUserInfo(user_id=request.user_id, email=AGENT_EMAIL)

        async def render(request: ShowTempPassword) -> Message:
            return RenderAck(ok=True)

        sub = await bus.nc.subscribe(bus.subject("helpdesk.case.>"), cb=on_case)
        await bus.serve(LookupSlackUser, lookup, queue="responder-stub")
        await bus.serve(ShowTempPassword, render, queue="responder-stub")
        worker_bus = await Bus.connect(settings, name="okta-worker")
        worker = OktaWorkerService(settings, worker_bus)
        await worker.start()
        try:
            # -- low load ------------------------------------------------------------------------
            print(f"low load: 3 agents, one verification after another, {args.low_seconds:g} s …", flush=True)
            low = Scene(okta, bus, cases)
            until = time.time() + args.low_seconds
            users = agent_users(okta, 3, 20, "low")
            await asyncio.wait_for(
                asyncio.gather(*(low.agent(i, users[i], until, (3, 12), (0.5, 1.5)) for i in range(3))),
                args.low_seconds + 150,
            )
            results["low_approve_to_verified_p50_s"] = statistics.median(low.approve_to_verified)
            results["low_approve_to_verified_p99_s"] = pct(low.approve_to_verified, 0.99)
            results["low_verifications"] = len(low.approve_to_verified)

            # -- under load ----------------------------------------------------------------------
            print(f"under load: {args.pushes} pending pushes, {args.agents} agents, {args.seconds:g} s …", flush=True)
            okta.reset_rate_limits()
            gaps.clear()
            low_water[0] = args.users_limit
            tx_by_case = await seed_pending(okta, settings, bus, args.pushes)
            okta.reset_rate_limits()  # the pushes were sent before this minute: the scene starts on a fresh window
            scene_start = time.time()
            high = Scene(okta, bus, cases)
            users = agent_users(okta, args.agents, 10, "load")
            until = scene_start + args.seconds
            approved: dict[str, float] = {}

            async def approve_pending() -> None:
                moments = sorted((random.uniform(5, args.seconds - 15), c) for c in tx_by_case)
                for at, case_id in moments:
                    await asyncio.sleep(max(0.0, scene_start + at - time.time()))
                    okta.resolve_push(tx_by_case[case_id], "SUCCESS")
                    approved[case_id] = time.time()

            await asyncio.wait_for(
                asyncio.gather(
                    approve_pending(),
                    *(high.agent(i, users[i], until, (5, 20), (20, 40)) for i in range(args.agents)),
                ),
                args.seconds + 180,
            )
            with contextlib.suppress(TimeoutError):
                await cases.until(lambda: all((c, CaseState.VERIFIED) in cases.reached for c in tx_by_case), args.drain)
            pending_latency = [
                cases.reached[(c, CaseState.VERIFIED)] - approved[c]
                for c in tx_by_case
                if (c, CaseState.VERIFIED) in cases.reached and c in approved
            ]
            agent_calls = [v for kind in ("search", "select", "challenge") for v in high.calls[kind]]
            # The poll interval of the pending pushes: the gaps between polls of the 200, not those of
            # the agents' own pushes, which are polled every 0.75 s in their first seconds.
            seeded = set(tx_by_case.values())
            pending_gaps = [gap for tx, gap in gaps if tx in seeded]
            all_gaps = [gap for _, gap in gaps]
            all_latency = pending_latency + high.approve_to_verified
            results.update(
                {
                    "okta_429": dict(okta.rate_limited),
                    "okta_429_total": sum(okta.rate_limited.values()),
                    "agent_call_max_s": max(agent_calls) if agent_calls else float("nan"),
                    "agent_call_p99_s": pct(agent_calls, 0.99),
                    "agent_calls": {k: len(v) for k, v in high.calls.items()},
                    "agent_call_max_by_kind_s": {k: max(v) for k, v in high.calls.items() if v},
                    "pushes_concluded": len(pending_latency),
                    "agent_verifications": len(high.approve_to_verified),
                    "approve_to_verified_p50_s": statistics.median(all_latency) if all_latency else float("nan"),
                    "approve_to_verified_p99_s": pct(all_latency, 0.99),
                    "poll_gap_p50_s": statistics.median(pending_gaps) if pending_gaps else float("nan"),
                    "poll_gap_p99_s": pct(pending_gaps, 0.99),
                    "poll_gap_all_p50_s": statistics.median(all_gaps) if all_gaps else float("nan"),
                    "users_bucket_low_water": low_water[0],
                    "interval_s": args.interval,
                    "failures": low.failures + high.failures,
                }
            )
        finally:
            await worker.stop()
            await worker_bus.close()
            await sub.unsubscribe()
            await bus.close()
            await okta.stop()
    return results


def report(r: dict[str, Any]) -> None:
    gap = r["poll_gap_p50_s"]
    print()
    print(f"Okta at its published limits (/api/v1/users {r['users_limit']}/min), worker interval {r['interval_s']:g} s")
    print(f"{'figure':<58}{'measured':>14}   target")
    rows = [
        ("low load: approve → verified p50", f"{r['low_approve_to_verified_p50_s']:.2f} s", "≤ 1 s"),
        ("low load: approve → verified p99", f"{r['low_approve_to_verified_p99_s']:.2f} s", ""),
        (f"{r['pushes']} pending + agents: 429s from Okta", str(r["okta_429_total"]), "0"),
        ("slowest agent-facing call (search/select/challenge, whole)", f"{r['agent_call_max_s']:.3f} s", "≤ 1 s"),
        ("pushes concluded", f"{r['pushes_concluded']}/{r['pushes']}", "all"),
        ("approve → verified p50", f"{r['approve_to_verified_p50_s']:.1f} s", ""),
        ("approve → verified p99", f"{r['approve_to_verified_p99_s']:.1f} s", f"≤ {2 * gap:.1f} s (2 gaps)"),
        ("gap between polls of a pending push (effective interval) p50", f"{gap:.1f} s", ""),
        ("gap between polls of any push (agents' early ones too) p50", f"{r['poll_gap_all_p50_s']:.1f} s", ""),
        (
            "fewest /api/v1/users calls left in a window",
            str(r["users_bucket_low_water"]),
            "> 0 (agents may use the reserve)",
        ),
    ]
    for title, value, target in rows:
        print(f"{title:<58}{value:>14}   {target}")
    print(
        f"agent-facing calls: {r['agent_calls']}, slowest by kind: "
        + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in r["agent_call_max_by_kind_s"].items())
    )
    print(f"429s by bucket: {r['okta_429'] or 'none'}")
    if r["failures"]:
        print(f"failures ({len(r['failures'])}): {r['failures'][:5]}")


def append_results(path: str, figures: dict[str, Any]) -> None:
    """One JSON line of figures for ``bench/report.py``."""
    with open(path, "ab") as out:
        out.write(orjson.dumps(figures) + b"\n")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", type=int, default=200)
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--users-limit", type=int, default=600, help="per-minute limit of /api/v1/users")
    parser.add_argument("--interval", type=float, default=3.0, help="PUSH_POLL_INTERVAL")
    parser.add_argument("--seconds", type=float, default=75.0, help="length of the scene under load")
    parser.add_argument("--low-seconds", type=float, default=35.0, help="length of the low-load scene")
    parser.add_argument("--drain", type=float, default=90.0, help="seconds to wait for the last pushes")
    args = parser.parse_args()
    configure_logging("WARNING", "console")
    print(f"pid {os.getpid()}, python {sys.version.split()[0]}", flush=True)
    results = await run(args)
    report(results)
    if path := os.environ.get("BENCH_RESULTS"):
        append_results(path, results)


if __name__ == "__main__":
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(asyncio.wait_for(main(), 600))
