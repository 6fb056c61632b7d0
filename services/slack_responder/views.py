"""Block Kit for every case state, the one-time temporary password, App Home and small messages.

Pure functions: data in, a Slack view dict out. Every view is built with ``slack_sdk.models`` and
returned through ``View.to_dict()``, which enforces Slack's limits (title ≤ 24 chars, ≤ 100 blocks,
private_metadata ≤ 3000, text lengths) before anything is sent; our own texts are clipped to fit,
so long names or many factors shorten the view rather than break it.

    view = render_case(snapshot)                   # the modal for snapshot.state
    view = render_temp_password(show)              # shown once, then "Done" → RefreshCase
    home = render_home(home_snapshot, HomeStatus(slack="ok", nats="connected"))

Every modal carries ``private_metadata = case_token`` and the ids of ``shared/ui.py``; only the code
and answer views have a submit button (``ui.code_callback()`` for codes, ``CALLBACK_ANSWER``).

The worker decides what may be done: the verified view draws ``snapshot.gates`` (each offered action,
allowed or what it still needs) and never works out a policy of its own.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    DividerBlock,
    ExternalDataSelectElement,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from services.slack_responder.blockkit import install_validator_cache
from shared import ui
from shared.messages import (
    ActionGate,
    ActionKind,
    ActionResult,
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
    RiskSummary,
    ShowTempPassword,
    UserCard,
)

install_validator_cache()  # slack_sdk validation, looked up once per class (blockkit.py)

TITLE = "Helpdesk Verify"
MAX_BLOCKS = 100
SECTION_TEXT = 3000
HEADER_TEXT = 150
BUTTON_TEXT = 75
FIELD_TEXT = 2000
MAX_USABLE_FACTORS = 40  # each is one block; the rest of the view needs room too
MAX_RESET_FACTORS = 20
MAX_RECENT = 10
CODE_MAX_LENGTH = 12
ANSWER_MAX_LENGTH = 200
MAX_RISK_SIGNALS = 5
MAX_PROOFS = 20

ACTION_LABELS: dict[ActionKind, tuple[str, str]] = {
    ActionKind.TEMP_ACCESS_CODE: (
        "Issue temporary access code",
        "Okta issues a one-time code the caller signs in with; shown to you once.",
    ),
    ActionKind.TEMP_PASSWORD: (
        "Set temporary password",
        "Okta generates a one-time password for you to read out; it must be changed at next sign-in.",
    ),
    ActionKind.RESET_LINK: ("Email reset link", "Okta emails a password reset link to the user's primary email."),
    ActionKind.UNLOCK: ("Unlock account", "The account is locked out: unlock it so the caller can sign in again."),
    ActionKind.RESET_ALL_FACTORS: (
        "Reset all factors",
        "Removes every enrolled factor: the caller enrolls again at next sign-in.",
    ),
    ActionKind.REVOKE_SESSIONS: ("Sign out everywhere", "Ends every Okta session of the user, on every device."),
}
DANGEROUS = frozenset({ActionKind.RESET_ALL_FACTORS, ActionKind.REVOKE_SESSIONS, ActionKind.RESET_FACTOR})
RESET_FACTOR_LABEL = ("Reset one factor", "The caller enrolls it again at next sign-in.")

STATUS_BADGES = {
    "ACTIVE": ":large_green_circle: Active",
    "LOCKED_OUT": ":lock: Locked out",
    "SUSPENDED": ":double_vertical_bar: Suspended",
    "PASSWORD_EXPIRED": ":hourglass: Password expired",
    "RECOVERY": ":recycle: In recovery",
    "PROVISIONED": ":hatching_chick: Not yet activated",
    "STAGED": ":hatching_chick: Staged",
    "DEPROVISIONED": ":no_entry: Deactivated",
}
SLACK_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
NOTICE_ICONS = {"info": ":information_source:", "warning": ":warning:", "error": ":x:"}
RISK_BADGES = {
    "high": ":rotating_light: *High risk*",
    "medium": ":large_yellow_circle: *Medium risk*",
    "low": ":large_green_circle: *Low risk*",
    "unknown": ":white_circle: *Risk unknown*",
}
LEVEL_BADGES = {
    AssuranceLevel.STRONG: ":large_green_circle: strong",
    AssuranceLevel.POSSESSION: ":large_yellow_circle: possession",
    AssuranceLevel.WEAK: ":warning: weak",
}
NOTHING_VERIFIED = CaseSnapshot.model_fields["assurance"].default
DISPUTED_TEXT = "The user reported this change as not theirs: sessions were ended and security alerted."


# ---------------------------------------------------------------------------------------------
# Text helpers


def clip(text: str, limit: int) -> str:
    """``text`` shortened to ``limit`` characters, ending in an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"


def esc(text: str) -> str:
    """Escape user-controlled text for mrkdwn, so a name cannot forge a link or a mention."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def md(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=clip(text, SECTION_TEXT))


def plain(text: str, limit: int = SECTION_TEXT) -> PlainTextObject:
    return PlainTextObject(text=clip(text, limit), emoji=True)


def when(at: datetime, fmt: str = "{date_short_pretty} {time}") -> str:
    """A Slack date token: shown in the reader's own time zone, with a UTC fallback."""
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    fallback = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(at.timestamp())}^{fmt}|{fallback}>"


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


# ---------------------------------------------------------------------------------------------
# Building blocks


def _section(text: str, accessory: Any = None, block_id: str | None = None) -> SectionBlock:
    return SectionBlock(text=md(text), accessory=accessory, block_id=block_id)


def _context(*texts: str) -> ContextBlock:
    return ContextBlock(elements=[md(t) for t in texts if t][:10] or [md(" ")])


def _header(text: str) -> HeaderBlock:
    return HeaderBlock(text=plain(text, HEADER_TEXT))


def _button(
    text: str,
    action_id: str,
    value: str | None = None,
    style: str | None = None,
    confirm: ConfirmObject | None = None,
    url: str | None = None,
) -> ButtonElement:
    return ButtonElement(
        text=plain(text, BUTTON_TEXT),
        action_id=action_id,
        value=value,
        style=style,
        confirm=confirm,
        url=url,
    )


def _modal(
    case_token: str,
    blocks: Sequence[Block],
    callback_id: str = ui.CALLBACK_CASE,
    submit: str | None = None,
) -> dict[str, Any]:
    """The modal around ``blocks``; ``View.to_dict()`` validates it against Slack's limits."""
    kept = list(blocks)
    if len(kept) > MAX_BLOCKS:
        kept = [*kept[: MAX_BLOCKS - 1], _context("_Some items were left out to fit Slack's limits._")]
    view = View(
        type="modal",
        callback_id=callback_id,
        title=plain(TITLE, 24),
        close=plain("Close", 24),
        submit=plain(submit, 24) if submit else None,
        private_metadata=case_token,
        blocks=kept,
        # Closing the modal closes the case (the gateway turns view_closed into CloseCase),
        # so a pending push stops being polled and the audit thread gets its outcome.
        notify_on_close=True,
    )
    result: dict[str, Any] = view.to_dict()
    return result


def notice_blocks(notice: Notice | None) -> list[Block]:
    """A notice from the worker (Okta down, rate limited, a warning) at the top of the view."""
    if notice is None:
        return []
    text = f"{NOTICE_ICONS.get(notice.level, '')} {esc(notice.text)}".strip()
    if notice.retry_in is not None and notice.retry_in > 0:
        text += f" — retrying in {math.ceil(notice.retry_in)} s"
    return [_section(text), DividerBlock()]


def user_card_blocks(target: UserCard, compact: bool = False) -> list[Block]:
    """Who the caller claims to be: name, login, status, last login, protected badge."""
    name = esc(clip(target.display_name, 200))
    login = esc(clip(target.login, 300))
    status = STATUS_BADGES.get(target.status, esc(target.status.replace("_", " ").title()))
    if compact:
        return [_context(f":bust_in_silhouette: *{name}* · {login} · {status}")]
    fields = [
        md(f"*Login*\n{login}"),
        md(f"*Status*\n{status}"),
        md(f"*Last sign-in*\n{when(target.last_login) if target.last_login else 'never'}"),
    ]
    if target.email and target.email != target.login:
        fields.insert(1, md(f"*Email*\n{esc(clip(target.email, 300))}"))
    blocks: list[Block] = [
        SectionBlock(text=md(f":bust_in_silhouette: *{name}*"), fields=[clip_field(f) for f in fields]),
    ]
    if target.protected:
        blocks.append(_context(":shield: Protected user: can be verified here, but resets go to an administrator."))
    return blocks


def clip_field(field: MarkdownTextObject) -> MarkdownTextObject:
    return MarkdownTextObject(text=clip(field.text, FIELD_TEXT))


def _factor_verb(factor: FactorOption) -> str:
    kind = factor.factor_type
    if kind == "push":
        return "Send push"
    if kind in {"sms", "call", "email"}:
        return "Call me" if kind == "call" else "Send code"
    if kind == "question":
        return "Ask question"
    if kind.startswith("token") or kind == "totp" or kind == "hotp":
        return "Enter code"
    if factor.id.startswith(ui.ATTRIBUTE_PREFIX) or kind == "attribute":
        return "Check"
    return "Use"


def factor_level(factor: FactorOption) -> AssuranceLevel | None:
    """What verifying ``factor`` proves; an older snapshot only says whether it is weak."""
    if factor.level is not None:
        return factor.level
    return AssuranceLevel.WEAK if factor.weak else None


def _factor_text(factor: FactorOption) -> str:
    text = f"*{esc(clip(factor.label, 200))}*"
    if factor.hint:
        text += f"  `{esc(clip(factor.hint, 100))}`"
    details = []
    if factor.provider:
        details.append(f"_{esc(clip(factor.provider.replace('_', ' ').title(), 100))}_")
    level = factor_level(factor)
    if level is not None:
        details.append(LEVEL_BADGES[level])
    if details:
        text += "\n" + " · ".join(details)
    return text


def factor_blocks(factors: Sequence[FactorOption]) -> list[Block]:
    """A button per usable factor; the unusable ones listed once, each with its reason."""
    usable = [f for f in factors if f.usable]
    unusable = [f for f in factors if not f.usable]
    blocks: list[Block] = []
    if not usable:
        blocks.append(_section(":warning: No enrolled factor can be used to verify this caller here."))
    for index, factor in enumerate(usable[:MAX_USABLE_FACTORS]):
        blocks.append(
            _section(
                _factor_text(factor),
                accessory=_button(_factor_verb(factor), ui.ACTION_CHALLENGE, value=factor.id, style="primary"),
                block_id=f"factor_{index}",
            )
        )
    if len(usable) > MAX_USABLE_FACTORS:
        blocks.append(_context(f"+{len(usable) - MAX_USABLE_FACTORS} more factors not shown"))
    if unusable:
        lines = [
            f"• {esc(clip(f.label, 100))}: {esc(clip(f.reason or 'cannot be used from the help desk', 200))}"
            for f in unusable
        ]
        blocks.append(_section("*Not usable here*\n" + clip("\n".join(lines), SECTION_TEXT - 20)))
    return blocks


def risk_blocks(risk: RiskSummary | None) -> list[Block]:
    """What Okta says about the target (System Log, user risk): a badge, a few signals, the note."""
    if risk is None:
        return []
    lines = [f"{RISK_BADGES.get(risk.level, RISK_BADGES['unknown'])} · checked {when(risk.checked_at, '{time}')}"]
    lines += [f"• {esc(clip(signal, 300))}" for signal in risk.signals[:MAX_RISK_SIGNALS]]
    if len(risk.signals) > MAX_RISK_SIGNALS:
        lines.append(f"_+{len(risk.signals) - MAX_RISK_SIGNALS} more in the Okta System Log_")
    blocks: list[Block] = [_section(clip("\n".join(lines), SECTION_TEXT))]
    if risk.note:
        blocks.append(_context(f"_{esc(clip(risk.note, 500))}_"))
    return blocks


def _proof_label(proof: Proof) -> str:
    return f"{esc(clip(proof.label, 100))} ({proof.level.value})"


def proof_lines(proofs: Sequence[Proof], now: datetime) -> str:
    """One line per verified factor: what it proves, when, and until when it counts."""
    lines = []
    for proof in proofs[-MAX_PROOFS:]:
        valid = (
            f"valid until {when(proof.expires_at, '{time}')}"
            if proof.expires_at > now
            else f"expired {when(proof.expires_at, '{time}')}"
        )
        lines.append(
            f"• *{esc(clip(proof.label, 200))}* · {LEVEL_BADGES[proof.level]} · "
            f"verified {when(proof.at, '{time}')} · {valid}"
        )
    return "\n".join(lines)


def disputed_blocks(snapshot: CaseSnapshot) -> list[Block]:
    if not snapshot.disputed:
        return []
    return [_section(f":red_circle: *{DISPUTED_TEXT}*"), DividerBlock()]


# ---------------------------------------------------------------------------------------------
# One render function per case state


def render_checking(snapshot: CaseSnapshot) -> list[Block]:
    return [
        _section(":hourglass_flowing_sand: *Checking your access…*"),
        _context("Your Slack account is matched to Okta and your help-desk group membership is checked."),
    ]


def render_denied(snapshot: CaseSnapshot) -> list[Block]:
    reason = esc(snapshot.denial_reason or "You are not a member of the help-desk group in Okta.")
    return [
        _header("⛔ Not authorized"),
        _section(reason),
        _context("Ask an Okta administrator to add you to the help-desk group, then try again."),
    ]


def render_search(snapshot: CaseSnapshot) -> list[Block]:
    query = snapshot.query.strip()
    placeholder = f"Type a name, login or email (e.g. {clip(query, 40)})" if query else "Type a name, login or email"
    blocks: list[Block] = [_section("*Who is calling?* Find the caller's Okta account.")]
    if query:
        # An external_select cannot be pre-filled with typed text: show what was asked for instead.
        blocks.append(_context(f":mag: Searching for: *{esc(clip(query, 200))}* — type at least 3 characters below."))
    blocks.append(
        ActionsBlock(
            block_id=ui.BLOCK_USER_SEARCH,
            elements=[
                ExternalDataSelectElement(
                    action_id=ui.ACTION_SELECT_USER,
                    placeholder=plain(placeholder, 150),
                    min_query_length=3,
                    focus_on_load=True,
                )
            ],
        )
    )
    blocks.append(_context("Deactivated accounts are not listed."))
    if snapshot.suggestions:
        blocks.append(_section(f"*{len(snapshot.suggestions)} users match “{esc(clip(query, 100))}”:*"))
        for n, option in enumerate(snapshot.suggestions[:10]):
            blocks.append(
                _section(
                    esc(clip(option.label, 300)),
                    accessory=_button("Pick", ui.ACTION_PICK_USER, value=option.id),
                    block_id=f"suggestion_{n}",
                )
            )
    blocks.append(
        InputBlock(
            block_id=ui.BLOCK_TICKET,
            optional=True,
            label=plain("Ticket", 2000),
            element=PlainTextInputElement(
                action_id=ui.ACTION_TICKET,
                initial_value=snapshot.ticket or None,
                max_length=40,
                placeholder=plain("INC0012345 or HELP-123", 150),
            ),
            hint=plain("Goes into every audit event of the case, and the ticket gets a note.", 2000),
        )
    )
    return blocks


def ticket_blocks(snapshot: CaseSnapshot) -> list[Block]:
    """The ticket this case is for, on every view once attached."""
    return [_context(f":ticket: Ticket *{esc(snapshot.ticket)}*")] if snapshot.ticket else []


def render_factors(snapshot: CaseSnapshot, now: datetime | None = None) -> list[Block]:
    now = _now(now)
    blocks: list[Block] = []
    if snapshot.proofs:
        # A step-up: the case keeps what it has verified, and asks for one more factor.
        so_far = ", ".join(_proof_label(p) for p in snapshot.proofs if p.expires_at > now) or "nothing still valid"
        blocks.append(_context(f":white_check_mark: Verified so far: {clip(so_far, 2500)}"))
    if snapshot.target is not None:
        blocks.extend(user_card_blocks(snapshot.target))
    blocks.extend(risk_blocks(snapshot.risk))
    blocks.append(DividerBlock())
    if snapshot.proofs:
        blocks.append(_section("*Which other factor should the caller verify?*"))
    else:
        blocks.append(_section("*How should the caller prove it's them?*"))
    blocks.extend(factor_blocks(snapshot.factors))
    if snapshot.escalation:
        blocks.append(_context(f":shield: {esc(snapshot.escalation)}"))
    blocks.append(ActionsBlock(elements=[_button("Search again", ui.ACTION_BACK_TO_SEARCH)]))
    return blocks


def render_push_wait(snapshot: CaseSnapshot, challenge: ChallengeInfo, now: datetime | None = None) -> list[Block]:
    now = _now(now)
    name = esc(clip(snapshot.target.display_name if snapshot.target else "the caller", 200))
    device = f" ({esc(clip(challenge.hint, 100))})" if challenge.hint else ""
    blocks: list[Block] = []
    if challenge.correct_answer is not None:
        blocks.append(_section(f":iphone: Push sent to {name}{device}. Ask them to tap this number in Okta Verify:"))
        blocks.append(_header(f"{challenge.correct_answer}"))
    else:
        blocks.append(_section(f":iphone: Push sent to {name}{device}. Ask them to approve it in Okta Verify."))
    elapsed = (now - challenge.sent_at).total_seconds()
    timing = [f":stopwatch: Waiting {duration(elapsed)}", f"sent {when(challenge.sent_at, '{time_secs}')}"]
    if challenge.expires_at is not None:
        left = (challenge.expires_at - now).total_seconds()
        timing.append(f"expires in {duration(left)}" if left > 0 else "expiring now")
    blocks.append(_context(" · ".join(timing)))
    blocks.append(_context("Never read the number to anyone who called *you* asking for it."))
    blocks.append(ActionsBlock(elements=[_button("Cancel push", ui.ACTION_CANCEL, style="danger")]))
    return blocks


def code_callback(challenge: ChallengeInfo) -> str:
    """The callback id that tells the gateway which shape of code (or free answer) to accept."""
    return ui.code_callback(challenge.factor_type) if challenge.kind == "code" else ui.CALLBACK_ANSWER


CODE_HINT = "Type exactly what the caller reads out, then press Verify."
# callback id → (input label, max length, hint): the gateway checks the same shape on submit.
CODE_SHAPES: dict[str, tuple[str, int, str]] = {
    ui.CALLBACK_CODE: ("Code", CODE_MAX_LENGTH, CODE_HINT),
    ui.CALLBACK_TOKEN_CODE: (
        "Passcode",
        ui.TOKEN_CODE_MAX_LENGTH,
        "Type the digits the caller reads out (for RSA SecurID: PIN, then tokencode), then press Verify.",
    ),
    ui.CALLBACK_YUBIKEY: (
        "YubiKey OTP",
        ui.YUBIKEY_OTP_LENGTH,
        "Touch the YubiKey in a text field, or type the 44 characters it types.",
    ),
}


def render_code_entry(snapshot: CaseSnapshot, challenge: ChallengeInfo, now: datetime | None = None) -> list[Block]:
    now = _now(now)
    label = esc(clip(challenge.label, 200))
    hint = f" `{esc(clip(challenge.hint, 100))}`" if challenge.hint else ""
    input_hint = CODE_HINT
    if challenge.kind == "code":
        callback = code_callback(challenge)
        if challenge.factor_type in {"sms", "call", "email"}:
            intro = f":incoming_envelope: Code sent by *{label}*{hint}. Ask the caller to read it out."
        elif callback == ui.CALLBACK_YUBIKEY:
            intro = (
                f":key: Ask the caller to touch *{label}*{hint} in a text field and read out "
                f"the {ui.YUBIKEY_OTP_LENGTH} characters it types."
            )
        else:
            intro = f":key: Ask the caller for the current code of *{label}*{hint}."
        input_label, max_length, input_hint = CODE_SHAPES[callback]
    elif challenge.kind == "attribute":
        intro = f":card_index: Ask the caller for their *{label}*. It is compared with Okta; it is never shown."
        input_label, max_length = f"{clip(challenge.label, 60)} as the caller says it", ANSWER_MAX_LENGTH
    else:
        intro = f":speech_balloon: Ask the caller their security question: *{label}*"
        input_label, max_length = "The caller's answer", ANSWER_MAX_LENGTH
    blocks: list[Block] = []
    if snapshot.target is not None:
        blocks.extend(user_card_blocks(snapshot.target, compact=True))
    blocks.append(_section(intro))
    blocks.append(
        InputBlock(
            block_id=ui.BLOCK_CODE,
            label=plain(input_label, 2000),
            element=PlainTextInputElement(action_id=ui.ACTION_CODE, max_length=max_length, focus_on_load=True),
            hint=plain(input_hint, 2000),
        )
    )
    facts = []
    if challenge.attempts_left:
        facts.append(f"{challenge.attempts_left} attempt{'s' if challenge.attempts_left != 1 else ''} left")
    if challenge.expires_at is not None and challenge.expires_at > now:
        facts.append(f"code valid until {when(challenge.expires_at, '{time}')}")
    if facts:
        blocks.append(_context(" · ".join(facts)))
    buttons = [_button("Use another factor", ui.ACTION_CANCEL)]
    if challenge.can_resend:
        wait = (challenge.resend_available_at - now).total_seconds() if challenge.resend_available_at else 0
        if wait > 0:
            blocks.append(_context(f":hourglass: Resend possible in {math.ceil(wait)} s"))
        else:
            buttons.insert(0, _button("Resend", ui.ACTION_RESEND))
    blocks.append(ActionsBlock(elements=buttons))
    return blocks


def action_name(kind: ActionKind) -> str:
    if kind is ActionKind.RESET_FACTOR:
        return RESET_FACTOR_LABEL[0]
    if kind in ACTION_LABELS:
        return ACTION_LABELS[kind][0]
    return kind.value.replace("_", " ").capitalize()


def mention(user_id: str | None) -> str:
    """``<@U…>`` for a Slack user id; anything else is shown as text, so it cannot forge a link."""
    if user_id and SLACK_USER_ID.fullmatch(user_id):
        return f"<@{user_id}>"
    return esc(user_id or "someone")


def _resettable(snapshot: CaseSnapshot) -> list[FactorOption]:
    # A profile-attribute check is not an enrolled factor: there is nothing to reset.
    return [f for f in snapshot.factors if not f.id.startswith(ui.ATTRIBUTE_PREFIX)]


def _factor_line(factor: FactorOption) -> str:
    return f"*{esc(clip(factor.label, 200))}*" + (f"  `{esc(clip(factor.hint, 100))}`" if factor.hint else "")


def _action_block(kind: ActionKind, index: int) -> SectionBlock:
    label, description = ACTION_LABELS[kind]
    confirm = None
    if kind in DANGEROUS:
        confirm = ConfirmObject(title=plain("Are you sure?", 100), text=md(description), confirm="Yes", deny="No")
    return _section(
        f"*{label}*\n{description}",
        accessory=_button(label, ui.ACTION_RUN, value=kind.value, style="danger" if confirm else None, confirm=confirm),
        block_id=f"action_{index}",
    )


def _reset_buttons(factors: Sequence[FactorOption]) -> list[Block]:
    blocks: list[Block] = [_section(f"*{RESET_FACTOR_LABEL[0]}*\n{RESET_FACTOR_LABEL[1]}")]
    for n, factor in enumerate(factors[:MAX_RESET_FACTORS]):
        label = f"Reset {clip(factor.label, 50)}"
        blocks.append(
            _section(
                _factor_line(factor),
                accessory=_button(
                    "Reset",
                    ui.ACTION_RUN,
                    value=f"{ui.RESET_FACTOR_PREFIX}{factor.id}",
                    style="danger",
                    confirm=ConfirmObject(
                        title=plain("Reset this factor?", 100),
                        text=md(f"{esc(label)}: the caller must enroll it again."),
                        confirm="Reset",
                        deny="Cancel",
                    ),
                ),
                block_id=f"reset_factor_{n}",
            )
        )
    return blocks


def _allowed_blocks(kind: ActionKind, index: int, snapshot: CaseSnapshot) -> list[Block]:
    """The button(s) that run ``kind``: one, or one per resettable factor for RESET_FACTOR."""
    if kind is ActionKind.RESET_FACTOR:
        resettable = _resettable(snapshot)
        return _reset_buttons(resettable) if resettable else []
    if kind in ACTION_LABELS:
        return [_action_block(kind, index)]
    return []


def _approval_state(approval: ApprovalInfo | None, snapshot: CaseSnapshot) -> str | None:
    """A line for a pending, denied or expired approval; None when a request may be sent."""
    if approval is None:
        return None
    factor = ""
    if approval.factor_id:
        names = {f.id: f.label for f in snapshot.factors}
        factor = f" (for {esc(clip(names.get(approval.factor_id, approval.factor_id), 100))})"
    if approval.status is ApprovalStatus.REQUESTED:
        return f":hourglass_flowing_sand: Waiting for approval{factor} — expires {when(approval.expires_at, '{time}')}"
    if approval.status is ApprovalStatus.DENIED:
        at = f" at {when(approval.decided_at, '{time}')}" if approval.decided_at else ""
        return f":no_entry: Denied by {mention(approval.decided_by)}{factor}{at}"
    return None


def _approval_blocks(gate: ActionGate, index: int, snapshot: CaseSnapshot) -> list[Block]:
    """An action whose proofs suffice and which waits only for a second person's approval."""
    name = action_name(gate.action)
    text = f"*{esc(name)}* · :busts_in_silhouette: needs an approval\n_Needs {esc(clip(gate.needs, 500))}_"
    pending = _approval_state(gate.approval, snapshot)
    if pending is not None:
        return [_section(text, block_id=f"gate_{index}"), _context(pending)]
    blocks: list[Block] = []
    expired = gate.approval is not None and gate.approval.status is ApprovalStatus.EXPIRED
    label = "Request approval again" if expired else "Request approval"
    if gate.action is ActionKind.RESET_FACTOR:
        blocks.append(_section(text, block_id=f"gate_{index}"))
        for n, factor in enumerate(_resettable(snapshot)[:MAX_RESET_FACTORS]):
            value = f"{ui.RESET_FACTOR_PREFIX}{factor.id}"
            button = _button(label, ui.ACTION_REQUEST_APPROVAL, value=value)
            blocks.append(_section(_factor_line(factor), accessory=button, block_id=f"approve_factor_{n}"))
    else:
        button = _button(label, ui.ACTION_REQUEST_APPROVAL, value=gate.action.value)
        blocks.append(_section(text, accessory=button, block_id=f"gate_{index}"))
    if expired and gate.approval is not None:
        blocks.append(_context(f":hourglass: The last request expired at {when(gate.approval.expires_at, '{time}')}."))
    return blocks


def _missing_proof(gate: ActionGate) -> bool:
    return not gate.allowed and not gate.approval_needed


def ordered_gates(gates: Sequence[ActionGate]) -> list[ActionGate]:
    """The worker's order, except that a temporary access code comes before a temporary password."""
    ordered = list(gates)
    kinds = [g.action for g in ordered]
    if ActionKind.TEMP_ACCESS_CODE in kinds and ActionKind.TEMP_PASSWORD in kinds:
        tac = ordered.pop(kinds.index(ActionKind.TEMP_ACCESS_CODE))
        ordered.insert([g.action for g in ordered].index(ActionKind.TEMP_PASSWORD), tac)
    return ordered


def gate_blocks(snapshot: CaseSnapshot) -> list[Block]:
    """Each offered action as the worker's policy sees it: a button, a request for approval, or what is missing."""
    blocks: list[Block] = []
    missing: list[str] = []
    for index, gate in enumerate(ordered_gates(snapshot.gates)):
        if gate.allowed:
            blocks.extend(_allowed_blocks(gate.action, index, snapshot))
        elif gate.approval_needed:
            blocks.extend(_approval_blocks(gate, index, snapshot))
        else:
            missing.append(
                f":lock: *{esc(action_name(gate.action))}* needs {esc(clip(gate.needs, 500))} — "
                f"verified so far: {esc(clip(gate.has, 300))}"
            )
    if missing:
        # One context block holds at most 10 elements: several lines share one element.
        blocks.append(_context(*[clip("\n".join(missing[i : i + 5]), SECTION_TEXT) for i in range(0, len(missing), 5)]))
    if any(_missing_proof(g) for g in snapshot.gates):
        blocks.append(
            ActionsBlock(
                block_id="step_up",
                elements=[_button("Verify another factor", ui.ACTION_STEP_UP, style="primary")],
            )
        )
    return blocks


def action_blocks(snapshot: CaseSnapshot) -> list[Block]:
    """The actions the worker offers: ``snapshot.gates``, or ``snapshot.actions`` from an older worker."""
    if snapshot.gates:
        return gate_blocks(snapshot)
    blocks: list[Block] = []
    for index, kind in enumerate(snapshot.actions):
        blocks.extend(_allowed_blocks(kind, index, snapshot))
    return blocks


def result_blocks(results: Sequence[ActionResult]) -> list[Block]:
    if not results:
        return []
    lines = [
        f"{':white_check_mark:' if r.ok else ':x:'} {esc(clip(r.message, 300))} · {when(r.at, '{time}')}"
        for r in results[-20:]
    ]
    return [_section("*Done so far*\n" + clip("\n".join(lines), SECTION_TEXT - 20))]


def render_verified(snapshot: CaseSnapshot, now: datetime | None = None) -> list[Block]:
    now = _now(now)
    blocks: list[Block] = []
    if snapshot.target is not None:
        blocks.extend(user_card_blocks(snapshot.target, compact=True))
    blocks.extend(risk_blocks(snapshot.risk))
    verified = snapshot.verified
    if verified is not None:
        how = esc(clip(verified.method, 200))
        blocks.append(_header("✅ Caller verified"))
        text = f"Verified by <@{verified.by_agent}> with *{how}* at {when(verified.at, '{time}')}."
        if verified.expires_at > now:
            text += f" Valid until {when(verified.expires_at, '{time}')} for you and this user only."
        else:
            text += " The verification has expired: verify again before any change."
        blocks.append(_section(text))
    if snapshot.proofs or snapshot.assurance != NOTHING_VERIFIED:
        assurance = f"*Assurance: {esc(clip(snapshot.assurance, 300))}*"
        blocks.append(_section(clip(f"{assurance}\n{proof_lines(snapshot.proofs, now)}".strip(), SECTION_TEXT)))
    blocks.extend(result_blocks(snapshot.results))
    if snapshot.escalation:
        blocks.append(_header("🛡️ Escalate to an administrator"))
        blocks.append(_section(esc(snapshot.escalation)))
    elif snapshot.mode == "verify-only":
        blocks.append(_section("Resets are done in the Okta Admin Console: open the user there."))
    else:
        actions = action_blocks(snapshot)
        if actions:
            blocks.append(DividerBlock())
            blocks.append(_section("*What does the caller need?*"))
            blocks.extend(actions)
        elif not snapshot.results:
            blocks.append(_context("No action applies to this user right now."))
    buttons = [_button("Close case", ui.ACTION_CLOSE)]
    if snapshot.admin_url and (snapshot.mode == "verify-only" or snapshot.escalation):
        buttons.insert(0, _button("Open in Okta Admin", ui.ACTION_OPEN_ADMIN, url=snapshot.admin_url, style="primary"))
    blocks.append(ActionsBlock(elements=buttons))
    return blocks


def render_challenge_outcome(snapshot: CaseSnapshot) -> list[Block]:
    blocks: list[Block] = []
    if snapshot.target is not None:
        blocks.extend(user_card_blocks(snapshot.target, compact=True))
    buttons = [_button("Try another factor", ui.ACTION_CANCEL, style="primary"), _button("Close case", ui.ACTION_CLOSE)]
    if snapshot.state is CaseState.REJECTED:
        blocks.append(_header("🚨 Push rejected"))
        # The worker's notice says what it did (e.g. whether security was alerted): no claim of our own.
        if snapshot.notice is not None:
            blocks.append(
                _section(f"{NOTICE_ICONS.get(snapshot.notice.level, '')} {esc(snapshot.notice.text)}".strip())
            )
        else:
            blocks.append(
                _section(
                    "The push was *denied* on the user's device. If the caller says they did not deny it, "
                    "the account may be under attack: do not reset anything, and tell your security team."
                )
            )
    elif snapshot.state is CaseState.TIMED_OUT:
        blocks.append(_header("⏰ No answer in time"))
        blocks.append(_section("The challenge expired before the caller answered. Try again or use another factor."))
    else:
        blocks.append(_header("❌ Verification failed"))
        reason = snapshot.notice.text if snapshot.notice else "The caller could not be verified."
        blocks.append(_section(esc(reason)))
        buttons = [_button("Close case", ui.ACTION_CLOSE)]
    blocks.append(ActionsBlock(elements=buttons))
    return blocks


def render_closed(snapshot: CaseSnapshot) -> list[Block]:
    blocks: list[Block] = [_section(":file_folder: *Case closed.* You can close this window.")]
    if snapshot.target is not None:
        blocks.extend(user_card_blocks(snapshot.target, compact=True))
    blocks.extend(result_blocks(snapshot.results))
    return blocks


def render_case(snapshot: CaseSnapshot, now: datetime | None = None) -> dict[str, Any]:
    """The modal for ``snapshot`` in its current state (notice on top), validated."""
    state = snapshot.state
    callback_id, submit = ui.CALLBACK_CASE, None
    # The failed and rejected views explain the notice themselves; elsewhere the notice sits on top.
    blocks: list[Block] = disputed_blocks(snapshot)
    if state not in (CaseState.FAILED, CaseState.REJECTED):
        blocks += notice_blocks(snapshot.notice)
    if state is CaseState.OPENED:
        blocks += render_checking(snapshot)
    elif state is CaseState.DENIED:
        blocks += render_denied(snapshot)
    elif state is CaseState.SEARCHING:
        blocks += render_search(snapshot)
        callback_id, submit = ui.CALLBACK_TICKET, "Attach ticket"
    elif state is CaseState.FACTORS:
        blocks += render_factors(snapshot, now)
    elif state is CaseState.CHALLENGE_SENT and snapshot.challenge is not None:
        if snapshot.challenge.kind == "push":
            blocks += render_push_wait(snapshot, snapshot.challenge, now)
        else:
            blocks += render_code_entry(snapshot, snapshot.challenge, now)
            callback_id, submit = code_callback(snapshot.challenge), "Verify"
    elif state is CaseState.VERIFIED:
        blocks += render_verified(snapshot, now)
    elif state in (CaseState.REJECTED, CaseState.TIMED_OUT, CaseState.FAILED):
        blocks += render_challenge_outcome(snapshot)
    elif state is CaseState.CLOSED:
        blocks += render_closed(snapshot)
    else:  # CHALLENGE_SENT without a challenge: nothing sensible to ask yet
        blocks += render_checking(snapshot)
    if state is not CaseState.SEARCHING:
        blocks += ticket_blocks(snapshot)
    return _modal(snapshot.case_token, blocks, callback_id=callback_id, submit=submit)


# ---------------------------------------------------------------------------------------------
# The temporary password (shown once), trouble, ephemeral and App Home


def render_temp_password(show: ShowTempPassword) -> dict[str, Any]:
    """The one view that ever holds a temporary password or a Temporary Access Code; "Done" asks the
    worker to render the case."""
    secret = esc(show.temp_password.get_secret_value())
    login = esc(clip(show.target_login, 300))
    shown_once = (
        "*Read it to the caller now.* It is shown only this once and is not stored anywhere: "
        "after *Done* it cannot be displayed again."
    )
    if show.kind == "temp_access_code":
        title = "🔑 Temporary access code"
        use = "The caller signs in with it once, before it expires."
    else:
        title = "🔑 Temporary password"
        use = "The caller must choose a new password at their next sign-in."
    blocks: list[Block] = [
        _header(title),
        _section(f"For *{login}*:"),
        _section(f"```{secret}```"),
        _section(f"{shown_once} {use} Never send it by chat or email."),
    ]
    if show.kind == "temp_access_code" and show.expires_at:
        blocks.append(_context(f":hourglass: Valid until {when(show.expires_at)}"))
    blocks.append(ActionsBlock(elements=[_button("Done", ui.ACTION_REFRESH, style="primary")]))
    return _modal(show.case_token, blocks)


def render_trouble(case_token: str, detail: str) -> dict[str, Any]:
    """Shown when a step could not be displayed (Slack refused the view): the case is intact."""
    blocks: list[Block] = [
        _section(f":warning: *This step could not be displayed.* {esc(clip(detail, 500))}"),
        _context("The case is safe: try again, or close and reopen the helpdesk."),
        ActionsBlock(
            elements=[_button("Try again", ui.ACTION_REFRESH, style="primary"), _button("Close case", ui.ACTION_CLOSE)]
        ),
    ]
    return _modal(case_token, blocks)


REFUSALS = {
    "expired": (
        ":hourglass: *This case expired — start again.*",
        "A case stays usable for an hour. Nothing was changed by this click.",
    ),
    "wrong_agent": (
        ":no_entry: *This request was refused.*",
        "This case belongs to another agent. Nothing was changed; the security team has been told.",
    ),
    "invalid": (
        ":no_entry: *This request was refused.*",
        "It did not come from a view the help desk made (it was altered). Nothing was changed; "
        "the security team has been told.",
    ),
    "missing": (
        ":no_entry: *This request was refused.*",
        "It carried no case. Nothing was changed; the security team has been told.",
    ),
}


def render_refusal(kind: str) -> dict[str, Any]:
    """The modal after a refused click: what happened, and how to start again."""
    title, detail = REFUSALS.get(kind, REFUSALS["invalid"])
    blocks: list[Block] = [
        _section(title),
        _context(detail),
        _context("Close this window and start a new verification (the slash command or the Home tab)."),
    ]
    return _modal("", blocks)


def expired_trigger_message(query: str = "") -> tuple[str, list[dict[str, Any]]]:
    """The message offered when the modal could not open in time: text and blocks with a re-open button."""
    text = "The helpdesk window could not open in time. Click *Open Helpdesk Verify* to try again."
    blocks: list[Block] = [
        _section(f":hourglass: {text}"),
        ActionsBlock(
            elements=[_button("Open Helpdesk Verify", ui.ACTION_START, value=clip(query, 150) or None, style="primary")]
        ),
    ]
    return text, [b.to_dict() for b in blocks]


@dataclass(frozen=True)
class HomeStatus:
    """The dependencies as this responder last saw them (Okta's comes with the HomeSnapshot)."""

    slack: str = "unknown"
    nats: str = "unknown"


def _status_icon(status: str) -> str:
    lowered = status.lower()
    if lowered in {"ok", "connected", "up", "healthy"}:
        return ":large_green_circle:"
    if lowered == "unknown":
        return ":white_circle:"
    return ":red_circle:"


def render_home(home: HomeSnapshot, status: HomeStatus) -> dict[str, Any]:
    """App Home: start button, the agent's last 10 cases, Okta/Slack/NATS as last seen."""
    blocks: list[Block] = [
        _header("Helpdesk Verify"),
        _section(
            "Prove a caller is who they say before you reset anything: send a challenge to one of "
            "their enrolled Okta factors.",
            accessory=_button("Start a verification", ui.ACTION_START, style="primary"),
        ),
        DividerBlock(),
        _section("*Your recent cases*"),
    ]
    recent = home.recent[:MAX_RECENT]
    if not recent:
        blocks.append(_context("No cases yet."))
    for case in recent:
        who = esc(clip(case.target_login or "no user selected", 200))
        outcome = esc(clip(case.outcome, 300))
        blocks.append(_context(f"*{who}* · {outcome} · {when(case.at)}"))
    okta = home.okta_status
    okta_seen = f" (checked {when(home.okta_checked_at, '{time}')})" if home.okta_checked_at else ""
    blocks += [
        DividerBlock(),
        _context(
            f"{_status_icon(okta)} Okta: {esc(okta)}{okta_seen}",
            f"{_status_icon(status.slack)} Slack: {esc(status.slack)}",
            f"{_status_icon(status.nats)} NATS: {esc(status.nats)}",
        ),
    ]
    view = View(type="home", blocks=blocks[:MAX_BLOCKS])
    result: dict[str, Any] = view.to_dict()
    return result
