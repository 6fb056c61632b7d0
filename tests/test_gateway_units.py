"""The gateway's small pure parts: code checks, case-token reading, the options cache, menus and views."""

from __future__ import annotations

import time
from typing import Any

import pytest

from services.gateway import views
from services.gateway.dispatch import OptionsCache
from services.gateway.handlers import (
    Answer,
    Publish,
    Rules,
    case_token_of,
    check_answer,
    check_code,
    check_yubikey_otp,
    on_interaction,
)
from shared import ui
from shared.messages import (
    ActionKind,
    DecideApproval,
    MessageRef,
    RefusedClick,
    ReportNotMe,
    RequestApproval,
    StepUp,
    SubmitCode,
    UserOption,
)
from shared.tokens import CaseTokens
from shared.ui import CALLBACK_CASE

TOKENS = CaseTokens("u" * 40)
RULES = Rules(tokens=TOKENS)
AGENT = "U0AGENT01"
APPROVER = "U0APPROVER"
OTP = "cccjgjgkhcbbirdrfdnlnghhfgrtnnlgedjlftrbdeut"  # Yubico's documented example, 44 ModHex


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("raw", "code"),
    [("123456", "123456"), (" 123 456 ", "123456"), ("12345678", "12345678"), ("1234\t5678", "12345678")],
)
def test_well_formed_codes(raw: str, code: str) -> None:
    """Digits in the configured range pass, with the spaces a caller reads between groups removed."""
    assert check_code(raw, 6, 8) == (code, None)


@pytest.mark.parametrize("raw", [None, "", "   ", "12345", "123456789", "12345a", "１２３４５６", "12-3456", "+123456"])
def test_malformed_codes(raw: str | None) -> None:
    """Anything else is refused with a reason for the agent."""
    code, problem = check_code(raw, 6, 8)
    assert code is None and problem


def test_fixed_length_codes_say_the_length() -> None:
    """With min = max the error names the one length."""
    assert check_code("123", 6, 6) == (None, "The code has 6 digits.")


def test_answers_are_trimmed_and_bounded() -> None:
    """Free-text answers are 1..200 characters after trimming."""
    assert check_answer("  blue  ") == ("blue", None)
    assert check_answer("   ")[0] is None
    assert check_answer("x" * 201)[0] is None


def test_case_token_is_read_raw_or_from_json() -> None:
    """``private_metadata`` is the token itself, or a JSON object holding ``case_token``."""
    assert case_token_of("eyJabc.def.ghi") == "eyJabc.def.ghi"
    assert case_token_of('{"case_token": "eyJabc.def.ghi", "x": 1}') == "eyJabc.def.ghi"
    assert case_token_of('{"other": 1}') is None
    assert case_token_of("{broken") is None
    assert case_token_of("") is None


def test_options_cache_expires_entries() -> None:
    """A cached menu is served until its TTL passes, keyed by agent and case-insensitive query."""
    clock = Clock()
    cache = OptionsCache(ttl=10, clock=clock)
    cache.put("U1", "Alice", {"options": []})
    assert cache.get("U1", "alice") == {"options": []}
    assert cache.get("U2", "alice") is None
    clock.now += 10.5
    assert cache.get("U1", "alice") is None
    assert len(cache) == 0


def test_options_cache_is_bounded_least_recently_used_first() -> None:
    """Past ``max_entries`` the least recently used menu is dropped."""
    cache = OptionsCache(ttl=60, max_entries=2, clock=Clock())
    cache.put("U1", "a", {"options": ["a"]})
    cache.put("U1", "b", {"options": ["b"]})
    assert cache.get("U1", "a") is not None  # "a" is now the most recent
    cache.put("U1", "c", {"options": ["c"]})
    assert len(cache) == 2
    assert cache.get("U1", "b") is None
    assert cache.get("U1", "a") is not None and cache.get("U1", "c") is not None


def test_options_payload_respects_slacks_limits() -> None:
    """≤ 100 options, texts ≤ 75 characters (ellipsis), values over 150 characters or empty dropped."""
    options = [UserOption(id="x" * 151, label="too long a value"), UserOption(id="", label="no value")]
    options += [UserOption(id=f"00u{i}", label="L" * 80) for i in range(150)]
    menu = views.options_payload(options)["options"]
    assert len(menu) == 100
    assert menu[0]["value"] == "00u0"
    assert menu[0]["text"]["text"] == "L" * 74 + "…"


def test_checking_view_keeps_the_case() -> None:
    """The checking view keeps private_metadata, title and notify_on_close, and has no submit button."""
    submitted = {
        "private_metadata": "tok",
        "title": {"type": "plain_text", "text": "Verify caller"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "notify_on_close": True,
        "submit": {"type": "plain_text", "text": "Verify"},
    }
    view = views.checking_view(submitted)
    assert view["callback_id"] == CALLBACK_CASE
    assert view["private_metadata"] == "tok"
    assert view["notify_on_close"] is True
    assert view["title"]["text"] == "Verify caller" and view["close"]["text"] == "Cancel"
    assert "submit" not in view


def test_help_text_names_the_configured_command() -> None:
    """The help answer is ephemeral and names the command this install uses."""
    message = views.help_message("/verify")
    assert message["response_type"] == "ephemeral"
    assert "/verify" in message["text"]


# -- code shapes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [OTP, OTP.upper(), f"  {OTP[:20]} {OTP[20:]}\n"])
def test_yubikey_otps_are_44_modhex_characters(raw: str) -> None:
    """A YubiKey OTP is 44 ModHex characters, in any case and with stray spaces: lower-cased, spaces removed."""
    assert check_yubikey_otp(raw) == (OTP, None)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (None, "Enter the 44 characters"),
        ("   ", "Enter the 44 characters"),
        ("123456", "only the letters"),
        (OTP[:-1] + "a", "only the letters"),  # "a" is hex, not ModHex
        (OTP[:-1], "exactly 44 characters; this has 43"),
        (OTP + "c", "exactly 44 characters; this has 45"),
    ],
)
def test_malformed_yubikey_otps_say_why(raw: str | None, says: str) -> None:
    """Empty, wrong alphabet or wrong length are refused with a sentence for the agent."""
    otp, problem = check_yubikey_otp(raw)
    assert otp is None and problem is not None and says in problem


def test_token_passcodes_name_themselves() -> None:
    """A hardware token's passcode is checked like a code, with its own lengths and noun."""
    assert check_code("1234 5678 90", ui.TOKEN_CODE_MIN_LENGTH, ui.TOKEN_CODE_MAX_LENGTH, noun="passcode") == (
        "1234567890",
        None,
    )
    assert check_code("12345", 6, 16, noun="passcode") == (None, "The passcode has 6 to 16 digits.")


# -- payloads, straight into the handlers -------------------------------------------------------


def in_view(action_id: str, value: str | None = None, token: str | None = None) -> dict[str, Any]:
    """A click in a case modal of AGENT's."""
    action: dict[str, Any] = {"action_id": action_id, "type": "button", "action_ts": "1700000000.000200"}
    if value is not None:
        action["value"] = value
    return {
        "type": "block_actions",
        "user": {"id": AGENT},
        "container": {"type": "view", "view_id": "V1"},
        "view": {"id": "V1", "hash": "h1", "private_metadata": token or TOKENS.issue("c1", AGENT)},
        "actions": [action],
    }


def on_message(action_id: str, value: str, user: str = APPROVER, **container: Any) -> dict[str, Any]:
    """A click on a button of a posted message (an approval request, a notice DM)."""
    return {
        "type": "block_actions",
        "user": {"id": user},
        "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": "C0APPROVALS", **container},
        "channel": {"id": "C0APPROVALS"},
        "trigger_id": "t1",
        "actions": [{"action_id": action_id, "type": "button", "value": value, "action_ts": "1700000001.000300"}],
    }


def submission(callback_id: str, text: str) -> dict[str, Any]:
    return {
        "type": "view_submission",
        "user": {"id": AGENT},
        "view": {
            "id": "V1",
            "hash": "h1",
            "callback_id": callback_id,
            "private_metadata": TOKENS.issue("c1", AGENT),
            "state": {"values": {ui.BLOCK_CODE: {ui.ACTION_CODE: {"type": "plain_text_input", "value": text}}}},
        },
    }


def test_step_up_is_a_case_command() -> None:
    """ "Verify another factor" becomes StepUp with the view's case token."""
    decision = on_interaction(in_view(ui.ACTION_STEP_UP), RULES)
    assert isinstance(decision, Publish) and isinstance(decision.command, StepUp)
    assert decision.command.case_token is not None and decision.msg_id == f"c1:{ui.ACTION_STEP_UP}:1700000000.000200"


@pytest.mark.parametrize(
    ("value", "action", "factor_id"),
    [("reset_all_factors", ActionKind.RESET_ALL_FACTORS, None), ("reset_factor:opf1", ActionKind.RESET_FACTOR, "opf1")],
)
def test_request_approval_reads_its_value_like_run(value: str, action: ActionKind, factor_id: str | None) -> None:
    """ "Request approval" carries an action value or ``reset_factor:<id>``, parsed as for running it."""
    decision = on_interaction(in_view(ui.ACTION_REQUEST_APPROVAL, value), RULES)
    assert isinstance(decision, Publish) and isinstance(decision.command, RequestApproval)
    assert (decision.command.action, decision.command.factor_id) == (action, factor_id)


@pytest.mark.parametrize("value", ["", "reset_factor:", "reboot"])
def test_request_approval_for_no_known_action_is_ignored(value: str) -> None:
    """A request naming no action we know publishes nothing."""
    decision = on_interaction(in_view(ui.ACTION_REQUEST_APPROVAL, value), RULES)
    assert isinstance(decision, Answer) and decision.outcome == "ignored"


def test_request_approval_needs_the_case_token() -> None:
    """Another agent's case token is refused before the request is published."""
    decision = on_interaction(in_view(ui.ACTION_REQUEST_APPROVAL, "unlock", TOKENS.issue("c1", "U0OTHER")), RULES)
    assert isinstance(decision, Publish) and isinstance(decision.command, RefusedClick)
    assert decision.command.kind == "wrong_agent" and decision.command.case_token is None


@pytest.mark.parametrize(("action_id", "approve"), [(ui.ACTION_APPROVE, True), (ui.ACTION_DENY, False)])
def test_approve_and_deny_on_a_message_decide_the_approval(action_id: str, approve: bool) -> None:
    """The clicking user decides; the signed approval token and the clicked message go along."""
    token = TOKENS.issue("c1", "approval:ap1")
    decision = on_interaction(on_message(action_id, token), RULES)
    assert isinstance(decision, Publish)
    command = decision.command
    assert isinstance(command, DecideApproval)
    assert command.agent.user_id == APPROVER and command.case_token is None
    assert command.approval_token == token and command.approve is approve
    assert command.message == MessageRef(channel="C0APPROVALS", ts="1700000000.000100")
    assert decision.msg_id == "c1:decide:1700000001.000300" and decision.case_id == "c1"


def test_the_message_channel_falls_back_to_the_payloads_channel() -> None:
    """Without ``container.channel_id`` the message is found by ``channel.id``; without a ts there is none."""
    token = TOKENS.issue("c1", "approval:ap1")
    payload = on_message(ui.ACTION_APPROVE, token)
    del payload["container"]["channel_id"]
    decision = on_interaction(payload, RULES)
    assert isinstance(decision, Publish) and isinstance(decision.command, DecideApproval)
    assert decision.command.message == MessageRef(channel="C0APPROVALS", ts="1700000000.000100")
    del payload["container"]["message_ts"]
    decision = on_interaction(payload, RULES)
    assert isinstance(decision, Publish) and isinstance(decision.command, DecideApproval)
    assert decision.command.message is None


def test_not_me_on_the_notice_reports_it() -> None:
    """ "This wasn't me" on the target's DM becomes ReportNotMe with the signed notice token."""
    token = TOKENS.issue("c1", "target:00u1")
    decision = on_interaction(on_message(ui.ACTION_NOT_ME, token, user="U0TARGET", channel_id="D0TARGET"), RULES)
    assert isinstance(decision, Publish)
    command = decision.command
    assert isinstance(command, ReportNotMe) and command.notice_token == token
    assert command.agent.user_id == "U0TARGET"
    assert command.message == MessageRef(channel="D0TARGET", ts="1700000000.000100")
    assert decision.msg_id == "c1:not_me:1700000001.000300"


def _tampered(token: str) -> str:
    head, body, signature = token.split(".")
    return f"{head}.{body}.{signature[:-2]}{'A' if signature[-2] != 'A' else 'B'}{signature[-1]}"


@pytest.mark.parametrize(
    ("action_id", "token", "reason"),
    [
        (ui.ACTION_APPROVE, "", "approval_token_missing"),
        (ui.ACTION_APPROVE, "garbage", "approval_token_invalid"),
        (ui.ACTION_APPROVE, _tampered(TOKENS.issue("c1", "approval:ap1")), "approval_token_invalid"),
        (ui.ACTION_DENY, CaseTokens("z" * 40).issue("c1", "approval:ap1"), "approval_token_invalid"),
        (ui.ACTION_APPROVE, TOKENS.issue("c1", "approval:ap1", now=time.time() - 7200), "approval_token_expired"),
        (ui.ACTION_APPROVE, TOKENS.issue("c1", AGENT), "approval_token_invalid"),  # a case token
        (ui.ACTION_APPROVE, TOKENS.issue("c1", "target:00u1"), "approval_token_invalid"),  # a notice token
        (ui.ACTION_APPROVE, TOKENS.issue("c1", "approval:"), "approval_token_invalid"),  # names no approval
        (ui.ACTION_NOT_ME, TOKENS.issue("c1", "approval:ap1"), "notice_token_invalid"),
        (ui.ACTION_NOT_ME, TOKENS.issue("c1", AGENT), "notice_token_invalid"),
    ],
)
def test_message_buttons_with_a_bad_token_are_refused(action_id: str, token: str, reason: str) -> None:
    """A forged, foreign, expired or wrong-kind token on a message button is refused, never published."""
    decision = on_interaction(on_message(action_id, token), RULES)
    assert isinstance(decision, Answer)
    assert (decision.outcome, decision.reason) == ("refused", reason)
    assert decision.reply.body is None


def test_decision_buttons_inside_a_view_are_ignored() -> None:
    """Approve clicked anywhere but on a message (say, a view) decides nothing."""
    payload = in_view(ui.ACTION_APPROVE, TOKENS.issue("c1", "approval:ap1"))
    decision = on_interaction(payload, RULES)
    assert isinstance(decision, Answer) and decision.outcome == "ignored"


@pytest.mark.parametrize(
    ("callback", "typed", "code"),
    [
        (ui.CALLBACK_YUBIKEY, OTP.upper(), OTP),
        (ui.CALLBACK_TOKEN_CODE, "1234 567890", "1234567890"),
        (ui.CALLBACK_CODE, "123 456", "123456"),
    ],
)
def test_each_code_callback_accepts_its_shape(callback: str, typed: str, code: str) -> None:
    """Each code view's callback accepts its own shape of code and publishes it normalised."""
    decision = on_interaction(submission(callback, typed), RULES)
    assert isinstance(decision, Publish) and isinstance(decision.command, SubmitCode)
    assert decision.command.code.get_secret_value() == code
    assert decision.reply.body is not None and decision.reply.body["response_action"] == "update"


@pytest.mark.parametrize(
    ("callback", "typed"),
    [
        (ui.CALLBACK_YUBIKEY, "123456"),
        (ui.CALLBACK_TOKEN_CODE, OTP),
        (ui.CALLBACK_TOKEN_CODE, "1" * 17),
        (ui.CALLBACK_CODE, "1" * 10),
    ],
)
def test_each_code_callback_refuses_other_shapes(callback: str, typed: str) -> None:
    """A code of another shape is an error on the code block; nothing is published."""
    decision = on_interaction(submission(callback, typed), RULES)
    assert isinstance(decision, Answer) and decision.outcome == "invalid"
    assert decision.reply.body is not None and decision.reply.body["errors"][ui.BLOCK_CODE]
