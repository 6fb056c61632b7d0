"""``helpdesk check``: is every dependency reachable and set up as the services need? Changes nothing.

One row per thing checked — NATS (reachable, JetStream on, server ≥ 2.11, the streams and their
storage), Slack (the bot token and its scopes, the bot in the audit, approvals and security
channels, the app token for Socket Mode), Okta (the token or the service app's grant, its scopes
against what the worker asks for, the Helpdesk and protected groups), the SMS/voice providers
(primary and fallback) and the telephony hook's JWKS — each with how to fix a problem.

    findings = await run_checks(settings)
    print(render_table(findings))        # or render_json(findings) for scripts
    exit_code = 1 if has_problem(findings) else 0

Nothing is created, sent or posted: NATS streams are looked up, never declared; Slack and Okta get
read calls only (``apps.connections.open`` hands out a Socket Mode URL that expires unused).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import httpx
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import StorageType
from nats.js.errors import APIError, NotFoundError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from helpdesk.manifest import BOT_SCOPES
from shared.bus import CASE_STREAM, CMD_STREAM, STREAMS, Bus
from shared.logging import redact_url
from shared.settings import MissingSetting, Settings

if TYPE_CHECKING:
    from services.okta_worker.okta_client import OktaClient

Status = Literal["ok", "problem", "warning", "skipped"]
MARKS: dict[Status, str] = {"ok": "✓", "problem": "✗", "warning": "!", "skipped": "-"}
MIN_NATS = (2, 11)  # per-message TTL on KV keys (the case and limit buckets)
GROUP_ID_PREFIX = "00g"


@dataclass(frozen=True)
class Finding:
    """One row: what was checked, how it went, and what to do when it is not ``ok``."""

    check: str
    status: Status
    detail: str
    fix: str = ""


Checker = Callable[[Settings], Awaitable[list[Finding]]]


def _safe(text: str) -> str:
    """No credential in a row: URLs lose their userinfo."""
    return redact_url(text)


# -- NATS ------------------------------------------------------------------------------------------


async def check_nats(settings: Settings) -> list[Finding]:
    if not settings.nats_url:
        return [
            Finding(
                "nats",
                "problem",
                "NATS_URL is unset: every service but `helpdesk run`/`demo` refuses to start",
                "set NATS_URL (and NATS_CREDS / NATS_USER+NATS_PASSWORD / NATS_TLS_* as your server needs)",
            )
        ]
    bus = await Bus.connect(settings, name="check", initial_attempts=1)
    try:
        return await _nats_findings(bus)
    finally:
        await bus.close()


async def _nats_findings(bus: Bus) -> list[Finding]:
    findings: list[Finding] = []
    version = bus.nc.connected_server_version
    if (version.major, version.minor) < MIN_NATS:
        findings.append(
            Finding(
                "nats",
                "problem",
                f"nats-server {version} is older than 2.11 (no per-key TTL)",
                "upgrade nats-server to 2.11 or later",
            )
        )
    else:
        findings.append(Finding("nats", "ok", f"connected, nats-server {version}"))
    try:
        await bus.js.account_info()
    except Exception as exc:
        findings.append(
            Finding(
                "nats jetstream",
                "problem",
                f"JetStream does not answer ({type(exc).__name__})",
                "enable JetStream on the server (`-js`, or jetstream {} in its config; the Helm chart: "
                "config.jetstream.enabled) and allow this user $JS.API.INFO",
            )
        )
        return findings
    findings.append(Finding("nats jetstream", "ok", "enabled for this account"))
    storage = {spec.name: await _stream_storage(bus, spec.name) for spec in STREAMS}
    present = [name for name, kind in storage.items() if kind is not None]
    missing = [name for name, kind in storage.items() if kind is None]
    if missing:
        findings.append(
            Finding(
                "nats streams",
                "warning",
                f"not seen: {', '.join(missing)}",
                "the services declare them when they start; if they run, check their NATS users may read "
                "stream info (deploy/nats/nats-server.conf)",
            )
        )
    else:
        findings.append(Finding("nats streams", "ok", f"{len(present)} streams present"))
    on_file = [s.name for s in (CMD_STREAM, CASE_STREAM) if storage.get(s.name) == "file"]
    if on_file:
        findings.append(
            Finding(
                "nats memory store",
                "warning",
                f"{', '.join(on_file)} on file: the server allowed no memory storage when they were made",
                "allow memory storage (Helm chart: config.jetstream.memoryStore.enabled), then delete the "
                "streams while idle; the services declare them again in memory",
            )
        )
    elif any(s.name in storage for s in (CMD_STREAM, CASE_STREAM)):
        findings.append(Finding("nats memory store", "ok", "the command and snapshot streams are in memory"))
    return findings


async def _stream_storage(bus: Bus, name: str) -> str | None:
    """``memory`` or ``file``; None when the stream is absent or this user may not look at it."""
    try:
        info = await bus.js.stream_info(bus.stream_name(name))
    except (NotFoundError, APIError, NatsTimeoutError):
        return None
    return StorageType(info.config.storage).value if info.config.storage else ""  # nats-py: a plain str


# -- Slack -----------------------------------------------------------------------------------------


def _slack_channels(settings: Settings) -> dict[str, str]:
    channels: dict[str, str] = {}
    if settings.slack_audit_channel:
        channels["SLACK_AUDIT_CHANNEL"] = settings.slack_audit_channel
    if settings.slack_approvals_channel:
        channels["SLACK_APPROVALS_CHANNEL"] = settings.slack_approvals_channel
    if settings.slack_security_channel:
        channels["SLACK_SECURITY_CHANNEL"] = settings.slack_security_channel
    return channels


async def check_slack(settings: Settings) -> list[Finding]:
    findings: list[Finding] = []
    if not settings.slack_signing_secret or not settings.slack_signing_secret.get_secret_value():
        findings.append(
            Finding(
                "slack signing secret",
                "problem",
                "SLACK_SIGNING_SECRET is unset: the gateway refuses to start",
                "copy it from the app's Basic Information page",
            )
        )
    client = AsyncWebClient(token=settings.secret("SLACK_BOT_TOKEN"), base_url=settings.slack_api_url)
    try:
        auth = await client.auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error")
        return [
            *findings,
            Finding(
                "slack",
                "problem",
                f"Slack refused the bot token: {error}",
                "SLACK_BOT_TOKEN: the app's Bot User OAuth Token (xoxb-…), from OAuth & Permissions",
            ),
        ]
    granted = {s.strip() for s in str(auth.headers.get("x-oauth-scopes", "")).split(",") if s.strip()}
    missing = [s for s in BOT_SCOPES if s not in granted]
    who = f"bot @{auth.get('user')} in {auth.get('team')}"
    if missing:
        findings.append(
            Finding(
                "slack",
                "problem",
                f"{who}; scopes missing: {' '.join(missing)}",
                "add them under OAuth & Permissions (or update the app from `helpdesk manifest`) and reinstall",
            )
        )
    else:
        findings.append(Finding("slack", "ok", f"{who}, every scope granted"))
    for setting, channel in _slack_channels(settings).items():
        findings.append(await _channel_finding(client, setting, channel))
    findings.append(await _app_token_finding(settings))
    return findings


async def _channel_finding(client: AsyncWebClient, setting: str, channel: str) -> Finding:
    name = f"slack {setting.removeprefix('SLACK_').removesuffix('_CHANNEL').lower()} channel"
    try:
        info = await client.conversations_info(channel=channel)
    except SlackApiError as exc:
        error = exc.response.get("error")
        fix = "grant channels:read and groups:read" if error == "missing_scope" else f"set {setting} to a channel id"
        return Finding(name, "problem", f"{setting}={channel}: {error}", fix)
    found = info.get("channel") or {}
    if not found.get("is_member"):
        return Finding(
            name,
            "problem",
            f"the bot is not in #{found.get('name', channel)}",
            f"invite it: /invite @Helpdesk Verify in #{found.get('name', channel)}",
        )
    return Finding(name, "ok", f"the bot is in #{found.get('name', channel)}")


async def _app_token_finding(settings: Settings) -> Finding:
    if settings.slack_app_token is None or not settings.slack_app_token.get_secret_value():
        return Finding("slack app token", "skipped", "SLACK_APP_TOKEN unset: public HTTPS routes, no Socket Mode")
    token = settings.slack_app_token.get_secret_value()
    client = AsyncWebClient(token=token, base_url=settings.slack_api_url)
    try:
        await client.apps_connections_open(app_token=token)
    except SlackApiError as exc:
        return Finding(
            "slack app token",
            "problem",
            f"Slack refused the app token: {exc.response.get('error')}",
            "SLACK_APP_TOKEN: an app-level token (xapp-…) with connections:write, Socket Mode enabled",
        )
    return Finding("slack app token", "ok", "Socket Mode connections open")


# -- Okta ------------------------------------------------------------------------------------------


async def check_okta(settings: Settings) -> list[Finding]:
    from services.okta_worker.okta_client import SCOPES, OktaClient, OktaError, PrivateKeyJwtAuth

    settings.require("OKTA_ORG_URL")
    findings: list[Finding] = []
    async with OktaClient.from_settings(settings) as okta:
        if isinstance(okta.auth, PrivateKeyJwtAuth):
            findings.append(await _grant_finding(settings, okta.http, SCOPES.split()))
            if findings[-1].status == "problem":
                return findings
        try:
            await okta.ping()
        except OktaError as exc:
            return [
                *findings,
                Finding(
                    "okta",
                    "problem",
                    str(exc),
                    "OKTA_API_TOKEN, or OKTA_CLIENT_ID + OKTA_PRIVATE_KEY + OKTA_KEY_ID (docs/okta-setup.md)",
                ),
            ]
        findings.insert(0, Finding("okta", "ok", f"{settings.okta_org_url} answered ({okta.auth.scheme} auth)"))
        refs = [("OKTA_HELPDESK_GROUP", settings.okta_helpdesk_group)]
        refs += [("OKTA_PROTECTED_GROUPS", ref) for ref in settings.okta_protected_groups]
        for setting, ref in refs:
            findings.append(await _group_finding(okta, settings, setting, ref))
    return findings


async def _grant_finding(settings: Settings, http: httpx.AsyncClient, scopes: list[str]) -> Finding:
    """The service app asks for every scope at once; on a refusal, one at a time, to name the missing."""
    from services.okta_worker.okta_client import OktaError, PrivateKeyJwtAuth

    assert settings.okta_org_url is not None and settings.okta_client_id is not None

    async def granted(scope: str) -> bool:
        auth = PrivateKeyJwtAuth(
            settings.okta_org_url or "",
            settings.okta_client_id or "",
            settings.okta_private_key_pem(),
            settings.okta_key_id,
            dpop=settings.okta_dpop,
            scopes=scope,
        )
        try:
            await auth.headers(http, "GET", auth.token_url)  # one token request, nothing else
        except OktaError as exc:
            if getattr(exc, "error_code", None) == "invalid_scope":
                return False
            raise
        return True

    try:
        if await granted(" ".join(scopes)):
            return Finding("okta scopes", "ok", f"the service app is granted all {len(scopes)} scopes")
        missing = [s for s in scopes if not await granted(s)]
    except OktaError as exc:
        return Finding("okta scopes", "problem", str(exc), "check OKTA_CLIENT_ID, OKTA_PRIVATE_KEY and OKTA_KEY_ID")
    return Finding(
        "okta scopes",
        "problem",
        f"not granted: {' '.join(missing)}",
        "Admin Console → Applications → the service app → Okta API Scopes: grant them",
    )


async def _group_finding(okta: OktaClient, settings: Settings, setting: str, ref: str) -> Finding:
    from services.okta_worker.okta_client import OktaError

    name = "okta helpdesk group" if setting == "OKTA_HELPDESK_GROUP" else "okta protected group"
    kind = settings.okta_group_type
    try:
        if ref.startswith(GROUP_ID_PREFIX):
            group = await okta.get_group(ref)
            return Finding(name, "ok", f"{ref} is {group.name!r}")
        found = await okta.find_groups(ref, kind)
    except OktaError as exc:
        status = getattr(exc, "status", None)
        if status == 404:
            return Finding(name, "problem", f"{setting}: no group has the id {ref}", "give an existing group's id")
        return Finding(name, "problem", f"{setting}: {exc}", "grant okta.groups.read (docs/okta-setup.md)")
    if not found:
        return Finding(name, "problem", f"{setting}: no {kind} group is named {ref!r}", "create it, or give its id")
    if len(found) > 1:
        ids = ", ".join(g.id for g in found)
        return Finding(name, "problem", f"{setting}: {len(found)} groups are named {ref!r}", f"give one id: {ids}")
    return Finding(name, "ok", f"{ref!r} is {found[0].id}")


# -- telephony -------------------------------------------------------------------------------------


async def check_telephony(settings: Settings) -> list[Finding]:
    if not settings.telephony_account_sid:
        return [Finding("provider", "skipped", "TELEPHONY_ACCOUNT_SID unset: the telephony hook is optional")]
    findings = [
        await _provider_finding(
            "provider",
            settings.telephony_provider_url,
            settings.telephony_account_sid,
            settings.secret("TELEPHONY_AUTH_TOKEN"),
            "TELEPHONY_ACCOUNT_SID / TELEPHONY_AUTH_TOKEN",
        )
    ]
    if settings.telephony_fallback_account_sid:
        findings.append(
            await _provider_finding(
                "provider fallback",
                settings.telephony_fallback_url or settings.telephony_provider_url,
                settings.telephony_fallback_account_sid,
                settings.secret("TELEPHONY_FALLBACK_AUTH_TOKEN"),
                "TELEPHONY_FALLBACK_ACCOUNT_SID / TELEPHONY_FALLBACK_AUTH_TOKEN",
            )
        )
    else:
        findings.append(Finding("provider fallback", "skipped", "no fallback provider configured"))
    findings.append(await _hook_auth_finding(settings))
    return findings


async def _provider_finding(name: str, url: str, sid: str, token: str, settings_names: str) -> Finding:
    async with httpx.AsyncClient(timeout=5) as client:
        try:
            resp = await client.get(f"{url}/2010-04-01/Accounts/{sid}.json", auth=(sid, token))
        except httpx.HTTPError as exc:
            return Finding(name, "problem", f"{_safe(url)} unreachable ({type(exc).__name__})", "check its URL")
    if resp.status_code != 200:
        return Finding(name, "problem", f"{_safe(url)} answered HTTP {resp.status_code}", f"check {settings_names}")
    return Finding(name, "ok", f"{_safe(url)} accepted the account credentials")


async def _hook_auth_finding(settings: Settings) -> Finding:
    issuer = settings.telephony_hook_issuer
    if not issuer:
        if settings.telephony_hook_auth is None or not settings.telephony_hook_auth.get_secret_value():
            return Finding(
                "hook auth",
                "problem",
                "neither TELEPHONY_HOOK_AUTH nor TELEPHONY_HOOK_ISSUER is set: the hook refuses to start",
                "set the header value Okta sends (docs/telephony-hook.md)",
            )
        return Finding("hook auth", "ok", f"header scheme ({settings.telephony_hook_auth_header})")
    url = f"{issuer.rstrip('/')}/v1/keys"
    async with httpx.AsyncClient(timeout=5) as client:
        try:
            resp = await client.get(url)
            keys = resp.json().get("keys", []) if resp.status_code == 200 else []
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            return Finding("hook jwks", "problem", f"{url}: {type(exc).__name__}", "check TELEPHONY_HOOK_ISSUER")
    if not keys:
        return Finding(
            "hook jwks",
            "problem",
            f"{url} answered HTTP {resp.status_code} with no keys",
            "TELEPHONY_HOOK_ISSUER: the authorization server's issuer URL",
        )
    return Finding("hook jwks", "ok", f"{len(keys)} signing keys at {url}")


CHECKS: dict[str, Checker] = {
    "nats": check_nats,
    "slack": check_slack,
    "okta": check_okta,
    "provider": check_telephony,
}

FIXES: dict[str, str] = {
    "nats": "check NATS_URL, the credentials (NATS_CREDS, NATS_USER/NATS_PASSWORD, NATS_TOKEN) and NATS_TLS_*",
    "slack": "set SLACK_BOT_TOKEN (and SLACK_API_URL only for a sandbox)",
    "okta": "set OKTA_ORG_URL and OKTA_API_TOKEN, or the service app settings (docs/okta-setup.md)",
    "provider": "set the TELEPHONY_* settings (docs/telephony-hook.md)",
}


async def run_checks(settings: Settings) -> list[Finding]:
    """Every check, in order; an exception in one is that check's problem row, never a crash."""
    findings: list[Finding] = []
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            rows = await check(settings)
        except MissingSetting as exc:
            rows = [Finding(name, "problem", str(exc), FIXES[name])]
        except Exception as exc:
            rows = [Finding(name, "problem", _safe(str(exc)) or type(exc).__name__, FIXES[name])]
        elapsed = f" ({(time.perf_counter() - started) * 1000:.0f} ms)"
        if rows and rows[0].status == "ok":
            rows[0] = Finding(rows[0].check, "ok", rows[0].detail + elapsed, rows[0].fix)
        findings.extend(rows)
    return findings


def has_problem(findings: list[Finding]) -> bool:
    return any(f.status == "problem" for f in findings)


def render_table(findings: list[Finding]) -> str:
    width = max(len(f.check) for f in findings)
    lines = []
    for f in findings:
        lines.append(f"{MARKS[f.status]} {f.check:<{width}}  {_safe(f.detail)}")
        if f.fix and f.status in ("problem", "warning"):
            lines.append(f"  {'':<{width}}  → {f.fix}")
    problems = sum(f.status == "problem" for f in findings)
    lines.append(f"{problems} problem{'s' if problems != 1 else ''}" if problems else "everything checked is ready")
    return "\n".join(lines)


def render_json(findings: list[Finding]) -> str:
    rows = [{**asdict(f), "detail": _safe(f.detail)} for f in findings]
    return json.dumps({"ok": not has_problem(findings), "checks": rows}, indent=2)


async def run_check(settings: Settings, as_json: bool = False) -> int:
    """``helpdesk check``: print the table (or JSON); 1 when anything is a problem."""
    findings = await run_checks(settings)
    print(render_json(findings) if as_json else render_table(findings))
    return 1 if has_problem(findings) else 0
