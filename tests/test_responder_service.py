"""The responder as a service: real NATS, the sandbox Slack, snapshots in, Slack calls out."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from nats.js.errors import NoKeysError
from pydantic import SecretStr
from structlog.testing import capture_logs

from sandbox.slack import AGENT_EMAIL, AGENT_USER_ID, HELPDESK_CHANNEL_ID, FakeSlack
from services.slack_responder.app import ResponderService, create_service
from services.slack_responder.store import ViewStore
from shared import ui
from shared.bus import Bus
from shared.messages import (
    Actor,
    CaseSnapshot,
    CaseState,
    ChallengeInfo,
    HomeSnapshot,
    LookupSlackUser,
    RecentCase,
    RenderAck,
    ShowTempPassword,
    SlackUserInfo,
    ViewRef,
)
from shared.settings import MissingSetting, Settings

BOT_TOKEN = "xoxb-test-token-0000"
PASSWORD = "Zq8-Temp-Pass-41"


@pytest.fixture
def responder_settings(settings: Settings, slack: FakeSlack) -> Settings:
    return settings.model_copy(update={"slack_api_url": f"{slack.url}/api/"})


@pytest.fixture
async def service(responder_settings: Settings, bus: Bus) -> AsyncIterator[ResponderService]:
    svc = create_service(responder_settings, bus)
    await svc.start()
    yield svc
    await svc.stop()


def snap(revision: int, state: CaseState = CaseState.SEARCHING, case_id: str = "case-1", **extra: Any) -> CaseSnapshot:
    values: dict[str, Any] = {
        "case_id": case_id,
        "revision": revision,
        "state": state,
        "agent": Actor(user_id=AGENT_USER_ID),
        "case_token": f"token-for-{case_id}",
        "query": f"rev{revision}",
    }
    values.update(extra)
    return CaseSnapshot(**values)


async def publish(bus: Bus, snapshot: CaseSnapshot) -> None:
    assert await bus.publish(snapshot, msg_id=f"{snapshot.case_id}:{snapshot.revision}")


def view_methods(slack: FakeSlack) -> list[str]:
    return [m for m, _ in slack.api_log if m.startswith("views.") or m.startswith("chat.")]


def shown(slack: FakeSlack, view_id: str) -> str:
    return FakeSlack.render_text(slack.views[view_id])


async def open_case(bus: Bus, slack: FakeSlack, case_id: str = "case-1") -> str:
    trigger = slack.issue_trigger(AGENT_USER_ID)
    await publish(bus, snap(1, CaseState.OPENED, case_id=case_id, trigger_id=trigger))
    await slack.until(lambda: trigger in slack._trigger_views)
    return slack._trigger_views[trigger]


def test_bot_token_is_required(settings: Settings, bus: Bus) -> None:
    """The responder refuses to start without SLACK_BOT_TOKEN."""
    with pytest.raises(MissingSetting):
        create_service(settings.model_copy(update={"slack_bot_token": None}), bus)


async def test_open_goes_first_then_updates_in_order(service: ResponderService, bus: Bus, slack: FakeSlack) -> None:
    """views.open with the trigger is the first call for a case; later snapshots update that view."""
    trigger = slack.issue_trigger(AGENT_USER_ID)
    await publish(bus, snap(1, CaseState.OPENED, trigger_id=trigger))
    await publish(bus, snap(2, CaseState.SEARCHING, trigger_id=trigger))
    await publish(bus, snap(3, CaseState.SEARCHING, trigger_id=trigger))
    await slack.until(lambda: len(slack.method_calls("views.update")) == 2)
    assert view_methods(slack) == ["views.open", "views.update", "views.update"]
    view_id = slack._trigger_views[trigger]
    assert [c["view_id"] for c in slack.method_calls("views.update")] == [view_id, view_id]
    await slack.until(lambda: "rev3" in shown(slack, view_id))
    opened = slack.method_calls("views.open")[0]["view"]
    assert "Checking your access" in FakeSlack.render_text(opened)


async def test_stale_snapshots_are_dropped(service: ResponderService, bus: Bus, slack: FakeSlack) -> None:
    """A snapshot older than the one on screen is never rendered, so the flow never goes backwards."""
    view_id = await open_case(bus, slack)
    await publish(bus, snap(3))
    await publish(bus, snap(2))
    await publish(bus, snap(4))
    await slack.until(lambda: "rev4" in shown(slack, view_id))
    rendered = [FakeSlack.render_text(c["view"]) for c in slack.method_calls("views.update")]
    assert len(rendered) == 2 and "rev3" in rendered[0] and "rev4" in rendered[1]
    record = await (await ViewStore.open(bus)).get("case-1")
    assert record is not None and record[0].revision == 4


async def test_a_first_snapshot_opens_without_a_lookup_and_delivered_again_is_not_reopened(
    service: ResponderService, bus: Bus, slack: FakeSlack
) -> None:
    """The snapshot published as the case was created goes straight to views.open (nothing to look
    up); the same snapshot delivered again looks first, finds the modal open and leaves it."""
    assert service.responder is not None
    store = service.responder.store
    lookups: list[str] = []
    real_get = store.get

    async def counted_get(case_id: str) -> Any:
        lookups.append(case_id)
        return await real_get(case_id)

    store.get = counted_get  # type: ignore[method-assign]
    trigger = slack.issue_trigger(AGENT_USER_ID)
    first = snap(2, CaseState.SEARCHING, trigger_id=trigger, first=True)
    await publish(bus, first)
    await slack.until(lambda: trigger in slack._trigger_views)
    assert lookups == []  # any lookup would have come before views.open
    store.get = real_get  # type: ignore[method-assign]
    await service.responder.wait_until_rendered("case-1", 5.0)
    record = await store.get("case-1")
    assert record is not None and record[0].revision == 2
    assert record[0].view_id == slack._trigger_views[trigger]

    store.get = counted_get  # type: ignore[method-assign]
    outcome = await service.responder.render_snapshot(first, redelivered=True)
    assert outcome.result == "stale" and lookups == ["case-1"]
    assert view_methods(slack) == ["views.open"]


async def test_updates_carry_the_last_hash_and_retry_after_hash_conflict(
    service: ResponderService, bus: Bus, slack: FakeSlack
) -> None:
    """views.update sends the hash Slack last gave; on hash_conflict it retries once and the view is updated."""
    view_id = await open_case(bus, slack)
    opened_hash = slack.opened_views[0]["hash"]
    await publish(bus, snap(2))
    await slack.until(lambda: "rev2" in shown(slack, view_id))
    assert slack.method_calls("views.update")[0]["hash"] == opened_hash
    slack.fail_next("views.update", error="hash_conflict")
    await publish(bus, snap(3))
    await slack.until(lambda: "rev3" in shown(slack, view_id))
    calls = slack.method_calls("views.update")
    assert len(calls) == 3
    assert calls[1]["hash"] and "hash" not in calls[2]  # same hash refused → one retry without


async def test_hash_conflict_retry_uses_the_snapshot_hash(
    service: ResponderService, bus: Bus, slack: FakeSlack
) -> None:
    """When the view changed elsewhere, the retry uses the hash from the agent's latest click."""
    view_id = await open_case(bus, slack)
    # The view changes outside the responder (as the gateway's response_action: update does).
    assert service.slack is not None
    replaced = {**slack.opened_views[0], "blocks": [{"type": "divider"}]}
    outside = await service.slack.web.views_update(view_id=view_id, view=replaced)
    fresh_hash = outside["view"]["hash"]
    await publish(bus, snap(2, view=ViewRef(view_id=view_id, hash=fresh_hash)))
    await slack.until(lambda: "rev2" in shown(slack, view_id))
    calls = [c for c in slack.method_calls("views.update")][1:]
    assert [c.get("hash") for c in calls][-1] == fresh_hash


async def test_rate_limit_waits_for_retry_after(service: ResponderService, bus: Bus, slack: FakeSlack) -> None:
    """A 429 with Retry-After: 1 is retried by the client after at least one second, and the view updates."""
    view_id = await open_case(bus, slack)
    slack.rate_limit_next("views.update", retry_after=1)
    started = time.monotonic()
    await publish(bus, snap(2))
    await slack.until(lambda: "rev2" in shown(slack, view_id), timeout=10)
    assert time.monotonic() - started >= 1.0
    assert len(slack.method_calls("views.update")) == 2


async def test_expired_trigger_offers_a_reopen_button_in_the_channel(
    service: ResponderService, bus: Bus, slack: FakeSlack
) -> None:
    """When the trigger has expired, the agent gets an ephemeral message with a button that starts over."""
    trigger = slack.issue_trigger(AGENT_USER_ID)
    slack.advance(4)
    await publish(bus, snap(1, CaseState.OPENED, trigger_id=trigger, channel_id=HELPDESK_CHANNEL_ID, query="jdoe"))
    await slack.until(lambda: bool(slack.ephemerals))
    [ephemeral] = slack.ephemerals
    assert ephemeral["user"] == AGENT_USER_ID and ephemeral["channel"] == HELPDESK_CHANNEL_ID
    [button] = ephemeral["message"]["blocks"][1]["elements"]
    assert button["action_id"] == ui.ACTION_START and button["value"] == "jdoe"
    # Later snapshots of that case do not try the dead trigger again.
    await publish(bus, snap(2, trigger_id=trigger, channel_id=HELPDESK_CHANNEL_ID))
    await publish(bus, snap(1, CaseState.OPENED, case_id="case-2", trigger_id=slack.issue_trigger(AGENT_USER_ID)))
    await slack.until(lambda: len(slack.method_calls("views.open")) == 2)
    assert len(slack.ephemerals) == 1


async def test_expired_trigger_without_channel_sends_a_dm(
    service: ResponderService, bus: Bus, slack: FakeSlack
) -> None:
    """Without a channel to answer in, the re-open button arrives as a direct message."""
    trigger = slack.issue_trigger(AGENT_USER_ID)
    slack.advance(4)
    await publish(bus, snap(1, CaseState.OPENED, trigger_id=trigger))
    await slack.until(lambda: bool(slack.method_calls("chat.postMessage")))
    [dm] = slack.method_calls("chat.postMessage")
    assert dm["channel"] == AGENT_USER_ID
    assert any(e.get("action_id") == ui.ACTION_START for b in dm["blocks"] for e in b.get("elements", []))


async def test_closed_modal_is_left_alone(service: ResponderService, bus: Bus, slack: FakeSlack) -> None:
    """Once the agent closed the modal, the next snapshot is not retried and later ones are dropped."""
    view_id = await open_case(bus, slack)
    slack.close_view(view_id)
    await publish(bus, snap(2))
    await publish(bus, snap(3))
    await publish(bus, snap(1, CaseState.OPENED, case_id="case-2", trigger_id=slack.issue_trigger(AGENT_USER_ID)))
    await slack.until(lambda: len(slack.method_calls("views.open")) == 2)
    assert len(slack.method_calls("views.update")) == 1


async def test_temp_password_is_shown_once_and_never_leaks(
    service: ResponderService, bus: Bus, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    """The password reaches only the agent's view; not a log line, KV, a channel message or a later view."""
    caplog.set_level(logging.DEBUG)
    view_id = await open_case(bus, slack)
    await publish(bus, snap(2, CaseState.VERIFIED))
    await slack.until(lambda: "Caller verified" in shown(slack, view_id) or bool(slack.method_calls("views.update")))
    show = ShowTempPassword(
        case_id="case-1",
        revision=3,
        agent=Actor(user_id=AGENT_USER_ID),
        view=ViewRef(view_id=view_id),
        target_login="jane.doe@example.com",
        temp_password=SecretStr(PASSWORD),
        case_token="token-for-case-1",
    )
    with capture_logs() as logs:
        ack = await bus.request(show, RenderAck, timeout=5)
        assert ack.ok, ack.error
        assert PASSWORD in shown(slack, view_id)
        again = await bus.request(show, RenderAck, timeout=5)  # a repeat of that revision is refused
        await publish(bus, snap(3, CaseState.VERIFIED))  # same revision as the password: dropped
        await publish(bus, snap(4, CaseState.CLOSED))
        await slack.until(lambda: "Case closed" in shown(slack, view_id))
    assert not again.ok
    updates = [FakeSlack.render_text(c["view"]) for c in slack.method_calls("views.update")]
    assert len(updates) == 3  # revision 2, the password (revision 3), revision 4: snapshot 3 was dropped
    assert PASSWORD in updates[1] and "Case closed" in updates[2]
    assert PASSWORD not in repr(logs) and PASSWORD not in caplog.text
    assert PASSWORD not in repr(show) and PASSWORD not in str(ack) + str(again)
    kv = await bus.key_value("views")
    try:
        keys = await kv.keys()
    except NoKeysError:  # the closed case's record may already be gone: nothing can hold the password
        keys = []
    for key in keys:
        entry = await kv.get(key)
        assert PASSWORD.encode() not in (entry.value or b"")
    channel_texts = [repr(m) for c in slack.channels.values() for m in c.messages] + [repr(slack.ephemerals)]
    assert not any(PASSWORD in t for t in channel_texts)


async def test_temp_password_for_an_unknown_view_is_refused(service: ResponderService, bus: Bus) -> None:
    """Without a view to show it in, the password is not shown and the worker is told why."""
    show = ShowTempPassword(
        case_id="case-nowhere",
        revision=3,
        agent=Actor(user_id=AGENT_USER_ID),
        view=None,
        target_login="jane",
        temp_password=SecretStr(PASSWORD),
        case_token="t",
    )
    ack = await bus.request(show, RenderAck, timeout=5)
    assert not ack.ok and ack.error and PASSWORD not in ack.error


async def test_user_lookup_is_served_and_cached(service: ResponderService, bus: Bus, slack: FakeSlack) -> None:
    """LookupSlackUser answers email and names from users.info, and a repeat comes from the cache."""
    first = await bus.request(LookupSlackUser(user_id=AGENT_USER_ID), SlackUserInfo, timeout=5)
    second = await bus.request(LookupSlackUser(user_id=AGENT_USER_ID), SlackUserInfo, timeout=5)
    assert first.email == AGENT_EMAIL and first.real_name == "Alex Agent" and first.error is None
    assert second == first
    assert len(slack.method_calls("users.info")) == 1
    missing = await bus.request(LookupSlackUser(user_id="U0NOBODY"), SlackUserInfo, timeout=5)
    assert missing.error == "user_not_found" and missing.email is None


async def test_app_home_is_published(service: ResponderService, bus: Bus, slack: FakeSlack) -> None:
    """A HomeSnapshot publishes the agent's App Home with the start button and their recent cases."""
    now = datetime.now(UTC)
    recent = [
        RecentCase(case_id="c1", target_login="jane.doe", state=CaseState.CLOSED, outcome="verified · unlocked", at=now)
    ]
    home = HomeSnapshot(agent=Actor(user_id=AGENT_USER_ID), recent=recent, okta_status="ok", okta_checked_at=now)
    assert await bus.publish(home)
    await slack.until(lambda: AGENT_USER_ID in slack.home_views)
    view = slack.home_views[AGENT_USER_ID]
    text = FakeSlack.render_text(view)
    assert "Start a verification" in text and "jane.doe" in text and "NATS: connected" in text
    assert any(e.get("action_id") == ui.ACTION_START for b in view["blocks"] for e in [b.get("accessory") or {}])


async def test_push_wait_view_refreshes_elapsed_time(responder_settings: Settings, bus: Bus, slack: FakeSlack) -> None:
    """While a push is pending, the view is re-rendered on a timer so the elapsed time moves."""
    from services.slack_responder.handlers import Responder
    from services.slack_responder.slack_client import SlackClient

    client = SlackClient.from_settings(responder_settings)
    responder = Responder(client, await ViewStore.open(bus), bus, push_refresh_every=0.05)
    try:
        trigger = slack.issue_trigger(AGENT_USER_ID)
        challenge = ChallengeInfo(
            challenge_id="ch",
            factor_id="opf",
            factor_type="push",
            label="Okta Verify",
            kind="push",
            correct_answer=42,
            sent_at=datetime.now(UTC) - timedelta(seconds=30),
            expires_at=datetime.now(UTC) + timedelta(minutes=5),
        )
        await responder.render_snapshot(snap(1, CaseState.CHALLENGE_SENT, trigger_id=trigger, challenge=challenge))
        await slack.until(lambda: len(slack.method_calls("views.update")) >= 2)
        assert "42" in FakeSlack.render_text(slack.method_calls("views.update")[-1]["view"])
    finally:
        await responder.stop()
        await client.close()
