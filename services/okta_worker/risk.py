"""The target's risk before verifying: Okta's System Log of the last days, user risk, the account's age.

    reader = RiskReader(okta, limiter, await bus.key_value(RISK_BUCKET, ttl=300), settings)
    summary = await reader.read(user, now)       # never raises; "unknown" with a note when Okta can't tell

Social engineering of a help desk follows a pattern (Okta's 2023 advisory): factors reset, a new phone
or email, pushes denied by the real user, a password just changed. Those events in the System Log, or
Okta's own user risk (Identity Threat Protection), make the risk high and the policy asks for more.

The System Log has a low rate limit (20–120 reads a minute for the whole org): every replica draws on
one budget (``OKTA_LOGS_PER_MINUTE``, a shared counter in KV) and a user's summary is kept in KV for
``RISK_CACHE_SECONDS``. When the log can't be read in time the summary says so and the case goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from nats.js.kv import KeyValue

from services.okta_worker.okta_client import OktaClient, OktaError, OktaUser, scim_quote
from shared.bus import kv_read
from shared.limits import RateLimiter, kv_key
from shared.logging import get_logger
from shared.messages import RiskSummary
from shared.settings import Settings

log = get_logger(__name__)

RISK_BUCKET = "user_risk"
LOGS_BUDGET_KEY = "okta:logs"
READ_DEADLINE = 2.0  # seconds: the agent is waiting for the factor list
NEW_ACCOUNT_DAYS = 7
MAX_SIGNALS = 6

Level = Literal["high", "medium", "low", "unknown"]
RANK: dict[str, int] = {"unknown": 0, "low": 1, "medium": 2, "high": 3}

# eventType → (level, what the agent reads). Identity Engine logs a reset of all factors as one
# deactivate per factor; Classic as reset_all: both match.
TARGET_EVENTS: dict[str, tuple[Level, str]] = {
    "user.mfa.factor.reset_all": ("high", "all factors reset"),
    "user.mfa.factor.deactivate": ("high", "a factor removed"),
    "user.mfa.factor.suspend": ("medium", "a factor suspended"),
    "user.mfa.factor.activate": ("medium", "a new factor enrolled"),
    "user.mfa.factor.update": ("medium", "a factor changed"),
    "user.account.reset_password": ("medium", "password reset"),
    "user.account.update_password": ("medium", "password changed"),
    "user.account.update_profile": ("medium", "profile changed (phone or email?)"),
    "user.account.report_suspicious_activity_by_enduser": ("high", "the user reported suspicious activity"),
    "user.risk.detect": ("medium", "Okta detected risk"),
    "user.risk.change": ("medium", "Okta's risk level changed"),
}
DENY_PUSH = "user.mfa.okta_verify.deny_push"
USER_RISK: dict[str, Level] = {"HIGH": "high", "MEDIUM": "medium", "LOW": "low", "NONE": "low"}


def log_filter(user_id: str) -> str:
    """One System Log query for everything above: events on the user, and pushes the user denied."""
    uid = scim_quote(user_id)
    types = " or ".join(f"eventType eq {scim_quote(t)}" for t in TARGET_EVENTS)
    return f"(target.id eq {uid} and ({types})) or (actor.id eq {uid} and eventType sw {scim_quote(DENY_PUSH)})"


def _ago(then: datetime, now: datetime) -> str:
    seconds = max(0.0, (now - then).total_seconds())
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} days ago"


def _published(event: Mapping[str, Any]) -> datetime | None:
    raw = event.get("published")
    if not isinstance(raw, str):
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return None


def summarize(
    events: Iterable[Mapping[str, Any]] | None,
    user_risk: str | None,
    created: datetime | None,
    now: datetime,
    days: int,
) -> RiskSummary:
    """The summary the agent sees and the policy reads. ``events`` None: the System Log was not read."""
    level: Level = "low"
    signals: list[tuple[datetime, str]] = []

    def raise_to(new: Level) -> None:
        nonlocal level
        if RANK[new] > RANK[level]:
            level = new

    if user_risk in USER_RISK:
        raise_to(USER_RISK[user_risk])
        if user_risk in ("HIGH", "MEDIUM"):
            signals.append((now, f"Okta rates this user's risk {user_risk.lower()}"))
    denied = 0
    for event in events or ():
        event_type = str(event.get("eventType") or "")
        at = _published(event) or now
        result = str((event.get("outcome") or {}).get("result") or "SUCCESS")
        if event_type.startswith(DENY_PUSH):
            denied += 1
            continue
        if event_type in TARGET_EVENTS and result == "SUCCESS":
            what_level, what = TARGET_EVENTS[event_type]
            raise_to(what_level)
            signals.append((at, f"{what}, {_ago(at, now)}"))
    if denied:
        raise_to("high" if denied >= 2 else "medium")
        signals.append((now, f"{denied} push{'es' if denied > 1 else ''} denied by the user in {days} days"))
    if created is not None and now - created < timedelta(days=NEW_ACCOUNT_DAYS):
        raise_to("medium")
        signals.append((created, f"account created {_ago(created, now)}"))
    note = None
    if events is None:
        note = "The System Log could not be read in time: recent factor or password changes are unknown."
        if level == "low":
            level = "unknown"
    elif user_risk is None and level == "low":
        note = None  # no ITP in this org: the System Log alone speaks
    lines: list[str] = []
    seen: set[str] = set()
    for _, text in sorted(signals, key=lambda s: s[0], reverse=True):
        key = text.split(",")[0]
        if key not in seen:
            seen.add(key)
            lines.append(text)
    return RiskSummary(level=level, signals=lines[:MAX_SIGNALS], checked_at=now, note=note)


class RiskReader:
    """Reads and caches one user's :class:`RiskSummary`; shares the System Log budget across replicas."""

    def __init__(self, okta: OktaClient, limiter: RateLimiter, cache: KeyValue | None, settings: Settings) -> None:
        self.okta = okta
        self.limiter = limiter
        self.cache = cache
        self.days = settings.risk_lookback_days
        self.per_minute = settings.okta_logs_per_minute

    async def read(self, user: OktaUser, now: datetime) -> RiskSummary:
        cached = await self._cached(user.id)
        if cached is not None:
            return cached
        created = None
        if user.created:
            with contextlib.suppress(ValueError):
                created = datetime.fromisoformat(user.created.replace("Z", "+00:00"))
        events, user_risk = await asyncio.gather(self._events(user.id, now), self._user_risk(user.id))
        summary = summarize(events, user_risk, created, now, self.days)
        if events is not None:  # a summary without the log is not kept: the next case tries again
            await self._keep(user.id, summary)
        return summary

    async def _events(self, user_id: str, now: datetime) -> list[dict[str, Any]] | None:
        try:
            decision = await self.limiter.hit(LOGS_BUDGET_KEY, self.per_minute, 60)
        except Exception as exc:  # the budget lives in NATS: without it, don't spend Okta's
            log.warning("risk.budget_unavailable", error=type(exc).__name__)
            return None
        if not decision.allowed:
            log.info("risk.budget_spent", retry_after=round(decision.retry_after, 1))
            return None
        try:
            async with asyncio.timeout(READ_DEADLINE):
                return await self.okta.list_logs(
                    log_filter(user_id), since=now - timedelta(days=self.days), until=now, limit=200
                )
        except (TimeoutError, OktaError) as exc:
            log.info("risk.logs_unreadable", error=type(exc).__name__)
            return None

    async def _user_risk(self, user_id: str) -> str | None:
        try:
            async with asyncio.timeout(READ_DEADLINE):
                return await self.okta.user_risk(user_id)
        except (TimeoutError, OktaError):
            return None

    async def _cached(self, user_id: str) -> RiskSummary | None:
        if self.cache is None:
            return None
        try:
            found = await kv_read(self.cache, kv_key(user_id))
        except Exception:
            return None
        if found is None:
            return None
        with contextlib.suppress(ValueError):
            return RiskSummary.model_validate_json(found[0])
        return None

    async def _keep(self, user_id: str, summary: RiskSummary) -> None:
        if self.cache is None:
            return
        with contextlib.suppress(Exception):
            await self.cache.put(kv_key(user_id), summary.model_dump_json().encode())

    async def forget(self, user_id: str) -> None:
        """After the help desk changed the user: the next case reads the log again."""
        if self.cache is None:
            return
        with contextlib.suppress(Exception):
            await self.cache.delete(kv_key(user_id))
