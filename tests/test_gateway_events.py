"""The gateway's new entries: a DM or @mention, a Workflow Builder step, "Verify <name>", ids checked."""

from __future__ import annotations

from typing import Any

import pytest

from services.gateway.handlers import Answer, Publish, on_event, on_interaction
from services.gateway.slack_request import MalformedRequest
from shared import ui
from shared.messages import OpenCase, SelectUser, StartFromMessage, WorkflowStep
from tests.test_gateway_units import AGENT, RULES, in_view, on_message


def envelope(event: dict[str, Any]) -> dict[str, Any]:
    return {"type": "event_callback", "team_id": "T1", "event_id": "Ev1", "event": event}


def dm(**extra: Any) -> dict[str, Any]:
    base = {"type": "message", "channel": "D1", "user": AGENT, "text": "verify bob", "ts": "1.2", "channel_type": "im"}
    return {**base, **extra}


def test_a_dm_and_a_mention_become_start_from_message() -> None:
    decision = on_event(envelope(dm()))
    assert isinstance(decision, Publish) and decision.msg_id == "event:Ev1"
    command = decision.command
    assert isinstance(command, StartFromMessage) and command.in_dm and command.text == "verify bob"
    mention = {"type": "app_mention", "channel": "C1", "user": AGENT, "text": "<@U0BOT> verify bob", "ts": "1.3"}
    decision = on_event(envelope(mention))
    assert isinstance(decision, Publish) and isinstance(decision.command, StartFromMessage)
    assert not decision.command.in_dm and decision.command.channel_id == "C1"


@pytest.mark.parametrize(
    "event",
    [
        dm(bot_id="B1"),  # a bot, ours included
        dm(subtype="message_changed"),  # an edit
        dm(thread_ts="1.0"),  # a reply in a thread
        dm(channel_type="channel"),  # a channel message without a mention
        {k: v for k, v in dm().items() if k != "user"},
    ],
)
def test_bots_edits_threads_and_channel_chatter_are_ignored(event: dict[str, Any]) -> None:
    decision = on_event(envelope(event))
    assert isinstance(decision, Answer) and decision.outcome == "ignored"


def test_our_workflow_step_becomes_a_workflow_step_command() -> None:
    event = {
        "type": "function_executed",
        "function": {"callback_id": ui.WORKFLOW_STEP_CALLBACK},
        "inputs": {"agent": AGENT, "caller": "jdoe@example.com", "ticket": "help-42"},
        "function_execution_id": "Fx0123",
        "bot_access_token": "xwfp-secret",
    }
    decision = on_event(envelope(event))
    assert isinstance(decision, Publish)
    command = decision.command
    assert isinstance(command, WorkflowStep)
    assert command.agent.user_id == AGENT and command.caller == "jdoe@example.com" and command.ticket == "HELP-42"
    assert "xwfp" not in command.encode().decode()  # the function token is not carried anywhere
    other = on_event(envelope({**event, "function": {"callback_id": "someone_elses"}}))
    assert isinstance(other, Answer) and other.outcome == "ignored"


def test_verify_button_on_a_message_opens_the_case_on_that_user() -> None:
    value = ui.start_value("00ualice000000000001", "INC0012345", "Fx0123")
    decision = on_interaction(on_message(ui.ACTION_START_FOR, value, user=AGENT), RULES)
    assert isinstance(decision, Publish)
    command = decision.command
    assert isinstance(command, OpenCase) and command.okta_user_id == "00ualice000000000001"
    assert command.ticket == "INC0012345" and command.function_execution_id == "Fx0123"
    assert command.source == "workflow" and command.trigger_id == "t1"


@pytest.mark.parametrize("bad", ["00uadmin?x=", "../x", "a" * 3000, "00u/admin"])
def test_ids_from_payloads_are_checked_before_any_use(bad: str) -> None:
    with pytest.raises(MalformedRequest):
        on_interaction(on_message(ui.ACTION_START_FOR, ui.start_value(bad), user=AGENT), RULES)
    with pytest.raises(MalformedRequest):
        on_interaction(in_view(ui.ACTION_PICK_USER, bad), RULES)
    with pytest.raises(MalformedRequest):
        on_interaction(in_view(ui.ACTION_CHALLENGE, bad), RULES)
    with pytest.raises(MalformedRequest):
        on_interaction(in_view(ui.ACTION_RUN, f"reset_factor:{bad}"), RULES)


def test_a_suggested_user_is_picked_in_the_case() -> None:
    decision = on_interaction(in_view(ui.ACTION_PICK_USER, "00ualicia00000000001"), RULES)
    assert isinstance(decision, Publish) and isinstance(decision.command, SelectUser)
    assert decision.command.okta_user_id == "00ualicia00000000001"
    attribute = on_interaction(in_view(ui.ACTION_CHALLENGE, "attr:employeeNumber"), RULES)
    assert isinstance(attribute, Publish)


def test_a_slash_command_form_keeps_only_what_is_read_and_still_counts_every_field() -> None:
    from services.gateway.handlers import SLASH_COMMAND_FIELDS
    from services.gateway.slack_request import MAX_FORM_FIELDS, parse_form

    body = b"command=%2Fhelpdesk&text=alice+anderson&response_url=https%3A%2F%2Fhooks.slack.com%2Fx&user_id=U1"
    assert parse_form(body, keep=SLASH_COMMAND_FIELDS) == {
        "command": "/helpdesk",
        "text": "alice anderson",
        "user_id": "U1",
    }
    crowded = "&".join(f"f{n}=1" for n in range(MAX_FORM_FIELDS + 1)).encode()
    with pytest.raises(MalformedRequest):
        parse_form(crowded, keep=SLASH_COMMAND_FIELDS)
