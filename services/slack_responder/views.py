"""Block Kit for every case state, the one-time temporary password, App Home and small messages.

Pure functions: data in, a Slack view dict out. Every view is built with ``slack_sdk.models`` and
returned through ``View.to_dict()``, which enforces Slack's limits (title ≤ 24 chars, ≤ 100 blocks,
private_metadata ≤ 3000, text lengths) before anything is sent; our own texts are clipped to fit,
so long names or many factors shorten the view rather than break it.

    view = render_case(snapshot)                   # the modal for snapshot.state
    view = render_temp_password(show)              # shown once, then "Done" → RefreshCase
    home = render_home(home_snapshot, HomeStatus(slack="ok", nats="connected"))

Every modal carries ``private_metadata = case_token`` and the ids of ``shared/ui.py``; only the code
and answer views have a submit button (``CALLBACK_CODE`` / ``CALLBACK_ANSWER``).
"""

from __future__ import annotations

import math
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
    ActionKind,
    ActionResult,
    CaseSnapshot,
    CaseState,
    ChallengeInfo,
    FactorOption,
    HomeSnapshot,
    Notice,
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

ACTION_LABELS: dict[ActionKind, tuple[str, str]] = {
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
NOTICE_ICONS = {"info": ":information_source:", "warning": ":warning:", "error": ":x:"}


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


def _factor_text(factor: FactorOption) -> str:
    text = f"*{esc(clip(factor.label, 200))}*"
    if factor.hint:
        text += f"  `{esc(clip(factor.hint, 100))}`"
    if factor.provider:
        text += f"\n_{esc(clip(factor.provider.replace('_', ' ').title(), 100))}_"
    if factor.weak:
        text += "  :warning: _weak: combine with another check_"
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
    return blocks


def render_factors(snapshot: CaseSnapshot) -> list[Block]:
    blocks: list[Block] = []
    if snapshot.target is not None:
        blocks.extend(user_card_blocks(snapshot.target))
    blocks.append(DividerBlock())
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
    return ui.CALLBACK_CODE if challenge.kind == "code" else ui.CALLBACK_ANSWER


def render_code_entry(snapshot: CaseSnapshot, challenge: ChallengeInfo, now: datetime | None = None) -> list[Block]:
    now = _now(now)
    label = esc(clip(challenge.label, 200))
    hint = f" `{esc(clip(challenge.hint, 100))}`" if challenge.hint else ""
    if challenge.kind == "code":
        if challenge.factor_type in {"sms", "call", "email"}:
            intro = f":incoming_envelope: Code sent by *{label}*{hint}. Ask the caller to read it out."
        else:
            intro = f":key: Ask the caller for the current code of *{label}*{hint}."
        input_label, max_length = "Code", CODE_MAX_LENGTH
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
            hint=plain("Type exactly what the caller reads out, then press Verify.", 2000),
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


def action_blocks(snapshot: CaseSnapshot) -> list[Block]:
    """Only the actions the worker offers (``snapshot.actions``), each with what it does."""
    blocks: list[Block] = []
    for index, kind in enumerate(snapshot.actions):
        # A profile-attribute check is not an enrolled factor: there is nothing to reset.
        resettable = [f for f in snapshot.factors if not f.id.startswith(ui.ATTRIBUTE_PREFIX)]
        if kind is ActionKind.RESET_FACTOR and resettable:
            blocks.append(_section("*Reset one factor*\nThe caller enrolls it again at next sign-in."))
            for n, factor in enumerate(resettable[:MAX_RESET_FACTORS]):
                label = f"Reset {clip(factor.label, 50)}"
                blocks.append(
                    _section(
                        f"*{esc(clip(factor.label, 200))}*"
                        + (f"  `{esc(clip(factor.hint, 100))}`" if factor.hint else ""),
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
        elif kind in ACTION_LABELS:
            blocks.append(_action_block(kind, index))
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
        if verified.weak:
            blocks.append(_context(":warning: Weak method: combine it with another check before any change."))
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
        blocks.append(
            _section(
                "The push was *denied* on the user's device. If the caller says they did not deny it, "
                "the account may be under attack: do not reset anything, and tell your security team "
                "(the security channel has been alerted)."
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
    # The failed view explains the notice itself; elsewhere the notice sits on top.
    blocks: list[Block] = [] if state is CaseState.FAILED else notice_blocks(snapshot.notice)
    if state is CaseState.OPENED:
        blocks += render_checking(snapshot)
    elif state is CaseState.DENIED:
        blocks += render_denied(snapshot)
    elif state is CaseState.SEARCHING:
        blocks += render_search(snapshot)
    elif state is CaseState.FACTORS:
        blocks += render_factors(snapshot)
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
    return _modal(snapshot.case_token, blocks, callback_id=callback_id, submit=submit)


# ---------------------------------------------------------------------------------------------
# The temporary password (shown once), trouble, ephemeral and App Home


def render_temp_password(show: ShowTempPassword) -> dict[str, Any]:
    """The one view that ever holds a temporary password; "Done" asks the worker to render the case."""
    password = esc(show.temp_password.get_secret_value())
    login = esc(clip(show.target_login, 300))
    blocks: list[Block] = [
        _header("🔑 Temporary password"),
        _section(f"For *{login}*:"),
        _section(f"```{password}```"),
        _section(
            "*Read it to the caller now.* It is shown only this once and is not stored anywhere: "
            "after *Done* it cannot be displayed again. The caller must choose a new password at "
            "their next sign-in. Never send it by chat or email."
        ),
        ActionsBlock(elements=[_button("Done", ui.ACTION_REFRESH, style="primary")]),
    ]
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
