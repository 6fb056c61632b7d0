"""Notices to approvers, target users and security: real NATS, the sandbox Slack, the real SlackClient."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from nats.js.errors import NoKeysError
from structlog.testing import capture_logs

from sandbox.slack import (
    AGENT_EMAIL,
    AGENT_USER_ID,
    ALICE_EMAIL,
    ALICE_USER_ID,
    APPROVALS_CHANNEL_ID,
    MANAGER_EMAIL,
    MANAGER_USER_ID,
    SECOND_AGENT_USER_ID,
    SECURITY_CHANNEL_ID,
    FakeSlack,
)
from services.slack_responder import notice_views
from services.slack_responder.app import NOTIFY_DURABLE, ResponderService, create_service
from services.slack_responder.notices import CLAIM_TIMEOUT, NOTICES_BUCKET, Notices, security_key
from services.slack_responder.slack_client import MessageGone, SlackClient
from shared import ui
from shared.bus import NOTIFY_STREAM, Bus, Delivery, RetryLater
from shared.messages import (
    ActionKind,
    Actor,
    ApprovalInfo,
    ApprovalNotice,
    ApprovalStatus,
    Message,
    MessageRef,
    RiskSummary,
    SecurityNotice,
    TargetNotice,
    UserCard,
)
from shared.settings import Settings
from shared.tokens import CaseTokens

from .conftest import CASE_SECRET

TOKENS = CaseTokens(CASE_SECRET)
APPROVAL_TOKEN = TOKENS.issue("case-1", "approval:ap-1")
NOTICE_TOKEN = TOKENS.issue("case-1", f"target:00ualice{'0' * 11}1")
NOW = datetime(2025, 3, 4, 10, 30, tzinfo=UTC)
JANE = UserCard(
    id="00ujane0000000000001", login="jane.doe@example.com", first_name="Jane", last_name="Doe", status="ACTIVE"
)


@pytest.fixture
async def service(settings: Settings, bus: Bus, slack: FakeSlack) -> AsyncIterator[ResponderService]:
    svc = create_service(settings.model_copy(update={"slack_api_url": f"{slack.url}/api/"}), bus)
    await svc.start()
    yield svc
    await svc.stop()


@pytest.fixture
def notices(service: ResponderService) -> Notices:
    assert service.notices is not None
    return service.notices


async def settled(bus: Bus, timeout: float = 5.0) -> None:
    """Wait until the notify consumer has nothing left to deliver and nothing un-acknowledged."""

    async def _wait() -> None:
        while True:
            info = await bus.js.consumer_info(bus.stream_name(NOTIFY_STREAM.name), NOTIFY_DURABLE)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return
            await asyncio.sleep(0.02)

    await asyncio.wait_for(_wait(), timeout)


def approval(status: ApprovalStatus = ApprovalStatus.REQUESTED, **extra: Any) -> ApprovalNotice:
    info: dict[str, Any] = {
        "approval_id": "ap-1",
        "action": ActionKind.RESET_ALL_FACTORS,
        "status": status,
        "requested_by": AGENT_USER_ID,
        "requested_at": NOW,
        "expires_at": NOW + timedelta(minutes=15),
    }
    if status in (ApprovalStatus.APPROVED, ApprovalStatus.DENIED, ApprovalStatus.USED):
        info.update(decided_by=SECOND_AGENT_USER_ID, decided_at=NOW + timedelta(minutes=2))
    info.update(extra.pop("info", {}))
    values: dict[str, Any] = {
        "case_id": "case-1",
        "approval": ApprovalInfo(**info),
        "approval_token": APPROVAL_TOKEN,
        "requester": Actor(user_id=AGENT_USER_ID),
        "requester_email": AGENT_EMAIL,
        "target": JANE,
        "assurance": "strong (Okta Verify push)",
        "risk": RiskSummary(
            level="high", signals=["3 failed sign-ins from a new country", "MFA reset 2 days ago"], checked_at=NOW
        ),
        "action_label": "Reset all factors",
        "channel_id": APPROVALS_CHANNEL_ID,
    }
    values.update(extra)
    return ApprovalNotice(**values)


def target(**extra: Any) -> TargetNotice:
    values: dict[str, Any] = {
        "case_id": "case-1",
        "target_email": ALICE_EMAIL,
        "target_name": "Alice Doe",
        "changes": ["All factors reset", "Temporary password set"],
        "agent": Actor(user_id=AGENT_USER_ID),
        "agent_email": AGENT_EMAIL,
        "at": NOW,
        "notice_token": NOTICE_TOKEN,
    }
    values.update(extra)
    return TargetNotice(**values)


def security(**extra: Any) -> SecurityNotice:
    values: dict[str, Any] = {
        "case_id": "case-1",
        "kind": "escalation",
        "text": "Jane Doe is a protected user: an administrator must act.",
        "agent": Actor(user_id=AGENT_USER_ID),
        "target": JANE.model_copy(update={"protected": True}),
        "admin_url": "https://example-admin.okta.com/admin/user/profile/view/00ujane0000000000001",
        "channel_id": SECURITY_CHANNEL_ID,
    }
    values.update(extra)
    return SecurityNotice(**values)


async def publish(bus: Bus, notice: Message, msg_id: str) -> None:
    assert await bus.publish(notice, msg_id=msg_id)


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for b in message.get("blocks", []) if b["type"] == "actions" for e in b["elements"]]


def shown(message: dict[str, Any]) -> str:
    """What a person reads: the rendered blocks and the notification text (not the button values)."""
    return message["text"] + "\n" + FakeSlack.render_text({"type": "home", "blocks": message.get("blocks", [])})


def without_values(message: dict[str, Any]) -> str:
    """The message as JSON with every button value taken out: where a token must never be."""
    kept = orjson.loads(orjson.dumps(message))
    for button in buttons(kept):
        button.pop("value", None)
    return orjson.dumps(kept).decode()


def delivery(msg_id: str, subject: str = "helpdesk.notify.approval") -> Delivery:
    return Delivery(subject=subject, num_delivered=1, headers={"Nats-Msg-Id": msg_id})


# ---------------------------------------------------------------------------------------------
# Approvals


async def test_approval_request_is_posted_to_the_channel_with_both_buttons(
    service: ResponderService, bus: Bus, slack: FakeSlack
) -> None:
    """The request names who asks, for whom, which action, how verified, the risk and the expiry, and
    carries Approve (primary) and Deny (danger) whose value is the approval token, and nowhere else."""
    await publish(bus, approval(), "approval:ap-1:requested")
    await slack.until(lambda: len(slack.messages_in(APPROVALS_CHANNEL_ID)) == 1)
    message = slack.messages_in(APPROVALS_CHANNEL_ID)[0]
    text = shown(message)
    assert f"<@{AGENT_USER_ID}>" in message["text"] and f"<@{AGENT_USER_ID}>" in str(message["blocks"])
    for fact in (
        "Jane Doe",
        "jane.doe@example.com",
        "Reset all factors",
        "strong (Okta Verify push)",
        "High",
        "3 failed sign-ins from a new country",
        "MFA reset 2 days ago",
    ):
        assert fact in text, fact
    expires = int((NOW + timedelta(minutes=15)).timestamp())
    assert f"<!date^{expires}^" in str(message["blocks"])
    approve, deny = buttons(message)
    assert (approve["action_id"], approve["style"], approve["value"]) == (ui.ACTION_APPROVE, "primary", APPROVAL_TOKEN)
    assert (deny["action_id"], deny["style"], deny["value"]) == (ui.ACTION_DENY, "danger", APPROVAL_TOKEN)
    assert APPROVAL_TOKEN not in without_values(message)


def test_unknown_risk_says_so() -> None:
    """Without a risk assessment the request says "Unknown" and that the System Log was not checked."""
    _text, blocks = notice_views.approval_request(approval(risk=None))
    rendered = FakeSlack.render_text({"type": "home", "blocks": blocks})
    assert "Unknown" in rendered and "not assessed" in rendered


def test_names_cannot_forge_mentions() -> None:
    """A display name with mrkdwn control characters is escaped; only real user ids become mentions."""
    sneaky = JANE.model_copy(update={"first_name": "<!channel>", "last_name": "<@U0BOSS001>"})
    text, blocks = notice_views.approval_request(approval(target=sneaky))
    assert "<!channel>" not in text + str(blocks) and "<@U0BOSS001>" not in text + str(blocks)
    assert notice_views.mention("U0AGENT01") == "<@U0AGENT01>"
    assert notice_views.mention("<!here>") == "&lt;!here&gt;"
    kept = notice_views.esc_keep_mentions("<@U0AGENT01>: no. <!channel> <@U0BOSS001|boss> <https://evil.example|x>")
    assert kept.startswith("<@U0AGENT01>: no.") and "<!channel>" not in kept and "<@U0BOSS001|" not in kept
    assert "<https://" not in kept


async def test_manager_approval_is_a_dm_to_the_manager(service: ResponderService, bus: Bus, slack: FakeSlack) -> None:
    """With manager_email the request goes to the manager's DM: lookupByEmail, conversations.open, post."""
    await publish(bus, approval(manager_email=MANAGER_EMAIL), "approval:ap-1:requested")
    await slack.until(lambda: len(slack.dm_messages(MANAGER_USER_ID)) == 1)
    assert slack.method_calls("users.lookupByEmail") == [{"email": MANAGER_EMAIL}]
    assert slack.method_calls("conversations.open") == [{"users": MANAGER_USER_ID}]
    assert slack.method_calls("chat.postMessage")[0]["channel"] == slack.dm_channel_id(MANAGER_USER_ID)
    message = slack.dm_messages(MANAGER_USER_ID)[0]
    assert [b["action_id"] for b in buttons(message)] == [ui.ACTION_APPROVE, ui.ACTION_DENY]
    assert slack.messages_in(APPROVALS_CHANNEL_ID) == []


async def test_a_manager_not_in_slack_falls_back_to_the_channel_or_the_requester(
    notices: Notices, slack: FakeSlack
) -> None:
    """A manager email no member has: the request goes to the channel saying so; with no channel, the
    requester is told it could not be sent (nobody could approve it otherwise)."""
    with capture_logs() as logs:
        await notices.on_notice(approval(manager_email="gone@example.com"), delivery("a"))
        lone = approval(manager_email="gone@example.com", channel_id=None, info={"approval_id": "ap-2"})
        await notices.on_notice(lone, delivery("b"))
    (message,) = slack.messages_in(APPROVALS_CHANNEL_ID)
    assert "gone@example.com" in shown(message) and "not found in Slack" in shown(message)
    assert len(buttons(message)) == 2
    (told,) = slack.dm_messages(AGENT_USER_ID)
    assert "could not be sent" in told["text"] and "blocks" not in told
    assert [e["event"] for e in logs].count("notice.approval.manager_not_in_slack") == 2
    # Delivered again: the requester is not told twice.
    await notices.on_notice(lone, delivery("b"))
    assert len(slack.dm_messages(AGENT_USER_ID)) == 1


async def test_outcomes_update_the_request_without_buttons(
    service: ResponderService, bus: Bus, slack: FakeSlack
) -> None:
    """Approved (the clicked message given) and denied (the message found from the record) replace the
    buttons with the outcome and who decided; a late "approved" never hides "used"."""
    await publish(bus, approval(), "ap-1:requested")
    await publish(bus, approval(info={"approval_id": "ap-2"}), "ap-2:requested")
    await slack.until(lambda: len(slack.messages_in(APPROVALS_CHANNEL_ID)) == 2)
    first, second = slack.messages_in(APPROVALS_CHANNEL_ID)
    ref = MessageRef(channel=APPROVALS_CHANNEL_ID, ts=first["ts"])

    await publish(bus, approval(ApprovalStatus.APPROVED, message=ref), "ap-1:approved")
    await publish(bus, approval(ApprovalStatus.DENIED, info={"approval_id": "ap-2"}), "ap-2:denied")
    await slack.until(lambda: len(slack.method_calls("chat.update")) == 2)
    assert buttons(first) == [] and buttons(second) == []
    assert f"Approved by <@{SECOND_AGENT_USER_ID}>" in first["text"]
    assert f"*Approved* by <@{SECOND_AGENT_USER_ID}>" in str(first["blocks"])
    assert f"*Denied* by <@{SECOND_AGENT_USER_ID}>" in str(second["blocks"])
    assert "Jane Doe" in shown(first) and "Reset all factors" in shown(second)

    await publish(bus, approval(ApprovalStatus.USED, message=ref), "ap-1:used")
    await slack.until(lambda: len(slack.method_calls("chat.update")) == 3)
    assert "and used" in str(first["blocks"])
    await publish(bus, approval(ApprovalStatus.APPROVED, message=ref), "ap-1:approved-again")
    await publish(bus, approval(ApprovalStatus.EXPIRED, info={"approval_id": "ap-3"}), "ap-3:expired")  # no message
    await settled(bus)
    assert len(slack.method_calls("chat.update")) == 3
    assert "and used" in str(first["blocks"])


async def test_a_refused_decision_is_a_thread_reply(service: ResponderService, bus: Bus, slack: FakeSlack) -> None:
    """A note (the requester tried to approve their own request) is replied in the request's thread,
    naming who clicked; the buttons stay, so the real approver can still decide. Refused because the
    request expired: the reply, and the request shows it expired."""
    await publish(bus, approval(), "ap-1:requested")
    await slack.until(lambda: len(slack.messages_in(APPROVALS_CHANNEL_ID)) == 1)
    parent = slack.messages_in(APPROVALS_CHANNEL_ID)[0]
    ref = MessageRef(channel=APPROVALS_CHANNEL_ID, ts=parent["ts"])
    own = f"<@{AGENT_USER_ID}>: You cannot approve your own request: another person must."
    await publish(bus, approval(message=ref, note=own), "ap-1:refused:U0AGENT01:True:1741084200.000")
    await slack.until(lambda: len(slack.thread(APPROVALS_CHANNEL_ID, parent["ts"])) == 2)
    reply = slack.thread(APPROVALS_CHANNEL_ID, parent["ts"])[1]
    assert reply["text"] == f":no_entry_sign: {own}"
    assert len(buttons(parent)) == 2 and slack.method_calls("chat.update") == []

    late = f"<@{SECOND_AGENT_USER_ID}>: This request expired."
    await publish(bus, approval(ApprovalStatus.EXPIRED, message=ref, note=late), "ap-1:refused:late")
    await slack.until(lambda: len(slack.method_calls("chat.update")) == 1)
    assert len(slack.thread(APPROVALS_CHANNEL_ID, parent["ts"])) == 3
    assert buttons(parent) == [] and "*Expired*" in str(parent["blocks"])


# ---------------------------------------------------------------------------------------------
# The target user


async def test_target_gets_a_dm_with_this_wasnt_me(service: ResponderService, bus: Bus, slack: FakeSlack) -> None:
    """The user is told what was done, by whom and when, with a danger "This wasn't me" button whose
    value is the notice token; then, disputed, the DM says what happened and loses the button."""
    await publish(bus, target(), "user:1")
    await slack.until(lambda: len(slack.dm_messages(ALICE_USER_ID)) == 1)
    message = slack.dm_messages(ALICE_USER_ID)[0]
    for fact in ("All factors reset", "Temporary password set", AGENT_EMAIL, "Alice"):
        assert fact in shown(message), fact
    assert f"<@{AGENT_USER_ID}>" in str(message["blocks"])
    assert f"<!date^{int(NOW.timestamp())}^" in str(message["blocks"])
    (button,) = buttons(message)
    assert (button["action_id"], button["style"], button["value"]) == (ui.ACTION_NOT_ME, "danger", NOTICE_TOKEN)
    assert NOTICE_TOKEN not in without_values(message)

    ref = MessageRef(channel=slack.dm_channel_id(ALICE_USER_ID), ts=message["ts"])
    await publish(bus, target(disputed=True, message=ref), "user:1:disputed")
    await slack.until(lambda: bool(slack.method_calls("chat.update")))
    assert message["text"] == "Thanks — we signed you out everywhere and alerted security."
    assert buttons(message) == [] and "All factors reset" in shown(message)
    assert len(slack.dm_messages(ALICE_USER_ID)) == 1


async def test_a_target_not_in_slack_is_logged_and_acknowledged(notices: Notices, slack: FakeSlack) -> None:
    """An email no member has: a warning (without the address), no DM, nothing to retry."""
    with capture_logs() as logs:
        await notices.on_notice(target(target_email="contractor@elsewhere.example"), delivery("u1"))
    assert slack.method_calls("conversations.open") == [] and slack.method_calls("chat.postMessage") == []
    (warning,) = [e for e in logs if e["event"] == "notice.user.not_in_slack"]
    assert warning["log_level"] == "warning" and "contractor@" not in repr(warning)


# ---------------------------------------------------------------------------------------------
# Security


async def test_security_notice_with_the_admin_link(service: ResponderService, bus: Bus, slack: FakeSlack) -> None:
    """The alert names the user and the agent and links to the user in the Okta Admin Console."""
    await publish(bus, security(), "security:case-1:escalation")
    await slack.until(lambda: len(slack.messages_in(SECURITY_CHANNEL_ID)) == 1)
    message = slack.messages_in(SECURITY_CHANNEL_ID)[0]
    assert "protected user" in shown(message) and "jane.doe@example.com" in shown(message)
    assert f"<@{AGENT_USER_ID}>" in str(message["blocks"])
    (link,) = buttons(message)
    assert link["action_id"] == ui.ACTION_OPEN_ADMIN and link["url"].endswith("/00ujane0000000000001")
    _text, plain = notice_views.security_notice(security(admin_url=None, kind="push_rejected"))
    assert buttons({"blocks": plain}) == []


# ---------------------------------------------------------------------------------------------
# Delivery


async def test_a_notice_delivered_twice_posts_once(
    notices: Notices, service: ResponderService, bus: Bus, slack: FakeSlack
) -> None:
    """The same message handled twice, and the same approval published under two ids, post once."""
    for _ in range(2):
        await notices.on_notice(security(), delivery("sec-1", "helpdesk.notify.security"))
        await notices.on_notice(target(), delivery("user-1", "helpdesk.notify.user"))
    assert len(slack.messages_in(SECURITY_CHANNEL_ID)) == 1 and len(slack.dm_messages(ALICE_USER_ID)) == 1

    await publish(bus, approval(), "ap-1:requested")
    await publish(bus, approval(), "ap-1:requested-again")
    await settled(bus)
    assert len(slack.messages_in(APPROVALS_CHANNEL_ID)) == 1


async def test_rate_limits_are_retried_and_refusals_are_acknowledged(notices: Notices, slack: FakeSlack) -> None:
    """Still rate limited after the client's own retries: RetryLater, and the retry posts once. A
    refusal (archived channel) is logged with Slack's code and acknowledged, and a later delivery
    may post."""
    slack.rate_limit_next("chat.postMessage", retry_after=0, n=3)
    with pytest.raises(RetryLater):
        await notices.on_notice(security(), delivery("sec-1"))
    await notices.on_notice(security(), delivery("sec-1"))
    assert len(slack.messages_in(SECURITY_CHANNEL_ID)) == 1

    slack.fail_next("chat.postMessage", error="is_archived")
    with capture_logs() as logs:
        await notices.on_notice(security(text="second"), delivery("sec-2"))
    (rejected,) = [e for e in logs if e["event"] == "notice.rejected"]
    assert (rejected["error"], rejected["method"]) == ("is_archived", "chat.postMessage")
    await notices.on_notice(security(text="second"), delivery("sec-2"))
    assert len(slack.messages_in(SECURITY_CHANNEL_ID)) == 2


async def test_a_claim_left_by_a_stopped_replica_is_taken_over(settings: Settings, bus: Bus, slack: FakeSlack) -> None:
    """A fresh "posting" record means another delivery is posting: retry later. One older than
    CLAIM_TIMEOUT was left by a replica that stopped mid-post: this delivery posts."""
    now = [1_000_000.0]
    client = SlackClient.from_settings(settings.model_copy(update={"slack_api_url": f"{slack.url}/api/"}))
    kv = await Notices.bucket(bus)
    notices = Notices(client, kv, clock=lambda: now[0])
    try:
        key = security_key(security(), "sec-1")
        await kv.create(key, orjson.dumps({"state": "posting", "at": now[0]}))
        with pytest.raises(RetryLater):
            await notices.on_notice(security(), delivery("sec-1"))
        assert slack.messages_in(SECURITY_CHANNEL_ID) == []
        now[0] += CLAIM_TIMEOUT + 1
        await notices.on_notice(security(), delivery("sec-1"))
        assert len(slack.messages_in(SECURITY_CHANNEL_ID)) == 1
        record = orjson.loads((await kv.get(key)).value or b"{}")
        assert record["state"] == "posted" and record["channel"] == SECURITY_CHANNEL_ID
    finally:
        await client.close()


async def test_no_token_in_logs_or_kv(
    service: ResponderService, bus: Bus, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    """Through posts, updates, a refusal and a failure, neither token reaches a log line or the KV."""
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logs:
        slack.fail_next("chat.postMessage", error="channel_not_found")
        await publish(bus, approval(info={"approval_id": "ap-0"}), "ap-0:requested")
        await slack.until(lambda: len(slack.method_calls("chat.postMessage")) == 1)  # refused
        await publish(bus, approval(), "ap-1:requested")
        await slack.until(lambda: len(slack.messages_in(APPROVALS_CHANNEL_ID)) == 1)
        ref = MessageRef(channel=APPROVALS_CHANNEL_ID, ts=slack.messages_in(APPROVALS_CHANNEL_ID)[0]["ts"])
        await publish(bus, approval(message=ref, note="You cannot approve your own request."), "ap-1:note")
        await publish(bus, approval(ApprovalStatus.DENIED, message=ref), "ap-1:denied")
        await publish(bus, target(), "user-1")
        await slack.until(
            lambda: len(slack.method_calls("chat.update")) == 1 and bool(slack.dm_messages(ALICE_USER_ID))
        )
        await slack.until(lambda: len(slack.thread(APPROVALS_CHANNEL_ID, ref.ts)) == 2)
    assert any(e["event"] == "notice.rejected" for e in logs)
    for token in (APPROVAL_TOKEN, NOTICE_TOKEN):
        assert token not in repr(logs) and token not in caplog.text
    kv = await bus.key_value(NOTICES_BUCKET)
    try:
        keys = await kv.keys()
    except NoKeysError:
        keys = []
    assert keys
    for key in keys:
        entry = await kv.get(key)
        assert APPROVAL_TOKEN.encode() not in (entry.value or b"") and NOTICE_TOKEN.encode() not in key.encode()


# ---------------------------------------------------------------------------------------------
# SlackClient


async def test_slack_client_dm_lookup_post_and_update(settings: Settings, slack: FakeSlack) -> None:
    """lookup_user_by_email (None on a miss), open_dm (a stable D… id), post → MessageRef, update;
    updating a message that is gone is MessageGone."""
    client = SlackClient.from_settings(settings.model_copy(update={"slack_api_url": f"{slack.url}/api/"}))
    try:
        assert await client.lookup_user_by_email(MANAGER_EMAIL.upper()) == MANAGER_USER_ID
        assert await client.lookup_user_by_email("nobody@example.com") is None
        dm = await client.open_dm(MANAGER_USER_ID)
        assert dm == await client.open_dm(MANAGER_USER_ID) == slack.dm_channel_id(MANAGER_USER_ID)
        ref = await client.post(dm, "hello", [{"type": "section", "text": {"type": "mrkdwn", "text": "hello"}}])
        assert ref.channel == dm and slack.message(dm, ref.ts) is not None
        await client.update(ref, "bye", [])
        stored = slack.message(dm, ref.ts)
        assert stored is not None and stored["text"] == "bye" and "blocks" not in stored
        with pytest.raises(MessageGone):
            await client.update(MessageRef(channel=dm, ts="1.000001"), "x")
    finally:
        await client.close()
