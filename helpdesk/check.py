"""``helpdesk check``: one line per dependency, reachable or not and why — run it after configuring."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import httpx
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from shared.bus import Bus
from shared.settings import Settings

Check = Callable[[Settings], Awaitable[str]]


async def check_nats(settings: Settings) -> str:
    if not settings.nats_url:
        return "NATS_URL unset: `helpdesk run` will start an embedded nats-server"
    bus = await Bus.connect(settings, name="check", initial_attempts=1)
    try:
        await bus.ensure_streams()
        return f"connected to {settings.nats_url}, streams present"
    finally:
        await bus.close()


async def check_slack(settings: Settings) -> str:
    client = AsyncWebClient(token=settings.secret("SLACK_BOT_TOKEN"), base_url=settings.slack_api_url)
    try:
        auth = await client.auth_test()
    except SlackApiError as exc:
        raise RuntimeError(f"Slack refused the bot token: {exc.response.get('error')}") from None
    settings.require("SLACK_SIGNING_SECRET")
    return f"bot {auth.get('user')} in {auth.get('team')}"


async def check_okta(settings: Settings) -> str:
    settings.require("OKTA_ORG_URL")
    from services.okta_worker.okta_client import OktaClient

    async with OktaClient.from_settings(settings) as okta:
        await okta.ping()
    return f"{settings.okta_org_url} answered ({settings.okta_auth_mode()} auth)"


async def check_telephony(settings: Settings) -> str:
    if not settings.telephony_account_sid:
        return "not configured (TELEPHONY_ACCOUNT_SID unset): the telephony hook is optional"
    url = f"{settings.telephony_provider_url}/2010-04-01/Accounts/{settings.telephony_account_sid}.json"
    auth = (settings.telephony_account_sid, settings.secret("TELEPHONY_AUTH_TOKEN"))
    async with httpx.AsyncClient(timeout=5) as client:
        resp = await client.get(url, auth=auth)
    if resp.status_code != 200:
        raise RuntimeError(f"provider answered HTTP {resp.status_code}")
    return f"{settings.telephony_provider_url} accepted the account credentials"


CHECKS: dict[str, Check] = {
    "nats": check_nats,
    "slack": check_slack,
    "okta": check_okta,
    "telephony": check_telephony,
}


async def run_check(settings: Settings) -> int:
    failed = 0
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            detail = await check(settings)
        except Exception as exc:
            failed += 1
            print(f"✗ {name:<10} {exc}")
        else:
            print(f"✓ {name:<10} {detail} ({(time.perf_counter() - started) * 1000:.0f} ms)")
    return 1 if failed else 0
