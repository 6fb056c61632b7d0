"""Block Kit of the messages to people other than the agent: approvers, target users, security.

Pure functions, one per message: a notice in, ``(text, blocks)`` out, built with slack_sdk's models
so Slack's limits are checked before anything is sent. ``text`` is the notification and
screen-reader line; ``blocks`` are dicts ready for ``chat.postMessage`` / ``chat.update``.

    text, blocks = approval_request(notice)        # Approve / Deny, value = the approval token
    text, blocks = approval_outcome(notice)        # the same facts, the outcome, no buttons
    text, blocks = target_notice(notice)           # "This wasn't me", value = the notice token
    text, blocks = security_notice(notice)         # "Open in Okta Admin" when there is a link

The signed tokens appear only as button values, never in text. Names, logins, notes and free text
from the worker are escaped, so a display name cannot forge a mention or a link.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from services.slack_responder.blockkit import install_validator_cache
from services.slack_responder.views import clip, esc, when
from shared import ui
from shared.messages import (
    Actor,
    ApprovalNotice,
    ApprovalStatus,
    RiskSummary,
    SecurityNotice,
    TargetNotice,
    UserCard,
)

install_validator_cache()

SECTION_TEXT = 3000
FIELD_TEXT = 2000
HEADER_TEXT = 150
BUTTON_TEXT = 75
CONTEXT_TEXT = 2000
NOTIFICATION_TEXT = 3000
MAX_FIELDS = 10
MAX_SIGNALS = 6
MAX_CHANGES = 10

BLOCK_APPROVAL_DECISION = "approval_decision"
BLOCK_NOT_ME = "not_me"
BLOCK_SECURITY_LINKS = "security_links"

RISK_BADGES = {
    "high": ":red_circle: High",
    "medium": ":large_orange_circle: Medium",
    "low": ":large_green_circle: Low",
    "unknown": ":white_circle: Unknown",
}
SECURITY_KINDS = {
    "escalation": (":shield:", "Escalation: protected user"),
    "disputed": (":rotating_light:", "A user reported: this wasn't me"),
    "push_rejected": (":rotating_light:", "Push rejected by the user"),
    "tampered": (":warning:", "Tampered request refused"),
}
DISPUTED_THANKS = "Thanks — we signed you out everywhere and alerted security."

_SLACK_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
_ESCAPED_MENTION = re.compile(r"&lt;@([UW][A-Z0-9]{2,})&gt;")


# ---------------------------------------------------------------------------------------------
# Text helpers


def mention(user_id: str | None) -> str:
    """``<@U…>`` for a Slack user id; anything else is shown escaped, never as a mention."""
    if not user_id:
        return "someone"
    return f"<@{user_id}>" if _SLACK_USER_ID.fullmatch(user_id) else esc(clip(user_id, 100))


def esc_keep_mentions(text: str) -> str:
    """``text`` escaped, except user mentions (``<@U…>``) the worker wrote on purpose, e.g. who clicked.

    Only a user id survives: ``<!channel>``, links and ``<@U…|label>`` stay escaped."""
    return _ESCAPED_MENTION.sub(r"<@\1>", esc(text))


def who(target: UserCard) -> str:
    """``*Jane Doe* (`jane.doe@example.com`)``, escaped."""
    name = esc(clip(target.display_name, 200))
    if target.display_name == target.login:
        return f"*{name}*"
    return f"*{name}* (`{esc(clip(target.login, 200))}`)"


def risk_line(risk: RiskSummary | None) -> str:
    return RISK_BADGES.get(risk.level if risk else "unknown", RISK_BADGES["unknown"])


def risk_details(risk: RiskSummary | None) -> list[str]:
    """Up to ``MAX_SIGNALS`` signal lines and the note; for no assessment, a line that says so."""
    if risk is None:
        return ["Risk not assessed: Okta's System Log was not checked for this case."]
    lines = [f"• {esc(clip(s, 300))}" for s in risk.signals[:MAX_SIGNALS]]
    if len(risk.signals) > MAX_SIGNALS:
        lines.append(f"• … and {len(risk.signals) - MAX_SIGNALS} more")
    if risk.note:
        lines.append(f"_{esc(clip(risk.note, 300))}_")
    return lines


def _md(text: str, limit: int = SECTION_TEXT) -> MarkdownTextObject:
    return MarkdownTextObject(text=clip(text, limit))


def _plain(text: str, limit: int) -> PlainTextObject:
    return PlainTextObject(text=clip(text, limit), emoji=True)


def _section(text: str) -> SectionBlock:
    return SectionBlock(text=_md(text))


def _fields(*fields: str) -> SectionBlock:
    return SectionBlock(fields=[_md(f, FIELD_TEXT) for f in fields if f][:MAX_FIELDS])


def _context(*texts: str) -> ContextBlock:
    return ContextBlock(elements=[_md(t, CONTEXT_TEXT) for t in texts if t][:10] or [_md(" ")])


def _header(text: str) -> HeaderBlock:
    return HeaderBlock(text=_plain(text, HEADER_TEXT))


def _dump(blocks: Sequence[Block]) -> list[dict[str, Any]]:
    return [b.to_dict() for b in blocks]


def _text(text: str) -> str:
    return clip(text, NOTIFICATION_TEXT)


# ---------------------------------------------------------------------------------------------
# Approvals


def _approval_facts(notice: ApprovalNotice) -> list[Block]:
    approval, target = notice.approval, notice.target
    verb = "asks" if approval.status == ApprovalStatus.REQUESTED else "asked"
    protected = " :shield: _Protected user._" if target.protected else ""
    blocks: list[Block] = [
        _section(
            f"{mention(notice.requester.user_id)} {verb} to *{esc(clip(notice.action_label, 200))}* "
            f"for {who(target)}.{protected}"
        ),
        _fields(
            f"*Verified*\n{esc(clip(notice.assurance, 300))}",
            f"*Risk*\n{risk_line(notice.risk)}",
            f"*Requested*\n{when(approval.requested_at)}",
            f"*Expires*\n{when(approval.expires_at)}",
        ),
    ]
    details = risk_details(notice.risk)
    if details:
        blocks.append(_context("\n".join(details)))
    return blocks


def approval_request(notice: ApprovalNotice, *, redirected_from: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The request with Approve (primary) and Deny (danger); both carry the approval token.

    ``redirected_from``: the manager's email, when they could not be found in Slack and the request
    went to the approvals channel instead.
    """
    target = notice.target
    text = (
        f"Approval needed: {mention(notice.requester.user_id)} asks to {esc(notice.action_label)} for "
        f"{esc(target.display_name)} ({esc(target.login)})"
    )
    confirm = ConfirmObject(
        title=_plain("Approve this action?", 100),
        text=_md(f"{esc(notice.action_label)} for {who(target)}, asked by {mention(notice.requester.user_id)}.", 300),
        confirm=_plain("Approve", 30),
        deny=_plain("Cancel", 30),
    )
    blocks: list[Block] = [
        _header(f"Approval needed: {notice.action_label}"),
        *_approval_facts(notice),
        ActionsBlock(
            block_id=BLOCK_APPROVAL_DECISION,
            elements=[
                ButtonElement(
                    text=_plain("Approve", BUTTON_TEXT),
                    action_id=ui.ACTION_APPROVE,
                    value=notice.approval_token,
                    style="primary",
                    confirm=confirm,
                ),
                ButtonElement(
                    text=_plain("Deny", BUTTON_TEXT),
                    action_id=ui.ACTION_DENY,
                    value=notice.approval_token,
                    style="danger",
                ),
            ],
        ),
    ]
    notes = [
        f"Case `{esc(notice.case_id)}` · Approve only if you expected this request. "
        "Nobody can approve their own request."
    ]
    if redirected_from:
        notes.append(f":warning: Sent here because the manager ({esc(redirected_from)}) was not found in Slack.")
    blocks.append(_context(*notes))
    return _text(text), _dump(blocks)


def _decided_by(notice: ApprovalNotice) -> str:
    approval = notice.approval
    by = f" by {mention(approval.decided_by)}" if approval.decided_by else ""
    at = f" {when(approval.decided_at)}" if approval.decided_at else ""
    return by + at


def outcome_line(notice: ApprovalNotice) -> str:
    """What became of the request, e.g. ``:white_check_mark: *Approved* by <@U…> <date>``."""
    approval = notice.approval
    status = approval.status
    if status == ApprovalStatus.APPROVED:
        return f":white_check_mark: *Approved*{_decided_by(notice)}"
    if status == ApprovalStatus.DENIED:
        return f":no_entry: *Denied*{_decided_by(notice)}"
    if status == ApprovalStatus.EXPIRED:
        return f":hourglass: *Expired*: nobody decided before {when(approval.expires_at)}"
    if status == ApprovalStatus.USED:
        return f":white_check_mark: *Approved*{_decided_by(notice)}, and used: {esc(notice.action_label)} was done"
    return ":hourglass_flowing_sand: *Waiting for a decision*"


OUTCOME_WORDS = {
    ApprovalStatus.APPROVED: "Approved",
    ApprovalStatus.DENIED: "Denied",
    ApprovalStatus.EXPIRED: "Expired",
    ApprovalStatus.USED: "Approved and used",
    ApprovalStatus.REQUESTED: "Approval needed",
}


def approval_outcome(notice: ApprovalNotice) -> tuple[str, list[dict[str, Any]]]:
    """The request as decided: the same facts, the outcome, no buttons."""
    target = notice.target
    word = OUTCOME_WORDS[notice.approval.status]
    by = f" by {mention(notice.approval.decided_by)}" if notice.approval.decided_by else ""
    text = f"{word}{by}: {esc(notice.action_label)} for {esc(target.display_name)} ({esc(target.login)})"
    blocks: list[Block] = [
        _header(f"{word}: {notice.action_label}"),
        *_approval_facts(notice),
        _section(outcome_line(notice)),
        _context(f"Case `{esc(notice.case_id)}`"),
    ]
    return _text(text), _dump(blocks)


def approval_note(notice: ApprovalNotice) -> str:
    """A refused decision, as a reply under the request (the buttons stay as they were)."""
    return _text(f":no_entry_sign: {esc_keep_mentions(clip(notice.note or '', 1000))}")


def approval_undeliverable(notice: ApprovalNotice) -> str:
    """To the requester, when the manager who must approve is not in Slack and no channel can take it."""
    manager = esc(notice.manager_email or "your manager")
    return _text(
        f":warning: Your approval request to {esc(notice.action_label)} for {esc(notice.target.display_name)} "
        f"could not be sent: {manager} was not found in Slack. Ask for the approval another way, or ask an "
        "administrator to check the manager in Okta."
    )


# ---------------------------------------------------------------------------------------------
# The target user's DM


def _agent_line(agent: Actor, email: str | None) -> str:
    return mention(agent.user_id) + (f" ({esc(clip(email, 200))})" if email else "")


def _changes(changes: Sequence[str]) -> str:
    lines = [f"• {esc(clip(c, 300))}" for c in changes[:MAX_CHANGES]]
    if len(changes) > MAX_CHANGES:
        lines.append(f"• … and {len(changes) - MAX_CHANGES} more")
    return "\n".join(lines) or "• (no details)"


def target_notice(notice: TargetNotice) -> tuple[str, list[dict[str, Any]]]:
    """What the help desk did to the user's account, by whom and when, and "This wasn't me"."""
    text = f"The IT help desk made changes to your account: {'; '.join(esc(c) for c in notice.changes)}"
    confirm = ConfirmObject(
        title=_plain("Report this?", 100),
        text=_md("We will sign you out of every device and alert security.", 300),
        confirm=_plain("Yes, report it", 30),
        deny=_plain("Cancel", 30),
    )
    blocks: list[Block] = [
        _section(
            f":information_source: Hi {esc(clip(notice.target_name, 200))}, the IT help desk made changes to "
            "your account:"
        ),
        _section(_changes(notice.changes)),
        _fields(f"*By*\n{_agent_line(notice.agent, notice.agent_email)}", f"*When*\n{when(notice.at)}"),
        _section(
            "If you asked for this, there is nothing to do. *If you did not*, tell us now: we will sign you "
            "out everywhere and alert security."
        ),
        ActionsBlock(
            block_id=BLOCK_NOT_ME,
            elements=[
                ButtonElement(
                    text=_plain("This wasn't me", BUTTON_TEXT),
                    action_id=ui.ACTION_NOT_ME,
                    value=notice.notice_token,
                    style="danger",
                    confirm=confirm,
                )
            ],
        ),
    ]
    return _text(text), _dump(blocks)


def target_disputed(notice: TargetNotice) -> tuple[str, list[dict[str, Any]]]:
    """The DM after "This wasn't me": what happened next, the changes reported, no button."""
    blocks: list[Block] = [
        _section(f":white_check_mark: *{DISPUTED_THANKS}*"),
        _section(_changes(notice.changes)),
        _context(
            f"You reported the changes made by {_agent_line(notice.agent, notice.agent_email)}. "
            "Security will follow up with you."
        ),
    ]
    return DISPUTED_THANKS, _dump(blocks)


# ---------------------------------------------------------------------------------------------
# Security


def security_notice(notice: SecurityNotice) -> tuple[str, list[dict[str, Any]]]:
    """The alert, the user and the agent concerned, and a link to the user in the Okta Admin Console."""
    icon, title = SECURITY_KINDS.get(notice.kind, (":warning:", notice.kind))
    fields = []
    if notice.target is not None:
        fields.append(f"*User*\n{who(notice.target)}")
    if notice.agent is not None:
        fields.append(f"*Agent*\n{mention(notice.agent.user_id)}")
    fields.append(f"*Case*\n`{esc(notice.case_id)}`")
    blocks: list[Block] = [
        _section(f"{icon} *{title}*\n{esc_keep_mentions(clip(notice.text, 2000))}"),
        _fields(*fields),
    ]
    if notice.admin_url:
        blocks.append(
            ActionsBlock(
                block_id=BLOCK_SECURITY_LINKS,
                elements=[
                    ButtonElement(
                        text=_plain("Open in Okta Admin", BUTTON_TEXT),
                        action_id=ui.ACTION_OPEN_ADMIN,
                        url=notice.admin_url,
                    )
                ],
            )
        )
    target = f" ({esc(notice.target.login)})" if notice.target is not None else ""
    return _text(f"{icon} {title}{target}: {esc_keep_mentions(notice.text)}"), _dump(blocks)
