"""Messages to people other than the agent: the target user, approvers, security. Published on the
``HELPDESK_NOTIFY`` stream for the responder (which makes every Slack call); never a secret in them.

    await notify_target(ctx, case, ["Temporary password set"])       # DM with "This wasn't me"
    delivered = await send_security_notice(ctx, case, "escalation", text)

Each is published with a deduplication id derived from the case revision, so a redelivered command
that publishes again posts nothing twice.
"""

from __future__ import annotations

from typing import Literal

from services.okta_worker.case import Case
from services.okta_worker.context import WorkerContext
from shared.messages import SecurityNotice, TargetNotice
from shared.settings import Settings

NOTICE_TOKEN_TTL = 7 * 24 * 3600  # "This wasn't me" works for a week after the change


def security_channel(settings: Settings) -> str | None:
    """Where security alerts go: SLACK_SECURITY_CHANNEL, else the audit channel; None: nowhere."""
    return settings.slack_security_channel or settings.slack_audit_channel


def escalation_channel(settings: Settings) -> str | None:
    """Where a protected user's escalation goes: the approvals channel, else the security channel."""
    return settings.slack_approvals_channel or security_channel(settings)


async def send_security_notice(
    ctx: WorkerContext,
    case: Case,
    kind: Literal["escalation", "disputed", "push_rejected", "tampered"],
    text: str,
) -> bool:
    """Post ``text`` for people to act on; False when no channel is configured (then say so, not "alerted")."""
    channel = escalation_channel(ctx.settings) if kind == "escalation" else security_channel(ctx.settings)
    if channel is None:
        return False
    notice = SecurityNotice(
        case_id=case.case_id,
        kind=kind,
        text=text,
        agent=case.agent,
        target=case.target,
        admin_url=case.admin_url,
        channel_id=channel,
    )
    await ctx.bus.publish(notice, msg_id=f"{case.case_id}:{case.revision}:security.{kind}")
    return True


def target_notice(ctx: WorkerContext, case: Case, changes: list[str]) -> TargetNotice | None:
    """The DM telling the target what the help desk changed (None: no email, or turned off)."""
    target = case.target
    if not ctx.settings.notify_target_user or target is None or not (target.email or "@" in target.login):
        return None
    return TargetNotice(
        case_id=case.case_id,
        target_email=target.email or target.login,
        target_name=target.display_name,
        changes=changes,
        agent=case.agent,
        agent_email=case.agent_email,
        at=case.updated_at,
        notice_token=ctx.tokens.issue(case.case_id, f"target:{target.id}", ttl=NOTICE_TOKEN_TTL),
    )


async def notify_target(ctx: WorkerContext, case: Case, changes: list[str]) -> None:
    notice = target_notice(ctx, case, changes)
    if notice is not None:
        await ctx.bus.publish(notice, msg_id=f"{case.case_id}:{case.revision}:user")
