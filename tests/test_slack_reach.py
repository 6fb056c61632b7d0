"""Slack wherever the agent is: a DM, an @mention, `/helpdesk alice`, a Workflow Builder step, the ticket.

End to end on one real NATS: Slack's signed requests in (sandbox/slack_agent.py), the fakes' APIs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import pytest

from helpdesk.sandbox_stack import SandboxStack
from sandbox import okta_data as org
from sandbox.slack import AGENT_USER_ID, HELPDESK_CHANNEL_ID, FakeSlack
from services.okta_worker.starts import parse_request
from shared import ui
from shared.bus import Bus
from shared.messages import AuditEvent


@pytest.fixture
async def stack(nats_url: str, prefix: str, _logging: None) -> AsyncIterator[SandboxStack]:
    async with SandboxStack(nats_url=nats_url, prefix=prefix) as running:
        yield running


@pytest.fixture
async def audits(stack: SandboxStack) -> AsyncIterator[list[AuditEvent]]:
    assert stack.settings is not None
    bus = await Bus.connect(stack.settings, name="audit-reader")
    seen: list[AuditEvent] = []

    async def on_event(msg: Any) -> None:
        seen.append(AuditEvent.decode_bytes(msg.data))

    sub = await bus.nc.subscribe(bus.subject("audit.>"), cb=on_event)
    yield seen
    await sub.unsubscribe()
    await bus.close()


async def until(stack: SandboxStack, probe: Any, what: str = "condition", timeout: float = 8.0) -> Any:
    """Wait on the fake Slack's calls (each sets ``call_event``), re-checking every 50 ms."""
    deadline = time.monotonic() + timeout
    while (value := probe()) is None or value is False or value == []:
        assert time.monotonic() < deadline, f"{what} did not happen in time"
        stack.slack.call_event.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stack.slack.call_event.wait(), 0.05)
    return value


async def open_from(stack: SandboxStack, channel: str, message: dict[str, Any]) -> dict[str, Any]:
    agent = stack.agent()
    payload = agent.message_click_payload(message, channel, ui.ACTION_START_FOR)
    response = await agent.post_payload("/slack/interactions", payload)
    assert response.status_code == 200
    view: dict[str, Any] = await until(stack, lambda: stack.slack.last_view_for(payload["trigger_id"]), "views.open")
    return view


def factors_of(stack: SandboxStack, view_id: str) -> dict[str, Any] | None:
    view = stack.slack.views.get(view_id)
    return view if view is not None and any(a == ui.ACTION_CHALLENGE for a, _ in _actions(view)) else None


def _actions(view: dict[str, Any]) -> list[tuple[str, str | None]]:
    from helpdesk.demo import actions_in

    return actions_in(view)


def test_a_request_in_words_names_the_caller_and_the_ticket() -> None:
    assert parse_request("<@U0HELPBOT> verify jdoe INC0012345") == ("jdoe", "INC0012345")
    assert parse_request("Verify: <mailto:jdoe@example.com|jdoe@example.com> for HELP-42") == (
        "jdoe@example.com",
        "HELP-42",
    )
    assert parse_request("alice anderson") == ("alice anderson", None)
    assert parse_request("help") == ("help", None)


async def test_a_dm_answers_with_a_button_that_opens_the_case_on_that_user(
    stack: SandboxStack, audits: list[AuditEvent]
) -> None:
    agent = stack.agent()
    response = await agent.direct_message("verify bob@example.com INC0012345")
    assert response.status_code == 200
    reply = await until(stack, lambda: stack.slack.dm_messages(AGENT_USER_ID), "the DM answer")
    text = FakeSlack.render_text(reply[-1])
    assert "Bob Baker" in text and "INC0012345" in text
    view = await open_from(stack, stack.slack.dm_channel_id(AGENT_USER_ID), reply[-1])
    shown = await until(stack, lambda: factors_of(stack, view["id"]), "bob's factors")
    assert "Bob Baker" in FakeSlack.render_text(shown) and "INC0012345" in FakeSlack.render_text(shown)
    selected = await until(
        stack, lambda: [a for a in audits if a.action == "case.user_selected" and a.outcome == "success"]
    )
    assert selected[0].details["ticket"] == "INC0012345" and selected[0].target == "bob@example.com"


async def test_a_mention_answers_only_the_agent_and_bots_are_ignored(stack: SandboxStack) -> None:
    agent = stack.agent()
    await agent.mention("verify ali")
    answer = await until(stack, lambda: stack.slack.ephemerals, "the ephemeral answer")
    assert answer[-1]["user"] == AGENT_USER_ID and answer[-1]["channel"] == HELPDESK_CHANNEL_ID
    text = FakeSlack.render_text(answer[-1]["message"])
    assert "Alice Anderson" in text and "Alicia Alvarez" in text
    bot_event = {"type": "message", "channel": "D0X", "bot_id": "B0HELPDESK", "text": "verify alice", "ts": "1.1"}
    response = await agent.event({**bot_event, "channel_type": "im"})
    assert response.status_code == 200
    edited = {**bot_event, "subtype": "message_changed", "user": AGENT_USER_ID}
    await agent.event(edited)
    await agent.direct_message("help")  # the next thing answered is the help, not the bot's text
    helped = await until(stack, lambda: stack.slack.dm_messages(AGENT_USER_ID), "the help")
    assert len(helped) == 1 and "Write *verify*" in FakeSlack.render_text(helped[0])


async def test_an_outsider_gets_the_same_refusal_as_the_slash_command(stack: SandboxStack) -> None:
    outsider = stack.agent("U0ALICE01")  # alice is an Okta user, not in the help-desk group
    await outsider.direct_message("verify bob")
    answer = await until(stack, lambda: stack.slack.dm_messages("U0ALICE01"), "the refusal")
    text = FakeSlack.render_text(answer[-1])
    assert "not in the Okta group" in text and ui.ACTION_START_FOR not in str(answer[-1])


@pytest.mark.parametrize(
    ("query", "expect"), [("bob@example.com", "picked"), ("ali", "offered"), ("zzzz nobody", "none")]
)
async def test_slash_command_text_prefills_for_real(stack: SandboxStack, query: str, expect: str) -> None:
    agent = stack.agent()
    form = agent.slash_command_form(query)
    await agent.post("/slack/commands", urlencode(form).encode())
    view = await until(stack, lambda: stack.slack.last_view_for(form["trigger_id"]), "views.open")

    def settled() -> dict[str, Any] | None:
        current = stack.slack.views.get(view["id"])
        if current is None:
            return None
        text = FakeSlack.render_text(current)
        if expect == "picked":
            return current if any(a == ui.ACTION_CHALLENGE for a, _ in _actions(current)) else None
        if expect == "offered":
            return current if sum(a == ui.ACTION_PICK_USER for a, _ in _actions(current)) == 2 else None
        return current if "No Okta user matches" in text else None

    shown = await until(stack, settled, f"the prefill ({expect})")
    if expect == "offered":
        values = {v for a, v in _actions(shown) if a == ui.ACTION_PICK_USER}
        assert values == {org.ALICE, org.ALICIA}
        await agent.click(shown, ui.ACTION_PICK_USER, org.ALICIA)
        await until(stack, lambda: factors_of(stack, view["id"]), "alicia's factors")


async def test_the_ticket_is_attached_from_the_search_view(stack: SandboxStack, audits: list[AuditEvent]) -> None:
    agent = stack.agent()
    form = agent.slash_command_form("")
    await agent.post("/slack/commands", urlencode(form).encode())
    view = await until(stack, lambda: stack.slack.last_view_for(form["trigger_id"]), "views.open")
    search = await until(
        stack, lambda: v if (v := stack.slack.views.get(view["id"])) and v.get("submit") else None, "the search"
    )
    bad = await agent.submit(search, {ui.BLOCK_TICKET: {ui.ACTION_TICKET: "call me maybe"}})
    assert bad.json()["response_action"] == "errors" and ui.BLOCK_TICKET in bad.json()["errors"]
    good = await agent.submit(search, {ui.BLOCK_TICKET: {ui.ACTION_TICKET: "inc0012345"}})
    assert good.json()["response_action"] == "update"
    event = await until(stack, lambda: next((a for a in audits if a.action == "case.ticket"), None), "case.ticket")
    assert event.details["ticket"] == "INC0012345"


async def test_a_workflow_step_completes_with_the_outputs_or_an_error(stack: SandboxStack) -> None:
    agent = stack.agent()
    execution, response = await agent.run_workflow_step("dave@example.com", ticket="HELP-42")
    assert response.status_code == 200
    offer = await until(stack, lambda: stack.slack.dm_messages(AGENT_USER_ID), "the DM to the runner")
    assert "HELP-42" in FakeSlack.render_text(offer[-1])
    view = await open_from(stack, stack.slack.dm_channel_id(AGENT_USER_ID), offer[-1])
    factors = await until(stack, lambda: factors_of(stack, view["id"]), "dave's factors")
    await agent.click(factors, ui.ACTION_CHALLENGE, org.DAVE_RSA)
    entry = await until(
        stack, lambda: v if (v := stack.slack.views[view["id"]]).get("callback_id") == ui.CALLBACK_TOKEN_CODE else None
    )
    await agent.submit(entry, {ui.BLOCK_CODE: {ui.ACTION_CODE: org.DEMO_PASSCODE}})
    done = await until(stack, lambda: stack.slack.function_runs.get(execution), "functions.completeSuccess")
    outputs = done["outputs"]
    assert outputs["verified"] is True and outputs["assurance"].startswith("strong") and outputs["case_id"]

    abandoned, _ = await agent.run_workflow_step("bob@example.com")
    offers = await until(stack, lambda: m if len(m := stack.slack.dm_messages(AGENT_USER_ID)) > 1 else None)
    view = await open_from(stack, stack.slack.dm_channel_id(AGENT_USER_ID), offers[-1])
    shown = await until(stack, lambda: factors_of(stack, view["id"]), "bob's factors")
    await agent.close(shown)  # closed without verifying: the workflow hears so
    failed = await until(stack, lambda: stack.slack.function_runs.get(abandoned), "functions.completeError")
    assert "not verified" in failed["error"]

    unknown, _ = await agent.run_workflow_step("nobody@example.com")
    nobody = await until(stack, lambda: stack.slack.function_runs.get(unknown), "an immediate error")
    assert "No Okta user" in nobody["error"]
