"""Helpers for benches that run the product as deployed: each service its own ``helpdesk <name>`` process.

env = service_env({"nats_url": url, "slack_api_url": ..., "gateway_port": port})
proc = await start_service("gateway", env, log_path)
await wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
before = cpu_seconds(proc.pid)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


async def wait_for_parent(lifetime: float) -> None:
    """In a bench's server child: return once the parent closes our stdin, or after ``lifetime`` s
    whatever happens there (a bench never leaves a server behind)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(reader.read(), lifetime)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far (from ``/proc/<pid>/stat``; 0 without a pid
    or where there is no ``/proc``)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def service_env(values: dict[str, Any]) -> dict[str, str]:
    """The process environment with ``values`` as settings (``NAME=value``, lists comma-joined).

    A value of None removes the variable, so an inherited one cannot leak into the bench.
    """
    env = dict(os.environ)
    for name, value in values.items():
        if value is None:
            env.pop(name.upper(), None)
        elif isinstance(value, list):
            env[name.upper()] = ",".join(value)
        else:
            env[name.upper()] = str(value)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


async def start_service(command: str, env: dict[str, str], log_path: Path) -> asyncio.subprocess.Process:
    """``python -m helpdesk.cli <command>`` with ``env``; its output goes to ``log_path``.

    With ``BENCH_PROFILE=<dir>`` set, under cProfile, written to ``<dir>/<command>.prof`` at stop.
    """
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    profile = (
        ["-m", "cProfile", "-o", str(Path(p) / f"{command}.prof")] if (p := os.environ.get("BENCH_PROFILE")) else []
    )
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable, *profile, "-m", "helpdesk.cli", command, env=env, cwd=ROOT, stdout=log, stderr=log
        )
    finally:
        os.close(log)


async def wait_ready(url: str, proc: asyncio.subprocess.Process, timeout: float = 30.0) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"process exited with code {proc.returncode} before {url} was ready")
            try:
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=1)) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout:g} s")


async def stop_process(proc: asyncio.subprocess.Process, timeout: float = 10.0) -> int | None:
    """SIGTERM (a graceful stop, as in a container), then SIGKILL if it does not exit in time."""
    if proc.returncode is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        proc.kill()
        return await proc.wait()
