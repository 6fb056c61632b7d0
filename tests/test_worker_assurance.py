"""Assurance before any change, on a real NATS with the sandbox Okta: the attacks of the issue, refused.

Each refusal is shown to the agent, audited with the assurance reached and the one required, and
made before any Okta call that changes something.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sandbox.okta_data import ALICE, ALICE_PUSH, ALICE_QUESTION, ALICE_SMS, DEMO_ANSWER, HELPDESK_GROUP
from services.okta_worker import authz
from shared.bus import Bus
from shared.messages import (
    ActionKind,
    ApprovalNotice,
    ApprovalStatus,
    CancelChallenge,
    CaseSnapshot,
    CaseState,
    ChallengeFactor,
    DecideApproval,
    Message,
    MessageRef,
    ReportNotMe,
    RequestApproval,
    RunAction,
    SecurityNotice,
    SelectUser,
    StepUp,
    TargetNotice,
)
from shared.settings import Settings
from tests import test_worker_flows as flows
from tests.test_worker_flows import AGENT_SLACK, Harness, harness

APPROVER_SLACK = "U0APPROVE1"
MALLORY_SLACK = "U0MALLORY1"
ALICE_SLACK = "U0ALICE01"  # alice's own Slack account (the target): flows maps it to alice@example.com
APPROVALS = "C0APPROVALS"
SECURITY = "C0SECURITY"
LIFECYCLE = ("/lifecycle/", "/factors/", "/sessions", "/authenticator-enrollments")


@pytest.fixture(autouse=True)
def slack_people(monkeypatch: pytest.MonkeyPatch) -> None:
    """A second help-desk agent (the approver) and mallory, in an imported APP_GROUP named "Helpdesk"."""
    monkeypatch.setitem(flows.SLACK_EMAILS, APPROVER_SLACK, "approver@example.com")
    monkeypatch.setitem(flows.SLACK_EMAILS, MALLORY_SLACK, "mallory.test@example.com")


@contextlib.asynccontextmanager
async def assured(settings: Settings, bus: Bus, **overrides: Any) -> AsyncIterator[tuple[Harness, list[Message]]]:
    config = {"slack_approvals_channel": APPROVALS, "slack_security_channel": SECURITY, **overrides}
    notices: list[Message] = []
    async with harness(settings, bus, **config) as h:
        h.okta.add_user("approver@example.com", "Ada", "Approver", groups=[HELPDESK_GROUP])
        imported = h.okta.add_group("Helpdesk", type="APP_GROUP", description="Imported from AD")
        h.okta.add_user("mallory.test@example.com", "Mallory", "Test", groups=[imported.id])

        async def on_notice(msg: Any) -> None:
            subject = bus.unprefixed(msg.subject)
            kind = {t.SUBJECT: t for t in (ApprovalNotice, TargetNotice, SecurityNotice)}[subject]
            notices.append(kind.decode_bytes(msg.data))
            h.changed.set()

        sub = await bus.nc.subscribe(bus.subject("helpdesk.notify.>"), cb=on_notice)
        try:
            yield h, notices
        finally:
            await sub.unsubscribe()


def changes_in_okta(h: Harness) -> list[str]:
    """Okta calls that change something (POST/DELETE on lifecycle, factors, sessions, TAC), not verifies."""
    return [
        f"{c.method} {c.path}"
        for c in h.okta.calls
        if c.method in ("POST", "DELETE") and any(p in c.path for p in LIFECYCLE) and not c.path.endswith("/verify")
    ]


async def run(h: Harness, snap: CaseSnapshot, action: ActionKind, **fields: Any) -> CaseSnapshot:
    await h.send(h.cmd(snap, RunAction, action=action, **fields))
    return await h.notice(snap.case_id, h.last(snap.case_id).revision)


async def test_the_security_question_alone_changes_nothing(settings: Settings, bus: Bus) -> None:
    async with assured(settings, bus) as (h, _):
        snap = await h.verified(ALICE, ALICE_QUESTION, DEMO_ANSWER)
        assert snap.actions == []  # nothing allowed
        gates = {g.action: g for g in snap.gates}
        assert gates[ActionKind.TEMP_PASSWORD].needs.startswith("a strong factor")
        assert "security question" in gates[ActionKind.TEMP_PASSWORD].has.lower() or gates[
            ActionKind.TEMP_PASSWORD
        ].has.endswith("(weak)")
        for action in (ActionKind.RESET_ALL_FACTORS, ActionKind.TEMP_PASSWORD, ActionKind.UNLOCK):
            refused = await run(h, snap, action)
            assert refused.notice is not None and refused.notice.level == "error"
        refused = await run(h, snap, ActionKind.RESET_ALL_FACTORS)
        assert "needs a strong factor" in (refused.notice.text if refused.notice else "")
        assert changes_in_okta(h) == []
        event = await h.wait(
            lambda: next(
                (a for a in h.audits if a.action == "case.action" and a.outcome == "refused"),
                None,
            )
        )
        assert event.details["reason"] == "assurance"
        assert event.details["assurance"] and event.details["required"]


async def test_step_up_from_sms_to_a_push_allows_a_temporary_password(settings: Settings, bus: Bus) -> None:
    async with assured(settings, bus) as (h, _):
        snap = await h.select(await h.open(), ALICE)
        sent = await h.challenge(snap, ALICE_SMS)
        await h.submit(sent, h.okta.last_code(ALICE, ALICE_SMS) or "")
        sms = await h.snapshot(snap.case_id, CaseState.VERIFIED, sent.revision)
        assert ActionKind.UNLOCK not in sms.actions  # alice is not locked out
        assert ActionKind.RESET_LINK in sms.actions and ActionKind.TEMP_PASSWORD not in sms.actions
        refused = await run(h, sms, ActionKind.TEMP_PASSWORD)
        assert refused.notice and "verified so far: SMS" in refused.notice.text
        await h.send(h.cmd(sms, StepUp))
        factors = await h.snapshot(snap.case_id, CaseState.FACTORS, refused.revision)
        assert [p.factor_type for p in factors.proofs] == ["sms"]
        pushed = await h.challenge(factors, ALICE_PUSH)
        tx = h.okta.last_push(ALICE)
        assert tx is not None
        h.okta.resolve_push(tx.id, "SUCCESS")
        strong = await h.snapshot(snap.case_id, CaseState.VERIFIED, pushed.revision)
        assert {p.factor_type for p in strong.proofs} == {"sms", "push"}
        assert strong.assurance.startswith("strong")
        assert ActionKind.TEMP_PASSWORD in strong.actions
        await h.send(h.cmd(strong, RunAction, action=ActionKind.TEMP_PASSWORD))
        await h.wait(lambda: h.shown)
        assert any("expire_password" in c for c in changes_in_okta(h))


async def test_reset_all_factors_waits_for_another_agents_approval_used_once(settings: Settings, bus: Bus) -> None:
    async with assured(settings, bus) as (h, notices):
        snap = await h.verified(ALICE, ALICE_PUSH)
        gate = next(g for g in snap.gates if g.action == ActionKind.RESET_ALL_FACTORS)
        assert gate.approval_needed and not gate.allowed
        refused = await run(h, snap, ActionKind.RESET_ALL_FACTORS)
        assert refused.notice and "approval" in refused.notice.text
        await h.send(h.cmd(snap, RequestApproval, action=ActionKind.RESET_ALL_FACTORS))
        request: ApprovalNotice = await h.wait(
            lambda: next((n for n in notices if isinstance(n, ApprovalNotice)), None)
        )
        assert request.channel_id == APPROVALS and request.approval.status == ApprovalStatus.REQUESTED
        assert request.assurance.startswith("strong") and request.target.id == ALICE
        posted = MessageRef(channel=APPROVALS, ts="1700000000.000100")

        def decide(who: str, approve: bool = True) -> DecideApproval:
            return DecideApproval(
                agent=h.actor(who), approval_token=request.approval_token, approve=approve, message=posted
            )

        # the requesting agent, then someone outside the help desk (in an APP_GROUP named "Helpdesk")
        await h.send(decide(AGENT_SLACK))
        await h.send(decide(MALLORY_SLACK))
        await h.wait(lambda: len([a for a in h.audits if a.action == "case.approval_refused"]) >= 2)
        reasons = {a.details["reason"] for a in h.audits if a.action == "case.approval_refused"}
        assert reasons == {"self_approval", "not_in_group"}
        assert sum(1 for n in notices if isinstance(n, ApprovalNotice) and n.note) == 2  # said under the request
        assert h.last(snap.case_id).approval.status == ApprovalStatus.REQUESTED  # type: ignore[union-attr]
        assert changes_in_okta(h) == []

        await h.send(decide(APPROVER_SLACK))
        approved = await h.wait(
            lambda: next(
                (s for s in h.snapshots if s.case_id == snap.case_id and s.approval and s.approval.decided_by), None
            )
        )
        assert approved.approval.status == ApprovalStatus.APPROVED
        assert ActionKind.RESET_ALL_FACTORS in approved.actions
        await h.audit("case.approval_approved", snap.case_id)
        await h.send(h.cmd(approved, RunAction, action=ActionKind.RESET_ALL_FACTORS))
        done = await h.wait(
            lambda: next((a for a in h.audits if a.action == "case.action" and a.outcome == "success"), None)
        )
        assert done.details["approved_by"] == APPROVER_SLACK
        assert sum("reset_factors" in c for c in changes_in_okta(h)) == 1
        used = h.last(snap.case_id)
        assert used.approval and used.approval.status == ApprovalStatus.USED
        again = await run(h, used, ActionKind.RESET_ALL_FACTORS)  # single use
        assert again.notice and again.notice.level == "error"
        assert sum("reset_factors" in c for c in changes_in_okta(h)) == 1
        # the target is told, with a button to dispute it
        told = await h.wait(lambda: next((n for n in notices if isinstance(n, TargetNotice)), None))
        assert told.target_email == "alice@example.com" and told.changes and told.notice_token


async def test_a_denied_approval_keeps_the_action_refused(settings: Settings, bus: Bus) -> None:
    async with assured(settings, bus) as (h, notices):
        snap = await h.verified(ALICE, ALICE_PUSH)
        await h.send(h.cmd(snap, RequestApproval, action=ActionKind.RESET_ALL_FACTORS))
        request = await h.wait(lambda: next((n for n in notices if isinstance(n, ApprovalNotice)), None))
        await h.send(
            DecideApproval(agent=h.actor(APPROVER_SLACK), approval_token=request.approval_token, approve=False)
        )
        await h.audit("case.approval_denied", snap.case_id)
        denied = h.last(snap.case_id)
        assert denied.approval and denied.approval.status == ApprovalStatus.DENIED
        refused = await run(h, denied, ActionKind.RESET_ALL_FACTORS)
        assert refused.notice and refused.notice.level == "error"
        assert changes_in_okta(h) == []


async def test_an_account_sharing_the_agents_email_is_their_own(settings: Settings, bus: Bus) -> None:
    async with assured(settings, bus) as (h, _):
        second = h.okta.add_user("agent.admin@example.com", "Agent", "Admin", email="agent@example.com")
        snap = await h.open()
        await h.send(h.cmd(snap, SelectUser, okta_user_id=second.id))
        refused = await h.notice(snap.case_id, snap.revision)
        assert refused.state == CaseState.SEARCHING
        assert refused.notice and "own account" in refused.notice.text
        event = await h.audit("case.user_selected", snap.case_id)
        assert event.outcome == "refused" and event.details["reason"] == "own_account"


async def test_an_app_group_named_like_the_helpdesk_grants_nothing(settings: Settings, bus: Bus) -> None:
    async with assured(settings, bus) as (h, _):
        snap = await h.open(MALLORY_SLACK)
        assert snap.state == CaseState.DENIED


async def test_an_agent_removed_from_the_group_loses_the_open_case(
    settings: Settings, bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(authz, "AUTH_CACHE_SECONDS", 0.0)
    async with assured(settings, bus) as (h, _):
        snap = await h.select(await h.open(), ALICE)
        h.okta.remove_member(HELPDESK_GROUP, "agent@example.com")
        await h.send(h.cmd(snap, ChallengeFactor, factor_id=ALICE_SMS))
        denied = await h.snapshot(snap.case_id, CaseState.DENIED, snap.revision)
        assert denied.denial_reason and "Helpdesk" in denied.denial_reason
        assert h.okta.last_code(ALICE, ALICE_SMS) is None  # no SMS went out
        event = await h.audit("case.denied", snap.case_id)
        assert event.details["reason"] == "not_in_group"


async def test_profile_attribute_checks_are_capped_per_case(settings: Settings, bus: Bus) -> None:
    async with assured(settings, bus, challenge_limit=100) as (h, _):
        snap = await h.select(await h.open(), ALICE)
        for _ in range(3):
            sent = await h.challenge(h.last(snap.case_id), "attr:employeeNumber")
            await h.send(h.cmd(sent, CancelChallenge))
            await h.snapshot(snap.case_id, CaseState.FACTORS, sent.revision)
        current = h.last(snap.case_id)
        await h.send(h.cmd(current, ChallengeFactor, factor_id="attr:employeeNumber"))
        capped = await h.notice(snap.case_id, current.revision)
        assert capped.notice and "profile checks" in capped.notice.text


async def test_a_profile_check_counts_toward_the_challenge_limit(settings: Settings, bus: Bus) -> None:
    async with assured(settings, bus, challenge_limit=1) as (h, _):
        snap = await h.select(await h.open(), ALICE)
        sent = await h.challenge(snap, "attr:employeeNumber")
        await h.send(h.cmd(sent, CancelChallenge))
        back = await h.snapshot(snap.case_id, CaseState.FACTORS, sent.revision)
        await h.send(h.cmd(back, ChallengeFactor, factor_id=ALICE_SMS))
        limited = await h.notice(snap.case_id, back.revision)
        assert limited.notice and "limit" in limited.notice.text
        assert h.okta.last_code(ALICE, ALICE_SMS) is None


async def test_recent_factor_reset_makes_the_risk_high_and_every_action_needs_an_approval(
    settings: Settings, bus: Bus
) -> None:
    async with assured(settings, bus) as (h, _):
        h.okta.add_log_event("user.mfa.factor.reset_all", ALICE)
        snap = await h.select(await h.open(), ALICE)
        assert snap.risk is not None and snap.risk.level == "high"
        assert any("factors reset" in s for s in snap.risk.signals)
        verified = await h.verified(ALICE, ALICE_PUSH)
        assert verified.risk and verified.risk.level == "high"
        assert verified.actions == []
        assert all(g.approval_needed for g in verified.gates)
        event = await h.audit("case.user_selected", snap.case_id)
        assert event.details["risk"] == "high"


async def test_an_unreadable_system_log_says_so_and_the_case_goes_on(settings: Settings, bus: Bus) -> None:
    async with assured(settings, bus) as (h, _):
        h.okta.fail_next(500, n=5, path_prefix="/api/v1/logs")
        snap = await h.select(await h.open(), ALICE)
        assert snap.risk is not None and snap.risk.level == "unknown" and snap.risk.note
        verified = await h.verified(ALICE, ALICE_PUSH)
        assert ActionKind.TEMP_PASSWORD in verified.actions  # unknown is not high by default


async def test_the_user_disowns_a_change(settings: Settings, bus: Bus) -> None:
    async with assured(settings, bus) as (h, notices):
        snap = await h.verified(ALICE, ALICE_PUSH)
        await h.send(h.cmd(snap, RunAction, action=ActionKind.REVOKE_SESSIONS))
        told: TargetNotice = await h.wait(lambda: next((n for n in notices if isinstance(n, TargetNotice)), None))
        assert "OAuth tokens" in told.changes[0]
        before = len(h.okta.revoked_sessions)
        await h.send(ReportNotMe(agent=h.actor(APPROVER_SLACK), notice_token=told.notice_token))  # not alice
        await h.audit("case.not_me_refused", snap.case_id, category="security")
        assert len(h.okta.revoked_sessions) == before
        await h.send(ReportNotMe(agent=h.actor(ALICE_SLACK), notice_token=told.notice_token))
        event = await h.audit("case.disputed", snap.case_id, category="security")
        assert event.severity == "alert"
        assert h.okta.revoked_sessions[-1] == (ALICE, True)
        disputed = await h.wait(lambda: next((s for s in h.snapshots if s.disputed), None))
        assert disputed.case_id == snap.case_id
        alert = await h.wait(
            lambda: next((n for n in notices if isinstance(n, SecurityNotice) and n.kind == "disputed"), None)
        )
        assert alert.channel_id == SECURITY
        await h.wait(lambda: any(isinstance(n, TargetNotice) and n.disputed for n in notices))


async def test_a_temporary_access_code_is_offered_where_the_org_has_one(settings: Settings, bus: Bus) -> None:
    async with assured(settings, bus) as (h, notices):
        h.okta.tac = True
        snap = await h.verified(ALICE, ALICE_PUSH)
        assert snap.tac_available and snap.actions[0] == ActionKind.TEMP_ACCESS_CODE
        await h.send(h.cmd(snap, RunAction, action=ActionKind.TEMP_ACCESS_CODE))
        shown = await h.wait(lambda: h.shown)
        assert shown[0].kind == "temp_access_code" and shown[0].expires_at is not None
        code = shown[0].temp_password.get_secret_value()
        await h.audit("case.action", snap.case_id)
        assert code not in str([s.model_dump() for s in h.snapshots])
        assert code not in str([a.model_dump() for a in h.audits])
        assert code not in str([n.model_dump(mode="json") for n in notices])


async def test_with_approver_manager_only_the_targets_manager_decides(
    settings: Settings, bus: Bus, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """approver = "manager": the request goes to the manager's DM (by email); another agent's Approve is
    refused; the manager's counts."""
    from sandbox.okta_data import MANAGER_EMAIL

    monkeypatch.setitem(flows.SLACK_EMAILS, "U0MANAGR1", MANAGER_EMAIL)
    policy = tmp_path / "policy.toml"
    policy.write_text('[approvals]\napprover = "manager"\n')
    async with assured(settings, bus, helpdesk_policy=policy) as (h, notices):
        snap = await h.verified(ALICE, ALICE_PUSH)
        await h.send(h.cmd(snap, RequestApproval, action=ActionKind.RESET_ALL_FACTORS))
        request: ApprovalNotice = await h.wait(
            lambda: next((n for n in notices if isinstance(n, ApprovalNotice)), None)
        )
        assert request.manager_email == MANAGER_EMAIL and request.channel_id is None
        await h.send(DecideApproval(agent=h.actor(APPROVER_SLACK), approval_token=request.approval_token, approve=True))
        refused = await h.audit("case.approval_refused", snap.case_id, category="security")
        assert refused.details["reason"] == "not_manager"
        await h.send(DecideApproval(agent=h.actor("U0MANAGR1"), approval_token=request.approval_token, approve=True))
        await h.audit("case.approval_approved", snap.case_id)
        approved = h.last(snap.case_id)
        assert approved.approval and approved.approval.decided_by == "U0MANAGR1"
        assert ActionKind.RESET_ALL_FACTORS in approved.actions


async def test_a_request_nobody_decides_expires_and_says_so(settings: Settings, bus: Bus, tmp_path: Any) -> None:
    """The request ends by itself: the case says it expired, the request loses its buttons, audited."""
    policy = tmp_path / "policy.toml"
    policy.write_text("[approvals]\nvalid_minutes = 0.02\n")  # 1.2 s
    async with assured(settings, bus, helpdesk_policy=policy) as (h, notices):
        snap = await h.verified(ALICE, ALICE_PUSH)
        await h.send(h.cmd(snap, RequestApproval, action=ActionKind.RESET_ALL_FACTORS))
        expired = await h.wait(
            lambda: next(
                (n for n in notices if isinstance(n, ApprovalNotice) and n.approval.status == ApprovalStatus.EXPIRED),
                None,
            )
        )
        assert expired.approval.action == ActionKind.RESET_ALL_FACTORS
        await h.audit("case.approval_expired", snap.case_id)
        last = h.last(snap.case_id)
        assert last.approval and last.approval.status == ApprovalStatus.EXPIRED
        assert last.notice and "in time" in last.notice.text
        refused = await run(h, last, ActionKind.RESET_ALL_FACTORS)  # still refused
        assert refused.notice and refused.notice.level == "error"
        assert changes_in_okta(h) == []
