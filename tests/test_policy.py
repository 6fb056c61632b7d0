"""The assurance policy: levels, combinations, approvals, risk, and the policy file an admin writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from helpdesk.cli import main
from services.okta_worker.policy import (
    DEFAULT_POLICY,
    PolicyError,
    assurance_reached,
    channel_of,
    level_of,
    load_policy,
    parse_policy,
)
from shared.messages import ActionKind, ApprovalInfo, ApprovalStatus, AssuranceLevel, Proof, RiskSummary

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
POLICY = load_policy(None, 600)


def proof(factor_type: str, *, age: float = 60, number_matching: bool = True) -> Proof:
    level = level_of(factor_type, number_matching)
    assert level is not None
    at = NOW - timedelta(seconds=age)
    return Proof(
        factor_id=f"f_{factor_type}",
        factor_type=factor_type,
        label=factor_type,
        level=level,
        channel=channel_of(factor_type),
        at=at,
        expires_at=at + timedelta(seconds=600),
    )


def approval(action: ActionKind, status: ApprovalStatus = ApprovalStatus.APPROVED, **kw: object) -> ApprovalInfo:
    base: dict[str, object] = {
        "approval_id": "a1",
        "action": action,
        "status": status,
        "requested_by": "U1",
        "requested_at": NOW - timedelta(minutes=1),
        "expires_at": NOW + timedelta(minutes=9),
        "decided_by": "U2",
    }
    base.update(kw)
    return ApprovalInfo.model_validate(base)


def risk(level: str) -> RiskSummary:
    return RiskSummary(level=level, checked_at=NOW)  # type: ignore[arg-type]


def test_levels_of_factors() -> None:
    assert level_of("push") is AssuranceLevel.STRONG
    assert level_of("push", number_matching=False) is AssuranceLevel.POSSESSION
    assert level_of("token:software:totp") is AssuranceLevel.STRONG
    assert level_of("token:hardware") is AssuranceLevel.STRONG
    assert level_of("sms") is AssuranceLevel.POSSESSION
    assert level_of("email") is AssuranceLevel.POSSESSION
    assert level_of("question") is AssuranceLevel.WEAK
    assert level_of("attribute") is AssuranceLevel.WEAK
    assert channel_of("sms") == channel_of("call") == "phone"  # a SIM swap takes both


def test_the_security_question_alone_can_change_nothing() -> None:
    for action in ActionKind:
        gate = POLICY.gate(action, [proof("question"), proof("attribute")], NOW)
        assert not gate.allowed, action
        assert gate.missing and "approval" not in gate.missing


def test_one_possession_factor_unlocks_but_does_not_set_a_password() -> None:
    sms = [proof("sms")]
    for action in (ActionKind.UNLOCK, ActionKind.RESET_LINK, ActionKind.REVOKE_SESSIONS):
        assert POLICY.gate(action, sms, NOW).allowed
    gate = POLICY.gate(ActionKind.TEMP_PASSWORD, sms, NOW)
    assert not gate.allowed
    assert gate.needs == "a strong factor, or two possession factors on different channels"
    assert gate.has == "sms (possession)"


def test_two_possession_factors_must_be_on_different_channels() -> None:
    assert not POLICY.gate(ActionKind.TEMP_PASSWORD, [proof("sms"), proof("call")], NOW).allowed
    assert POLICY.gate(ActionKind.TEMP_PASSWORD, [proof("sms"), proof("email")], NOW).allowed
    assert POLICY.gate(ActionKind.RESET_FACTOR, [proof("call"), proof("email")], NOW).allowed


def test_a_strong_factor_is_enough_for_a_password_but_reset_all_needs_an_approval() -> None:
    push = [proof("push")]
    assert POLICY.gate(ActionKind.TEMP_PASSWORD, push, NOW).allowed
    gate = POLICY.gate(ActionKind.RESET_ALL_FACTORS, push, NOW)
    assert not gate.allowed and gate.approval_needed and gate.missing == "an approval"
    assert gate.needs == "a strong factor + an approval"
    assert POLICY.gate(ActionKind.RESET_ALL_FACTORS, push, NOW, approval=approval(ActionKind.RESET_ALL_FACTORS)).allowed
    # SMS + email is not strong: no approval makes it enough
    two = [proof("sms"), proof("email")]
    gate = POLICY.gate(ActionKind.RESET_ALL_FACTORS, two, NOW, approval=approval(ActionKind.RESET_ALL_FACTORS))
    assert not gate.allowed and not gate.approval_needed


@pytest.mark.parametrize(
    "given",
    [
        approval(ActionKind.TEMP_PASSWORD),  # another action's
        approval(ActionKind.RESET_ALL_FACTORS, ApprovalStatus.REQUESTED),
        approval(ActionKind.RESET_ALL_FACTORS, ApprovalStatus.DENIED),
        approval(ActionKind.RESET_ALL_FACTORS, ApprovalStatus.USED),  # single use
        approval(ActionKind.RESET_ALL_FACTORS, expires_at=NOW - timedelta(seconds=1)),
    ],
)
def test_only_a_live_approval_of_that_action_counts(given: ApprovalInfo) -> None:
    assert not POLICY.gate(ActionKind.RESET_ALL_FACTORS, [proof("push")], NOW, approval=given).allowed


def test_an_approval_to_reset_one_factor_is_for_that_factor() -> None:
    given = approval(ActionKind.RESET_FACTOR, factor_id="f1")
    high = risk("high")
    assert POLICY.gate(ActionKind.RESET_FACTOR, [proof("push")], NOW, risk=high, approval=given, factor_id="f1").allowed
    assert not POLICY.gate(
        ActionKind.RESET_FACTOR, [proof("push")], NOW, risk=high, approval=given, factor_id="f2"
    ).allowed


def test_each_proof_counts_only_within_the_verification_window() -> None:
    old = proof("push", age=601)
    gate = POLICY.gate(ActionKind.UNLOCK, [old], NOW)
    assert not gate.allowed
    assert gate.has == "push (strong, expired)"
    assert assurance_reached([old], NOW) == "none"


def test_high_risk_adds_an_approval_to_every_action_and_unknown_is_not_high_by_default() -> None:
    gate = POLICY.gate(ActionKind.UNLOCK, [proof("push")], NOW, risk=risk("high"))
    assert gate.approval_needed and gate.needs.endswith("+ an approval (high risk)")
    assert POLICY.gate(ActionKind.UNLOCK, [proof("push")], NOW, risk=risk("unknown")).allowed
    assert POLICY.gate(ActionKind.UNLOCK, [proof("push")], NOW, risk=risk("medium")).allowed
    strict = parse_policy("[risk]\nunknown_is_high = true\n")
    assert strict.gate(ActionKind.UNLOCK, [proof("push")], NOW, risk=risk("unknown")).approval_needed


def test_assurance_reached_says_how() -> None:
    assert assurance_reached([], NOW) == "none"
    assert assurance_reached([proof("sms")], NOW) == "possession (sms)"
    assert assurance_reached([proof("sms"), proof("email")], NOW) == "two possession factors (sms, email)"
    assert assurance_reached([proof("question"), proof("push")], NOW) == "strong (question, push)"


def test_a_policy_file_overrides_actions_and_keeps_the_other_defaults() -> None:
    policy = parse_policy(
        """
[approvals]
approver = "manager"
valid_minutes = 5

[actions.unlock]
proof = ["strong"]
approval = true
"""
    )
    assert policy.approver == "manager" and policy.approval_minutes == 5
    assert policy.gate(ActionKind.UNLOCK, [proof("push")], NOW).approval_needed
    assert POLICY.requirement(ActionKind.TEMP_PASSWORD) == policy.requirement(ActionKind.TEMP_PASSWORD)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[actions.unlock]\nproof = ["weak"]\n', "never enough alone"),
        ('[actions.unlock]\nproof = ["weak+weak"]\n', "never enough alone"),
        ('[actions.unlock]\nproof = ["fingerprint"]\n', "levels are strong, possession, weak"),
        ('[actions.reboot]\nproof = ["strong"]\n', "not an action"),
        ("[actions.unlock]\nproof = []\n", "non-empty list"),
        ('[actions.unlock]\nproof = ["strong"]\napproval = "yes"\n', "true or false"),
        ('[approvals]\napprover = "anyone"\n', "approver must be"),
        ("[approvals]\nvalid_minutes = 0\n", "between 0 and 1440"),
        ("[verify]\n", "unknown section"),
        ("[actions.unlock\n", "not valid TOML"),
    ],
)
def test_a_bad_policy_file_is_refused_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(PolicyError, match=says):
        parse_policy(text, "policy.toml")


def test_the_defaults_parse_and_describe_every_action() -> None:
    assert parse_policy(DEFAULT_POLICY, "built-in defaults").describe() == POLICY.describe()
    text = POLICY.describe()
    for name in ("Unlock account", "Set temporary password", "Reset all factors", "Issue temporary access code"):
        assert name in text
    assert "never enough alone" in text


def test_helpdesk_policy_prints_the_effective_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["policy"]) == 0
    assert "Reset all factors" in capsys.readouterr().out
    path = tmp_path / "policy.toml"
    path.write_text('[actions.unlock]\nproof = ["strong"]\n')
    monkeypatch.setenv("HELPDESK_POLICY", str(path))
    assert main(["policy"]) == 0
    out = capsys.readouterr().out
    assert str(path) in out and "Unlock account" in out
    assert main(["policy", "--file"]) == 0
    assert capsys.readouterr().out.strip() == path.read_text().strip()
    path.write_text('[actions.unlock]\nproof = ["weak"]\n')
    assert main(["policy"]) == 2
    assert "never enough alone" in capsys.readouterr().err
