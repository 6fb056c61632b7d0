"""The audit channel: one thread per case, the parent updated with the outcome, alerts loud, no secrets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sandbox.slack import AGENT_USER_ID, AUDIT_CHANNEL_ID, FakeSlack
from services.slack_responder.app import ResponderService, create_service
from services.slack_responder.audit import Thread, next_status, reply_text, safe_details
from shared.bus import Bus, Delivery
from shared.messages import Actor, AuditEvent, CaseSnapshot, CaseState
from shared.settings import Settings

BOT_TOKEN = "xoxb-test-token-0000"
SECRET_CODE = "804211"
SECRET_PASSWORD = "Very-Secret-Temp-77"


@pytest.fixture
async def service(settings: Settings, bus: Bus, slack: FakeSlack) -> AsyncIterator[ResponderService]:
    configured = settings.model_copy(
        update={"slack_api_url": f"{slack.url}/api/", "slack_audit_channel": AUDIT_CHANNEL_ID}
    )
    svc = create_service(configured, bus)
    await svc.start()
    yield svc
    await svc.stop()


def event(action: str, outcome: str, case_id: str | None = "case-a", **extra: Any) -> AuditEvent:
    values: dict[str, Any] = {
        "category": "case",
        "action": action,
        "outcome": outcome,
        "actor": AGENT_USER_ID,
        "target": "jane.doe@example.com",
        "case_id": case_id,
    }
    values.update(extra)
    return AuditEvent(**values)


async def open_view(bus: Bus, slack: FakeSlack, case_id: str = "case-a") -> None:
    trigger = slack.issue_trigger(AGENT_USER_ID)
    snapshot = CaseSnapshot(
        case_id=case_id,
        revision=1,
        state=CaseState.OPENED,
        agent=Actor(user_id=AGENT_USER_ID),
        case_token="t",
        trigger_id=trigger,
    )
    await bus.publish(snapshot, msg_id=f"{case_id}:1")
    await slack.until(lambda: trigger in slack._trigger_views)


def audit_messages(slack: FakeSlack) -> list[dict[str, Any]]:
    return slack.messages_in(AUDIT_CHANNEL_ID)


async def test_one_thread_per_case_with_the_outcome_on_the_parent(
    service: ResponderService, bus: Bus, slack: FakeSlack
) -> None:
    """Each case gets one parent message and a reply per step from the user picked on; the parent ends
    with what was done. The opening itself stays in the AUDIT stream only."""
    await open_view(bus, slack)
    opened = event("case.opened", "info", target=None)
    await bus.publish(opened, msg_id=opened.event_id)
    events = [
        event("case.user_selected", "success"),
        event("case.challenge_sent", "pending", details={"factor_type": "push"}),
        event("case.verified", "success", details={"factor_type": "push"}),
        event("case.action", "success", details={"action": "temp_password"}),
    ]
    for e in events:
        await bus.publish(e, msg_id=e.event_id)
    await slack.until(lambda: len(audit_messages(slack)) == 1 + len(events))
    parent, *replies = slack.thread(AUDIT_CHANNEL_ID, audit_messages(slack)[0]["ts"])
    assert len(replies) == len(events)
    await slack.until(lambda: "temporary password set" in parent["text"])
    assert parent["text"].startswith(f":white_check_mark: <@{AGENT_USER_ID}> verified jane.doe@example.com (push)")
    assert "case › verified" in replies[2]["text"]
    # A redelivered event is not posted twice.
    await bus.publish(events[1], msg_id="again-" + events[1].event_id)
    await bus.publish(event("case.closed", "info"), msg_id="closing")
    await slack.until(lambda: len(audit_messages(slack)) == 2 + len(events))
    assert sum("user selected" in m["text"] for m in audit_messages(slack)) == 1


async def test_a_modal_opened_and_closed_posts_nothing(service: ResponderService, bus: Bus, slack: FakeSlack) -> None:
    """Opened, then closed before any user was picked: no thread; a denial does start one."""
    assert service.audit is not None
    await open_view(bus, slack)
    await open_view(bus, slack, case_id="case-denied")
    delivery = Delivery(subject="audit.case", num_delivered=1)
    reads: list[str] = []
    real_get = service.audit.kv.get

    async def counted_get(key: str) -> Any:
        reads.append(key)
        return await real_get(key)

    service.audit.kv.get = counted_get  # type: ignore[method-assign]
    await service.audit.on_event(event("case.opened", "info", target=None), delivery)
    assert reads == []  # every case opens: that event is dropped without a KV read
    await service.audit.on_event(event("case.closed", "info", target=None), delivery)
    assert audit_messages(slack) == [] and len(reads) == 1
    await service.audit.on_event(event("case.denied", "denied", target=None, case_id="case-denied"), delivery)
    parent, reply = audit_messages(slack)
    assert "not authorized" in parent["text"] and "denied" in reply["text"]


async def test_rejected_push_is_flagged_loudly(service: ResponderService, bus: Bus, slack: FakeSlack) -> None:
    """A REJECTED push is a security alert broadcast to the channel, and the parent says so."""
    await open_view(bus, slack)
    for e in [
        event("case.challenge_sent", "pending", details={"factor_type": "push"}),
        event("case.rejected", "failure", details={"factor_type": "push"}),
    ]:
        await bus.publish(e, msg_id=e.event_id)
    await slack.until(lambda: len(audit_messages(slack)) == 3)
    await slack.until(lambda: "REJECTED" in audit_messages(slack)[0]["text"])
    parent, _sent, alert = audit_messages(slack)
    assert "SECURITY ALERT" in alert["text"]
    assert slack.method_calls("chat.postMessage")[-1].get("reply_broadcast") is True
    assert parent["text"].startswith(":rotating_light:") and "1 alert" in parent["text"]


async def test_views_open_goes_before_the_audit_post(service: ResponderService, bus: Bus, slack: FakeSlack) -> None:
    """An audit event that arrives before the case's first snapshot waits: views.open is the first call."""
    assert service.audit is not None and service.audit.wait_for_case is not None
    waiting = asyncio.Event()
    original = service.audit.wait_for_case

    async def observed(case_id: str, timeout: float) -> None:
        waiting.set()
        await original(case_id, timeout)

    service.audit.wait_for_case = observed
    first = event("case.user_selected", "success", case_id="case-b")
    await bus.publish(first, msg_id=first.event_id)
    await asyncio.wait_for(waiting.wait(), 5)  # the audit event is being handled before any snapshot
    await open_view(bus, slack, case_id="case-b")
    await slack.until(lambda: bool(audit_messages(slack)))
    methods = [m for m, _ in slack.api_log if m in {"views.open", "chat.postMessage"}]
    assert methods[0] == "views.open"


async def test_no_secret_reaches_the_channel(service: ResponderService, bus: Bus, slack: FakeSlack) -> None:
    """Details that name a secret, or hold a token, never reach the audit channel."""
    await open_view(bus, slack)
    leaky = event(
        "case.code_wrong",
        "failure",
        details={
            "code": SECRET_CODE,
            "temp_password": SECRET_PASSWORD,
            "passcode_given": SECRET_CODE,
            "note": "bot token xoxb-1234-5678-abcdefgh",
            "attempts_left": 2,
        },
    )
    await bus.publish(leaky, msg_id=leaky.event_id)
    await slack.until(lambda: len(audit_messages(slack)) == 2)
    posted = repr(slack.method_calls("chat.postMessage")) + repr(slack.method_calls("chat.update"))
    assert SECRET_CODE not in posted and SECRET_PASSWORD not in posted and "xoxb-1234" not in posted
    assert "attempts left: 2" in audit_messages(slack)[1]["text"]


async def test_routine_events_without_a_case_stay_quiet(service: ResponderService, bus: Bus, slack: FakeSlack) -> None:
    """Telephony routine events are not posted; a limit hit without a case is posted on its own."""
    routine = event("sms.sent", "success", case_id=None, category="telephony")
    limit = event("velocity_limit", "refused", case_id=None, category="telephony", severity="warning")
    await bus.publish(routine, msg_id=routine.event_id)
    await bus.publish(limit, msg_id=limit.event_id)
    await slack.until(lambda: bool(audit_messages(slack)))
    [posted] = audit_messages(slack)
    assert "SECURITY ALERT" in posted["text"] and "velocity limit" in posted["text"]


async def test_no_audit_consumer_without_a_channel(settings: Settings, bus: Bus, slack: FakeSlack) -> None:
    """Without SLACK_AUDIT_CHANNEL the responder does not consume the audit stream."""
    svc = create_service(settings.model_copy(update={"slack_api_url": f"{slack.url}/api/"}), bus)
    await svc.start()
    try:
        assert svc.audit is None
        assert all(sub.durable != "slack-audit" for sub in svc._subscriptions)
    finally:
        await svc.stop()


def test_parent_line_follows_the_case() -> None:
    """The parent reads "is verifying", then the outcome with the method and the actions done."""
    thread = Thread(channel="C", ts="1", agent="U1")
    assert thread.parent_text() == ":hourglass_flowing_sand: <@U1> is verifying a caller"
    thread = next_status(thread, event("case.user_selected", "success", target="jdoe"))
    thread = next_status(thread, event("case.verified", "success", target="jdoe", details={"factor_type": "sms"}))
    thread = next_status(thread, event("case.action", "success", target="jdoe", details={"action": "unlock"}))
    assert thread.parent_text() == ":white_check_mark: <@U1> verified jdoe (sms) · unlocked"
    assert next_status(thread, event("case.escalated", "refused")).status == "escalated"
    assert next_status(Thread(channel="C", ts="1"), event("case.denied", "denied")).status == "denied"


def test_reply_text_keeps_only_safe_details() -> None:
    """Only non-secret details are shown, and limit hits are flagged."""
    assert safe_details({"otp": "1", "factor_type": "sms", "answer_given": "x", "none": None}) == {"factor_type": "sms"}
    assert reply_text(event("case.limit_hit", "refused", severity="warning")).startswith(":rotating_light:")
