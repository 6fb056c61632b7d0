"""NATS as ops run it: the shipped least-privilege config on a real nats-server, TLS with client
certificates; every service works as its own user, and no user can do what it should not."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml
from nats.aio.client import Client as NatsClient

from helpdesk.demo import Demo, Transcript
from helpdesk.natsauth import helm_users, main, render_conf
from helpdesk.runner import ALL, ServiceGroup
from helpdesk.sandbox_stack import SandboxStack
from shared.bus import Bus, BusUnavailable, connect_options
from shared.settings import Settings
from tests.secure_nats import ROOT, SecureNats

HELM_VALUES = ROOT / "deploy" / "nats" / "helm-values.yaml"
CHART_DEFAULTS = ROOT / "tests" / "schemas" / "nats-helm-values.yaml"
# Free-form maps of the chart: anything may go under them.
FREE_FORM = {"merge", "patch", "env", "resources"}


@pytest.fixture(scope="module")
async def secure(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SecureNats]:
    server = SecureNats(tmp_path_factory.mktemp("secure-nats"))
    await server.server.start()
    yield server
    await server.server.stop()


def base_settings() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


async def connect_as(secure: SecureNats, user: str) -> tuple[NatsClient, list[str]]:
    """A raw connection as ``user`` that records the server's errors (permission violations)."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    nc = await nats.connect(
        **connect_options(secure.settings_for(base_settings(), user), user), error_cb=on_error, allow_reconnect=False
    )
    return nc, errors


async def until(probe: Any, what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not probe():
        if loop.time() > deadline:
            raise AssertionError(what)
        await asyncio.sleep(0.02)  # polling a condition, with a deadline


def test_shipped_config_is_rendered_from_the_code(capsys: pytest.CaptureFixture[str]) -> None:
    """deploy/nats/nats-server.conf is exactly what the code's subjects, streams and buckets give."""
    assert (ROOT / "deploy" / "nats" / "nats-server.conf").read_text() == render_conf()
    assert main(["--prefix", "acme"]) == 0
    prefixed = capsys.readouterr().out
    assert '"acme.helpdesk.cmd.>"' in prefixed and '"$KV.acme_cases.>"' in prefixed


def _paths(tree: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if not isinstance(tree, dict):
        return [path]
    found: list[tuple[str, ...]] = []
    for key, value in tree.items():
        if key in FREE_FORM:
            found.append((*path, key))
        else:
            found.extend(_paths(value, (*path, key)))
    return found


def test_helm_values_fit_the_chart_and_carry_the_same_users() -> None:
    """Every key of deploy/nats/helm-values.yaml is one the NATS chart knows; JetStream with memory and
    file store, three clustered replicas, TLS, and the same users and permissions as the config file."""
    values = yaml.safe_load(HELM_VALUES.read_text())
    defaults = yaml.safe_load(CHART_DEFAULTS.read_text())
    for path in _paths(values):
        node: Any = defaults
        for key in path:
            assert isinstance(node, dict) and key in node, f"{'.'.join(path)} is not a value of the NATS chart"
            node = node[key]
    config = values["config"]
    assert config["jetstream"]["enabled"] and config["jetstream"]["memoryStore"]["enabled"]
    assert config["jetstream"]["fileStore"]["enabled"]
    assert config["cluster"] == {"enabled": True, "replicas": 3}
    assert config["nats"]["tls"]["enabled"] and config["nats"]["tls"]["merge"]["verify"] is True
    assert config["merge"]["authorization"]["users"] == helm_users()
    env = values["container"]["env"]
    for user in helm_users():
        variable = str(user["password"]).removeprefix("<< $").removesuffix(" >>")
        assert env[variable]["valueFrom"]["secretKeyRef"]["name"] == "helpdesk-nats-users"


async def test_every_service_runs_as_its_own_user_over_tls(secure: SecureNats, _logging: None) -> None:
    """Five services, each connected as its own NATS user over mutual TLS, carry a push verification
    to a temporary password and a telephony hook SMS (the audit sink reading it all), without one
    permission violation on the server."""
    groups: list[ServiceGroup] = []
    async with SandboxStack(nats_url=secure.url, services=[]) as stack:
        assert stack.settings is not None
        try:
            for name in [*ALL, "audit-sink"]:
                group = ServiceGroup(secure.settings_for(stack.settings, name), [name], embedded=False)
                await group.start()
                groups.append(group)
            demo = Demo(stack, Transcript(io.StringIO()))
            await demo.push_to_temp_password()
            await demo.telephony_hook()
        finally:
            for group in reversed(groups):
                await group.stop()
    assert secure.violations() == []


async def test_gateway_user_reads_no_case_or_audit_and_writes_no_kv(secure: SecureNats) -> None:
    """The gateway's user may not read case snapshots, audit events or another service's inbox, nor
    write the cases bucket or create a consumer: the server refuses each with a permissions violation."""
    nc, errors = await connect_as(secure, "gateway")
    try:
        await nc.subscribe("helpdesk.case.>")
        await nc.subscribe("audit.>")
        await nc.subscribe("_INBOX.okta-worker.>")
        await nc.publish("$KV.cases.c1", b"{}")
        await nc.publish("$JS.API.STREAM.CREATE.KV_cases", b"{}")
        await nc.publish("$JS.API.CONSUMER.DURABLE.CREATE.AUDIT.peek", b"{}")
        await nc.publish("audit.case.forged", b"{}")
        expected = [
            'subscription to "helpdesk.case.>"',
            'subscription to "audit.>"',
            'subscription to "_inbox.okta-worker.>"',
            'publish to "$kv.cases.c1"',
            'publish to "$js.api.stream.create.kv_cases"',
            'publish to "$js.api.consumer.durable.create.audit.peek"',
            'publish to "audit.case.forged"',
        ]
        await until(lambda: len(errors) >= len(expected), f"violations seen: {errors}")
        for what in expected:
            assert any(f"permissions violation for {what}" in e for e in errors), (what, errors)
        assert nc.is_connected  # a denial keeps the connection
    finally:
        await nc.close()


@pytest.mark.parametrize(
    ("user", "publish"),
    [
        ("slack-responder", ["helpdesk.cmd.open", "audit.case.forged", "$KV.cases.c1", "helpdesk.case.snapshot"]),
        ("telephony-hook", ["helpdesk.cmd.open", "audit.case.forged", "$KV.cases.c1", "okta.users.search"]),
        ("ops", ["helpdesk.cmd.open", "audit.security.forged", "$KV.cases.c1"]),
        ("gateway", ["helpdesk.job.poll_push", "helpdesk.notify.user", "slack.users.lookup"]),
    ],
)
async def test_users_cannot_publish_outside_their_lists(secure: SecureNats, user: str, publish: list[str]) -> None:
    """No one but the worker writes the cases bucket; only the worker and the hook publish audit; the
    responder publishes no command; each refusal is the server's permissions violation."""
    nc, errors = await connect_as(secure, user)
    try:
        for subject in publish:
            await nc.publish(subject, b"{}")
        await until(lambda: len(errors) >= len(publish), f"violations seen: {errors}")
        for subject in publish:
            assert any(f'permissions violation for publish to "{subject.lower()}"' in e for e in errors), subject
    finally:
        await nc.close()


async def test_a_bad_password_or_no_client_certificate_is_refused_without_printing_secrets(
    secure: SecureNats,
) -> None:
    """A wrong password in the URL: a clear error naming the server without the credentials."""
    settings = secure.settings_for(base_settings(), "gateway")
    host = secure.url.removeprefix("tls://")
    wrong = settings.model_copy(
        update={"nats_url": f"tls://gateway:Wr0ngSecretPw@{host}", "nats_user": None, "nats_password": None}
    )
    with pytest.raises(BusUnavailable) as refused:
        await Bus.connect(wrong, name="gateway", connect_timeout=1, initial_attempts=1)
    message = str(refused.value)
    assert "Wr0ngSecretPw" not in message and f"tls://[redacted]@{host}" in message
    assert "authorization violation" in message.lower()
    no_cert = settings.model_copy(update={"nats_tls_cert": None, "nats_tls_key": None})
    with pytest.raises(BusUnavailable) as no_cert_refused:
        await Bus.connect(no_cert, name="gateway", connect_timeout=1, initial_attempts=1)
    assert secure.passwords["gateway"] not in str(no_cert_refused.value)


def test_shipped_config_names_its_tls_and_store_paths() -> None:
    """The test swaps exactly these paths: the shipped file must keep them."""
    text = (ROOT / "deploy" / "nats" / "nats-server.conf").read_text()
    assert '"/etc/nats/tls/ca.crt"' in text and '"/data/jetstream"' in text and "verify: true" in text
    assert Path(ROOT / "deploy" / "nats" / "README.md").is_file()


async def test_an_nkey_seed_file_authenticates(tmp_path: Path) -> None:
    """NATS_NKEY_SEED names a seed file (trailing newline and all); the bus signs in with it."""
    import nkeys

    from shared.natsserver import EmbeddedNats

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(seed).public_key.decode()
    (tmp_path / "svc.nk").write_bytes(seed + b"\n")
    async with EmbeddedNats(config=f'authorization {{ users: [ {{ nkey: "{public}" }} ] }}') as server:
        settings = base_settings().model_copy(update={"nats_url": server.url, "nats_nkey_seed": tmp_path / "svc.nk"})
        bus = await Bus.connect(settings, name="gateway", connect_timeout=1, initial_attempts=1)
        assert bus.is_connected
        await bus.close()
        with pytest.raises(BusUnavailable, match="cannot connect"):
            await Bus.connect(base_settings().model_copy(update={"nats_url": server.url}), name="x", initial_attempts=1)
