"""The responder's views: every case state renders, validates against Slack's limits and reads well."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.basic_objects import JsonObject
from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    DividerBlock,
    ExternalDataSelectElement,
    InputBlock,
    MarkdownTextObject,
    PlainTextInputElement,
    SectionBlock,
)
from slack_sdk.models.views import View

from sandbox.slack import FakeSlack, _validate_view
from services.slack_responder import blockkit, views
from shared import ui
from shared.messages import (
    ActionGate,
    ActionKind,
    ActionResult,
    Actor,
    ApprovalInfo,
    ApprovalStatus,
    AssuranceLevel,
    CaseSnapshot,
    CaseState,
    ChallengeInfo,
    FactorOption,
    HomeSnapshot,
    Notice,
    Proof,
    RecentCase,
    RiskSummary,
    ShowTempPassword,
    UserCard,
    VerifiedInfo,
)
from shared.tokens import CaseTokens

NOW = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
LONG = "Maximiliana-Alexandrina " * 30
TOKEN = CaseTokens("x" * 40).issue("case-1", "U0AGENT01")


def target(long: bool = False) -> UserCard:
    return UserCard(
        id="00u1",
        login=("jane.doe." + "x" * 300 + "@example.com") if long else "jane.doe@example.com",
        email="jane@example.com",
        first_name=LONG if long else "Jane",
        last_name=LONG if long else "Doe",
        status="LOCKED_OUT",
        last_login=NOW - timedelta(days=1),
    )


def factors(n: int = 4, long: bool = False) -> list[FactorOption]:
    kinds = ["push", "sms", "call", "email", "token:software:totp", "question"]
    found = [
        FactorOption(
            id=f"f{i}",
            factor_type=kinds[i % len(kinds)],
            provider="OKTA",
            label=(LONG if long else f"Factor {i}"),
            hint=("•" * 400 if long else "••• 1337"),
            weak=kinds[i % len(kinds)] == "question",
        )
        for i in range(n)
    ]
    found.append(
        FactorOption(
            id="wa",
            factor_type="webauthn",
            provider="FIDO",
            label="Security key",
            usable=False,
            reason="needs the user's own browser",
        )
    )
    return found


def challenge(kind: str = "push", **extra: Any) -> ChallengeInfo:
    values: dict[str, Any] = {
        "challenge_id": "ch1",
        "factor_id": "f0",
        "factor_type": {"push": "push", "code": "sms", "answer": "question", "attribute": "attribute"}[kind],
        "label": "Okta Verify" if kind == "push" else "SMS",
        "hint": "••• 1337",
        "kind": kind,
        "sent_at": NOW - timedelta(seconds=42),
        "expires_at": NOW + timedelta(minutes=4),
        "attempts_left": 2,
    }
    values.update(extra)
    return ChallengeInfo(**values)


def snapshot(state: CaseState, long: bool = False, n_factors: int = 4, **extra: Any) -> CaseSnapshot:
    values: dict[str, Any] = {
        "case_id": "case-1",
        "revision": 5,
        "state": state,
        "agent": Actor(user_id="U0AGENT01"),
        "case_token": TOKEN,
        "target": target(long),
        "factors": factors(n_factors, long),
        "query": LONG if long else "jane",
    }
    values.update(extra)
    return CaseSnapshot(**values)


VERIFIED = VerifiedInfo(by_agent="U0AGENT01", method="Okta Verify push", at=NOW, expires_at=NOW + timedelta(minutes=10))


def every_state(long: bool, n_factors: int) -> list[CaseSnapshot]:
    notice = Notice(level="warning", text=LONG * 10 if long else "Okta is rate limiting us", retry_in=11.2)
    results = [ActionResult(action=ActionKind.UNLOCK, ok=True, message=LONG if long else "Unlocked", at=NOW)] * 30
    return [
        snapshot(CaseState.OPENED, long, n_factors),
        snapshot(CaseState.DENIED, long, n_factors, denial_reason=LONG * 20 if long else "Not in Helpdesk"),
        snapshot(CaseState.SEARCHING, long, n_factors, notice=notice),
        snapshot(CaseState.FACTORS, long, n_factors, escalation=LONG if long else None),
        snapshot(CaseState.CHALLENGE_SENT, long, n_factors, challenge=challenge("push", correct_answer=42)),
        snapshot(CaseState.CHALLENGE_SENT, long, n_factors, challenge=challenge("code", can_resend=True)),
        snapshot(CaseState.CHALLENGE_SENT, long, n_factors, challenge=challenge("answer", label=LONG if long else "Q")),
        snapshot(CaseState.CHALLENGE_SENT, long, n_factors, challenge=challenge("attribute")),
        snapshot(CaseState.VERIFIED, long, n_factors, verified=VERIFIED, actions=list(ActionKind), results=results),
        snapshot(
            CaseState.VERIFIED,
            long,
            n_factors,
            verified=VERIFIED,
            mode="verify-only",
            admin_url="https://acme-admin.okta.com/admin/user/profile/view/00u1",
        ),
        snapshot(CaseState.VERIFIED, long, n_factors, verified=VERIFIED, escalation="Protected user: ask IAM."),
        snapshot(CaseState.REJECTED, long, n_factors),
        snapshot(CaseState.TIMED_OUT, long, n_factors),
        snapshot(CaseState.FAILED, long, n_factors, notice=Notice(level="error", text="Too many wrong codes")),
        snapshot(CaseState.CLOSED, long, n_factors, results=results),
    ]


def all_texts(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["text"]] if isinstance(value.get("text"), str) else []
        return found + [t for v in value.values() for t in all_texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in all_texts(v)]
    return []


def elements(view: dict[str, Any], action_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("action_id") == action_id:
                found.append(value)
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(view["blocks"])
    return found


@pytest.mark.parametrize(("long", "n_factors"), [(False, 4), (True, 4), (False, 150), (True, 150)])
def test_every_state_fits_slacks_limits(long: bool, n_factors: int) -> None:
    """Every state renders within Slack's limits with long names and many factors, and Slack's checks accept it."""
    for snap in every_state(long, n_factors):
        view = views.render_case(snap, now=NOW)
        assert len(view["blocks"]) <= 100, snap.state
        assert view["private_metadata"] == TOKEN
        assert len(view["title"]["text"]) <= 24
        for text in all_texts(view["blocks"]):
            assert len(text) <= 3000
        _validate_view(view, allowed_types=("modal",))  # the sandbox's copy of Slack's own checks
        assert FakeSlack.render_text(view)


def test_validation_is_active() -> None:
    """An over-long text that bypasses our clipping is refused by slack_sdk before it is sent."""
    with pytest.raises(SlackObjectFormationError):
        views._modal(TOKEN, [views.SectionBlock(text=views.MarkdownTextObject(text="x" * 3001))])


def test_search_uses_external_select_and_shows_the_query() -> None:
    """The user search is an external_select (min 3 characters) with the command's text shown as a hint."""
    view = views.render_case(snapshot(CaseState.SEARCHING), now=NOW)
    [select] = elements(view, ui.ACTION_SELECT_USER)
    assert select["type"] == "external_select" and select["min_query_length"] == 3
    assert any(b.get("block_id") == ui.BLOCK_USER_SEARCH for b in view["blocks"])
    assert "Searching for: *jane*" in FakeSlack.render_text(view)


def test_factor_list_has_a_button_per_usable_factor_and_explains_the_rest() -> None:
    """Each usable factor gets a challenge button carrying its id; unusable ones are listed with their reason."""
    view = views.render_case(snapshot(CaseState.FACTORS, n_factors=6), now=NOW)
    buttons = elements(view, ui.ACTION_CHALLENGE)
    assert [b["value"] for b in buttons] == ["f0", "f1", "f2", "f3", "f4", "f5"]
    text = FakeSlack.render_text(view)
    assert "Security key: needs the user's own browser" in text
    assert "weak" in text


def test_push_wait_shows_the_number_large_and_a_cancel_button() -> None:
    """The number to read out is a header of its own; elapsed time and a cancel button are shown."""
    view = views.render_case(
        snapshot(CaseState.CHALLENGE_SENT, challenge=challenge("push", correct_answer=73)), now=NOW
    )
    assert any(b["type"] == "header" and b["text"]["text"] == "73" for b in view["blocks"])
    assert "Waiting 42 s" in FakeSlack.render_text(view)
    assert elements(view, ui.ACTION_CANCEL)


def test_code_entry_submits_code_or_answer_with_attempts_and_resend_countdown() -> None:
    """Code entry uses BLOCK_CODE/ACTION_CODE, CALLBACK_CODE for codes and CALLBACK_ANSWER otherwise."""
    later = NOW + timedelta(seconds=20)
    code = snapshot(CaseState.CHALLENGE_SENT, challenge=challenge("code", can_resend=True, resend_available_at=later))
    view = views.render_case(code, now=NOW)
    assert view["callback_id"] == ui.CALLBACK_CODE and view["submit"]["text"] == "Verify"
    [block] = [b for b in view["blocks"] if b["type"] == "input"]
    assert block["block_id"] == ui.BLOCK_CODE and block["element"]["action_id"] == ui.ACTION_CODE
    text = FakeSlack.render_text(view)
    assert "2 attempts left" in text and "Resend possible in 20 s" in text
    assert not elements(view, ui.ACTION_RESEND)
    assert elements(views.render_case(code, now=later), ui.ACTION_RESEND)
    answer = views.render_case(snapshot(CaseState.CHALLENGE_SENT, challenge=challenge("answer")), now=NOW)
    assert answer["callback_id"] == ui.CALLBACK_ANSWER


def test_verified_offers_only_the_actions_the_worker_allows() -> None:
    """The verified view has exactly the buttons for ``snapshot.actions`` (one reset per factor)."""
    snap = snapshot(CaseState.VERIFIED, verified=VERIFIED, actions=[ActionKind.UNLOCK, ActionKind.RESET_FACTOR])
    values = [b["value"] for b in elements(views.render_case(snap, now=NOW), ui.ACTION_RUN)]
    assert values == ["unlock", *[f"{ui.RESET_FACTOR_PREFIX}f{i}" for i in range(4)], f"{ui.RESET_FACTOR_PREFIX}wa"]
    text = FakeSlack.render_text(views.render_case(snap, now=NOW))
    assert "Verified by @U0AGENT01 with *Okta Verify push*" in text and "Valid until" in text


def test_profile_attribute_check_is_never_offered_for_reset() -> None:
    """A profile-attribute check is listed as a way to verify, but it is no factor: no Reset button."""
    attribute = FactorOption(
        id=f"{ui.ATTRIBUTE_PREFIX}employeeNumber", factor_type="attribute", provider="OKTA", label="Employee number"
    )
    snap = snapshot(
        CaseState.VERIFIED, verified=VERIFIED, actions=[ActionKind.RESET_FACTOR], factors=[*factors(1), attribute]
    )
    values = [b["value"] for b in elements(views.render_case(snap, now=NOW), ui.ACTION_RUN)]
    assert values == [f"{ui.RESET_FACTOR_PREFIX}f0", f"{ui.RESET_FACTOR_PREFIX}wa"]


def test_verify_only_mode_links_to_the_admin_console() -> None:
    """Verify-only mode offers no reset, only a link button to the user in the Okta Admin Console."""
    url = "https://acme-admin.okta.com/admin/user/profile/view/00u1"
    snap = snapshot(CaseState.VERIFIED, verified=VERIFIED, mode="verify-only", admin_url=url, actions=[])
    view = views.render_case(snap, now=NOW)
    assert not elements(view, ui.ACTION_RUN)
    [link] = elements(view, ui.ACTION_OPEN_ADMIN)
    assert link["url"] == url


def test_escalation_replaces_the_actions() -> None:
    """A protected user's verified view explains the escalation and offers no reset."""
    snap = snapshot(CaseState.VERIFIED, verified=VERIFIED, actions=[ActionKind.UNLOCK], escalation="Ask IAM.")
    view = views.render_case(snap, now=NOW)
    assert not elements(view, ui.ACTION_RUN)
    assert "Ask IAM." in FakeSlack.render_text(view)


def test_notices_say_when_we_retry() -> None:
    """A rate-limit notice reads "retrying in 12 s" at the top of the view."""
    snap = snapshot(CaseState.SEARCHING, notice=Notice(level="warning", text="Okta rate limit", retry_in=11.2))
    assert "Okta rate limit — retrying in 12 s" in FakeSlack.render_text(views.render_case(snap, now=NOW))


def test_names_cannot_forge_mentions_or_links() -> None:
    """User-controlled text is escaped, so a name like <!here> is shown, not broadcast."""
    evil = target().model_copy(update={"first_name": "<!here>", "last_name": "<https://evil.example|click>"})
    view = views.render_case(snapshot(CaseState.FACTORS, target=evil), now=NOW)
    joined = " ".join(all_texts(view["blocks"]))
    assert "<!here>" not in joined and "<https://evil" not in joined


def test_temp_password_view_is_shown_once_with_a_done_button() -> None:
    """The password view holds the password, guidance, and a "Done" button that refreshes the case."""
    show = ShowTempPassword(
        case_id="case-1",
        revision=7,
        agent=Actor(user_id="U0AGENT01"),
        view=None,
        target_login="jane.doe@example.com",
        temp_password=SecretStr("Tmp-9x7Q2"),
        case_token=TOKEN,
    )
    view = views.render_temp_password(show)
    text = FakeSlack.render_text(view)
    assert "Tmp-9x7Q2" in text and "shown only this once" in text
    assert elements(view, ui.ACTION_REFRESH)


def test_home_lists_ten_recent_cases_and_dependency_status() -> None:
    """App Home: a start button, at most 10 recent cases, and Okta/Slack/NATS as last seen."""
    recent = [
        RecentCase(case_id=f"c{i}", target_login=f"user{i}", state=CaseState.CLOSED, outcome="verified", at=NOW)
        for i in range(15)
    ]
    home = HomeSnapshot(agent=Actor(user_id="U0AGENT01"), recent=recent, okta_status="ok", okta_checked_at=NOW)
    view = views.render_home(home, views.HomeStatus(slack="ok", nats="connected"))
    text = FakeSlack.render_text(view)
    assert elements(view, ui.ACTION_START)
    assert "user9" in text and "user10" not in text
    assert "Okta: ok" in text and "Slack: ok" in text and "NATS: connected" in text
    _validate_view(view, allowed_types=("home",))


# -- slack_sdk validation, looked up once per class (blockkit.py) -------------------------------


def _too_many(n: int, make: Any) -> list[Any]:
    return [make(i) for i in range(n)]


INVALID_OBJECTS = {
    "button text over 75": lambda: ButtonElement(text="x" * 76, action_id="a"),
    "button value over 2000": lambda: ButtonElement(text="x", action_id="a", value="v" * 2001),
    "section text over 3000": lambda: SectionBlock(text="x" * 3001),
    "section over 10 fields": lambda: SectionBlock(fields=_too_many(11, lambda i: f"f{i}")),
    "context over 10 elements": lambda: ContextBlock(elements=_too_many(11, lambda i: MarkdownTextObject(text="x"))),
    "actions over 25 elements": lambda: ActionsBlock(
        elements=_too_many(26, lambda i: ButtonElement(text="x", action_id=f"a{i}"))
    ),
    "input label over 2000": lambda: InputBlock(label="x" * 2001, element=PlainTextInputElement(action_id="a")),
    "external select placeholder over 150": lambda: ExternalDataSelectElement(placeholder="x" * 151, action_id="a"),
    "confirm title over 100": lambda: ConfirmObject(title="x" * 101, text="sure?"),
    "modal title over 24": lambda: View(type="modal", title="x" * 25, blocks=[]),
    "modal over 100 blocks": lambda: View(type="modal", title="t", blocks=_too_many(101, lambda i: DividerBlock())),
    "private_metadata over 3000": lambda: View(type="modal", title="t", blocks=[], private_metadata="x" * 3001),
}


@pytest.mark.parametrize("name", sorted(INVALID_OBJECTS))
def test_cached_validation_still_refuses_what_slack_would(name: str) -> None:
    """The per-class lookup of validators runs every validator slack_sdk's own scan would."""
    assert JsonObject.validate_json is blockkit._validate_json  # installed by importing views
    with pytest.raises(SlackObjectFormationError):
        INVALID_OBJECTS[name]().to_dict()


@pytest.mark.parametrize("state", [s for s in CaseState])
def test_cached_validation_renders_what_slack_sdk_renders(state: CaseState) -> None:
    """Same views with slack_sdk's own scan and with the cache; the cache finds each class's validators."""
    snap = snapshot(state, long=True, n_factors=12)
    cached = views.render_case(snap, now=NOW)
    blockkit.uninstall_validator_cache()
    try:
        original = views.render_case(snap, now=NOW)
    finally:
        blockkit.install_validator_cache()
    assert cached == original
    for cls in (View, SectionBlock, ButtonElement, ExternalDataSelectElement, ConfirmObject):
        assert blockkit.validator_names(cls)  # each of these has length validators


# -- assurance, gates, approvals, risk (the worker decides; the view draws what it decided) -----

APPROVER = "U0APPROVER"


def proof(label: str = "Okta Verify push", level: AssuranceLevel = AssuranceLevel.STRONG, **extra: Any) -> Proof:
    values: dict[str, Any] = {
        "factor_id": "f0",
        "factor_type": "push",
        "label": label,
        "level": level,
        "channel": "push",
        "at": NOW - timedelta(minutes=1),
        "expires_at": NOW + timedelta(minutes=9),
    }
    values.update(extra)
    return Proof(**values)


def approval(status: ApprovalStatus, action: ActionKind = ActionKind.RESET_ALL_FACTORS, **extra: Any) -> ApprovalInfo:
    values: dict[str, Any] = {
        "approval_id": "ap1",
        "action": action,
        "status": status,
        "requested_by": "U0AGENT01",
        "requested_at": NOW - timedelta(minutes=2),
        "expires_at": NOW + timedelta(minutes=13),
    }
    values.update(extra)
    return ApprovalInfo(**values)


def allowed(kind: ActionKind) -> ActionGate:
    return ActionGate(action=kind, allowed=True, needs="a strong factor", has="Okta Verify push (strong)")


def needs_approval(kind: ActionKind, status: ApprovalStatus | None = None, **extra: Any) -> ActionGate:
    return ActionGate(
        action=kind,
        allowed=False,
        needs="a strong factor + an approval",
        has="Okta Verify push (strong)",
        missing="an approval",
        approval_needed=True,
        approval=approval(status, kind, **extra) if status else None,
    )


def needs_proof(kind: ActionKind) -> ActionGate:
    return ActionGate(
        action=kind,
        allowed=False,
        needs="a strong factor, or two possession factors on different channels",
        has="SMS (possession)",
        missing="a strong factor",
    )


def risk(level: str = "high", n_signals: int = 2, note: str | None = None) -> RiskSummary:
    signals = [f"Signal {i}: password reset from a new country" for i in range(n_signals)]
    return RiskSummary(level=level, signals=signals, checked_at=NOW, note=note)  # type: ignore[arg-type]


def gated(*gates: ActionGate, **extra: Any) -> CaseSnapshot:
    values: dict[str, Any] = {
        "verified": VERIFIED,
        "proofs": [proof()],
        "assurance": "strong (Okta Verify push)",
        "gates": list(gates),
    }
    values.update(extra)
    return snapshot(CaseState.VERIFIED, **values)


def render(snap: CaseSnapshot) -> tuple[dict[str, Any], str]:
    """The view (checked as Slack checks it) and its text as a person reads it."""
    view = views.render_case(snap, now=NOW)
    _validate_view(view, allowed_types=("modal",))
    assert len(view["blocks"]) <= 100
    return view, FakeSlack.render_text(view)


def test_verified_view_states_the_assurance_and_each_proof() -> None:
    """The verified view says the assurance reached and lists each proof: label, level, when, until when."""
    sms = proof("SMS", AssuranceLevel.POSSESSION, factor_id="f1", expires_at=NOW - timedelta(minutes=1))
    _, text = render(gated(allowed(ActionKind.UNLOCK), proofs=[proof(), sms], assurance="strong (Okta Verify push)"))
    assert "Assurance: strong (Okta Verify push)" in text
    assert "Okta Verify push* · :large_green_circle: strong · verified" in text
    assert "valid until" in text
    assert "SMS* · :large_yellow_circle: possession" in text and "expired" in text
    assert "Weak method" not in text and "combine it with another check" not in text


def test_allowed_gates_are_buttons_and_the_access_code_comes_before_the_password() -> None:
    """Allowed gates are run buttons in the worker's order, a temporary access code first of the two passwords."""
    snap = gated(
        allowed(ActionKind.UNLOCK),
        allowed(ActionKind.TEMP_PASSWORD),
        allowed(ActionKind.TEMP_ACCESS_CODE),
        allowed(ActionKind.RESET_FACTOR),
    )
    view, text = render(snap)
    values = [b["value"] for b in elements(view, ui.ACTION_RUN)]
    resets = [f"{ui.RESET_FACTOR_PREFIX}f{i}" for i in range(4)] + [f"{ui.RESET_FACTOR_PREFIX}wa"]
    assert values == ["unlock", "temp_access_code", "temp_password", *resets]
    assert "Issue temporary access code" in text
    assert "Okta issues a one-time code the caller signs in with; shown to you once." in text
    assert not elements(view, ui.ACTION_STEP_UP) and not elements(view, ui.ACTION_REQUEST_APPROVAL)


def test_a_gate_missing_a_proof_says_what_it_needs_and_offers_one_step_up() -> None:
    """Gates short of a proof are context lines (needs — verified so far) and share one "Verify another factor"."""
    snap = gated(allowed(ActionKind.UNLOCK), needs_proof(ActionKind.TEMP_PASSWORD), needs_proof(ActionKind.RESET_LINK))
    view, text = render(snap)
    assert [b["value"] for b in elements(view, ui.ACTION_RUN)] == ["unlock"]
    assert (
        "Set temporary password* needs a strong factor, or two possession factors on different channels "
        "— verified so far: SMS (possession)" in text
    )
    assert "Email reset link* needs" in text
    [step_up] = elements(view, ui.ACTION_STEP_UP)
    assert step_up["style"] == "primary" and step_up["text"]["text"] == "Verify another factor"


def test_a_gate_needing_only_an_approval_offers_a_request() -> None:
    """With the proofs enough, the action shows what it needs and a "Request approval" button with its value."""
    view, text = render(gated(needs_approval(ActionKind.RESET_ALL_FACTORS)))
    [button] = elements(view, ui.ACTION_REQUEST_APPROVAL)
    assert button["value"] == "reset_all_factors" and button["text"]["text"] == "Request approval"
    assert "Reset all factors* · :busts_in_silhouette: needs an approval" in text
    assert "a strong factor + an approval" in text
    assert not elements(view, ui.ACTION_RUN) and not elements(view, ui.ACTION_STEP_UP)


def test_resetting_one_factor_asks_approval_per_factor() -> None:
    """For RESET_FACTOR the request names the factor: ``reset_factor:<id>``, attribute checks left out."""
    attribute = FactorOption(
        id=f"{ui.ATTRIBUTE_PREFIX}employeeNumber", factor_type="attribute", provider="OKTA", label="E"
    )
    view, _ = render(gated(needs_approval(ActionKind.RESET_FACTOR), factors=[*factors(2), attribute]))
    values = [b["value"] for b in elements(view, ui.ACTION_REQUEST_APPROVAL)]
    assert values == [f"{ui.RESET_FACTOR_PREFIX}f0", f"{ui.RESET_FACTOR_PREFIX}f1", f"{ui.RESET_FACTOR_PREFIX}wa"]


def test_a_requested_approval_waits_and_a_denied_one_says_who() -> None:
    """While requested: "Waiting for approval — expires …", no button; denied: "Denied by <@approver>"."""
    view, text = render(gated(needs_approval(ActionKind.RESET_ALL_FACTORS, ApprovalStatus.REQUESTED)))
    assert "Waiting for approval — expires" in text
    assert not elements(view, ui.ACTION_REQUEST_APPROVAL)
    denied = needs_approval(ActionKind.RESET_ALL_FACTORS, ApprovalStatus.DENIED, decided_by=APPROVER, decided_at=NOW)
    view, text = render(gated(denied))
    assert f"Denied by @{APPROVER}" in text
    assert f"<@{APPROVER}>" in " ".join(all_texts(view["blocks"]))
    assert not elements(view, ui.ACTION_REQUEST_APPROVAL)


def test_a_pending_reset_factor_approval_names_the_factor() -> None:
    """A requested approval to reset one factor says which factor it waits for, and offers no other request."""
    gate = needs_approval(ActionKind.RESET_FACTOR, ApprovalStatus.REQUESTED, factor_id="f1")
    view, text = render(gated(gate))
    assert "Waiting for approval (for Factor 1) — expires" in text
    assert not elements(view, ui.ACTION_REQUEST_APPROVAL)


def test_an_expired_approval_can_be_requested_again() -> None:
    """After the request expired the agent may ask again; the view says the last one expired."""
    view, text = render(gated(needs_approval(ActionKind.RESET_ALL_FACTORS, ApprovalStatus.EXPIRED)))
    [button] = elements(view, ui.ACTION_REQUEST_APPROVAL)
    assert button["text"]["text"] == "Request approval again"
    assert "The last request expired" in text


def test_a_denier_that_is_not_a_user_id_cannot_forge_a_mention() -> None:
    """``decided_by`` is shown as a mention only when it is a Slack user id."""
    denied = needs_approval(ActionKind.UNLOCK, ApprovalStatus.DENIED, decided_by="<!channel>")
    view, _ = render(gated(denied))
    joined = " ".join(all_texts(view["blocks"]))
    assert "<!channel>" not in joined and "&lt;!channel&gt;" in joined


def test_old_snapshots_without_gates_still_render_their_actions() -> None:
    """A snapshot from a worker without gates shows ``actions`` as before, and no assurance line."""
    view, text = render(snapshot(CaseState.VERIFIED, verified=VERIFIED, actions=[ActionKind.UNLOCK]))
    assert [b["value"] for b in elements(view, ui.ACTION_RUN)] == ["unlock"]
    assert "Assurance:" not in text


@pytest.mark.parametrize(
    ("level", "badge"),
    [
        ("high", ":rotating_light: *High risk*"),
        ("medium", ":large_yellow_circle: *Medium risk*"),
        ("low", ":large_green_circle: *Low risk*"),
        ("unknown", ":white_circle: *Risk unknown*"),
    ],
)
def test_risk_panel_in_factors_and_verified_views(level: str, badge: str) -> None:
    """The risk panel shows its level, at most 5 signals and the note, in the factor list and the verified view."""
    summary = risk(level, n_signals=7, note="The System Log could not be read in time.")
    for snap in (snapshot(CaseState.FACTORS, risk=summary), gated(allowed(ActionKind.UNLOCK), risk=summary)):
        _, text = render(snap)
        assert badge in text
        assert "Signal 4:" in text and "Signal 5:" not in text and "+2 more" in text
        assert "The System Log could not be read in time." in text


def test_no_risk_panel_without_a_risk_summary() -> None:
    """Without ``snapshot.risk`` there is no risk panel."""
    _, text = render(snapshot(CaseState.FACTORS))
    assert "risk" not in text.lower()


def test_factor_list_shows_each_factors_level() -> None:
    """Each factor says what it proves (strong, possession, weak) instead of a weak warning."""
    levels = [AssuranceLevel.STRONG, AssuranceLevel.POSSESSION, AssuranceLevel.WEAK]
    found = [f.model_copy(update={"level": lvl}) for f, lvl in zip(factors(3)[:3], levels, strict=True)]
    _, text = render(snapshot(CaseState.FACTORS, factors=found))
    assert ":large_green_circle: strong" in text
    assert ":large_yellow_circle: possession" in text
    assert ":warning: weak" in text
    assert "combine with another check" not in text


def test_a_step_up_lists_what_is_verified_so_far_on_top() -> None:
    """During a step-up (proofs present) the factor list starts with "Verified so far: …"."""
    sms = proof("SMS", AssuranceLevel.POSSESSION, factor_id="f1")
    view, text = render(snapshot(CaseState.FACTORS, proofs=[sms]))
    assert view["blocks"][0]["type"] == "context"
    assert "Verified so far: SMS (possession)" in text
    assert "Which other factor" in text
    _, plain_text = render(snapshot(CaseState.FACTORS))
    assert "Verified so far" not in plain_text


@pytest.mark.parametrize(
    ("factor_type", "callback", "max_length", "hint"),
    [
        ("sms", ui.CALLBACK_CODE, 12, "Type exactly what the caller reads out"),
        ("token:software:totp", ui.CALLBACK_CODE, 12, "Type exactly what the caller reads out"),
        ("token", ui.CALLBACK_TOKEN_CODE, 16, "PIN, then tokencode"),
        ("token:hardware", ui.CALLBACK_YUBIKEY, 44, "Touch the YubiKey in a text field, or type the 44 characters"),
    ],
)
def test_code_entry_says_which_shape_of_code_to_expect(
    factor_type: str, callback: str, max_length: int, hint: str
) -> None:
    """The code view's callback id names the code's shape for the gateway; length and hint fit that shape."""
    snap = snapshot(CaseState.CHALLENGE_SENT, challenge=challenge("code", factor_type=factor_type))
    view, _ = render(snap)
    assert view["callback_id"] == callback
    [block] = [b for b in view["blocks"] if b["type"] == "input"]
    assert block["element"]["max_length"] == max_length
    assert hint in block["hint"]["text"]


def test_answers_keep_the_answer_callback() -> None:
    """Security questions and attribute checks still submit as CALLBACK_ANSWER."""
    for kind in ("answer", "attribute"):
        view, _ = render(snapshot(CaseState.CHALLENGE_SENT, challenge=challenge(kind)))
        assert view["callback_id"] == ui.CALLBACK_ANSWER


def test_temporary_access_code_view_says_until_when() -> None:
    """A Temporary Access Code is shown once like a password, titled as such, with its end."""
    show = ShowTempPassword(
        case_id="case-1",
        revision=7,
        agent=Actor(user_id="U0AGENT01"),
        view=None,
        target_login="jane.doe@example.com",
        temp_password=SecretStr("483920175"),
        case_token=TOKEN,
        kind="temp_access_code",
        expires_at=NOW + timedelta(hours=1),
    )
    view = views.render_temp_password(show)
    _validate_view(view, allowed_types=("modal",))
    text = FakeSlack.render_text(view)
    [header] = [b["text"]["text"] for b in view["blocks"] if b["type"] == "header"]
    assert header == "🔑 Temporary access code"
    assert "483920175" in text and "shown only this once" in text
    assert "Valid until" in text and "new password" not in text
    assert elements(view, ui.ACTION_REFRESH)


def test_a_disputed_case_shows_a_red_banner() -> None:
    """When the user said "This wasn't me", every view of the case starts with the red banner."""
    for state in (CaseState.VERIFIED, CaseState.CLOSED):
        view, text = render(snapshot(state, verified=VERIFIED, disputed=True))
        assert "The user reported this change as not theirs: sessions were ended and security alerted." in text
        assert ":red_circle:" in view["blocks"][0]["text"]["text"]
    _, text = render(snapshot(CaseState.VERIFIED, verified=VERIFIED))
    assert "not theirs" not in text


def test_push_rejected_says_what_the_worker_says() -> None:
    """The rejected view renders the worker's notice once, and claims no alert the worker did not make."""
    notice = Notice(level="error", text="The push was rejected. Security has been alerted.")
    _, text = render(snapshot(CaseState.REJECTED, notice=notice))
    assert text.count("Security has been alerted.") == 1
    _, text = render(snapshot(CaseState.REJECTED))
    assert "alerted" not in text
    assert "do not reset anything" in text


def every_new_view(long: bool) -> list[CaseSnapshot]:
    """Snapshots with proofs, gates of every kind, risk and a dispute; long texts when ``long``."""
    text = LONG * 5 if long else "a strong factor"
    gates = [
        allowed(ActionKind.TEMP_PASSWORD),
        allowed(ActionKind.TEMP_ACCESS_CODE),
        needs_proof(ActionKind.UNLOCK).model_copy(update={"needs": text, "has": text}),
        needs_approval(ActionKind.RESET_FACTOR),
        needs_approval(ActionKind.RESET_ALL_FACTORS, ApprovalStatus.REQUESTED, decided_by=APPROVER),
        needs_approval(ActionKind.REVOKE_SESSIONS, ApprovalStatus.EXPIRED).model_copy(update={"needs": text}),
        needs_proof(ActionKind.RESET_LINK),
    ]
    summary = RiskSummary(level="high", signals=[text] * 12, checked_at=NOW, note=text)
    proofs = [proof(LONG if long else "Okta Verify push")] * 30
    assurance = LONG if long else "strong"
    return [
        snapshot(CaseState.FACTORS, long, 150, risk=summary, proofs=proofs, disputed=True),
        snapshot(
            CaseState.VERIFIED,
            long,
            150,
            verified=VERIFIED,
            gates=gates,
            proofs=proofs,
            assurance=assurance,
            risk=summary,
            disputed=True,
            notice=Notice(level="info", text=text),
        ),
        snapshot(CaseState.CHALLENGE_SENT, long, 150, challenge=challenge("code", factor_type="token:hardware")),
    ]


@pytest.mark.parametrize("long", [False, True])
def test_new_views_fit_slacks_limits(long: bool) -> None:
    """Gates, proofs, risk and disputes render within Slack's limits, and slack_sdk's View accepts them again."""
    for snap in every_new_view(long):
        view = views.render_case(snap, now=NOW)
        assert len(view["blocks"]) <= 100
        for text in all_texts(view["blocks"]):
            assert len(text) <= 3000
        _validate_view(view, allowed_types=("modal",))
        assert View(**view).to_dict() == view
