"""Who may use the help desk, and on whom: groups resolved to ids, agents checked on every case command.

    groups = GroupDirectory(okta, settings)
    await groups.resolve()                       # at start: GroupConfigError on a missing or ambiguous name
    authorizer = Authorizer(okta, bus, groups)
    agent = await authorizer.authorize(actor)    # AgentIdentity, or CaseRefused with the reason
    if (why := agent.shares_identity_with(user)) is not None: ...   # the agent's own second account

Groups are matched by **id**, never by name: an imported APP_GROUP can carry any name ("Helpdesk"
from AD or Google). ``OKTA_HELPDESK_GROUP`` and ``OKTA_PROTECTED_GROUPS`` each hold an id (``00g…``)
or the exact name of one group of ``OKTA_GROUP_TYPE``; a name that matches none or several stops the
worker with an error. An authorization is cached for at most ``AUTH_CACHE_SECONDS``; a denial empties
the cache entry at once, so an agent removed from the group loses access within that minute, on
every case command.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

from services.okta_worker.case import CaseRefused
from services.okta_worker.okta_client import OktaClient, OktaError, OktaGroup, OktaUser
from shared.bus import Bus, BusError
from shared.logging import get_logger
from shared.messages import Actor, LookupSlackUser, SlackUserInfo
from shared.settings import Settings

log = get_logger(__name__)

AUTH_CACHE_SECONDS = 60.0
LOOKUP_TIMEOUT = 2.0
GROUP_ID = re.compile(r"^00g[0-9A-Za-z]{17}$")


class GroupConfigError(RuntimeError):
    """A configured group does not resolve to exactly one Okta group: the worker cannot start."""


@dataclass(frozen=True)
class ResolvedGroups:
    helpdesk: OktaGroup
    protected: tuple[OktaGroup, ...]

    def protected_names(self, groups: list[OktaGroup]) -> list[str]:
        """The names of the protected groups among ``groups`` (a user's groups), matched by id."""
        ids = {g.id for g in self.protected}
        return [g.name for g in groups if g.id in ids]


class GroupDirectory:
    """Resolves the configured groups once; ``get()`` resolves lazily if Okta was down at start."""

    def __init__(self, okta: OktaClient, settings: Settings) -> None:
        self.okta = okta
        self.settings = settings
        self._resolved: ResolvedGroups | None = None
        self._lock = asyncio.Lock()

    async def resolve(self) -> ResolvedGroups:
        async with self._lock:
            if self._resolved is None:
                helpdesk = await self._one(self.settings.okta_helpdesk_group, "OKTA_HELPDESK_GROUP")
                protected = [
                    await self._one(ref, "OKTA_PROTECTED_GROUPS") for ref in self.settings.okta_protected_groups
                ]
                self._resolved = ResolvedGroups(helpdesk=helpdesk, protected=tuple(protected))
                log.info(
                    "okta.groups.resolved",
                    helpdesk=helpdesk.id,
                    protected=[g.id for g in protected],
                )
            return self._resolved

    async def get(self) -> ResolvedGroups:
        return self._resolved or await self.resolve()

    async def _one(self, ref: str, setting: str) -> OktaGroup:
        ref = ref.strip()
        if GROUP_ID.match(ref):
            try:
                return await self.okta.get_group(ref)
            except OktaError as exc:
                if getattr(exc, "status", None) == 404:
                    raise GroupConfigError(f"{setting}: no Okta group has the id {ref}") from None
                raise
        kind = self.settings.okta_group_type
        found = [g for g in await self.okta.find_groups(ref, kind) if g.name == ref and g.type == kind]
        if not found:
            raise GroupConfigError(f"{setting}: no {kind} group is named {ref!r} (give its id, 00g…)")
        if len(found) > 1:
            ids = ", ".join(g.id for g in found)
            raise GroupConfigError(f"{setting}: {len(found)} {kind} groups are named {ref!r} ({ids}): give the id")
        return found[0]


def _phone_digits(value: str | None) -> str | None:
    digits = re.sub(r"\D", "", value or "")
    return digits[-10:] if len(digits) >= 7 else None


def identifiers_of(user: OktaUser) -> dict[str, str]:
    """What ties an account to a person: login, emails, phone numbers (normalized) → which field."""
    found: dict[str, str] = {}
    for field, value in (
        ("login", user.login),
        ("email", user.email),
        ("secondary email", user.second_email),
    ):
        if value:
            found.setdefault(value.strip().casefold(), field)
    for field, value in (("mobile phone", user.mobile_phone), ("phone", user.primary_phone)):
        if (digits := _phone_digits(value)) is not None:
            found.setdefault(f"tel:{digits}", field)
    return found


@dataclass(frozen=True)
class AgentIdentity:
    """An authorized agent: their Slack id, the email Slack gave, and their Okta account."""

    slack_id: str
    email: str
    okta_id: str
    identifiers: tuple[tuple[str, str], ...] = ()

    def shares_identity_with(self, user: OktaUser) -> str | None:
        """Which of the agent's identifiers ``user`` also carries ("email"…), or None: another person."""
        if user.id == self.okta_id:
            return "Okta account"
        mine = dict(self.identifiers)
        mine.setdefault(self.email.casefold(), "email")
        for key in identifiers_of(user):
            if key in mine:
                return mine[key]
        return None


class Authorizer:
    """Slack user → email → Okta user → member of the help-desk group (by id), cached ≤ 60 s."""

    def __init__(self, okta: OktaClient, bus: Bus, groups: GroupDirectory) -> None:
        self.okta = okta
        self.bus = bus
        self.groups = groups
        self._clock = time.monotonic
        self._cache: dict[str, tuple[float, AgentIdentity]] = {}

    def cached(self, agent: Actor) -> AgentIdentity | None:
        found = self._cache.get(agent.user_id)
        if found is not None and found[0] > self._clock():
            return found[1]
        return None

    def forget(self, slack_id: str) -> None:
        self._cache.pop(slack_id, None)

    async def person(self, actor: Actor, require_active: bool = True) -> tuple[str, OktaUser]:
        """The Okta account behind a Slack user (no group required): their email and user."""
        try:
            info = await self.bus.request(LookupSlackUser(user_id=actor.user_id), SlackUserInfo, timeout=LOOKUP_TIMEOUT)
        except BusError:
            raise CaseRefused(
                "Your Slack profile could not be looked up right now; try again.", "lookup_failed"
            ) from None
        if info.error or info.deleted or info.is_bot:
            raise CaseRefused("Your Slack account could not be checked (deactivated or not a person).", "slack_user")
        if not info.email:
            raise CaseRefused(
                "Your Slack profile has no email the help desk can read, so your Okta account cannot be found.",
                "no_email",
            )
        try:
            user = await self.okta.find_user_by_email(info.email)
        except OktaError as exc:
            raise CaseRefused(f"Your access could not be checked in Okta: {exc.message}", "okta_error") from None
        if user is None:
            raise CaseRefused(f"No Okta user has the login or email {info.email}.", "no_okta_user")
        if require_active and user.status != "ACTIVE":
            raise CaseRefused(f"Your Okta account is {user.status}, not ACTIVE.", "okta_user_inactive")
        return info.email, user

    async def authorize(self, agent: Actor) -> AgentIdentity:
        """The agent, if a member of the help-desk group now (cached ≤ 60 s); ``CaseRefused`` if not."""
        if (known := self.cached(agent)) is not None:
            return known
        try:
            email, user = await self.person(agent)
            try:
                groups = await self.groups.get()
                member_of = await self.okta.user_groups(user.id)
            except OktaError as exc:
                raise CaseRefused(f"Your access could not be checked in Okta: {exc.message}", "okta_error") from None
            if groups.helpdesk.id not in {g.id for g in member_of}:
                raise CaseRefused(
                    f"You are not in the Okta group {groups.helpdesk.name!r}, which this help desk requires.",
                    "not_in_group",
                )
        except CaseRefused:
            self.forget(agent.user_id)
            raise
        identity = AgentIdentity(
            slack_id=agent.user_id,
            email=email,
            okta_id=user.id,
            identifiers=tuple(identifiers_of(user).items()),
        )
        self._cache[agent.user_id] = (self._clock() + AUTH_CACHE_SECONDS, identity)
        return identity
