"""Benchmark: many push verifications pending at once in the okta worker, against the sandbox Okta.

    .venv/bin/python bench/okta_worker.py                 # 2,000 pushes, poll every 3 s, 1 then 2 replicas
    .venv/bin/python bench/okta_worker.py --pushes 500 --interval 1

Starts its own nats-server (EmbeddedNats), FakeOkta in a child process and each worker replica in its
own child process (so their CPU and RSS are their own), then for each run:
2,000 cases are put straight into CHALLENGE_SENT with a real push sent to FakeOkta, and their poll jobs
published; every push stays WAITING until the bench resolves it to SUCCESS at a random moment inside
a window of a few poll intervals. Measured per run: CPU % and RSS of each replica, polls/s (counted by
the fake Okta), and the latency from the moment
a push became SUCCESS in Okta to the moment the case update was stored in KV (p50 / p99), and with two
replicas how the polls split between them. Bounded: each run stops after ``--timeout`` seconds.
Targets (issue 5): RSS ≤ 300 MB, p99 ≤ one poll interval + 100 ms, an even split.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing
import os
import random
import resource
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._cases import CHALLENGE_ID, pending_push_case, send_push
from sandbox.okta import DEFAULT_API_TOKEN, FakeOkta, PushOutcome
from services.okta_worker.app import OktaWorkerService, check_settings
from services.okta_worker.case import CaseEngine
from services.okta_worker.store import CASES_BUCKET
from shared.bus import Bus
from shared.logging import configure_logging
from shared.messages import PollPush
from shared.natsserver import EmbeddedNats, free_port
from shared.settings import Settings


def settings_json(settings: Settings) -> str:
    """Settings for a child process, secrets included (this is the bench's own throwaway install)."""
    data = settings.model_dump(mode="python")
    for key, value in data.items():
        if hasattr(value, "get_secret_value"):
            data[key] = value.get_secret_value()
    return orjson.dumps(data, default=str).decode()


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def fake_okta_process(port: int, ready: Any) -> None:
    """FakeOkta in its own process (its CPU is not the worker's), with a few bench-only control routes."""
    from aiohttp import web

    async def serve() -> None:
        okta = FakeOkta.with_demo_data(rate_limit=10_000_000)  # the demo org: the worker checks its groups
        okta.default_push_outcome = PushOutcome(None)  # WAITING until the bench resolves it
        okta.push_lifetime = 3600
        resolved: dict[str, float] = {}

        async def seed(request: web.Request) -> web.Response:
            n = int((await request.json())["n"])
            pairs = []
            for i in range(n):
                user = okta.add_user(f"bench{i}@example.com", "Bench", f"User{i}")
                pairs.append([user.id, okta.add_factor(user.id, "push").id])
            return web.json_response(pairs)

        async def resolve(request: web.Request) -> web.Response:
            body = await request.json()

            async def one(tx_id: str) -> None:
                await asyncio.sleep(random.uniform(0, float(body["spread"])))
                okta.resolve_push(tx_id, "SUCCESS")
                resolved[tx_id] = time.time()

            for tx_id in body["tx_ids"]:
                asyncio.get_running_loop().create_task(one(tx_id))
            return web.json_response({})

        # The gap between two polls of one push, as Okta sees it: what the pacing really achieves.
        last_poll: dict[str, float] = {}
        gaps: list[float] = []

        @web.middleware
        async def poll_gaps(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.method == "GET" and "/transactions/" in request.path:
                now = time.monotonic()
                if (last := last_poll.get(request.path)) is not None:
                    gaps.append(now - last)
                last_poll[request.path] = now
            return await handler(request)

        okta.app.middlewares.append(poll_gaps)

        async def stats(_: web.Request) -> web.Response:
            okta.calls.clear()  # the fake records every call; keep its memory flat
            seen = sorted(gaps)
            gaps.clear()
            gap = {"p50": seen[len(seen) // 2], "p99": seen[int(len(seen) * 0.99)], "max": seen[-1]} if seen else {}
            return web.json_response(
                {"polls": sum(t.polls for t in okta.pushes), "resolved": resolved, "cpu": cpu_seconds(), "gap": gap}
            )

        okta.app.router.add_post("/bench/seed", seed)
        okta.app.router.add_post("/bench/resolve", resolve)
        okta.app.router.add_get("/bench/stats", stats)
        await okta.start(port=port)
        ready.set()
        await asyncio.Event().wait()

    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(serve())


def replica_process(settings_json: str, index: int, ready: Any) -> None:
    """One okta worker replica in its own process; answers ``bench.stats.<index>`` with its figures."""

    async def serve() -> None:
        configure_logging("WARNING", "console")
        settings = Settings.model_validate_json(settings_json)
        bus = await Bus.connect(settings, name=f"okta-worker-{index}")
        worker = OktaWorkerService(settings, bus)
        await worker.start()
        gc.freeze()  # as `helpdesk` does once its services are up (helpdesk/runner.py)
        profile_to = os.environ.get("BENCH_PROFILE")  # a directory: each replica writes a cProfile there
        profiler = None
        if profile_to:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()

        async def stats(msg: Any) -> None:
            if profiler is not None:
                profiler.dump_stats(os.path.join(str(profile_to), f"okta-worker-{index}.prof"))
            ctx = worker.ctx
            body = {"handled": ctx.handled if ctx else 0, "cpu": cpu_seconds(), "rss": rss_mb()}
            await msg.respond(orjson.dumps(body))

        await bus.nc.subscribe(f"bench.stats.{index}", cb=stats)
        await bus.nc.flush()
        ready.set()
        await asyncio.Event().wait()

    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(serve())


async def run(nats_url: str, pushes: int, replicas: int, interval: float, spread: float, timeout: float) -> None:
    port = free_port()
    ready = multiprocessing.Event()
    child = multiprocessing.Process(target=fake_okta_process, args=(port, ready), daemon=True)
    child.start()
    if not await asyncio.get_running_loop().run_in_executor(None, ready.wait, 10.0):
        raise RuntimeError("FakeOkta did not start")
    okta_url = f"http://127.0.0.1:{port}"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        nats_url=nats_url,
        nats_prefix="b" + uuid.uuid4().hex[:8],
        case_token_secret="bench-case-token-secret-0123456789abcdef",
        okta_org_url=okta_url,
        okta_api_token=DEFAULT_API_TOKEN,
        push_poll_interval=interval,
        push_max_wait=3600,
    )
    control = await Bus.connect(settings, name="bench")
    await control.ensure_streams()
    procs = []
    for i in range(replicas):
        started = multiprocessing.Event()
        proc = multiprocessing.Process(target=replica_process, args=(settings_json(settings), i, started), daemon=True)
        proc.start()
        procs.append(proc)
        if not await asyncio.get_running_loop().run_in_executor(None, started.wait, 20.0):
            for p in procs:
                p.terminate()
            child.terminate()
            await control.close()
            raise RuntimeError(f"replica {i} did not start")

    async def replica_stats() -> list[dict[str, float]]:
        replies = [await control.nc.request(f"bench.stats.{i}", b"", timeout=5) for i in range(replicas)]
        return [orjson.loads(r.data) for r in replies]

    cases_kv = await control.key_value(CASES_BUCKET)
    http = httpx.AsyncClient(base_url=okta_url, headers={"Authorization": f"SSWS {DEFAULT_API_TOKEN}"}, timeout=30)

    # Seed: a case in CHALLENGE_SENT per user, with a real push sent to Okta and its poll job published.
    print(f"seeding {pushes} pending pushes …", flush=True)
    pairs = (await http.post("/bench/seed", json={"n": pushes})).json()
    engine = CaseEngine(settings, check_settings(settings)[1])
    tx_by_case: dict[str, str] = {}
    now = datetime.now(UTC)
    sem = asyncio.Semaphore(64)

    async def seed(i: int, user_id: str, factor_id: str) -> None:
        case_id = f"c_bench_{i:05d}"
        async with sem:
            body, tx_by_case[case_id] = await send_push(http, user_id, factor_id)
        poll_url = body["_links"]["poll"]["href"]
        case = pending_push_case(
            engine,
            case_id,
            f"U0BENCH{i % 50:02d}",  # 50 agents at work
            user_id,
            f"bench{i}@example.com",
            factor_id,
            body,
            now,
            now + timedelta(hours=1),
        )
        async with sem:
            await cases_kv.create(case_id, case.model_dump_json().encode())
        jobs.append(
            PollPush(case_id=case_id, challenge_id=CHALLENGE_ID, poll_url=poll_url, expires_at=now + timedelta(hours=1))
        )

    jobs: list[PollPush] = []
    await asyncio.gather(*(seed(i, uid, fid) for i, (uid, fid) in enumerate(pairs)))

    # The agents started these pushes one after another, not all in the same millisecond: the first
    # polls come at a steady pace over one interval, as they would at this load in a real org.
    started = time.monotonic()
    for i, job in enumerate(jobs):
        await asyncio.sleep(max(0.0, started + i * interval / pushes - time.monotonic()))
        # first_poll_at as the worker's own _ensure_poll_job sets it: when the job is published.
        job = job.model_copy(update={"first_poll_at": datetime.now(UTC)})
        await control.publish(job, msg_id=f"poll:{job.case_id}")

    # Watch the cases bucket: the moment each case is stored VERIFIED.
    updated_at: dict[str, float] = {}
    done = asyncio.Event()
    watcher = await cases_kv.watchall(include_history=False)

    async def watch() -> None:
        async for entry in watcher:
            if entry is None or entry.value is None:
                continue
            if b'"state":"verified"' in entry.value and entry.key not in updated_at:
                updated_at[entry.key] = time.time()
                if len(updated_at) >= pushes:
                    done.set()

    watch_task = asyncio.create_task(watch())

    gap: dict[str, float] = {}

    async def okta_stats() -> tuple[int, float]:
        body = (await http.get("/bench/stats")).json()
        gap.clear()
        gap.update(body["gap"])
        return int(body["polls"]), float(body["cpu"])

    # Let the polling reach its steady state, then measure a few intervals with every push pending.
    await asyncio.sleep(interval * 2)
    polls_before, okta_cpu_before = await okta_stats()
    before = await replica_stats()
    wall_before = time.monotonic()
    await asyncio.sleep(interval * 4)
    window = time.monotonic() - wall_before
    polls_after, okta_cpu_after = await okta_stats()
    steady_polls = polls_after - polls_before
    steady_gap = dict(gap)
    okta_cpu = (okta_cpu_after - okta_cpu_before) / window * 100
    during = await replica_stats()
    steady_cpu = [(d["cpu"] - b["cpu"]) / window * 100 for d, b in zip(during, before, strict=True)]

    # The users answer: each push becomes SUCCESS at a random moment within `spread` seconds.
    await http.post("/bench/resolve", json={"tx_ids": list(tx_by_case.values()), "spread": spread})
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout)
    final = (await http.get("/bench/stats")).json()
    resolved, answering_gap = final["resolved"], final["gap"]
    after = await replica_stats()
    peak_rss = [a["rss"] for a in after]
    handled = [int(a["handled"] - b["handled"]) for a, b in zip(after, before, strict=True)]
    watch_task.cancel()
    with contextlib.suppress(Exception):
        await watcher.stop()

    latencies = sorted(
        (updated_at[c] - resolved[t]) * 1000 for c, t in tx_by_case.items() if c in updated_at and t in resolved
    )
    missing = pushes - len(latencies)
    p50 = statistics.median(latencies) if latencies else float("nan")
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else float("nan")
    target = interval * 1000 + 100
    print(f"\n== {replicas} replica(s), {pushes} pending pushes, poll every {interval:g} s ==")
    print(f"polls/s (steady, all pending)   {steady_polls / window:8.1f}   (ideal {pushes / interval:.1f})")
    if steady_gap:
        print(
            f"gap between polls of a push      p50 {steady_gap['p50'] * 1000:.0f} ms   "
            f"p99 {steady_gap['p99'] * 1000:.0f} ms   max {steady_gap['max'] * 1000:.0f} ms   (steady)"
        )
    if answering_gap:
        print(
            f"                                 p50 {answering_gap['p50'] * 1000:.0f} ms   "
            f"p99 {answering_gap['p99'] * 1000:.0f} ms   max {answering_gap['max'] * 1000:.0f} ms   (users answering)"
        )
    print(f"CPU % of one core per replica   {' / '.join(f'{c:.1f}' for c in steady_cpu)}   (steady, all pending)")
    print(f"CPU % of one core, FakeOkta     {okta_cpu:.1f}   (the sandbox's own ceiling shows here)")
    print(f"RSS MB per replica (peak)       {' / '.join(f'{r:.1f}' for r in peak_rss)}   (target ≤ 300)")
    worst = latencies[-1] if latencies else 0.0
    print(f"SUCCESS → case stored           p50 {p50:.1f} ms   p99 {p99:.1f} ms   max {worst:.1f} ms")
    print(f"                                (target p99 ≤ {target:.0f} ms; cases not updated in time: {missing})")
    if path := os.environ.get("BENCH_RESULTS"):
        figures = {
            "bench": "okta_worker",
            "replicas": replicas,
            "pushes": pushes,
            "interval_s": interval,
            "polls_per_s": steady_polls / window,
            "cpu_percent": steady_cpu,
            "rss_mb": peak_rss,
            "success_to_stored_p99_ms": p99,
            "not_updated": missing,
        }
        append_results(path, figures)
    if replicas > 1:
        total = sum(handled) or 1
        split = " / ".join(f"{n} ({n / total:.0%})" for n in handled)
        print(f"poll jobs handled per replica   {split}")

    await http.aclose()
    await control.close()
    for proc in procs:
        proc.terminate()
        proc.join(5)
    child.terminate()
    child.join(5)


def append_results(path: str, figures: dict[str, Any]) -> None:
    """One JSON line of figures for ``bench/report.py``."""
    with open(path, "ab") as out:
        out.write(orjson.dumps(figures) + b"\n")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=3.0)
    parser.add_argument("--spread", type=float, default=None, help="seconds over which users answer (default 2×)")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    configure_logging("WARNING", "console")
    print(f"pid {os.getpid()}, python {sys.version.split()[0]}")
    async with EmbeddedNats() as server:
        for replicas in args.replicas:
            await run(server.url, args.pushes, replicas, args.interval, args.spread or args.interval * 2, args.timeout)


if __name__ == "__main__":
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(asyncio.wait_for(main(), 600))  # stops by itself, whatever happens
