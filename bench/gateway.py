"""Benchmark of the gateway's slash-command ack against a minimal slack-bolt app, on loopback.

    .venv/bin/python bench/gateway.py                      # ~1 min, prints a table, stops by itself
    .venv/bin/python bench/gateway.py --seconds 3 --connections 8
    .venv/bin/python bench/gateway.py --loadgen python     # without wrk (slower generator, lower ceilings)
    BENCH_PROFILE=/tmp/prof .venv/bin/python bench/gateway.py   # each server under cProfile (slower)

It starts its own nats-server (``EmbeddedNats``), then, one at a time, two servers in child
processes: the gateway (the real ``create_app``: signature check, parsing, ``OpenCase`` published to
JetStream and its PubAck awaited before the 200), the floor — a bare aiohttp handler doing only the
signature check (HMAC), the JetStream publish and its PubAck — and a slack-bolt ``AsyncApp`` whose
``/helpdesk`` listener only acks. Each is loaded with signed slash commands, every one with its own trigger_id, by
wrk (a Lua script reads pre-signed requests from a file; ``apt-get install wrk``) or, with
``--loadgen python``, an aiohttp closed-loop generator. Printed: requests/s, p50/p99 latency and
non-2xx answers, at 8 and 64 connections, side by side; the gateway's throughput as a share of the
floor's and a multiple of bolt's; how many commands reached the stream. With ``BENCH_RESULTS=<file>``
those ratios are appended to the file as one JSON line (``bench/report.py``). With
``BENCH_PROFILE=<dir>`` each server runs under cProfile, written to ``<dir>/<server>-<conns>.prof``
when it stops (its figures are then the profiler's, not the server's).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import hmac
import os
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import orjson

if TYPE_CHECKING:
    from shared.settings import Settings

SELF = Path(__file__).resolve()
ROOT = SELF.parents[1]
sys.path.insert(0, str(ROOT))

from bench._procs import cpu_seconds, wait_for_parent  # noqa: E402
from shared.natsserver import EmbeddedNats, free_port  # noqa: E402

SIGNING_SECRET = "bench-signing-secret-0123456789abcdef"
CASE_SECRET = "bench-case-token-secret-0123456789abcdef"
PREFIX = "bench"
CHILD_LIFETIME = 240.0  # a server process stops by itself after this, whatever happens here
REQUESTS_PER_SECOND_CEILING = 15_000  # sizes the pre-signed request file (never reused within a run)

WRK_SCRIPT = r"""
-- Signed Slack slash commands, each with its own trigger_id, read from a file of "trigger signature" lines.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["X-Slack-Request-Timestamp"] = "__TIMESTAMP__"

local prefix = "__PREFIX__"
local suffix = "__SUFFIX__"
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  triggers, signatures = {}, {}
  for line in io.lines("__DATA__") do
    local t, s = line:match("^(%S+) (%S+)$")
    triggers[#triggers + 1] = t
    signatures[#signatures + 1] = s
  end
  nthreads = __THREADS__
  idx = tid
  wraps = 0
end

function request()
  idx = idx + nthreads
  if idx > #triggers then idx = (idx % #triggers) + 1; wraps = wraps + 1 end
  wrk.headers["X-Slack-Signature"] = signatures[idx]
  return wrk.format(nil, nil, wrk.headers, prefix .. triggers[idx] .. suffix)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"non2xx":%d,"socket_errors":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


# ----------------------------------------------------------------------------------------- servers


def _configure_child(use_uvloop: bool) -> None:
    from shared.logging import configure_logging

    configure_logging("WARNING", "json")
    if use_uvloop:
        import uvloop  # type: ignore[import-not-found]

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _settings(nats_url: str) -> Settings:
    """The settings both servers run with: the same NATS, prefix and secrets."""
    from shared.settings import Settings

    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        nats_url=nats_url,
        nats_prefix=PREFIX,
        slack_signing_secret=SIGNING_SECRET,  # type: ignore[arg-type]
        case_token_secret=CASE_SECRET,  # type: ignore[arg-type]
    )


async def _serve_gateway(port: int, nats_url: str) -> None:
    from aiohttp import web

    from services.gateway.app import create_app
    from shared.bus import Bus

    settings = _settings(nats_url)
    bus = await Bus.connect(settings, name="gateway-bench")
    await bus.ensure_streams()
    runner = web.AppRunner(create_app(settings, bus), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    gc.freeze()  # both servers alike, as `helpdesk` does once its services are up
    print("READY", flush=True)
    await wait_for_parent(CHILD_LIFETIME)
    await runner.cleanup()
    await bus.close()


async def _serve_bare(port: int, nats_url: str) -> None:
    """The floor: an aiohttp handler that checks Slack's signature (HMAC), publishes the raw body to
    JetStream with a dedupe id and awaits the PubAck, then answers 200. Nothing else."""
    from aiohttp import web

    from shared.bus import Bus

    settings = _settings(nats_url)
    bus = await Bus.connect(settings, name="bare-bench")
    await bus.ensure_streams()
    js = bus.nc.jetstream()
    # A stream of its own, configured as the gateway's command stream (memory, work queue, its byte
    # limit): the same storage work per command, and the gateway's stream keeps only the gateway's.
    config = (await js.stream_info(bus.stream_name("HELPDESK_CMD"))).config
    config.name = bus.stream_name("BARE_CMD")
    config.subjects = [bus.subject("bare.cmd.>")]
    await js.add_stream(config)
    subject = bus.subject("bare.cmd.open")
    secret = SIGNING_SECRET.encode()

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
            return web.Response(status=401)
        base = b"v0:" + timestamp.encode() + b":" + body
        expected = "v0=" + hmac.new(secret, base, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            return web.Response(status=401)
        await js.publish(subject, body, headers={"Nats-Msg-Id": signature})
        return web.Response()

    app = web.Application()
    app.router.add_post("/slack/commands", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    gc.freeze()  # every server alike, as `helpdesk` does once its services are up
    print("READY", flush=True)
    await wait_for_parent(CHILD_LIFETIME)
    await runner.cleanup()
    await bus.close()


async def _serve_bolt(port: int) -> None:
    from aiohttp import web
    from slack_bolt.async_app import AsyncApp
    from slack_bolt.authorization import AuthorizeResult

    async def authorize(**_: object) -> AuthorizeResult:
        # No Slack to ask (auth.test): a fixed installation, as a single-workspace app has.
        return AuthorizeResult(enterprise_id=None, team_id="T0BENCH", bot_token="xoxb-bench", bot_user_id="U0BOT")

    app = AsyncApp(signing_secret=SIGNING_SECRET, authorize=authorize)

    @app.command("/helpdesk")
    async def helpdesk(ack) -> None:  # type: ignore[no-untyped-def]
        await ack()

    runner = web.AppRunner(app.web_app(path="/slack/commands", port=port), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    gc.freeze()  # both servers alike, as `helpdesk` does once its services are up
    print("READY", flush=True)
    await wait_for_parent(CHILD_LIFETIME)
    await runner.cleanup()


class Child:
    """A server in its own process, started with ``--serve`` and stopped by closing its stdin."""

    def __init__(self, kind: str, port: int, nats_url: str, use_uvloop: bool, profile_as: str = "") -> None:
        self.kind = kind
        self.port = port
        profile = (
            ["-m", "cProfile", "-o", str(Path(p) / f"{profile_as or kind}.prof")]
            if (p := os.environ.get("BENCH_PROFILE"))
            else []
        )
        self.args = [*profile, str(SELF), "--serve", kind, "--port", str(port), "--nats-url", nats_url]
        if not use_uvloop:
            self.args.append("--asyncio")
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Child:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=str(ROOT),
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if line.strip() != b"READY":
            raise RuntimeError(f"{self.kind} server did not start: {line!r}")
        return self

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


# ----------------------------------------------------------------------------------------- requests


def _sign(timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(SIGNING_SECRET.encode(), base, hashlib.sha256).hexdigest()


def _body_parts() -> tuple[str, str]:
    """A slash command as Slack sends it, split around the trigger_id value (the last field)."""
    form = urlencode(
        {
            "token": "benchverificationtoken",
            "team_id": "T0BENCH",
            "team_domain": "bench",
            "channel_id": "C0BENCH",
            "channel_name": "helpdesk",
            "user_id": "U0AGENT01",
            "user_name": "alex",
            "command": "/helpdesk",
            "text": "alice",
            "api_app_id": "A0BENCH",
            "is_enterprise_install": "false",
            "response_url": "https://hooks.slack.com/commands/T0BENCH/1/abc",
        }
    )
    return form + "&trigger_id=", ""


def _trigger(run: str, n: int) -> str:
    return f"{n}.{run}.{secrets.token_hex(8)}"


def write_requests(directory: Path, run: str, count: int, threads: int) -> tuple[Path, str]:
    """Pre-sign ``count`` requests for wrk: a data file and a Lua script; returns (script, timestamp)."""
    timestamp = str(int(time.time()))
    prefix, suffix = _body_parts()
    data = directory / f"{run}.txt"
    with data.open("w") as out:
        for n in range(count):
            trigger = _trigger(run, n)
            out.write(f"{trigger} {_sign(timestamp, (prefix + trigger + suffix).encode())}\n")
    script = directory / f"{run}.lua"
    script.write_text(
        WRK_SCRIPT.replace("__TIMESTAMP__", timestamp)
        .replace("__PREFIX__", prefix)
        .replace("__SUFFIX__", suffix)
        .replace("__DATA__", str(data))
        .replace("__THREADS__", str(threads))
    )
    return script, timestamp


# ----------------------------------------------------------------------------------------- load


@dataclass
class Result:
    server: str
    connections: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    non2xx: int
    socket_errors: int
    cpu_seconds: float = 0.0
    nats_cpu_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def run_wrk(url: str, connections: int, seconds: float, script: Path, threads: int) -> dict[str, int]:
    proc = await asyncio.create_subprocess_exec(
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), seconds + 60)
    for line in out.decode().splitlines():
        if line.startswith("{"):
            return dict(orjson.loads(line))
    raise RuntimeError(f"wrk failed: {err.decode()[-500:]} {out.decode()[-500:]}")


async def run_python(url: str, connections: int, seconds: float, run: str) -> dict[str, int]:
    """A closed-loop generator: ``connections`` workers, each posting signed commands back to back."""
    import aiohttp

    prefix, suffix = _body_parts()
    latencies: list[float] = []
    non2xx = errors = 0
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal non2xx, errors
        while time.perf_counter() < deadline:
            timestamp = str(int(time.time()))
            body = (prefix + _trigger(run, next(counter)) + suffix).encode()
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Slack-Request-Timestamp": timestamp,
                "X-Slack-Signature": _sign(timestamp, body),
            }
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status >= 300:
                        non2xx += 1
            except aiohttp.ClientError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(connections)))
        wall = time.perf_counter() - started
    latencies.sort()

    def pct(q: float) -> int:
        return int(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e6) if latencies else 0

    return {
        "requests": len(latencies) + non2xx,
        "duration_us": int(wall * 1e6),
        "non2xx": non2xx,
        "socket_errors": errors,
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "max_us": int(latencies[-1] * 1e6) if latencies else 0,
    }


async def commands_on_stream(nats_url: str) -> int:
    import nats

    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info(f"{PREFIX}_HELPDESK_CMD")
        return int(info.state.messages)
    finally:
        await nc.close()


async def bench(args: argparse.Namespace) -> None:
    loadgen = args.loadgen
    if loadgen == "wrk" and shutil.which("wrk") is None:
        print("wrk not found (apt-get install -y wrk): using the python load generator", file=sys.stderr)
        loadgen = "python"
    threads = 2
    results: list[Result] = []
    async with EmbeddedNats() as server:
        with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
            for connections in args.connections:
                for kind in ("gateway", "bare", "bolt"):
                    port = free_port()
                    run = f"{kind}{connections}{secrets.token_hex(3)}"
                    url = f"http://127.0.0.1:{port}/slack/commands"
                    script: Path | None = None
                    warm_script: Path | None = None
                    if loadgen == "wrk":  # separate files: warm-up and measured requests never share a trigger_id
                        count = int(REQUESTS_PER_SECOND_CEILING * args.seconds)
                        script, _ = write_requests(Path(tmp), run, count, threads)
                        if args.warmup:
                            count = int(REQUESTS_PER_SECOND_CEILING * args.warmup)
                            warm_script, _ = write_requests(Path(tmp), run + "w", count, threads)
                    async with Child(kind, port, server.url, args.uvloop, f"{kind}-{connections}") as child:
                        if args.warmup:  # connections open, caches and the stream warm
                            if warm_script is not None:
                                await run_wrk(url, connections, args.warmup, warm_script, threads)
                            else:
                                await run_python(url, connections, args.warmup, run + "w")
                        before = await commands_on_stream(server.url) if kind == "gateway" else 0
                        cpu, nats_cpu = child.cpu_seconds(), cpu_seconds(server._proc.pid if server._proc else None)
                        if script is not None:
                            stats = await run_wrk(url, connections, args.seconds, script, threads)
                        else:
                            stats = await run_python(url, connections, args.seconds, run)
                        cpu = child.cpu_seconds() - cpu
                        nats_cpu = cpu_seconds(server._proc.pid if server._proc else None) - nats_cpu
                        if kind == "gateway":
                            stored = await commands_on_stream(server.url) - before
                            print(
                                f"  gateway @{connections}: {stats['requests']} acked, {stored} new commands on"
                                f" the stream",
                                file=sys.stderr,
                            )
                    results.append(
                        Result(
                            server=kind,
                            connections=connections,
                            requests=stats["requests"],
                            seconds=stats["duration_us"] / 1e6,
                            p50_ms=stats["p50_us"] / 1000,
                            p99_ms=stats["p99_us"] / 1000,
                            max_ms=stats["max_us"] / 1000,
                            non2xx=stats["non2xx"],
                            socket_errors=stats["socket_errors"],
                            cpu_seconds=cpu,
                            nats_cpu_seconds=nats_cpu,
                        )
                    )
    report(results, loadgen, args)


def report(results: list[Result], loadgen: str, args: argparse.Namespace) -> None:
    loop = "uvloop" if args.uvloop else "asyncio"
    print()
    print(
        f"Signed /helpdesk slash commands on loopback, {os.cpu_count()} CPUs, load by {loadgen},"
        f" {args.seconds:.0f} s per run after {args.warmup:.0f} s warm-up, servers in their own process ({loop})."
    )
    print("gateway = verify + parse + OpenCase published to JetStream (PubAck awaited) + 200;")
    print("bare    = the floor: an aiohttp handler doing the signature check (HMAC) + JetStream publish + PubAck;")
    print("bolt    = slack-bolt AsyncApp, signature verification on, a /helpdesk listener that only acks.")
    print()
    header = f"{'conns':>5}  {'server':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'non-2xx':>8}"
    header += f" {'errors':>7} {'CPU s':>6} {'NATS CPU s':>10}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.connections:>5}  {r.server:<8} {r.rate:>9.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.max_ms:>8.1f}"
            f" {r.non2xx:>8} {r.socket_errors:>7} {r.cpu_seconds:>6.1f} {r.nats_cpu_seconds:>10.1f}"
        )
    print()
    figures: dict[str, float] = {}
    for connections in args.connections:
        ours = next((r for r in results if r.server == "gateway" and r.connections == connections), None)
        bare = next((r for r in results if r.server == "bare" and r.connections == connections), None)
        bolt = next((r for r in results if r.server == "bolt" and r.connections == connections), None)
        if ours and bare and bare.rate:
            figures[f"gateway_rps_{connections}"] = ours.rate
            figures[f"bare_rps_{connections}"] = bare.rate
            figures[f"gateway_vs_bare_{connections}"] = ours.rate / bare.rate
            print(
                f"@{connections:<3} gateway/bare throughput = {ours.rate / bare.rate:.0%} of the floor   "
                f"p99 gateway {ours.p99_ms:.2f} ms vs bare {bare.p99_ms:.2f} ms"
            )
        if ours and bolt and bolt.rate:
            figures[f"bolt_rps_{connections}"] = bolt.rate
            figures[f"gateway_vs_bolt_{connections}"] = ours.rate / bolt.rate
            print(
                f"@{connections:<3} gateway/bolt throughput = {ours.rate / bolt.rate:.2f}x   "
                f"p99 gateway {ours.p99_ms:.2f} ms vs bolt {bolt.p99_ms:.2f} ms"
            )
    if path := os.environ.get("BENCH_RESULTS"):
        with open(path, "ab") as out:
            out.write(orjson.dumps({"bench": "gateway", "loadgen": loadgen, **figures}) + b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each run")
    parser.add_argument("--connections", type=lambda s: [int(x) for x in s.split(",")], default=[8, 64])
    parser.add_argument("--loadgen", choices=["wrk", "python"], default="wrk")
    parser.add_argument(
        "--asyncio",
        dest="uvloop",
        action="store_false",
        help="run both servers on the standard asyncio loop instead of uvloop (the product's default)",
    )
    parser.add_argument("--serve", choices=["gateway", "bare", "bolt"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--nats-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _configure_child(args.uvloop)
        if args.serve == "gateway":
            asyncio.run(_serve_gateway(args.port, args.nats_url))
        elif args.serve == "bare":
            asyncio.run(_serve_bare(args.port, args.nats_url))
        else:
            asyncio.run(_serve_bolt(args.port))
        return
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
