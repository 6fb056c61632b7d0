"""The user search: the options menu of the modal (request/reply, under Slack's 3 s) and its SCIM query.

reply = await search_users(ctx, SearchUsers(query="ali", agent=agent))
expression = search_expression("Alice Anderson")   # login/email/first/last sw …, or first and last
"""

from __future__ import annotations

import asyncio

from services.okta_worker.case import CaseRefused
from services.okta_worker.context import WorkerContext
from services.okta_worker.okta_client import OktaError, OktaUser, scim_quote
from shared.messages import SearchUsers, SearchUsersReply, UserOption

SEARCH_DEADLINE = 2.0
LABEL_MAX = 75


def option_label(user: OktaUser) -> str:
    label = f"{user.display_name} — {user.login} ({user.status})"
    return label if len(label) <= LABEL_MAX else label[: LABEL_MAX - 1] + "…"


def search_expression(query: str) -> str:
    q = scim_quote(query.strip())
    terms = [f"profile.{attr} sw {q}" for attr in ("login", "email", "firstName", "lastName")]
    words = query.split()
    if len(words) >= 2:
        first, last = scim_quote(words[0]), scim_quote(" ".join(words[1:]))
        terms.append(f"(profile.firstName sw {first} and profile.lastName sw {last})")
    return " or ".join(terms)


async def search_users(ctx: WorkerContext, request: SearchUsers) -> SearchUsersReply:
    """Options for the agent's user search; answers within ``SEARCH_DEADLINE`` whatever happens."""
    query = request.query.strip()[:100]
    if not query:
        return SearchUsersReply(options=[])
    try:
        async with asyncio.timeout(SEARCH_DEADLINE):
            await ctx.authorizer.authorize(request.agent)
            users = await ctx.okta.search_users(search_expression(query), limit=50, rate_limit_wait=0.0)
    except CaseRefused as refused:
        return SearchUsersReply(error=refused.message)
    except TimeoutError:
        return SearchUsersReply(error="Okta did not answer in time; type again.")
    except OktaError as exc:
        return SearchUsersReply(error=exc.message)
    options = [UserOption(id=u.id, label=option_label(u)) for u in users if u.status != "DEPROVISIONED"]
    return SearchUsersReply(options=options[:100])
