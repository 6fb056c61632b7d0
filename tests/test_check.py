"""`helpdesk check`: every dependency checked against the sandbox fakes, a fix for each problem, no change."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from helpdesk.check import has_problem, render_json, render_table, run_check, run_checks
from helpdesk.sandbox_stack import SandboxStack
from sandbox.slack import APPROVALS_CHANNEL_ID, DEFAULT_APP_TOKEN
from services.okta_worker.okta_client import SCOPES
from shared.bus import STREAMS, Bus
from shared.settings import Settings


@pytest.fixture
async def stack(nats_url: str, prefix: str, _logging: None) -> AsyncIterator[SandboxStack]:
    async with SandboxStack(nats_url=nats_url, prefix=prefix, services=[]) as running:
        yield running


def by_check(findings: list[Any]) -> dict[str, Any]:
    return {f.check: f for f in findings}


async def test_check_passes_against_the_sandbox(stack: SandboxStack, capsys: pytest.CaptureFixture[str]) -> None:
    """With good settings every row is ✓ or skipped, and the exit code is 0."""
    assert stack.settings is not None
    bus = await Bus.connect(stack.settings, name="setup")
    await bus.ensure_streams()  # as the services would have at start
    await bus.close()
    assert await run_check(stack.settings) == 0
    out = capsys.readouterr().out
    for name in (
        "nats",
        "nats jetstream",
        "nats streams",
        "nats memory store",
        "slack",
        "slack audit channel",
        "slack approvals channel",
        "slack security channel",
        "okta",
        "okta helpdesk group",
        "okta protected group",
        "provider",
        "provider fallback",
        "hook auth",
    ):
        assert f"✓ {name} " in out, name
    assert "- slack app token" in out
    assert out.rstrip().endswith("everything checked is ready")


async def test_check_changes_nothing_on_nats(stack: SandboxStack) -> None:
    """No stream is created: on a namespace where the services never ran, streams are reported missing."""
    assert stack.settings is not None
    findings = by_check(await run_checks(stack.settings))
    assert findings["nats streams"].status == "warning"
    assert all(s.name in findings["nats streams"].detail for s in STREAMS)
    bus = await Bus.connect(stack.settings, name="look")
    try:
        names = {info.config.name for info in await bus.js.streams_info()}
    finally:
        await bus.close()
    assert not any(n and n.startswith(stack.settings.nats_prefix) for n in names)
    assert not has_problem([f for f in findings.values() if f.check.startswith("nats")])


async def test_check_names_what_is_wrong(stack: SandboxStack, capsys: pytest.CaptureFixture[str]) -> None:
    """Wrong credentials fail the check with a reason and a fix per dependency, and never print a secret."""
    assert stack.settings is not None
    secrets = ("xoxb-wrong-0000000000", "00wrong-okta-token-000000", "0" * 32, "1" * 32)
    bad = stack.settings.model_copy(
        update={
            "slack_bot_token": SecretStr(secrets[0]),
            "okta_api_token": SecretStr(secrets[1]),
            "telephony_auth_token": SecretStr(secrets[2]),
            "telephony_fallback_auth_token": SecretStr(secrets[3]),
            "nats_url": None,
        }
    )
    assert await run_check(bad) == 1
    out = capsys.readouterr().out
    for name in ("nats", "slack", "okta", "provider", "provider fallback"):
        assert f"✗ {name} " in out, name
    assert "invalid_auth" in out and "→ " in out and "problems" in out
    for secret in secrets:
        assert secret not in out


async def test_check_json_is_for_scripts(stack: SandboxStack, capsys: pytest.CaptureFixture[str]) -> None:
    """`--json`: one document, a row per check with status, detail and fix; ok false on a problem."""
    assert stack.settings is not None
    bad = stack.settings.model_copy(update={"okta_helpdesk_group": "No Such Group"})
    assert await run_check(bad, as_json=True) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    rows = {row["check"]: row for row in doc["checks"]}
    assert rows["okta helpdesk group"]["status"] == "problem"
    assert "No Such Group" in rows["okta helpdesk group"]["detail"] and rows["okta helpdesk group"]["fix"]
    assert set(rows["slack"]) == {"check", "status", "detail", "fix"}


async def test_check_sees_slack_scopes_channels_and_app_token(stack: SandboxStack) -> None:
    """A scope the install lacks, a channel the bot left, a bad or good app token: each its own row."""
    assert stack.settings is not None
    stack.slack.scopes.remove("im:write")
    stack.slack.leave_channel(APPROVALS_CHANNEL_ID)
    findings = by_check(await run_checks(stack.settings.model_copy(update={"slack_app_token": SecretStr("xapp-bad")})))
    assert findings["slack"].status == "problem" and "im:write" in findings["slack"].detail
    assert findings["slack approvals channel"].status == "problem"
    assert "/invite" in findings["slack approvals channel"].fix
    assert findings["slack audit channel"].status == "ok"
    assert findings["slack app token"].status == "problem"
    good = stack.settings.model_copy(update={"slack_app_token": SecretStr(DEFAULT_APP_TOKEN)})
    assert by_check(await run_checks(good))["slack app token"].status == "ok"


async def test_check_names_okta_scopes_not_granted(stack: SandboxStack) -> None:
    """With the OAuth service app, each scope the worker asks for and Okta did not grant is named."""
    assert stack.settings is not None
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    granted = [s for s in SCOPES.split() if s not in ("okta.logs.read", "okta.userRisk.read")]
    stack.okta.register_client("0oahelpdesk", public, kid="k1", scopes=granted)
    oauth = stack.settings.model_copy(
        update={
            "okta_api_token": None,
            "okta_client_id": "0oahelpdesk",
            "okta_private_key": SecretStr(pem.decode()),
            "okta_key_id": "k1",
        }
    )
    findings = by_check(await run_checks(oauth))
    assert findings["okta scopes"].status == "problem"
    assert findings["okta scopes"].detail == "not granted: okta.logs.read okta.userRisk.read"
    stack.okta.register_client("0oahelpdesk", public, kid="k1", scopes=SCOPES.split())
    findings = by_check(await run_checks(oauth))
    assert findings["okta scopes"].status == "ok" and findings["okta"].status == "ok"
    assert findings["okta helpdesk group"].status == "ok"


async def test_check_reads_the_hooks_jwks(stack: SandboxStack) -> None:
    """With the OAuth scheme, the issuer's JWKS must answer with keys."""
    assert stack.settings is not None
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys: list[dict[str, Any]] = []

    async def jwks(_: web.Request) -> web.Response:
        return web.json_response({"keys": keys})

    app = web.Application()
    app.router.add_get("/oauth2/default/v1/keys", jwks)
    async with TestServer(app) as server:
        issuer = str(server.make_url("/oauth2/default"))
        settings = stack.settings.model_copy(
            update={"telephony_hook_issuer": issuer, "telephony_hook_audience": "api://telephony-hook"}
        )
        assert by_check(await run_checks(settings))["hook jwks"].status == "problem"
        keys.append({**jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "a"})
        assert by_check(await run_checks(settings))["hook jwks"].status == "ok"


def test_table_shows_a_fix_under_each_problem() -> None:
    """The table: a mark, the check, the detail; an arrow with the fix below each problem or warning."""
    from helpdesk.check import Finding

    text = render_table(
        [
            Finding("nats", "ok", "connected"),
            Finding("slack", "problem", "bot token refused", "set SLACK_BOT_TOKEN"),
            Finding("nats://u:pw@h", "warning", "at nats://user:s3cret@nats:4222", "x"),
        ]
    )
    lines = text.splitlines()
    assert lines[0].startswith("✓ nats") and lines[1].startswith("✗ slack")
    assert lines[2].strip() == "→ set SLACK_BOT_TOKEN"
    assert "s3cret" not in text and "s3cret" not in render_json([Finding("n", "ok", "nats://u:s3cret@h")])
    assert lines[-1] == "1 problem"


def test_check_command_exits_non_zero_without_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    """`helpdesk check` with nothing configured: every dependency is a problem, exit code 1."""
    from helpdesk.cli import main

    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    assert main(["check", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    statuses = {row["check"]: row["status"] for row in doc["checks"]}
    assert statuses["nats"] == statuses["slack"] == statuses["okta"] == "problem"
