"""Where a case starts besides the empty search: `/helpdesk alice`, a DM or @mention, a Workflow Builder step.

    await prefill(ctx, case_id, "alice INC0012345")           # one match → picked; several → offered first
    await start_from_message(ctx, StartFromMessage(...), cid)  # "verify jdoe" → a "Verify <name>" button
    await workflow_step(ctx, WorkflowStep(...), cid)           # "Verify caller" → a "Start verification" DM

A message carries no ``trigger_id``, so a message or a workflow step is answered with a message holding a
button (:class:`~shared.messages.StartOffer`); its click opens the modal with the user already picked.
The same authorization as the slash command applies to each.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from services.okta_worker.case import CaseRefused, StaleEvent
from services.okta_worker.context import WorkerContext
from services.okta_worker.okta_client import OktaError, OktaUser, scim_quote
from services.okta_worker.search import search_expression
from shared.bus import BusError
from shared.logging import get_logger
from shared.messages import (
    Actor,
    LookupSlackUser,
    SlackUserInfo,
    StartFromMessage,
    StartOffer,
    UserOption,
    WorkflowResult,
    WorkflowStep,
)
from shared.ui import TICKET_PATTERN

log = get_logger(__name__)

MAX_MATCHES = 5
MENTION = re.compile(r"<@[A-Z0-9]+(?:\|[^>]*)?>")
MAILTO = re.compile(r"<mailto:([^|>]+)(?:\|[^>]*)?>")  # Slack turns an email into <mailto:a@b|a@b>
TICKET_WORD = re.compile(TICKET_PATTERN.removeprefix("^").removesuffix("$").join((r"\b(?:", r")\b")))
HELP_WORDS = frozenset({"", "help", "?", "hi", "hello"})
VERBS = frozenset({"verify", "check", "start", "please"})
FILLERS = frozenset({"for", "ticket", "please"})
HELP_TEXT = (
    "I verify callers before anyone touches their Okta account. Write *verify* and who is calling — "
    "a login, an email or a name (e.g. `verify jdoe@example.com`), with a ticket number if you have one — "
    "or use `/helpdesk`, the shortcut, or the *Home* tab."
)


def parse_request(text: str) -> tuple[str, str | None]:
    """(who, ticket) from "verify jdoe INC0012345" as Slack sends it (mentions and mailto links unwrapped)."""
    text = MENTION.sub(" ", text)
    text = MAILTO.sub(lambda m: m.group(1), text)
    ticket_match = TICKET_WORD.search(text)
    ticket = ticket_match.group(0) if ticket_match else None
    if ticket_match:
        text = text.replace(ticket_match.group(0), " ")
    words = text.split()
    while words and words[0].lower().strip(":,") in VERBS:
        words = words[1:]
    words = [w for w in words if w.lower().strip(":,") not in FILLERS]
    return " ".join(words)[:100], ticket


def label(user: OktaUser) -> str:
    text = f"{user.display_name} — {user.login}"
    return text if len(text) <= 75 else text[:74] + "…"


async def _search_as(
    ctx: WorkerContext, agent: Actor, search: Callable[[], Awaitable[list[OktaUser]]]
) -> tuple[list[OktaUser], str | None]:
    """``search()`` once ``agent`` is authorized: the users found, or what to tell the agent instead."""
    try:
        await ctx.authorizer.authorize(agent)
        return await search(), None
    except CaseRefused as refused:
        return [], refused.message
    except OktaError as exc:
        return [], f"Okta could not be searched: {exc.message}"


async def find_users(ctx: WorkerContext, query: str) -> list[OktaUser]:
    """Users matching ``query``: an exact login or email wins alone; else starts-with on name and login."""
    query = query.strip()
    if not query:
        return []
    if "@" in query:
        exact = await ctx.okta.find_user_by_email(query)
        if exact is not None:
            return [exact]
    users = await ctx.okta.search_users(search_expression(query), limit=20)
    users = [u for u in users if u.status != "DEPROVISIONED"]
    folded = query.casefold()
    exact_users = [u for u in users if folded in (u.login.casefold(), (u.email or "").casefold())]
    return exact_users[:1] or users


async def prefill(ctx: WorkerContext, case_id: str, query: str, select: Callable[[str], Awaitable[None]]) -> None:
    """`/helpdesk alice`: exactly one match → picked straight away (``select``); several → shown first."""
    try:
        users = await find_users(ctx, query)
    except OktaError as exc:
        log.info("case.prefill_failed", error=type(exc).__name__)
        return
    if len(users) == 1:
        await select(users[0].id)
        return
    matches = [UserOption(id=u.id, label=label(u)) for u in users[:10]]
    try:
        await ctx.apply(case_id, lambda c: ctx.engine.suggested(c, matches, ctx.clock()))
    except (StaleEvent, CaseRefused):
        return


async def start_from_message(ctx: WorkerContext, cmd: StartFromMessage, command_id: str) -> None:
    """A DM to the app or an @mention: the matches, each with a "Verify <name>" button; or the help."""
    who, ticket = parse_request(cmd.text)

    async def answer(text: str, matches: list[UserOption] | None = None) -> None:
        offer = StartOffer(
            agent=cmd.agent,
            channel_id=cmd.channel_id,
            in_dm=cmd.in_dm,
            thread_ts=cmd.thread_ts,
            text=text,
            matches=matches or [],
            ticket=ticket,
        )
        await ctx.bus.publish(offer, msg_id=f"offer:{command_id}")

    if who.lower() in HELP_WORDS:
        await answer(HELP_TEXT)
        return
    users, refused = await _search_as(ctx, cmd.agent, lambda: find_users(ctx, who))
    if refused is not None:
        await answer(refused)
        return
    if not users:
        await answer(f"No Okta user matches “{who}”. Try a login, an email or a full name.")
        return
    matches = [UserOption(id=u.id, label=label(u)) for u in users[:MAX_MATCHES]]
    more = f" (first {MAX_MATCHES} of {len(users)}: be more precise)" if len(users) > MAX_MATCHES else ""
    text = f"Verify {users[0].display_name}?" if len(users) == 1 else f"Several users match “{who}”{more}:"
    await answer(text, matches)


async def _caller(ctx: WorkerContext, caller: str) -> list[OktaUser]:
    """A workflow's caller input: a Slack user (U…, looked up for their email) or an Okta login/email."""
    caller = caller.strip()
    if re.fullmatch(r"[UW][A-Z0-9]{2,20}", caller):
        try:
            info = await ctx.bus.request(LookupSlackUser(user_id=caller), SlackUserInfo, timeout=2.0)
        except BusError:
            return []
        if not info.email:
            return []
        found = await ctx.okta.find_user_by_email(info.email)
        return [found] if found is not None else []
    return await find_users(ctx, caller)


async def workflow_step(ctx: WorkerContext, cmd: WorkflowStep, command_id: str) -> None:
    """Workflow Builder's "Verify caller": a DM to the person running it with "Start verification";
    the step completes when the case ends (``WorkerContext.finish_workflow``), or now with an error."""

    async def fail(why: str) -> None:
        result = WorkflowResult(function_execution_id=cmd.function_execution_id, verified=False, error=why)
        await ctx.bus.publish(result, msg_id=f"workflow:{cmd.function_execution_id}")

    ticket = cmd.ticket if cmd.ticket and re.match(TICKET_PATTERN, cmd.ticket) else None
    users, refused = await _search_as(ctx, cmd.agent, lambda: _caller(ctx, cmd.caller))
    if refused is not None:
        await fail(refused)
        return
    if len(users) != 1:
        what = "No Okta user" if not users else f"{len(users)} Okta users"
        await fail(f"{what} match the caller {scim_quote(cmd.caller[:100])}: give a login or email.")
        return
    user = users[0]
    offer = StartOffer(
        agent=cmd.agent,
        in_dm=True,
        text=f"A workflow asks you to verify {user.display_name} before it goes on.",
        matches=[UserOption(id=user.id, label=label(user))],
        ticket=ticket,
        function_execution_id=cmd.function_execution_id,
    )
    await ctx.bus.publish(offer, msg_id=f"offer:{command_id}")
