"""Reconciling an Okta call that was interrupted: what Okta can tell decides done, not done or uncertain.

    if case.intent is not None:                    # found open: its worker died mid-call
        await reconcile(ctx, case_id, view)        # records the outcome; the agent sees which

Every call with effects in Okta is first an :class:`~services.okta_worker.case.Intent` on the case
(written with compare-and-swap in :func:`~services.okta_worker.context.claim`), then an outcome. A
redelivered command, or any later command of the case, that finds an entry still open after
``STALE_INTENT`` reconciles it here. Nothing is ever sent again from here: a push or code that may have
reached the user is shown as such, and the agent decides, knowingly, whether to send another.

| interrupted call | what Okta can tell | recorded |
| --- | --- | --- |
| SMS / call / email code | nothing | uncertain: the code entry is shown, the code may have arrived |
| push | nothing (the poll link was never stored) | uncertain: back to the factors, "if a push shows, deny it" |
| a code being checked | nothing (a code is single use) | uncertain: ask the caller for a fresh code |
| temporary password | ``passwordChanged`` after the call started | done (never shown: issue another) / not done |
| reset one factor / all factors | the factor list | done / not done |
| unlock | the user's status | done / not done |
| reset link | the System Log (``user.account.reset_password``) | done / uncertain |
| sign out everywhere | the System Log (``user.session.end``) | done / uncertain |
| temporary access code | nothing readable | uncertain: issue another (a new one replaces it) |
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from services.okta_worker.case import Case, CaseRefused, Intent, StaleEvent
from services.okta_worker.context import Busy, WorkerContext, claim
from services.okta_worker.okta_client import OktaError, scim_quote
from services.okta_worker.policy import ACTION_NAMES
from shared.logging import get_logger
from shared.messages import ActionKind

log = get_logger(__name__)

Result = Literal["done", "not_done", "uncertain"]
AUDIT_OUTCOME = {"done": "success", "not_done": "failure", "uncertain": "uncertain"}


def _parse(raw: str | None) -> datetime | None:
    if not raw:
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return None


async def _logged(ctx: WorkerContext, user_id: str, event_type: str, since: datetime) -> bool | None:
    """Whether the System Log has ``event_type`` for the user since ``since`` (None: it can't be read)."""
    query = f"target.id eq {scim_quote(user_id)} and eventType eq {scim_quote(event_type)}"
    try:
        events = await ctx.okta.list_logs(query, since=since - timedelta(seconds=2), until=None, limit=20)
    except OktaError:
        return None
    return bool(events)


async def check(ctx: WorkerContext, case: Case, intent: Intent) -> tuple[Result, str]:
    """Ask Okta what became of ``intent``; the message is for the agent."""
    assert case.target is not None
    uid, label = case.target.id, case.target.display_name
    what = intent.label or "the challenge"
    if intent.kind == "challenge":
        if intent.factor_type == "push":
            return "uncertain", (
                f"The help desk was interrupted while sending the push ({what}): it may be on {label}'s phone. "
                "If the caller sees it, they can answer it now or deny it; send another only if nothing came."
            )
        return "uncertain", (
            f"The help desk was interrupted while sending the code ({what}): it may have reached {label}. "
            "Ask the caller; if it came, type it in; if not, resend."
        )
    if intent.kind == "code":
        return "uncertain", (
            "The help desk was interrupted while Okta checked the code: it was not recorded. "
            "Ask the caller for a fresh code (a code works only once)."
        )
    action = intent.action
    assert action is not None
    name = ACTION_NAMES[action]
    result: Result = "uncertain"
    try:
        if action == ActionKind.TEMP_PASSWORD:
            user = await ctx.okta.get_user(uid)
            changed = _parse(user.password_changed)
            result = (
                "done" if changed is not None and changed >= intent.started_at - timedelta(seconds=2) else "not_done"
            )
        elif action == ActionKind.RESET_FACTOR:
            factors = await ctx.okta.list_factors(uid)
            result = "not_done" if any(f.get("id") == intent.factor_id for f in factors) else "done"
        elif action == ActionKind.RESET_ALL_FACTORS:
            factors = await ctx.okta.list_factors(uid)
            active = [f for f in factors if f.get("status") in ("ACTIVE", "PENDING_ACTIVATION")]
            result = "not_done" if active else "done"
        elif action == ActionKind.UNLOCK:
            result = "not_done" if (await ctx.okta.get_user(uid)).status == "LOCKED_OUT" else "done"
        elif action in (ActionKind.RESET_LINK, ActionKind.REVOKE_SESSIONS):
            event = "user.account.reset_password" if action == ActionKind.RESET_LINK else "user.session.end"
            seen = await _logged(ctx, uid, event, intent.started_at)
            result = "done" if seen else "uncertain"
    except OktaError as exc:
        log.info("journal.check_failed", action=action.value, error=type(exc).__name__)
        result = "uncertain"
    if action == ActionKind.TEMP_PASSWORD and result == "done":
        return "done", f"{name}: done in Okta before an interruption, but never shown to you. Set a new one."
    if action == ActionKind.TEMP_ACCESS_CODE:
        return (
            "uncertain",
            f"{name}: interrupted; a code may exist but was never shown. Issue a new one (it replaces it).",
        )
    text = {
        "done": f"{name}: done in Okta (confirmed after an interruption).",
        "not_done": f"{name}: not done — Okta shows no change after an interruption. You may run it again.",
        "uncertain": f"{name}: interrupted, and Okta cannot tell whether it took effect. Check in the Admin Console.",
    }[result]
    return result, text


async def reconcile(ctx: WorkerContext, case_id: str, view: Any = None) -> Case | None:
    """Close the case's open journal entry with what Okta tells; None if there was none (or another
    replica closed it first)."""
    found = await ctx.store.get(case_id)
    if found is None or found[0].intent is None:
        return None
    case, intent = found[0], found[0].intent
    result, message = await check(ctx, case, intent)
    name = {"challenge": "case.challenge_sent", "code": "case.code_checked", "action": "case.action"}[intent.kind]
    action = intent.action.value if intent.action is not None else None
    try:
        _, after = await ctx.apply(
            case_id,
            lambda c: ctx.engine.reconciled(c, intent, result, message, ctx.clock()),
            view,
            audit=lambda c: ctx.audit_event(
                c,
                name,
                AUDIT_OUTCOME[result],
                severity="warning" if result == "uncertain" else "info",
                reconciled=result,
                factor_type=intent.factor_type,
                action=action,
            ),
        )
    except StaleEvent:
        return None
    log.warning("journal.reconciled", kind=intent.kind, result=result)
    return after


async def take(
    ctx: WorkerContext,
    case_id: str,
    command_id: str,
    view: Any,
    intent: Intent,
    prepare: Callable[[Case], Case] | None = None,
) -> Case | None:
    """Claim a command with effects in Okta, its journal entry recorded: the case as claimed, or None
    when it must not run (``prepare``: see :func:`~services.okta_worker.context.claim`).

    A redelivery of a command whose entry is still open (its worker died mid-call) is reconciled, one
    whose outcome was recorded gets that revision published again (deduplicated). Another command of the
    case while an entry is open is refused — or, when that entry is stale, the entry is reconciled and
    the agent decides again from what it says.
    """
    try:
        claimed = await claim(ctx, case_id, command_id, view, intent, prepare)
    except Busy as busy:
        if busy.stale:
            await reconcile(ctx, case_id, view)
        else:
            await ctx.notify(case_id, CaseRefused("The previous step is still running: wait a moment.", "busy"), view)
        return None
    if claimed is not None:
        return claimed
    found = await ctx.store.get(case_id)
    if found is None:
        return None
    case = found[0]
    if case.intent is not None and case.intent.intent_id == command_id:
        await reconcile(ctx, case_id, view)
    else:
        await ctx.republish(case)
    return None


async def release(ctx: WorkerContext, case_id: str, command_id: str) -> None:
    """Close the entry of a call that ended without an outcome write (refused, failed before sending)."""
    found = await ctx.store.get(case_id)
    if found is None or found[0].intent is None or found[0].intent.intent_id != command_id:
        return
    with contextlib.suppress(StaleEvent):
        await ctx.store.update(case_id, lambda c: ctx.engine.settle(c, command_id), known=found)
