"""FakeSlack behaves like Slack's Web API as seen through the real slack_sdk AsyncWebClient."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    ImageBlock,
    ImageElement,
    InputBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    RadioButtonsElement,
    RichTextBlock,
    RichTextElementParts,
    RichTextListElement,
    RichTextSectionElement,
    SectionBlock,
    StaticSelectElement,
)
from slack_sdk.models.views import View
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from sandbox.slack import (
    AGENT_EMAIL,
    AGENT_USER_ID,
    ALICE_USER_ID,
    AUDIT_CHANNEL_ID,
    BOT_USER_ID,
    MANAGER_EMAIL,
    MANAGER_USER_ID,
    SECOND_AGENT_USER_ID,
    TEAM_ID,
    FakeSlack,
)
from sandbox.slack_agent import MessageNotFound, SlackAgent

TOKEN = "xoxb-test-1234-abcd"
SIGNING = "8f742231b10e8888abcd99yyyzzz85a5"
T0 = 1_700_000_000.0


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    slack = FakeSlack(bot_token=TOKEN, clock=lambda: T0)
    await slack.start()
    yield slack
    await slack.stop()


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=f"{fake.url}/api/")


def modal(title: str = "Verify caller", **kwargs: Any) -> View:
    blocks = kwargs.pop("blocks", [SectionBlock(text="Checking…")])
    return View(type="modal", title=title, close="Close", blocks=blocks, **kwargs)


async def slack_error(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as caught:
        await call
    return caught.value


# ---------------------------------------------------------------------- auth


async def test_auth_test_returns_the_bot_identity(client: AsyncWebClient) -> None:
    """auth.test answers with the team and the bot user, as Slack does for a bot token."""
    response = await client.auth_test()
    assert response["ok"] is True
    assert response["team_id"] == TEAM_ID
    assert response["user_id"] == BOT_USER_ID
    assert response["bot_id"].startswith("B")
    assert response["url"].startswith("https://")


async def test_wrong_token_is_invalid_auth(fake: FakeSlack) -> None:
    """A token other than the bot token is rejected with invalid_auth and HTTP 200."""
    other = AsyncWebClient(token="xoxb-someone-else", base_url=f"{fake.url}/api/")
    error = await slack_error(other.auth_test())
    assert error.response.status_code == 200
    assert error.response["error"] == "invalid_auth"


async def test_missing_token_is_not_authed(fake: FakeSlack) -> None:
    """A call without any token is rejected with not_authed."""
    anonymous = AsyncWebClient(base_url=f"{fake.url}/api/")
    error = await slack_error(anonymous.users_info(user=AGENT_USER_ID))
    assert error.response["error"] == "not_authed"


async def test_token_form_field_is_accepted(fake: FakeSlack) -> None:
    """Like Slack, a form-encoded call may carry the token as a field instead of a header."""
    anonymous = AsyncWebClient(base_url=f"{fake.url}/api/")
    response = await anonymous.api_call("auth.test", data={"token": TOKEN})
    assert response["user_id"] == BOT_USER_ID


async def test_unknown_method_is_unknown_method(client: AsyncWebClient) -> None:
    """A method the fake does not serve answers unknown_method, so a typo cannot pass silently."""
    error = await slack_error(client.api_call("views.frobnicate", json={}))
    assert error.response["error"] == "unknown_method"


# ---------------------------------------------------------------------- views.open


async def test_views_open_returns_a_full_view(client: AsyncWebClient, fake: FakeSlack) -> None:
    """views.open with a fresh trigger returns Slack's view object and records it."""
    trigger_id = fake.issue_trigger(AGENT_USER_ID)
    assert re.fullmatch(r"\d+\.\d+\.[0-9a-f]{32}", trigger_id)
    view = modal(callback_id="verify", private_metadata="token-123", external_id="case-1")

    response = await client.views_open(trigger_id=trigger_id, view=view)

    opened = response["view"]
    assert re.fullmatch(r"V[A-Z0-9]{10}", opened["id"])
    assert re.fullmatch(r"\d{10}\.[0-9a-f]{8}", opened["hash"])
    assert opened["team_id"] == TEAM_ID
    assert opened["type"] == "modal"
    assert opened["title"] == {"type": "plain_text", "text": "Verify caller", "emoji": True}
    assert opened["callback_id"] == "verify"
    assert opened["private_metadata"] == "token-123"
    assert opened["external_id"] == "case-1"
    assert opened["state"] == {"values": {}}
    assert opened["root_view_id"] == opened["id"]
    assert opened["previous_view_id"] is None
    assert opened["app_id"] and opened["bot_id"]
    assert opened["notify_on_close"] is False
    assert opened["blocks"][0]["block_id"], "Slack fills in a block_id when none is sent"
    assert fake.views[opened["id"]] == opened
    assert fake.opened_views == [opened]
    assert fake.last_view_for(trigger_id) == opened
    assert fake.last_view_for("case-1") == opened
    sent = fake.calls_to("POST", "/api/views.open")[0]
    assert sent.headers["Content-Type"].startswith("application/json")
    assert sent.json["view"]["title"]["text"] == "Verify caller"


async def test_response_action_update_swaps_the_view_in_place(client: AsyncWebClient, fake: FakeSlack) -> None:
    """A submission answered with ``response_action: update``: same view id, a new hash, the new blocks."""
    opened = (await client.views_open(trigger_id=fake.issue_trigger(AGENT_USER_ID), view=modal()))["view"]
    replacement = modal(callback_id="next", private_metadata="token-456", blocks=[SectionBlock(text="Next step")])

    swapped = fake.replace_view(opened["id"], replacement.to_dict())

    assert swapped["id"] == opened["id"] and swapped["root_view_id"] == opened["root_view_id"]
    assert swapped["hash"] != opened["hash"]
    assert swapped["callback_id"] == "next" and swapped["blocks"][0]["text"]["text"] == "Next step"
    assert fake.views[opened["id"]] == swapped


async def test_views_open_accepts_a_form_encoded_view_string(client: AsyncWebClient, fake: FakeSlack) -> None:
    """A form post whose view field is a JSON string opens the same view."""
    trigger_id = fake.issue_trigger()
    view_json = json.dumps(modal(title="Form view").to_dict())
    response = await client.api_call("views.open", data={"trigger_id": trigger_id, "view": view_json})
    assert response["view"]["title"]["text"] == "Form view"
    assert fake.calls_to("POST", "/api/views.open")[0].form["trigger_id"] == trigger_id


@pytest.mark.parametrize(("elapsed", "error"), [(2.9, None), (3.0, None), (3.01, "expired_trigger_id")])
async def test_trigger_expires_after_three_seconds(
    client: AsyncWebClient, fake: FakeSlack, elapsed: float, error: str | None
) -> None:
    """A trigger_id is good for 3 s after it was issued; later, views.open says expired_trigger_id."""
    trigger_id = fake.issue_trigger()
    fake.advance(elapsed)
    if error is None:
        assert (await client.views_open(trigger_id=trigger_id, view=modal()))["ok"] is True
    else:
        assert (await slack_error(client.views_open(trigger_id=trigger_id, view=modal()))).response["error"] == error


async def test_expire_trigger_after_is_adjustable(client: AsyncWebClient, fake: FakeSlack) -> None:
    """Setting expire_trigger_after changes the trigger lifetime."""
    fake.expire_trigger_after = 0.5
    trigger_id = fake.issue_trigger()
    fake.advance(0.6)
    error = await slack_error(client.views_open(trigger_id=trigger_id, view=modal()))
    assert error.response["error"] == "expired_trigger_id"


async def test_trigger_is_exchanged_once(client: AsyncWebClient, fake: FakeSlack) -> None:
    """The second views.open with one trigger_id fails with exchanged_trigger_id."""
    trigger_id = fake.issue_trigger()
    await client.views_open(trigger_id=trigger_id, view=modal())
    error = await slack_error(client.views_open(trigger_id=trigger_id, view=modal()))
    assert error.response["error"] == "exchanged_trigger_id"
    assert len(fake.opened_views) == 1


async def test_unknown_trigger_is_invalid(client: AsyncWebClient) -> None:
    """A trigger_id Slack never issued is invalid_trigger_id."""
    error = await slack_error(client.views_open(trigger_id="1.2.deadbeef", view=modal()))
    assert error.response["error"] == "invalid_trigger_id"


@pytest.mark.parametrize(
    ("view", "pointer"),
    [
        (
            {"type": "modal", "title": {"type": "plain_text", "text": "x" * 25}, "blocks": []},
            "/view/title/text",
        ),
        ({"type": "modal", "blocks": []}, "missing required field: title"),
        (
            {
                "type": "modal",
                "title": {"type": "plain_text", "text": "t"},
                "blocks": [{"type": "divider"}] * 101,
            },
            "/view/blocks",
        ),
        (
            {
                "type": "modal",
                "title": {"type": "plain_text", "text": "t"},
                "blocks": [],
                "private_metadata": "m" * 3001,
            },
            "/view/private_metadata",
        ),
        ({"type": "home", "blocks": []}, "/view/type"),
    ],
)
async def test_invalid_view_is_invalid_arguments(
    client: AsyncWebClient, fake: FakeSlack, view: dict[str, Any], pointer: str
) -> None:
    """A view that breaks Slack's limits fails with invalid_arguments and says where, trigger unused."""
    trigger_id = fake.issue_trigger()
    error = await slack_error(client.views_open(trigger_id=trigger_id, view=view))
    assert error.response["error"] == "invalid_arguments"
    assert any(pointer in message for message in error.response["response_metadata"]["messages"])
    assert (await client.views_open(trigger_id=trigger_id, view=modal()))["ok"] is True


# ---------------------------------------------------------------------- views.update / push / publish


async def test_views_update_with_current_hash_gives_a_new_hash(client: AsyncWebClient, fake: FakeSlack) -> None:
    """views.update with the current hash replaces the view, keeps its id and changes the hash."""
    opened = (await client.views_open(trigger_id=fake.issue_trigger(), view=modal()))["view"]
    updated = (
        await client.views_update(
            view_id=opened["id"],
            hash=opened["hash"],
            view=modal(title="Pick a factor", private_metadata="m2"),
        )
    )["view"]
    assert updated["id"] == opened["id"]
    assert updated["hash"] != opened["hash"]
    assert updated["title"]["text"] == "Pick a factor"
    assert fake.views[opened["id"]]["private_metadata"] == "m2"
    assert fake.last_view_for(opened["id"]) == updated


async def test_views_update_with_stale_hash_is_hash_conflict(client: AsyncWebClient, fake: FakeSlack) -> None:
    """An update carrying an older hash fails with hash_conflict and changes nothing."""
    opened = (await client.views_open(trigger_id=fake.issue_trigger(), view=modal()))["view"]
    await client.views_update(view_id=opened["id"], hash=opened["hash"], view=modal(title="Second"))
    error = await slack_error(client.views_update(view_id=opened["id"], hash=opened["hash"], view=modal(title="Late")))
    assert error.response["error"] == "hash_conflict"
    assert fake.views[opened["id"]]["title"]["text"] == "Second"


async def test_views_update_by_external_id(client: AsyncWebClient, fake: FakeSlack) -> None:
    """A view opened with an external_id can be updated by it alone."""
    opened = (await client.views_open(trigger_id=fake.issue_trigger(), view=modal(external_id="case-7")))["view"]
    updated = (await client.views_update(external_id="case-7", view=modal(title="By external", external_id="case-7")))[
        "view"
    ]
    assert updated["id"] == opened["id"]
    assert updated["title"]["text"] == "By external"


async def test_views_update_of_unknown_or_closed_view_is_not_found(client: AsyncWebClient, fake: FakeSlack) -> None:
    """Updating a view that does not exist, or that the user closed, fails with not_found."""
    error = await slack_error(client.views_update(view_id="VNOSUCHVIEW", view=modal()))
    assert error.response["error"] == "not_found"
    opened = (await client.views_open(trigger_id=fake.issue_trigger(), view=modal()))["view"]
    fake.close_view(opened["id"])
    error = await slack_error(client.views_update(view_id=opened["id"], view=modal()))
    assert error.response["error"] == "not_found"


async def test_views_push_stops_at_three_views(client: AsyncWebClient, fake: FakeSlack) -> None:
    """Two pushes onto a modal make a stack of three; a third push is push_limit_reached."""
    root = (await client.views_open(trigger_id=fake.issue_trigger(), view=modal(title="Root")))["view"]
    second = (await client.views_push(trigger_id=fake.issue_trigger(view_id=root["id"]), view=modal(title="Second")))[
        "view"
    ]
    third = (await client.views_push(trigger_id=fake.issue_trigger(), view=modal(title="Third")))["view"]

    assert second["root_view_id"] == root["id"] and second["previous_view_id"] == root["id"]
    assert third["root_view_id"] == root["id"] and third["previous_view_id"] == second["id"]
    assert [v["id"] for v in fake.view_stack(root["id"])] == [root["id"], second["id"], third["id"]]
    error = await slack_error(client.views_push(trigger_id=fake.issue_trigger(view_id=third["id"]), view=modal()))
    assert error.response["error"] == "push_limit_reached"


async def test_views_publish_keeps_one_home_view_per_user(client: AsyncWebClient, fake: FakeSlack) -> None:
    """views.publish stores the last App Home per user, same id, new hash; a modal is refused."""
    home = View(type="home", blocks=[SectionBlock(text="Welcome")])
    first = (await client.views_publish(user_id=AGENT_USER_ID, view=home))["view"]
    second = (
        await client.views_publish(
            user_id=AGENT_USER_ID,
            hash=first["hash"],
            view=View(type="home", blocks=[SectionBlock(text="Again")]),
        )
    )["view"]
    other = (await client.views_publish(user_id=SECOND_AGENT_USER_ID, view=home))["view"]

    assert first["type"] == "home"
    assert second["id"] == first["id"] and second["hash"] != first["hash"]
    assert fake.home_views[AGENT_USER_ID]["blocks"][0]["text"]["text"] == "Again"
    assert other["id"] != first["id"]
    stale = await slack_error(client.views_publish(user_id=AGENT_USER_ID, hash=first["hash"], view=home))
    assert stale.response["error"] == "hash_conflict"
    wrong_type = await slack_error(client.views_publish(user_id=AGENT_USER_ID, view=modal()))
    assert wrong_type.response["error"] == "invalid_arguments"
    nobody = await slack_error(client.views_publish(user_id="U0NOBODY0", view=home))
    assert nobody.response["error"] == "user_not_found"


# ---------------------------------------------------------------------- chat


async def test_post_message_threads(client: AsyncWebClient, fake: FakeSlack) -> None:
    """One parent and two replies form one thread; ts values are unique and increasing."""
    parent = await client.chat_postMessage(
        channel="#helpdesk-audit", text="Case opened", blocks=[SectionBlock(text="*Case* opened")]
    )
    assert parent["channel"] == AUDIT_CHANNEL_ID
    assert re.fullmatch(r"\d{10}\.\d{6}", parent["ts"])
    assert parent["message"]["text"] == "Case opened"
    assert parent["message"]["bot_id"] and parent["message"]["user"] == BOT_USER_ID
    reply1 = await client.chat_postMessage(channel=AUDIT_CHANNEL_ID, text="Challenge sent", thread_ts=parent["ts"])
    reply2 = await client.chat_postMessage(channel=AUDIT_CHANNEL_ID, text="Verified", thread_ts=reply1["ts"])
    other = await client.chat_postMessage(channel=AUDIT_CHANNEL_ID, text="Another case")

    thread = fake.thread(AUDIT_CHANNEL_ID, parent["ts"])
    assert [m["text"] for m in thread] == ["Case opened", "Challenge sent", "Verified"]
    assert reply2["message"]["thread_ts"] == parent["ts"], "a reply's ts given as thread_ts files under the parent"
    assert thread[0]["reply_count"] == 2
    assert fake.thread("helpdesk-audit", other["ts"]) == [fake.messages_in(AUDIT_CHANNEL_ID)[-1]]
    stamps = [parent["ts"], reply1["ts"], reply2["ts"], other["ts"]]
    assert stamps == sorted(stamps, key=float) and len(set(stamps)) == 4


async def test_chat_update_edits_the_message(client: AsyncWebClient, fake: FakeSlack) -> None:
    """chat.update replaces text and blocks of an existing message in place."""
    posted = await client.chat_postMessage(channel=AUDIT_CHANNEL_ID, text="Pending")
    updated = await client.chat_update(
        channel=AUDIT_CHANNEL_ID, ts=posted["ts"], text="Done", blocks=[SectionBlock(text="Done ✅")]
    )
    assert updated["ts"] == posted["ts"] and updated["text"] == "Done"
    stored = fake.messages_in(AUDIT_CHANNEL_ID)
    assert len(stored) == 1 and stored[0]["blocks"][0]["text"]["text"] == "Done ✅"
    missing = await slack_error(client.chat_update(channel=AUDIT_CHANNEL_ID, ts="1.000001", text="x"))
    assert missing.response["error"] == "message_not_found"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"channel": "C0NOSUCH1", "text": "hi"}, "channel_not_found"),
        ({"channel": AUDIT_CHANNEL_ID}, "no_text"),
        ({"channel": AUDIT_CHANNEL_ID, "text": "hi", "thread_ts": "1.000001"}, "thread_not_found"),
    ],
)
@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
async def test_post_message_errors(client: AsyncWebClient, kwargs: dict[str, Any], error: str) -> None:
    """chat.postMessage refuses unknown channels, empty messages and unknown threads."""
    assert (await slack_error(client.chat_postMessage(**kwargs))).response["error"] == error


async def test_add_channel_and_post_to_a_user(client: AsyncWebClient, fake: FakeSlack) -> None:
    """Channels added by the test accept messages; a user id as channel lands in a DM."""
    fake.add_channel("C0NEW0001", "new-channel")
    assert (await client.chat_postMessage(channel="new-channel", text="hi"))["channel"] == "C0NEW0001"
    dm = await client.chat_postMessage(channel=AGENT_USER_ID, text="psst")
    assert dm["channel"].startswith("D")
    assert fake.messages_in(dm["channel"])[0]["text"] == "psst"


async def test_post_ephemeral(client: AsyncWebClient, fake: FakeSlack) -> None:
    """chat.postEphemeral answers message_ts and records who sees the message."""
    response = await client.chat_postEphemeral(channel=AUDIT_CHANNEL_ID, user=AGENT_USER_ID, text="Only you")
    assert re.fullmatch(r"\d{10}\.\d{6}", response["message_ts"])
    assert fake.ephemerals[0]["user"] == AGENT_USER_ID
    assert fake.ephemerals[0]["message"]["text"] == "Only you"
    assert fake.messages_in(AUDIT_CHANNEL_ID) == []


# ---------------------------------------------------------------------- users


async def test_users_info_of_a_seeded_agent(client: AsyncWebClient, fake: FakeSlack) -> None:
    """users.info returns the profile with the email the agent authorization relies on."""
    user = (await client.users_info(user=AGENT_USER_ID))["user"]
    assert user["id"] == AGENT_USER_ID and user["team_id"] == TEAM_ID
    assert user["profile"]["email"] == AGENT_EMAIL
    assert user["is_bot"] is False and user["deleted"] is False
    assert user["tz"]
    assert fake.calls_to("GET", "/api/users.info")[0].query["user"] == AGENT_USER_ID


async def test_users_info_of_added_and_unknown_users(client: AsyncWebClient, fake: FakeSlack) -> None:
    """add_user makes a user users.info and users.lookupByEmail know; others are user_not_found."""
    fake.add_user("U0NEWUSER", "new@example.com", "New Person", "newbie")
    user = (await client.users_info(user="U0NEWUSER"))["user"]
    assert user["profile"]["display_name"] == "newbie" and user["real_name"] == "New Person"
    assert (await client.users_lookupByEmail(email="NEW@example.com"))["user"]["id"] == "U0NEWUSER"
    error = await slack_error(client.users_info(user="U0NOBODY0"))
    assert error.response["error"] == "user_not_found"


async def test_lookup_by_email_is_a_get_with_the_email_in_the_query(client: AsyncWebClient, fake: FakeSlack) -> None:
    """users.lookupByEmail is sent as GET ?email= and a miss is users_not_found with HTTP 200."""
    assert (await client.users_lookupByEmail(email=MANAGER_EMAIL))["user"]["id"] == MANAGER_USER_ID
    (call,) = fake.calls_to("GET", "/api/users.lookupByEmail")
    assert call.query == {"email": MANAGER_EMAIL} and call.body == b""
    miss = await slack_error(client.users_lookupByEmail(email="nobody@example.com"))
    assert miss.response.status_code == 200 and miss.response["error"] == "users_not_found"
    assert fake.user_by_email("Alice@Example.com") is not None and fake.user_by_email("") is None


# ---------------------------------------------------------------------- DMs


async def test_conversations_open_gives_one_stable_dm_per_user(client: AsyncWebClient, fake: FakeSlack) -> None:
    """conversations.open (args in the query string, empty body) answers the same D… id every time;
    posting there or to the user id lands in the same DM, which dm_messages reads."""
    first = await client.conversations_open(users=ALICE_USER_ID)
    again = await client.conversations_open(users=[ALICE_USER_ID], return_im=True)
    dm = first["channel"]["id"]
    assert dm.startswith("D") and dm == again["channel"]["id"] == fake.dm_channel_id(ALICE_USER_ID)
    assert again["already_open"] is True and again["channel"]["user"] == ALICE_USER_ID
    call = fake.calls_to("POST", "/api/conversations.open")[0]
    assert call.query == {"users": ALICE_USER_ID} and call.body == b""
    posted = await client.chat_postMessage(channel=dm, text="hello", blocks=[SectionBlock(text="hello")])
    await client.chat_postMessage(channel=ALICE_USER_ID, text="again")
    assert posted["channel"] == dm
    assert [m["text"] for m in fake.dm_messages(ALICE_USER_ID)] == ["hello", "again"]
    stored = fake.message(dm, posted["ts"])
    assert stored is not None and stored["blocks"][0]["text"]["text"] == "hello"
    assert fake.dm_messages(MANAGER_USER_ID) == []


async def test_a_dm_id_accepts_posts_before_conversations_open(client: AsyncWebClient, fake: FakeSlack) -> None:
    """The bot's DM with a member exists already: its D… id takes a post without conversations.open."""
    posted = await client.chat_postMessage(channel=fake.dm_channel_id(MANAGER_USER_ID), text="hi")
    assert [m["ts"] for m in fake.dm_messages(MANAGER_USER_ID)] == [posted["ts"]]


@pytest.mark.parametrize(
    ("users", "error"),
    [("", "users_list_not_supplied"), ("U0NOBODY0", "user_not_found"), ("U0GONE001", "user_disabled")],
)
async def test_conversations_open_errors(client: AsyncWebClient, fake: FakeSlack, users: str, error: str) -> None:
    """No users, an unknown user or a deactivated one: Slack's errors, with HTTP 200."""
    fake.add_user("U0GONE001", "gone@example.com", "Gone Person", deleted=True)
    failure = await slack_error(client.conversations_open(users=users))
    assert failure.response.status_code == 200 and failure.response["error"] == error


async def test_chat_update_with_empty_blocks_removes_them(client: AsyncWebClient, fake: FakeSlack) -> None:
    """chat.update keeps the blocks when none are sent and removes them for an empty list, as Slack does."""
    dm = (await client.conversations_open(users=MANAGER_USER_ID))["channel"]["id"]
    posted = await client.chat_postMessage(channel=dm, text="Approve?", blocks=[SectionBlock(text="Approve?")])
    await client.chat_update(channel=dm, ts=posted["ts"], text="Still pending")
    message = fake.message(dm, posted["ts"])
    assert message is not None and "blocks" in message
    await client.chat_update(channel=dm, ts=posted["ts"], text="Approved", blocks=[])
    assert "blocks" not in message and message["text"] == "Approved"
    missing = await slack_error(client.chat_update(channel=dm, ts="1.000001", text="x"))
    assert missing.response["error"] == "message_not_found"


# ---------------------------------------------------------------------- clicks on posted messages


async def test_click_posted_sends_a_signed_block_actions_for_the_message(
    client: AsyncWebClient, fake: FakeSlack
) -> None:
    """SlackAgent.click_posted, as another member: the button of a message the app posted, as Slack
    sends it (container message_ts / channel_id, channel, message, user, actions), correctly signed."""
    received: list[tuple[bytes, dict[str, str]]] = []

    async def interactions(request: web.Request) -> web.Response:
        received.append((await request.read(), dict(request.headers)))
        return web.Response(status=200)

    gateway = web.Application()
    gateway.router.add_post("/slack/interactions", interactions)
    runner = web.AppRunner(gateway)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    dm = (await client.conversations_open(users=MANAGER_USER_ID))["channel"]["id"]
    posted = await client.chat_postMessage(
        channel=dm,
        text="Approve?",
        blocks=[
            ActionsBlock(
                elements=[
                    ButtonElement(text="Approve", action_id="approval_approve", value="signed-token", style="primary"),
                    ButtonElement(text="Deny", action_id="approval_deny", value="signed-token", style="danger"),
                ]
            )
        ],
    )
    try:
        async with SlackAgent(f"http://127.0.0.1:{port}", SIGNING, fake) as agent:
            manager = agent.as_user(MANAGER_USER_ID)
            response = await manager.click_posted(dm, posted["ts"], "approval_deny")
            with pytest.raises(MessageNotFound):
                await manager.click_posted(dm, "1.000001", "approval_deny")
    finally:
        await runner.cleanup()
    assert response.status_code == 200
    body, headers = received[0]
    verifier = SignatureVerifier(SIGNING)
    assert verifier.is_valid(body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"])
    payload = json.loads(parse_qs(body.decode())["payload"][0])
    assert payload["type"] == "block_actions" and payload["user"]["id"] == MANAGER_USER_ID
    assert payload["user"]["username"] == "morgan"
    assert payload["container"] == {
        "type": "message",
        "message_ts": posted["ts"],
        "channel_id": dm,
        "is_ephemeral": False,
    }
    assert payload["channel"] == {"id": dm, "name": "directmessage"}
    assert payload["message"]["ts"] == posted["ts"] and payload["message"]["text"] == "Approve?"
    (action,) = payload["actions"]
    assert (action["action_id"], action["value"], action["type"]) == ("approval_deny", "signed-token", "button")
    assert action["block_id"] == posted["message"]["blocks"][0]["block_id"] and action["action_ts"]
    assert payload["trigger_id"] and payload["response_url"].startswith("https://hooks.slack.com/actions/")


# ---------------------------------------------------------------------- failure switches


async def test_rate_limited_call_is_429_with_retry_after(client: AsyncWebClient, fake: FakeSlack) -> None:
    """rate_limit_next answers HTTP 429, a Retry-After header and error ratelimited, once."""
    fake.rate_limit_next("chat.postMessage", retry_after=7)
    error = await slack_error(client.chat_postMessage(channel=AUDIT_CHANNEL_ID, text="x"))
    assert error.response.status_code == 429
    assert error.response.headers["Retry-After"] == "7"
    assert error.response["error"] == "ratelimited"
    assert (await client.chat_postMessage(channel=AUDIT_CHANNEL_ID, text="x"))["ok"] is True


async def test_rate_limit_retry_handler_retries_and_succeeds(fake: FakeSlack) -> None:
    """With AsyncRateLimitErrorRetryHandler the client waits Retry-After, retries and succeeds."""
    client = AsyncWebClient(
        token=TOKEN,
        base_url=f"{fake.url}/api/",
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    fake.rate_limit_next("chat.postMessage", retry_after=1)
    response = await client.chat_postMessage(channel=AUDIT_CHANNEL_ID, text="after retry")
    assert response["ok"] is True
    assert len(fake.calls_to("POST", "/api/chat.postMessage")) == 2
    assert [m["text"] for m in fake.messages_in(AUDIT_CHANNEL_ID)] == ["after retry"]


async def test_fail_next_injects_a_slack_error(client: AsyncWebClient, fake: FakeSlack) -> None:
    """fail_next makes the next n calls of one method fail with the given error, then recovers."""
    fake.fail_next("users.info", error="fatal_error", n=2)
    for _ in range(2):
        assert (await slack_error(client.users_info(user=AGENT_USER_ID))).response["error"] == "fatal_error"
    assert (await client.users_info(user=AGENT_USER_ID))["ok"] is True
    assert (await client.auth_test())["ok"] is True
    assert len(fake.method_calls("users.info")) == 3


# ---------------------------------------------------------------------- render_text


async def test_render_text_shows_every_block_kind(client: AsyncWebClient, fake: FakeSlack) -> None:
    """render_text draws each Block Kit block as readable text, in order."""
    view = View(
        type="modal",
        title="Verify caller",
        submit="Verify",
        close="Cancel",
        blocks=[
            HeaderBlock(text="Jane Doe"),
            SectionBlock(
                text=MarkdownTextObject(text="Login *jane@example.com* <https://okta.example/u/1|profile>"),
                fields=[
                    MarkdownTextObject(text="*Status*\nACTIVE"),
                    PlainTextObject(text="Agent <@U0AGENT01>"),
                ],
                accessory=ButtonElement(text="Refresh", action_id="refresh"),
            ),
            DividerBlock(),
            ContextBlock(
                elements=[
                    ImageElement(image_url="https://x/i.png", alt_text="okta"),
                    MarkdownTextObject(text="Case c-1"),
                ]
            ),
            ActionsBlock(
                elements=[
                    ButtonElement(text="Send push", action_id="push", style="primary"),
                    StaticSelectElement(
                        placeholder="Pick a factor",
                        action_id="factor",
                        options=[Option(text="SMS", value="sms"), Option(text="Email", value="email")],
                    ),
                ]
            ),
            InputBlock(
                label="Code",
                block_id="code",
                element=PlainTextInputElement(action_id="code", placeholder="6 digits"),
                hint="Read out by the caller",
            ),
            InputBlock(
                label="Action",
                optional=True,
                element=RadioButtonsElement(
                    action_id="action",
                    options=[
                        Option(text="Reset password", value="reset"),
                        Option(text="Unlock", value="unlock"),
                    ],
                    initial_option=Option(text="Unlock", value="unlock"),
                ),
            ),
            ImageBlock(image_url="https://x/logo.png", alt_text="logo"),
            RichTextBlock(
                elements=[
                    RichTextSectionElement(
                        elements=[
                            RichTextElementParts.Text(text="Hello "),
                            RichTextElementParts.User(user_id="U0AGENT01"),
                            RichTextElementParts.Link(url="https://example.com", text=" docs"),
                        ]
                    ),
                    RichTextListElement(
                        style="bullet",
                        elements=[RichTextSectionElement(elements=[RichTextElementParts.Text(text="one")])],
                    ),
                ]
            ),
        ],
    )
    opened = (await client.views_open(trigger_id=fake.issue_trigger(), view=view))["view"]

    text = fake.render_text(fake.views[opened["id"]])

    rule = "─" * 40
    assert text.splitlines() == [
        "╭─ Verify caller ─╮",
        rule,
        "JANE DOE",
        "Login *jane@example.com* profile  [ Refresh ]",
        "*Status* ACTIVE    Agent @U0AGENT01",
        rule,
        "· [image: okta]  Case c-1",
        "[ Send push ]  [ Pick a factor ▾ ]",
        "Code: ____  (6 digits)",
        "· Read out by the caller",
        "Action (optional):",
        "  ( ) Reset password",
        "  (•) Unlock",
        "[image: logo]",
        "Hello @U0AGENT01 docs",
        "  • one",
        rule,
        "[ Cancel ]  [ Verify ]",
    ]


def test_render_text_ansi_dims_context_and_tolerates_unknown_blocks() -> None:
    """With ansi=True context is dimmed; a block type the renderer does not know still shows up."""
    view = {
        "type": "home",
        "blocks": [
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "small print"}]},
            {"type": "table", "rows": []},
        ],
    }
    assert FakeSlack.render_text(view, ansi=True).splitlines()[2:] == [
        "\x1b[2msmall print\x1b[0m",
        "[table block]",
    ]
