"""Benchmark of the telephony hook on loopback: throughput, latency, overhead, worst case on failover.

    .venv/bin/python bench/telephony_hook.py            # ~1 min, prints a table, stops by itself
    .venv/bin/python bench/telephony_hook.py --seconds 2
    git archive HEAD | tar -x -C /tmp/before            # the last commit, as the peer:
    .venv/bin/python bench/telephony_hook.py --peer /tmp/before --peer-label HEAD
    BENCH_PROFILE=/tmp/prof .venv/bin/python bench/telephony_hook.py   # the hook under cProfile

It starts its own nats-server and two FakeTwilio providers in this process, and the hook (the real
``create_service``) in a child process, so the load generator does not share the hook's event loop.
Scenarios: an open-loop 200 req/s against a provider answering in 0 ms and in 300 ms (overhead =
latency − provider latency), a closed-loop throughput run, an overload of 1,000 connections (every
answer must stay < 3 s: the hook sheds what it cannot serve in time), then a primary that hangs or
fails with a working fallback (worst answer < 3 s, Okta's limit).

With ``--peer`` a second hook, from another source tree, runs every scenario too — each scenario on
each hook in turn — and the table puts the figures side by side: before/after on one machine, in one run.

The floor (:func:`serve_floor`) is the hook's I/O with none of its logic, on the same stack: the same
NATS writes (claim, three counters, then the answer and one audit message) and the same provider POST
per request. It runs the 200 req/s and throughput scenarios, so the table shows how much of the
hook's CPU is the stack's and how much is ours.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

SELF = Path(__file__).resolve()
ROOT = SELF.parents[1]
sys.path.insert(0, str(ROOT))

from bench._procs import cpu_seconds, wait_for_parent  # noqa: E402
from helpdesk.cli import run_async  # noqa: E402
from sandbox.telephony import FakeTwilio  # noqa: E402
from shared.natsserver import EmbeddedNats  # noqa: E402

HOOK_AUTH = "Basic YmVuY2g6YmVuY2gtc2VjcmV0"
CHILD_LIFETIME = 300.0  # the hook process stops by itself after this, whatever happens here


@dataclass
class Run:
    name: str
    latencies: list[float]
    statuses: Counter[str]
    wall: float
    hook_cpu: float = 0.0  # CPU seconds the hook process used during the run

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def line(self, provider_ms: float | None = None) -> str:
        rate = len(self.latencies) / self.wall if self.wall else 0.0
        text = (
            f"{self.name:<38} n={len(self.latencies):>5} {rate:>7.1f} req/s  "
            f"p50={self.pct(0.50):7.1f} ms  p99={self.pct(0.99):7.1f} ms  max={max(self.latencies) * 1000:7.1f} ms"
        )
        if provider_ms is not None:
            over = [max(0.0, lat * 1000 - provider_ms) for lat in self.latencies]
            over.sort()
            text += f"  overhead p50={statistics.median(over):5.1f} ms p99={over[int(0.99 * (len(over) - 1))]:5.1f} ms"
        if self.hook_cpu:
            text += f"  hook CPU {self.hook_cpu / len(self.latencies) * 1000:.2f} ms/req"
        return text + "  " + ", ".join(f"{k}={v}" for k, v in sorted(self.statuses.items()))


def okta_body(i: int, channel: str = "SMS") -> bytes:
    number = f"+1415555{i % 9000 + 1000:04d}"
    return orjson.dumps(
        {
            "eventId": uuid.uuid4().hex[:22],
            "eventType": "com.okta.telephony.provider",
            "requestType": "com.okta.user.telephony.mfa-verification",
            "data": {
                "userProfile": {"login": f"user{i}@example.com", "userId": f"00u{i:017d}"},
                "messageProfile": {
                    "msgTemplate": "Your code is 123456",
                    "phoneNumber": number,
                    "deliveryChannel": channel,
                    "otpCode": "123456",
                    "locale": "EN-US",
                },
            },
        }
    )


async def one(session: aiohttp.ClientSession, url: str, i: int) -> tuple[float, str]:
    body = okta_body(i, "voice" if i % 10 == 9 else "SMS")
    started = time.perf_counter()
    async with session.post(url, data=body, headers={"Authorization": HOOK_AUTH}) as resp:
        payload = orjson.loads(await resp.read())
    elapsed = time.perf_counter() - started
    if resp.status != 200:
        return elapsed, f"http{resp.status}"
    if "error" in payload:
        return elapsed, "error:" + payload["error"]["errorCauses"][0]["reason"]
    return elapsed, payload["commands"][0]["value"][0]["status"]


async def open_loop(name: str, url: str, rate: float, seconds: float) -> Run:
    """``rate`` requests per second for ``seconds``, each started on schedule whatever the others do."""
    total = int(rate * seconds)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(one(session, url, i) for i in range(20)))  # warm the connection pool
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for i in range(total):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, url, i)))
        results = await asyncio.gather(*tasks)
        wall = loop.time() - start
    return Run(name, [r[0] for r in results], Counter(r[1] for r in results), wall)


async def closed_loop(name: str, url: str, clients: int, seconds: float, give_up_after: float | None = None) -> Run:
    """``clients`` clients, each on its own connection, sending back to back for ``seconds``: the
    throughput ceiling. With ``give_up_after`` (the overload run, far beyond capacity) a request that
    fails or takes longer is counted as its error, at that many seconds, instead of ending the run."""
    results: list[tuple[float, str]] = []
    timeout = aiohttp.ClientTimeout(total=give_up_after) if give_up_after is not None else None
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        loop = asyncio.get_running_loop()
        start = loop.time()
        stop = start + seconds

        async def worker(w: int) -> None:
            i = w
            while loop.time() < stop:
                try:
                    results.append(await one(session, url, i))
                except (aiohttp.ClientError, TimeoutError) as exc:
                    if give_up_after is None:
                        raise
                    results.append((give_up_after, type(exc).__name__))
                i += clients

        await asyncio.gather(*(worker(w) for w in range(clients)))
        wall = loop.time() - start
    return Run(name, [r[0] for r in results], Counter(r[1] for r in results), wall)


async def measured(proc: asyncio.subprocess.Process, scenario: Awaitable[Run]) -> Run:
    before = cpu_seconds(proc.pid)
    run = await scenario
    run.hook_cpu = cpu_seconds(proc.pid) - before
    return run


async def start_hook(
    env: dict[str, str], script: Path = SELF, floor: bool = False
) -> tuple[asyncio.subprocess.Process, str]:
    """The hook of the tree ``script`` belongs to (or, with ``floor``, :func:`serve_floor`), in a child
    process; its URL once it is ready."""
    # BENCH_PROFILE=<dir>: the hook runs under cProfile, written to <dir>/telephony-hook.prof at stop.
    profile = (
        ["-m", "cProfile", "-o", str(Path(p) / "telephony-hook.prof")]
        if (p := os.environ.get("BENCH_PROFILE")) and script == SELF and not floor
        else []
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *profile,
        str(script),
        "--serve-floor" if floor else "--serve",
        env={**os.environ, **env},
        cwd=str(script.parents[1]),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if not line.startswith(b"READY "):
        raise RuntimeError(f"hook did not start: {line!r}")
    return proc, line.split()[1].decode() + "/telephony/okta"


async def stop_hook(proc: asyncio.subprocess.Process) -> None:
    if proc.stdin is not None:
        proc.stdin.close()  # EOF tells the child to stop
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()


@dataclass
class Hook:
    label: str
    proc: asyncio.subprocess.Process
    url: str


def summary(rows: list[tuple[str, dict[str, Run], Callable[[Run], float], str, str]], labels: list[str]) -> None:
    """The issue-17 figures, each hook side by side (same run, same machine), with the target.

    The floor, last, runs only the three scenarios its figures come from ("—" elsewhere)."""
    head = f"{'figure':<52}" + "".join(f"{label:>14}" for label in labels) + f"{'target':>14}"
    print(head)
    for title, runs, figure, unit, target in rows:
        cells = "".join(
            f"{figure(runs[label]):>11.2f} {unit:<2}" if label in runs else f"{'—':>14}" for label in labels
        )
        print(f"{title:<52}{cells}{target:>14}")


def cpu_ms(run: Run) -> float:
    return run.hook_cpu / len(run.latencies) * 1000 if run.latencies else 0.0


def overhead_p99(provider_ms: float) -> Callable[[Run], float]:
    def figure(run: Run) -> float:
        over = sorted(max(0.0, lat * 1000 - provider_ms) for lat in run.latencies)
        return over[int(0.99 * (len(over) - 1))]

    return figure


def worst_ms(run: Run) -> float:
    return max(run.latencies) * 1000


def rate(run: Run) -> float:
    return len(run.latencies) / run.wall if run.wall else 0.0


async def bench(seconds: float, peer: Path | None, peer_label: str) -> None:
    async with EmbeddedNats() as nats_server:
        primary, fallback = FakeTwilio(), FakeTwilio()
        await primary.start()
        await fallback.start()
        env = {
            "NATS_URL": nats_server.url,
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
            "TELEPHONY_HOOK_AUTH": HOOK_AUTH,
            "TELEPHONY_PROVIDER_URL": primary.url,
            "TELEPHONY_ACCOUNT_SID": primary.account_sid,
            "TELEPHONY_AUTH_TOKEN": primary.auth_token,
            "TELEPHONY_FROM": "+14155550000",
            "TELEPHONY_FALLBACK_URL": fallback.url,
            "TELEPHONY_FALLBACK_ACCOUNT_SID": fallback.account_sid,
            "TELEPHONY_FALLBACK_AUTH_TOKEN": fallback.auth_token,
            "TELEPHONY_FALLBACK_FROM": "+14155550001",
            "TELEPHONY_LIMIT_PER_NUMBER": "1000000",
            "TELEPHONY_LIMIT_PER_PREFIX": "1000000",
            "TELEPHONY_LIMIT_PER_USER": "1000000",
            "TELEPHONY_HOOK_PORT": "0",
        }
        hooks: list[Hook] = []
        floor: Hook | None = None
        try:
            trees = [("this", SELF)] + ([(peer_label, peer / "bench" / SELF.name)] if peer else [])
            for label, script in trees:
                proc, url = await start_hook({**env, "NATS_PREFIX": "bench" + uuid.uuid4().hex[:6]}, script)
                hooks.append(Hook(label, proc, url))
            proc, url = await start_hook({**env, "NATS_PREFIX": "bench" + uuid.uuid4().hex[:6]}, SELF, floor=True)
            floor = Hook("floor", proc, url)
            print(
                f"hooks: {', '.join(f'{h.label} {h.url}' for h in hooks)}  nats-server {nats_server.url}  "
                f"cpus={os.cpu_count()}  python {sys.version.split()[0]}"
            )
            labels = [h.label for h in hooks] + [floor.label]
            fast: dict[str, Run] = {}
            slow: dict[str, Run] = {}
            closed: dict[str, Run] = {}
            shed: dict[str, Run] = {}
            for hook in hooks:  # each scenario on each hook in turn, so both see the same machine
                primary.latency = 0.0
                fast[hook.label] = await measured(
                    hook.proc, open_loop("200 req/s, provider 0 ms", hook.url, 200, seconds)
                )
                primary.latency = 0.3
                slow[hook.label] = await measured(
                    hook.proc, open_loop("200 req/s, provider 300 ms", hook.url, 200, seconds)
                )
                primary.latency = 0.0
                closed[hook.label] = await measured(
                    hook.proc, closed_loop("throughput, 32 clients, provider 0 ms", hook.url, 32, seconds / 2)
                )
                primary.latency = 0.3
                shed[hook.label] = await measured(
                    hook.proc,
                    closed_loop(
                        "overload: 1000 connections, provider 300 ms", hook.url, 1000, seconds / 2, give_up_after=10
                    ),
                )
                primary.latency = 0.0
            for name, provider_latency, scenario, runs in (  # the floor has no shedding: no overload run
                ("200 req/s, provider 0 ms", 0.0, lambda n: open_loop(n, floor.url, 200, seconds), fast),
                ("200 req/s, provider 300 ms", 0.3, lambda n: open_loop(n, floor.url, 200, seconds), slow),
                (
                    "throughput, 32 clients, provider 0 ms",
                    0.0,
                    lambda n: closed_loop(n, floor.url, 32, seconds / 2),
                    closed,
                ),
            ):
                primary.latency = provider_latency
                runs[floor.label] = await measured(floor.proc, scenario(name))
            primary.latency = 0.0
            for hook in hooks:
                print(f"-- {hook.label}")
                print(fast[hook.label].line(0.0))
                print(slow[hook.label].line(300.0))
                print(closed[hook.label].line())
                print(shed[hook.label].line() + f"  worst={max(shed[hook.label].latencies) * 1000:.0f} ms")
            print(f"-- {floor.label}: the hook's I/O alone (serve_floor)")
            print(fast[floor.label].line(0.0))
            print(slow[floor.label].line(300.0))
            print(closed[floor.label].line())
            print()
            summary(
                [
                    ("hook CPU per request, 200 req/s, provider 0 ms", fast, cpu_ms, "ms", "<= 1.5 ms"),
                    ("hook CPU per request, 200 req/s, provider 300 ms", slow, cpu_ms, "ms", "<= 1.5 ms"),
                    ("hook CPU per request, saturated (32 clients)", closed, cpu_ms, "ms", "<= 1.5 ms"),
                    ("overhead p99, 200 req/s, provider 300 ms", slow, overhead_p99(300.0), "ms", "<= 10 ms"),
                    ("throughput, one replica, 32 clients", closed, rate, "/s", ">= 500 /s"),
                    (
                        "worst answer, 1000 connections (overload)",
                        shed,
                        lambda r: max(r.latencies) * 1000,
                        "ms",
                        "< 3000 ms",
                    ),
                ],
                labels,
            )
            print()
            hook = hooks[0]
            fallback_runs = []
            primary.hang_next(10_000)
            fallback_runs.append(await open_loop("primary hangs, fallback works", hook.url, 20, seconds / 2))
            primary.release()
            primary.fail_next(status=503, n=10_000)
            fallback_runs.append(await open_loop("primary 503s, fallback works", hook.url, 200, seconds / 2))
            primary.reset()
            for run in fallback_runs:
                print(run.line() + f"  worst={max(run.latencies) * 1000:.0f} ms (< 3000 ms)")
            print(
                f"\nprovider requests received: primary={len(primary.calls)} fallback={len(fallback.calls)}; "
                "a hung request is never re-sent (PENDING), a 5xx fails over"
            )
        finally:
            for hook in [*hooks, *([floor] if floor else [])]:
                await stop_hook(hook.proc)
            await primary.stop()
            await fallback.stop()


async def serve() -> None:
    """The child: the real hook service until stdin closes (or CHILD_LIFETIME passes)."""
    from services.telephony_hook.app import create_service
    from shared.bus import Bus
    from shared.logging import configure_logging
    from shared.settings import Settings

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    configure_logging(settings.log_level, settings.log_format)
    bus = await Bus.connect(settings, name="telephony-hook-bench")
    await bus.ensure_streams()
    service = create_service(settings, bus)
    await service.start()
    gc.freeze()  # as `helpdesk` does once its services are up (helpdesk/runner.py)
    print(f"READY {service.url}", flush=True)
    await wait_for_parent(CHILD_LIFETIME)
    await service.stop()
    await bus.close()


async def serve_floor() -> None:
    """The floor: the hook's I/O with none of its logic, on the same stack, in the same process shape.

    Per request: the Authorization header compared, the JSON body read, the claim and three counters
    written to NATS KV in one round trip, one POST to the provider, the answer; then, after it, the
    ledger's answer and one audit message. No number parsing, no limits arithmetic, no failover, no
    deadline, no metrics, no logs. What the real hook costs above this is its own work.
    """
    import base64
    import hashlib
    import hmac
    import math
    from urllib.parse import urlencode

    from aiohttp import web

    from services.telephony_hook.app import EVENTS_BUCKET, EVENTS_TTL, LIMITS_BUCKET
    from services.telephony_hook.provider import provider_session
    from shared.bus import Bus
    from shared.logging import configure_logging
    from shared.settings import Settings

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    configure_logging(settings.log_level, settings.log_format)
    bus = await Bus.connect(settings, name="telephony-floor-bench")
    await bus.ensure_streams()
    events = await bus.key_value(EVENTS_BUCKET, ttl=EVENTS_TTL)
    await bus.key_value(LIMITS_BUCKET)
    limits = bus.bucket_name(LIMITS_BUCKET)
    audit_subject = bus.subject("audit.telephony.sent")
    expected_auth = HOOK_AUTH.encode()
    assert settings.telephony_provider_url and settings.telephony_account_sid and settings.telephony_auth_token
    messages_url = (
        f"{settings.telephony_provider_url}/2010-04-01/Accounts/{settings.telephony_account_sid}/Messages.json"
    )
    credentials = f"{settings.telephony_account_sid}:{settings.telephony_auth_token.get_secret_value()}"
    provider_headers = {
        "Authorization": "Basic " + base64.b64encode(credentials.encode()).decode(),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    sends = provider_session()
    background: set[asyncio.Task[None]] = set()
    js = bus.js

    async def count(key: str) -> None:
        await js.publish(f"$KV.{limits}.{key}", b'{"n":1}', msg_ttl=math.ceil(3600))

    async def after(key: str, answer: bytes, sid: str) -> None:
        await asyncio.gather(
            events.put(key, answer), js.publish(audit_subject, orjson.dumps({"action": "sent", "sid": sid}))
        )

    async def okta(request: web.Request) -> web.Response:
        if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected_auth):
            return web.json_response({"error": "unauthorized"}, status=401)
        hook = orjson.loads(await request.read())
        profile = hook["data"]["messageProfile"]
        user = hook["data"]["userProfile"]["userId"]
        number = profile["phoneNumber"]
        key = "e." + hashlib.sha256(hook["eventId"].encode()).hexdigest()[:40]
        await asyncio.gather(
            events.create(key, b'{"state":"sending"}'),
            count(f"user.{user}"),
            count(f"number.{number[1:]}"),
            count(f"prefix.{number[1:7]}"),
        )
        form = {"To": number, "From": "+14155550000", "Body": profile["msgTemplate"]}
        async with sends.post(messages_url, data=urlencode(form).encode(), headers=provider_headers) as response:
            sid = orjson.loads(await response.read())["sid"]
        answer = {"commands": [{"type": "com.okta.telephony.action", "value": [{"status": "SUCCESSFUL"}]}]}
        task = asyncio.create_task(after(key, orjson.dumps(answer), sid))
        background.add(task)
        task.add_done_callback(background.discard)
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_post("/telephony/okta", okta)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    gc.freeze()  # as the real hook
    print(f"READY http://127.0.0.1:{port}", flush=True)
    await wait_for_parent(CHILD_LIFETIME)
    await runner.cleanup()
    await sends.close()
    await bus.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each 200 req/s run")
    parser.add_argument(
        "--peer",
        type=Path,
        help="another source tree of the project (e.g. the last commit, from `git archive HEAD`): its hook "
        "runs the same scenarios in the same run, side by side",
    )
    parser.add_argument("--peer-label", default="peer", help="the peer's name in the table")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-floor", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        run_async(serve())  # the hook on the product's event loop (uvloop where installed)
        return
    if args.serve_floor:
        run_async(serve_floor())  # the same loop as the hook
        return
    peer = args.peer.resolve() if args.peer else None
    asyncio.run(asyncio.wait_for(bench(args.seconds, peer, args.peer_label), 480))


if __name__ == "__main__":
    main()
