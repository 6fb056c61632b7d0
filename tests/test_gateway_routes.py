"""The gateway over HTTP: every Slack payload, sent by SlackAgent, becomes the right command on a real NATS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import REGISTRY, generate_latest
from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ExternalDataSelectElement,
    InputBlock,
    PlainTextInputElement,
    SectionBlock,
)
from slack_sdk.models.views import View
from slack_sdk.web.async_client import AsyncWebClient
from structlog.testing import capture_logs

from sandbox.slack import AGENT_USER_ID, SECOND_AGENT_USER_ID, TEAM_ID, FakeSlack
from sandbox.slack_agent import SlackAgent
from services.gateway.app import GATEWAY, create_app, create_service
from shared.bus import CMD_STREAM, Bus
from shared.messages import (
    ActionKind,
    Actor,
    BackToSearch,
    CancelChallenge,
    ChallengeFactor,
    CloseCase,
    Command,
    DecideApproval,
    HomeOpened,
    MessageRef,
    OpenCase,
    RefreshCase,
    RefusedClick,
    ReportNotMe,
    RequestApproval,
    ResendChallenge,
    RunAction,
    SearchUsers,
    SearchUsersReply,
    SelectUser,
    StepUp,
    SubmitCode,
    UserOption,
    decode,
)
from shared.settings import MissingSetting, Settings
from shared.tokens import CaseTokens
from shared.ui import (
    ACTION_APPROVE,
    ACTION_BACK_TO_SEARCH,
    ACTION_CANCEL,
    ACTION_CHALLENGE,
    ACTION_CLOSE,
    ACTION_CODE,
    ACTION_DENY,
    ACTION_NOT_ME,
    ACTION_OPEN_ADMIN,
    ACTION_REFRESH,
    ACTION_REQUEST_APPROVAL,
    ACTION_RESEND,
    ACTION_RUN,
    ACTION_SELECT_USER,
    ACTION_START,
    ACTION_STEP_UP,
    BLOCK_CODE,
    BLOCK_USER_SEARCH,
    CALLBACK_ANSWER,
    CALLBACK_CASE,
    CALLBACK_CODE,
    CALLBACK_TOKEN_CODE,
    CALLBACK_YUBIKEY,
)
from tests.conftest import BOT_TOKEN, CASE_SECRET, SIGNING_SECRET

ANY_AGENT = Actor(user_id="U_ANY")
CASE_ID = "c_gateway_1"


# ------------------------------------------------------------------------------------ helpers


async def published(bus: Bus) -> list[tuple[Command, dict[str, str]]]:
    """Every command on the stream, in order, with its headers."""
    stream = bus.stream_name(CMD_STREAM.name)
    info = await bus.js.stream_info(stream)
    found: list[tuple[Command, dict[str, str]]] = []
    if not info.state.messages:
        return found
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        raw = await bus.js.get_msg(stream, seq)
        message = decode(bus.unprefixed(raw.subject or ""), raw.data or b"")
        assert isinstance(message, Command)
        found.append((message, dict(raw.headers or {})))
    return found


async def only_command(bus: Bus) -> tuple[Command, dict[str, str]]:
    commands = await published(bus)
    assert len(commands) == 1, commands
    return commands[0]


def case_blocks() -> list[Any]:
    """A case view holding every element the gateway parses (ids from shared/ui.py)."""
    return [
        ActionsBlock(
            block_id=BLOCK_USER_SEARCH,
            elements=[ExternalDataSelectElement(action_id=ACTION_SELECT_USER, placeholder="Type", min_query_length=3)],
        ),
        SectionBlock(
            text="SMS",
            accessory=ButtonElement(text="Send SMS", action_id=ACTION_CHALLENGE, value="opf1sms"),
        ),
        SectionBlock(
            text="Push",
            accessory=ButtonElement(text="Send push", action_id=ACTION_CHALLENGE, value="opf2push"),
        ),
        SectionBlock(
            text="Temp password",
            accessory=ButtonElement(text="Temp password", action_id=ACTION_RUN, value="temp_password"),
        ),
        SectionBlock(
            text="Reset SMS",
            accessory=ButtonElement(text="Reset", action_id=ACTION_RUN, value="reset_factor:opf1sms"),
        ),
        SectionBlock(
            text="Reset all factors: needs an approval",
            accessory=ButtonElement(
                text="Request approval", action_id=ACTION_REQUEST_APPROVAL, value="reset_all_factors"
            ),
        ),
        SectionBlock(
            text="Reset SMS: needs an approval",
            accessory=ButtonElement(
                text="Request approval", action_id=ACTION_REQUEST_APPROVAL, value="reset_factor:opf1sms"
            ),
        ),
        ActionsBlock(
            elements=[
                ButtonElement(text="Verify another factor", action_id=ACTION_STEP_UP),
                ButtonElement(text="Resend", action_id=ACTION_RESEND),
                ButtonElement(text="Other factor", action_id=ACTION_CANCEL),
                ButtonElement(text="Search again", action_id=ACTION_BACK_TO_SEARCH),
                ButtonElement(text="Done", action_id=ACTION_REFRESH),
                ButtonElement(text="Close case", action_id=ACTION_CLOSE),
                ButtonElement(text="Okta", action_id=ACTION_OPEN_ADMIN, url="https://example.okta.com/admin"),
            ]
        ),
    ]


def code_blocks() -> list[Any]:
    return [
        SectionBlock(text="Type the code the caller reads out."),
        InputBlock(block_id=BLOCK_CODE, label="Code", element=PlainTextInputElement(action_id=ACTION_CODE)),
    ]


APPROVALS_CHANNEL = "C0APPROVALS"
APPROVER_USER_ID = "U0APPROVER"
YUBIKEY_OTP = "cccjgjgkhcbbirdrfdnlnghhfgrtnnlgedjlftrbdeut"


def approval_message(token: str, ts: str = "1700000000.000500") -> dict[str, Any]:
    """An approval request as posted in the approvals channel: Approve / Deny carry the signed token."""
    return {
        "ts": ts,
        "blocks": [
            {"type": "section", "block_id": "request", "text": {"type": "mrkdwn", "text": "Reset all factors?"}},
            {
                "type": "actions",
                "block_id": "decide",
                "elements": [
                    {"type": "button", "action_id": ACTION_APPROVE, "value": token, "text": plain_text("Approve")},
                    {"type": "button", "action_id": ACTION_DENY, "value": token, "text": plain_text("Deny")},
                ],
            },
        ],
    }


def notice_message(token: str, ts: str = "1700000000.000600") -> dict[str, Any]:
    """The DM to the target user after a change, with "This wasn't me"."""
    return {
        "ts": ts,
        "blocks": [
            {
                "type": "actions",
                "block_id": "not_me",
                "elements": [
                    {"type": "button", "action_id": ACTION_NOT_ME, "value": token, "text": plain_text("Not me")}
                ],
            }
        ],
    }


def plain_text(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


class Workspace:
    """FakeSlack + a gateway on a real port + an agent (and a second agent) that talk to it."""

    def __init__(self, fake: FakeSlack, server: TestServer, bus: Bus) -> None:
        self.fake = fake
        self.server = server
        self.bus = bus
        self.url = str(server.make_url("")).rstrip("/")
        self.agent = SlackAgent(self.url, SIGNING_SECRET, fake)
        self.other = SlackAgent(self.url, SIGNING_SECRET, fake, user_id=SECOND_AGENT_USER_ID, user_name="sam")
        self.slack = AsyncWebClient(token=BOT_TOKEN, base_url=f"{fake.url}/api/")
        self.tokens = CaseTokens(CASE_SECRET)

    def token(self, agent_id: str = AGENT_USER_ID, case_id: str = CASE_ID, now: float | None = None) -> str:
        return self.tokens.issue(case_id, agent_id, now=now)

    async def open_view(
        self,
        token: str | None = None,
        callback_id: str = CALLBACK_CASE,
        blocks: list[Any] | None = None,
        notify_on_close: bool = True,
    ) -> dict[str, Any]:
        """Open a modal at FakeSlack the way the responder does and return it as Slack holds it."""
        view = View(
            type="modal",
            callback_id=callback_id,
            title="Verify caller",
            close="Close",
            submit="Verify" if callback_id != CALLBACK_CASE else None,
            private_metadata=self.token() if token is None else token,
            notify_on_close=notify_on_close,
            blocks=blocks or case_blocks(),
        )
        opened = await self.slack.views_open(trigger_id=self.fake.issue_trigger(AGENT_USER_ID), view=view.to_dict())
        return self.fake.views[opened["view"]["id"]]

    async def close(self) -> None:
        await self.agent.aclose()
        await self.other.aclose()


@pytest.fixture
def fake_slack(slack: FakeSlack) -> FakeSlack:
    """conftest's fake Slack, under the name these tests (and the outage tests) use."""
    return slack


@pytest.fixture
async def workspace(settings: Settings, bus: Bus, fake_slack: FakeSlack) -> AsyncIterator[Workspace]:
    server = TestServer(create_app(settings, bus), host="127.0.0.1")
    await server.start_server()
    ws = Workspace(fake_slack, server, bus)
    yield ws
    await ws.close()
    await server.close()


# ------------------------------------------------------------------------------------ slash commands


async def test_slash_command_opens_a_case(workspace: Workspace) -> None:
    """``/helpdesk alice`` is acked with an empty 200 and becomes one OpenCase with Slack's ids."""
    form = workspace.agent.slash_command_form("  alice   doe ")
    response = await workspace.agent.post("/slack/commands", urlencode(form).encode())
    assert response.status_code == 200
    assert response.content == b""
    command, headers = await only_command(workspace.bus)
    assert isinstance(command, OpenCase)
    assert command.trigger_id == form["trigger_id"]
    assert command.query == "alice doe"
    assert command.source == "command"
    assert command.channel_id == form["channel_id"]
    assert command.agent.user_id == AGENT_USER_ID and command.agent.team_id == TEAM_ID
    assert command.case_token is None
    assert headers["Nats-Msg-Id"] == f"open:{form['trigger_id']}"


async def test_a_redelivered_slash_command_is_published_once(workspace: Workspace) -> None:
    """Slack delivering the same command twice (same trigger_id) leaves one message on the stream."""
    body = urlencode(workspace.agent.slash_command_form("bob")).encode()
    first = await workspace.agent.post("/slack/commands", body)
    second = await workspace.agent.post("/slack/commands", body)
    assert first.status_code == second.status_code == 200
    assert len(await published(workspace.bus)) == 1


@pytest.mark.parametrize(("command", "text"), [("/other", ""), ("/helpdesk", "help")])
async def test_unknown_commands_and_help_get_the_ephemeral_help(workspace: Workspace, command: str, text: str) -> None:
    """An unknown command (or ``/helpdesk help``) is answered with help only the agent sees; nothing is published."""
    response = await workspace.agent.slash_command(text, command=command)
    assert response.status_code == 200
    answer = response.json()
    assert answer["response_type"] == "ephemeral"
    assert "/helpdesk" in answer["text"]
    assert await published(workspace.bus) == []


async def test_wrong_signing_secret_is_401_over_http(workspace: Workspace) -> None:
    """A request signed with another secret gets a short JSON 401."""
    workspace.agent.signing_secret = "not-the-secret-00000000000000000"
    response = await workspace.agent.slash_command("alice")
    assert response.status_code == 401
    assert response.json() == {"ok": False, "error": "invalid_signature"}
    assert await published(workspace.bus) == []


async def test_bodies_over_64_kib_are_413(workspace: Workspace) -> None:
    """A body over the limit is refused with 413 before it is read into a command."""
    response = await workspace.agent.post("/slack/commands", b"text=" + b"a" * (64 * 1024 + 1))
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"
    assert await published(workspace.bus) == []


async def test_ssl_check_over_http(workspace: Workspace) -> None:
    """Slack's ``ssl_check=1`` probe gets 200."""
    response = await workspace.agent.http.post(f"{workspace.url}/slack/commands", content=b"ssl_check=1&token=x")
    assert response.status_code == 200


# ------------------------------------------------------------------------------------ shortcut and App Home


async def test_request_access_shortcut_opens_a_case(workspace: Workspace) -> None:
    """The global shortcut of the original Workflows app behaves like ``/helpdesk``."""
    response = await workspace.agent.shortcut()
    assert response.status_code == 200
    command, headers = await only_command(workspace.bus)
    assert isinstance(command, OpenCase)
    assert command.source == "shortcut"
    assert headers["Nats-Msg-Id"] == f"open:{command.trigger_id}"


async def test_other_shortcuts_are_ignored(workspace: Workspace) -> None:
    """A shortcut we did not define publishes nothing."""
    response = await workspace.agent.shortcut("something_else")
    assert response.status_code == 200
    assert await published(workspace.bus) == []


async def test_home_start_button_opens_a_case(workspace: Workspace) -> None:
    """ "Start a verification" on the App Home is an OpenCase from the home tab."""
    home = View(
        type="home",
        blocks=[SectionBlock(text="Hi", accessory=ButtonElement(text="Start", action_id=ACTION_START))],
    )
    await workspace.slack.views_publish(user_id=AGENT_USER_ID, view=home.to_dict())
    response = await workspace.agent.click(workspace.fake.home_views[AGENT_USER_ID], ACTION_START)
    assert response.status_code == 200
    command, _ = await only_command(workspace.bus)
    assert isinstance(command, OpenCase)
    assert command.source == "home"
    assert command.query == ""


async def test_open_again_button_in_a_message_carries_the_query(workspace: Workspace) -> None:
    """The "Open Helpdesk Verify" button under an expired-trigger message re-opens with the original query."""
    message = {
        "ts": "1700000000.000100",
        "blocks": [
            {
                "type": "actions",
                "block_id": "b1",
                "elements": [
                    {
                        "type": "button",
                        "action_id": ACTION_START,
                        "value": "alice",
                        "text": {"type": "plain_text", "text": "Open"},
                    }
                ],
            }
        ],
    }
    response = await workspace.agent.click_message(message, ACTION_START)
    assert response.status_code == 200
    command, _ = await only_command(workspace.bus)
    assert isinstance(command, OpenCase)
    assert command.source == "retry" and command.query == "alice"


# ------------------------------------------------------------------------------------ block actions


@pytest.mark.parametrize(
    ("action_id", "value", "expected"),
    [
        (ACTION_CHALLENGE, "opf2push", ChallengeFactor(agent=ANY_AGENT, factor_id="opf2push")),
        (ACTION_RUN, "temp_password", RunAction(agent=ANY_AGENT, action=ActionKind.TEMP_PASSWORD)),
        (
            ACTION_RUN,
            "reset_factor:opf1sms",
            RunAction(agent=ANY_AGENT, action=ActionKind.RESET_FACTOR, factor_id="opf1sms"),
        ),
        (
            ACTION_REQUEST_APPROVAL,
            "reset_all_factors",
            RequestApproval(agent=ANY_AGENT, action=ActionKind.RESET_ALL_FACTORS),
        ),
        (
            ACTION_REQUEST_APPROVAL,
            "reset_factor:opf1sms",
            RequestApproval(agent=ANY_AGENT, action=ActionKind.RESET_FACTOR, factor_id="opf1sms"),
        ),
        (ACTION_STEP_UP, None, StepUp(agent=ANY_AGENT)),
        (ACTION_RESEND, None, ResendChallenge(agent=ANY_AGENT)),
        (ACTION_CANCEL, None, CancelChallenge(agent=ANY_AGENT)),
        (ACTION_BACK_TO_SEARCH, None, BackToSearch(agent=ANY_AGENT)),
        (ACTION_REFRESH, None, RefreshCase(agent=ANY_AGENT)),
        (ACTION_CLOSE, None, CloseCase(agent=ANY_AGENT)),
    ],
)
async def test_each_button_becomes_its_command(
    workspace: Workspace, action_id: str, value: str | None, expected: Command
) -> None:
    """A click in a case view becomes its typed command, with the token, the view and a Slack-derived msg id."""
    view = await workspace.open_view()
    response = await workspace.agent.click(view, action_id, value)
    assert response.status_code == 200 and response.content == b""
    command, headers = await only_command(workspace.bus)
    assert type(command) is type(expected)
    ignore = {"agent", "case_token", "view", "sent_at"}
    assert command.model_dump(exclude=ignore) == expected.model_dump(exclude=ignore)
    assert command.agent.user_id == AGENT_USER_ID
    assert command.case_token == view["private_metadata"]
    assert command.view is not None
    assert (command.view.view_id, command.view.hash) == (view["id"], view["hash"])
    assert headers["Nats-Msg-Id"].startswith(f"{CASE_ID}:{action_id}:")


async def test_selecting_a_user_is_select_user(workspace: Workspace) -> None:
    """Picking a search result sends SelectUser with the Okta user id from the selected option."""
    view = await workspace.open_view()
    response = await workspace.agent.select_user(view, "00u1alice", "Alice Doe (alice@example.com)")
    assert response.status_code == 200
    command, _ = await only_command(workspace.bus)
    assert isinstance(command, SelectUser)
    assert command.okta_user_id == "00u1alice"


async def test_gateway_made_options_and_url_buttons_are_not_forwarded(workspace: Workspace) -> None:
    """Selecting "search unavailable" or clicking the Okta admin link publishes nothing."""
    view = await workspace.open_view()
    await workspace.agent.select_user(view, "__unavailable__", "search unavailable — try again")
    await workspace.agent.click(view, ACTION_OPEN_ADMIN)
    assert await published(workspace.bus) == []


async def test_a_redelivered_click_is_published_once(workspace: Workspace) -> None:
    """The same block_actions delivered twice (same action_ts) is one command."""
    view = await workspace.open_view()
    block, element = workspace.agent.find_element(view, ACTION_RESEND)
    action = workspace.agent._action(block, element, None)
    first = await workspace.agent._block_actions(view, [action])
    second = await workspace.agent._block_actions(view, [action])
    assert first.status_code == second.status_code == 200
    assert len(await published(workspace.bus)) == 1


# ------------------------------------------------------------------------------------ case tokens


def tampered(token: str) -> str:
    head, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    return f"{head}.{payload}.{flipped}"


@pytest.fixture(params=["tampered", "expired", "other_agent", "missing", "garbage"])
def bad_token(request: pytest.FixtureRequest, workspace: Workspace) -> str:
    kind = request.param
    if kind == "tampered":
        return tampered(workspace.token())
    if kind == "expired":
        return workspace.token(now=time.time() - 2 * 3600)
    if kind == "other_agent":
        return workspace.token(agent_id=SECOND_AGENT_USER_ID)
    if kind == "missing":
        return ""
    return "not-a-token"


async def test_bad_case_tokens_are_refused_on_clicks(workspace: Workspace, bad_token: str) -> None:
    """A click in a view whose token is tampered, expired, another agent's or absent reaches no case: it
    becomes a RefusedClick (audited, the modal told), never a case command — and is never silent."""
    view = await workspace.open_view(token=bad_token)
    response = await workspace.agent.click(view, ACTION_CHALLENGE, "opf1sms")
    assert response.status_code == 200
    sent = await published(workspace.bus)
    assert [type(m) for m, _ in sent] == [RefusedClick]
    refused = sent[0][0]
    assert isinstance(refused, RefusedClick) and refused.case_token is None and refused.view is not None
    assert refused.view.view_id == view["id"] and refused.action_id == ACTION_CHALLENGE


async def test_bad_case_tokens_are_refused_on_submissions(workspace: Workspace, bad_token: str) -> None:
    """A code submitted from a view with a bad token is answered with an error on the code block."""
    view = await workspace.open_view(token=bad_token, callback_id=CALLBACK_CODE, blocks=code_blocks())
    response = await workspace.agent.submit(view, {BLOCK_CODE: {ACTION_CODE: "123456"}})
    assert response.status_code == 200
    answer = response.json()
    assert answer["response_action"] == "errors"
    assert set(answer["errors"]) == {BLOCK_CODE}
    assert await published(workspace.bus) == []


async def test_another_agent_cannot_act_in_my_case(workspace: Workspace) -> None:
    """The second agent replaying the first agent's view (valid token, other user) is refused."""
    view = await workspace.open_view()
    response = await workspace.other.click(view, ACTION_CLOSE)
    assert response.status_code == 200
    sent = await published(workspace.bus)
    assert [(type(m), getattr(m, "kind", None)) for m, _ in sent] == [(RefusedClick, "wrong_agent")]


# ------------------------------------------------------------------------------------ code submission


async def test_a_well_formed_code_is_submitted_and_the_view_says_checking(workspace: Workspace) -> None:
    """A 6-digit code → SubmitCode (view hash None) and ``response_action: update`` to a checking view."""
    view = await workspace.open_view(callback_id=CALLBACK_CODE, blocks=code_blocks())
    response = await workspace.agent.submit(view, {BLOCK_CODE: {ACTION_CODE: " 123 456 "}})
    assert response.status_code == 200
    answer = response.json()
    assert answer["response_action"] == "update"
    checking = answer["view"]
    assert checking["callback_id"] == CALLBACK_CASE
    assert checking["private_metadata"] == view["private_metadata"]
    assert "submit" not in checking
    assert "Checking the code" in workspace.fake.render_text(workspace.fake.views[view["id"]])
    command, headers = await only_command(workspace.bus)
    assert isinstance(command, SubmitCode)
    assert command.code.get_secret_value() == "123456"
    assert command.view is not None and command.view.view_id == view["id"] and command.view.hash is None
    assert headers["Nats-Msg-Id"] == f"{CASE_ID}:submit:{view['id']}:{view['hash']}"


@pytest.mark.parametrize("code", ["", "12345", "123456789", "12a456", "１２３４５６", "-123456"])
async def test_malformed_codes_are_errors_on_the_code_block(workspace: Workspace, code: str) -> None:
    """Empty, too short, too long or non-digit codes never leave the gateway; the agent sees why."""
    view = await workspace.open_view(callback_id=CALLBACK_CODE, blocks=code_blocks())
    response = await workspace.agent.submit(view, {BLOCK_CODE: {ACTION_CODE: code}})
    answer = response.json()
    assert answer["response_action"] == "errors"
    assert answer["errors"][BLOCK_CODE]
    assert workspace.agent.last_errors == answer["errors"]
    assert await published(workspace.bus) == []


async def test_an_answer_is_free_text_up_to_200_chars(workspace: Workspace) -> None:
    """A security-question answer is any 1..200 characters; longer is an error."""
    view = await workspace.open_view(callback_id=CALLBACK_ANSWER, blocks=code_blocks())
    too_long = await workspace.agent.submit(view, {BLOCK_CODE: {ACTION_CODE: "x" * 201}})
    assert too_long.json()["response_action"] == "errors"
    response = await workspace.agent.submit(view, {BLOCK_CODE: {ACTION_CODE: "  Blue Whale  "}})
    assert response.json()["response_action"] == "update"
    command, _ = await only_command(workspace.bus)
    assert isinstance(command, SubmitCode)
    assert command.code.get_secret_value() == "Blue Whale"


async def test_a_yubikey_otp_is_accepted_lower_cased(workspace: Workspace) -> None:
    """On the YubiKey view, the 44 ModHex characters the key types are submitted (lower-cased, spaces removed)."""
    view = await workspace.open_view(callback_id=CALLBACK_YUBIKEY, blocks=code_blocks())
    typed = f"{YUBIKEY_OTP[:22].upper()} {YUBIKEY_OTP[22:]}"
    response = await workspace.agent.submit(view, {BLOCK_CODE: {ACTION_CODE: typed}})
    assert response.json()["response_action"] == "update"
    command, _ = await only_command(workspace.bus)
    assert isinstance(command, SubmitCode)
    assert command.code.get_secret_value() == YUBIKEY_OTP


@pytest.mark.parametrize("code", ["123456", YUBIKEY_OTP[:-1], YUBIKEY_OTP[:-1] + "0"])
async def test_other_codes_are_refused_on_the_yubikey_view(workspace: Workspace, code: str) -> None:
    """A 6-digit code, 43 characters or a non-ModHex character on the YubiKey view is an error, not a command."""
    view = await workspace.open_view(callback_id=CALLBACK_YUBIKEY, blocks=code_blocks())
    response = await workspace.agent.submit(view, {BLOCK_CODE: {ACTION_CODE: code}})
    answer = response.json()
    assert answer["response_action"] == "errors"
    assert "YubiKey OTP" in answer["errors"][BLOCK_CODE]
    assert await published(workspace.bus) == []


async def test_a_token_passcode_is_up_to_16_digits(workspace: Workspace) -> None:
    """A hardware token's passcode (PIN + tokencode) may be longer than an SMS code, but only digits, ≤ 16."""
    view = await workspace.open_view(callback_id=CALLBACK_TOKEN_CODE, blocks=code_blocks())
    too_long = await workspace.agent.submit(view, {BLOCK_CODE: {ACTION_CODE: "1" * 17}})
    assert too_long.json()["errors"][BLOCK_CODE] == "The passcode has 6 to 16 digits."
    response = await workspace.agent.submit(view, {BLOCK_CODE: {ACTION_CODE: "1234 5678 9012"}})
    assert response.json()["response_action"] == "update"
    command, _ = await only_command(workspace.bus)
    assert isinstance(command, SubmitCode)
    assert command.code.get_secret_value() == "123456789012"


async def test_view_closed_closes_the_case(workspace: Workspace) -> None:
    """Closing a case modal that asked to be notified sends CloseCase."""
    view = await workspace.open_view()
    response = await workspace.agent.close(view)
    assert response is not None and response.status_code == 200
    command, headers = await only_command(workspace.bus)
    assert isinstance(command, CloseCase)
    assert headers["Nats-Msg-Id"] == f"{CASE_ID}:closed:{view['id']}"
    assert view["id"] not in workspace.fake.views


# ------------------------------------------------------------------------------------ options


async def serve_search(bus: Bus, options: list[UserOption], calls: list[SearchUsers]) -> None:
    async def respond(request: SearchUsers) -> SearchUsersReply:
        calls.append(request)
        return SearchUsersReply(options=options)

    await bus.serve(SearchUsers, respond, queue="okta-worker")


async def test_options_round_trip_through_a_search_responder(workspace: Workspace) -> None:
    """The typed text goes to okta.users.search; the menu has ≤ 100 options with texts ≤ 75 chars."""
    calls: list[SearchUsers] = []
    many = [UserOption(id=f"00u{i:04d}", label=f"User {i} " + "x" * 100) for i in range(120)]
    await serve_search(workspace.bus, [UserOption(id="00u1alice", label="Alice Doe (alice@example.com)"), *many], calls)
    view = await workspace.open_view()
    response = await workspace.agent.options("ali", view)
    assert response.status_code == 200
    menu = response.json()["options"]
    assert len(menu) == 100
    assert menu[0] == {
        "text": {"type": "plain_text", "text": "Alice Doe (alice@example.com)", "emoji": True},
        "value": "00u1alice",
    }
    assert all(len(o["text"]["text"]) <= 75 for o in menu)
    assert [c.query for c in calls] == ["ali"]
    assert calls[0].agent.user_id == AGENT_USER_ID
    assert await published(workspace.bus) == []


async def test_options_are_cached_per_agent(workspace: Workspace) -> None:
    """Typing the same query again is answered from the cache; another agent's search is their own."""
    calls: list[SearchUsers] = []
    await serve_search(workspace.bus, [UserOption(id="00u1alice", label="Alice")], calls)
    view = await workspace.open_view()
    first = await workspace.agent.options("alice", view)
    again = await workspace.agent.options("ALICE", view)
    assert first.json() == again.json()
    assert len(calls) == 1
    other_view = await workspace.open_view(token=workspace.token(agent_id=SECOND_AGENT_USER_ID, case_id="c_2"))
    await workspace.other.options("alice", other_view)
    assert len(calls) == 2


async def test_options_without_a_responder_say_search_unavailable(workspace: Workspace) -> None:
    """No worker serving the search: one option explains it, at once."""
    view = await workspace.open_view()
    started = time.perf_counter()
    response = await workspace.agent.options("alice", view)
    assert time.perf_counter() - started < 1.0
    menu = response.json()["options"]
    assert [o["text"]["text"] for o in menu] == ["search unavailable — try again"]


async def test_options_with_a_stuck_responder_answer_inside_three_seconds(workspace: Workspace) -> None:
    """A worker that never answers costs at most the 2.5 s deadline; the agent gets the unavailable option."""
    never = asyncio.Event()

    async def stuck(request: SearchUsers) -> SearchUsersReply:
        await never.wait()
        return SearchUsersReply()

    await workspace.bus.serve(SearchUsers, stuck, queue="okta-worker")
    view = await workspace.open_view()
    started = time.perf_counter()
    try:
        response = await workspace.agent.options("alice", view)
    finally:
        never.set()
    assert time.perf_counter() - started < 3.0
    assert response.json()["options"][0]["value"] == "__unavailable__"


async def test_options_for_an_expired_case_say_so(workspace: Workspace) -> None:
    """The search in a view with an expired token is not run; the menu says the verification expired."""
    calls: list[SearchUsers] = []
    await serve_search(workspace.bus, [UserOption(id="00u1alice", label="Alice")], calls)
    view = await workspace.open_view(token=workspace.token(now=time.time() - 2 * 3600))
    response = await workspace.agent.options("alice", view)
    assert response.json()["options"][0]["value"] == "__expired__"
    assert calls == []


# ------------------------------------------------------------------------------------ events


async def test_url_verification_echoes_the_challenge(workspace: Workspace) -> None:
    """Slack's events URL check gets its challenge back."""
    response = await workspace.agent.url_verification("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")
    assert response.status_code == 200
    assert response.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}


async def test_app_home_opened_is_published_once_despite_retries(workspace: Workspace) -> None:
    """``app_home_opened`` → HomeOpened; Slack's retries of the same event_id are duplicates."""
    body = workspace.agent.app_home_opened_body(event_id="Ev0HOME0001")
    first = await workspace.agent.event(body=body)
    retry = await workspace.agent.event(body=body, retry_num=1)
    assert first.status_code == retry.status_code == 200
    command, headers = await only_command(workspace.bus)
    assert isinstance(command, HomeOpened)
    assert command.agent.user_id == AGENT_USER_ID
    assert headers["Nats-Msg-Id"] == "event:Ev0HOME0001"


async def test_messages_tab_and_other_events_are_ignored(workspace: Workspace) -> None:
    """Opening the Messages tab, or an event we did not subscribe to, publishes nothing."""
    await workspace.agent.app_home_opened(tab="messages")
    await workspace.agent.event({"type": "reaction_added", "user": AGENT_USER_ID})
    assert await published(workspace.bus) == []


# ------------------------------------------------------------------------------------ health, metrics, secrets


async def test_health_ready_and_metrics(workspace: Workspace) -> None:
    """/healthz is up, /readyz sees NATS and the streams; /metrics is not on this public port (it is on
    METRICS_PORT), and the counters count requests by route and outcome."""
    await workspace.agent.slash_command("alice")
    http = workspace.agent.http
    assert (await http.get(f"{workspace.url}/healthz")).status_code == 200
    ready = await http.get(f"{workspace.url}/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"nats": "ok", "streams": "ok"}
    assert (await http.get(f"{workspace.url}/metrics")).status_code == 404
    text = generate_latest(REGISTRY).decode()
    assert 'helpdesk_gateway_requests_total{outcome="accepted",route="commands"}' in text
    assert "helpdesk_gateway_ack_seconds_bucket" in text


async def test_secrets_never_reach_logs_or_answers(workspace: Workspace) -> None:
    """The code, the signing secret and the bot token appear in no log event and no answer; the case token in no log."""
    code = "739164"
    secrets_ = [code, SIGNING_SECRET, BOT_TOKEN]
    view = await workspace.open_view(callback_id=CALLBACK_CODE, blocks=code_blocks())
    secrets_.append(view["private_metadata"])
    answers: list[bytes] = []
    with capture_logs() as logs:
        answers.append((await workspace.agent.submit(view, {BLOCK_CODE: {ACTION_CODE: code}})).content)
        bad = {**view, "private_metadata": tampered(view["private_metadata"])}
        answers.append((await workspace.agent.submit(bad, {BLOCK_CODE: {ACTION_CODE: code}})).content)
        answers.append((await workspace.agent.submit(view, {BLOCK_CODE: {ACTION_CODE: code + "x"}})).content)
        workspace.agent.signing_secret = "wrong-secret-000000000000000000"
        answers.append((await workspace.agent.submit(view, {BLOCK_CODE: {ACTION_CODE: code}})).content)
        submitted = [c for c, _ in await published(workspace.bus)]
        await workspace.server.app[GATEWAY].bus.close()  # NATS gone: the publish failure is logged too
        workspace.agent.signing_secret = SIGNING_SECRET
        fresh = await workspace.open_view(callback_id=CALLBACK_CODE, blocks=code_blocks())
        answers.append((await workspace.agent.submit(fresh, {BLOCK_CODE: {ACTION_CODE: code}})).content)
    assert any(e["event"] == "gateway.publish_failed" for e in logs)
    assert any(e["event"] == "gateway.signature_rejected" for e in logs)
    logged = orjson.dumps(logs, default=repr).decode()
    answered = "".join(a.decode() for a in answers)
    for secret in secrets_:
        assert secret not in logged
    for secret in (code, SIGNING_SECRET, BOT_TOKEN):  # the case token stays in private_metadata, by design
        assert secret not in answered
    assert len(submitted) == 1 and isinstance(submitted[0], SubmitCode)
    assert code not in repr(submitted[0]) and code not in str(submitted[0])


async def test_the_gateway_needs_its_secrets_at_start(settings: Settings, bus: Bus) -> None:
    """Without SLACK_SIGNING_SECRET or CASE_TOKEN_SECRET the service refuses to be created, naming the setting."""
    for name in ("slack_signing_secret", "case_token_secret"):
        with pytest.raises(MissingSetting) as missing:
            create_service(settings.model_copy(update={name: None}), bus)
        assert missing.value.names == (name.upper(),)


# ------------------------------------------------------------------------------------ messages to other people


@pytest.mark.parametrize(("action_id", "approve"), [(ACTION_APPROVE, True), (ACTION_DENY, False)])
async def test_approve_or_deny_on_the_request_decides_it(workspace: Workspace, action_id: str, approve: bool) -> None:
    """A click on the approval request is a DecideApproval by the clicking user, for the message clicked."""
    token = workspace.tokens.issue(CASE_ID, "approval:ap1")
    approver = workspace.agent.as_user(APPROVER_USER_ID, "pat")
    message = approval_message(token)
    response = await approver.click_message(message, action_id, channel_id=APPROVALS_CHANNEL, ephemeral=False)
    assert response.status_code == 200 and response.content == b""
    command, headers = await only_command(workspace.bus)
    assert isinstance(command, DecideApproval)
    assert command.agent.user_id == APPROVER_USER_ID
    assert command.approval_token == token and command.approve is approve and command.case_token is None
    assert command.message == MessageRef(channel=APPROVALS_CHANNEL, ts=message["ts"])
    assert headers["Nats-Msg-Id"].startswith(f"{CASE_ID}:decide:")


async def test_a_forged_approval_token_is_refused_and_logged(workspace: Workspace) -> None:
    """Approve carrying a token signed with another key, or a case token, publishes nothing; the refusal is logged."""
    forged = CaseTokens("f" * 40).issue(CASE_ID, "approval:ap1")
    approver = workspace.agent.as_user(APPROVER_USER_ID, "pat")
    with capture_logs() as logs:
        for token in (forged, tampered(workspace.tokens.issue(CASE_ID, "approval:ap1")), workspace.token()):
            response = await approver.click_message(approval_message(token), ACTION_APPROVE, ephemeral=False)
            assert response.status_code == 200 and response.content == b""
    assert await published(workspace.bus) == []
    refusals = [e for e in logs if e["event"] == "gateway.refused"]
    assert [e["reason"] for e in refusals] == ["approval_token_invalid"] * 3
    assert forged not in orjson.dumps(logs, default=repr).decode()


async def test_an_expired_approval_token_is_refused(workspace: Workspace) -> None:
    """An approval request clicked after its token expired decides nothing."""
    token = workspace.tokens.issue(CASE_ID, "approval:ap1", now=time.time() - 2 * 3600)
    response = await workspace.agent.as_user(APPROVER_USER_ID).click_message(approval_message(token), ACTION_DENY)
    assert response.status_code == 200
    assert await published(workspace.bus) == []


async def test_this_wasnt_me_on_the_notice_is_reported(workspace: Workspace) -> None:
    """ "This wasn't me" on the target's DM becomes ReportNotMe; an approval token on it is refused."""
    target = workspace.agent.as_user("U0TARGET", "jane")
    wrong_kind = workspace.tokens.issue(CASE_ID, "approval:ap1")
    await target.click_message(notice_message(wrong_kind), ACTION_NOT_ME, channel_id="D0TARGET", ephemeral=False)
    assert await published(workspace.bus) == []
    token = workspace.tokens.issue(CASE_ID, "target:00u1jane")
    message = notice_message(token)
    response = await target.click_message(message, ACTION_NOT_ME, channel_id="D0TARGET", ephemeral=False)
    assert response.status_code == 200
    command, headers = await only_command(workspace.bus)
    assert isinstance(command, ReportNotMe)
    assert command.agent.user_id == "U0TARGET" and command.notice_token == token
    assert command.message == MessageRef(channel="D0TARGET", ts=message["ts"])
    assert headers["Nats-Msg-Id"].startswith(f"{CASE_ID}:not_me:")
