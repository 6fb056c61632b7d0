"""The audit channel: one thread per case, built from the ``audit.>`` stream.

    threads = AuditThreads(slack, await AuditThreads.bucket(bus), channel="C0AUDIT01")
    await bus.consume(AUDIT_STREAM, "slack-audit", threads.on_event, deliver_new=True)

The parent message says who is verifying whom ("@agent is verifying jdoe@example.com") and is
updated with the outcome (verified and what was done / rejected / escalated / failed). Every event is
a reply in the thread. A thread starts with the first event that concerns a user or is not routine
(a user picked, a denial, an alert): a modal opened and closed again posts nothing, which keeps the
channel readable and under Slack's one-message-a-second pace. A REJECTED push, a security alert or
a limit hit is flagged loudly: a :rotating_light: reply that is also broadcast to the channel, and
the parent marked. Events without a case (a telephony toll-fraud limit, say) are posted on their own
when they are not routine.

The parent's ``ts`` and what it says live in KV (``audit_threads``), so any replica continues a
thread and a redelivered event is not posted twice. Nothing secret is ever posted: keys that name a
secret are dropped and token-shaped text is masked before anything is written.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace

import orjson
from nats.js.errors import APIError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.slack_responder import metrics
from services.slack_responder.slack_client import SlackClient, SlackError, SlackRateLimited, SlackRejected
from services.slack_responder.store import KeyedLocks
from services.slack_responder.views import clip, esc
from shared.bus import Bus, Delivery, RetryLater, kv_read
from shared.limits import kv_key
from shared.logging import SECRET_KEYS, get_logger, redact_secrets
from shared.messages import AuditEvent, Message

log = get_logger(__name__)

THREADS_BUCKET = "audit_threads"
THREADS_TTL = 7 * 24 * 3600
SEEN_EVENTS = 50  # event ids remembered per thread, against redelivery
MAX_DETAILS = 8
OPEN_FIRST_WAIT = 3.0  # the case's views.open goes first; never wait longer than a trigger lives

# Substrings that mark a detail key as secret even when it is not in SECRET_KEYS.
_SECRET_HINTS = ("password", "passcode", "secret", "token", "otp", "code", "answer", "assertion")

OUTCOME_ICONS = {
    "success": ":white_check_mark:",
    "failure": ":x:",
    "denied": ":no_entry:",
    "refused": ":no_entry_sign:",
    "pending": ":hourglass_flowing_sand:",
    "info": ":information_source:",
    "alert": ":rotating_light:",
}
STATUS_LINES = {
    "verifying": ":hourglass_flowing_sand: {agent} is verifying {target}",
    "verified": ":white_check_mark: {agent} verified {target}",
    "rejected": ":rotating_light: {agent}'s push to {target} was REJECTED",
    "timed out": ":alarm_clock: {agent}'s challenge to {target} timed out",
    "failed": ":x: {agent} could not verify {target}",
    "escalated": ":shield: {agent} verified {target}; escalated (protected user)",
    "denied": ":no_entry: {agent} is not authorized to use the helpdesk",
    "closed": ":file_folder: {agent} closed the verification of {target}",
}
ACTION_WORDS = {
    "temp_password": "temporary password set",
    "reset_link": "reset link emailed",
    "reset_all_factors": "all factors reset",
    "reset_factor": "factor reset",
    "unlock": "unlocked",
    "revoke_sessions": "signed out everywhere",
}


@dataclass(frozen=True)
class Thread:
    channel: str
    ts: str
    agent: str | None = None
    target: str | None = None
    status: str = "verifying"
    method: str | None = None
    done: list[str] = field(default_factory=list)
    alerts: int = 0
    seen: list[str] = field(default_factory=list)

    def parent_text(self) -> str:
        agent = f"<@{self.agent}>" if self.agent else "An agent"
        target = esc(clip(self.target, 200)) if self.target else "a caller"
        text = STATUS_LINES.get(self.status, STATUS_LINES["verifying"]).format(agent=agent, target=target)
        if self.status == "verified" and self.method:
            text += f" ({esc(clip(self.method, 100))})"
        if self.done:
            text += " · " + ", ".join(self.done)
        if self.alerts:
            text += f"  :rotating_light: *{self.alerts} alert{'s' if self.alerts > 1 else ''}: see thread*"
        return text


def safe_details(details: dict[str, str | int | float | bool | None]) -> dict[str, str]:
    """The details that may be shown: no key that names a secret, token shapes masked, clipped."""
    kept = {
        k: v
        for k, v in details.items()
        if v is not None and k.lower() not in SECRET_KEYS and not any(h in k.lower() for h in _SECRET_HINTS)
    }
    scrubbed = redact_secrets(None, "audit", dict(kept))
    return {k: clip(str(v), 200) for k, v in list(scrubbed.items())[:MAX_DETAILS]}


def is_loud(event: AuditEvent) -> bool:
    action = event.action.lower()
    return (
        event.severity == "alert"
        or event.outcome == "alert"
        or "reject" in action
        or "limit" in action
        or (event.outcome == "refused" and "limit" in str(event.details.get("reason", "")).lower())
    )


def is_routine(event: AuditEvent) -> bool:
    """An event that does not start a thread: nothing happened to anyone yet (a case opened, or closed
    before a user was picked). It stays in the AUDIT stream; the channel is for what touched a user."""
    return event.outcome == "info" and not is_loud(event) and target_of(event) is None


def target_of(event: AuditEvent) -> str | None:
    for key in ("target_login", "login", "target_email"):
        value = event.details.get(key)
        if isinstance(value, str) and value:
            return value
    return event.target


def next_status(thread: Thread, event: AuditEvent) -> Thread:
    """The thread after ``event``: its status, method and what was done (for the parent line)."""
    action = event.action.lower()
    status, method, done = thread.status, thread.method, list(thread.done)
    if event.outcome == "denied" and thread.status == "verifying":
        status = "denied"
    elif "reject" in action:
        status = "rejected"
    elif "escalat" in action:
        status = "escalated"
    elif "verif" in action and event.outcome == "success":
        status = "verified"
        found = event.details.get("method") or event.details.get("factor_type") or event.details.get("factor")
        method = str(found) if found else method
    elif "timeout" in action or "timed_out" in action or "expired" in action:
        status = "timed out" if status == "verifying" else status
    elif action.endswith("failed") and status == "verifying":
        status = "failed"
    elif ("close" in action) and status == "verifying":
        status = "closed"
    if event.outcome == "success":
        for key, words in ACTION_WORDS.items():
            if key in action or event.details.get("action") == key:
                if words not in done:
                    done.append(words)
                break
    target = target_of(event) or thread.target
    agent = thread.agent or event.actor
    return replace(thread, status=status, method=method, done=done, target=target, agent=agent)


def reply_text(event: AuditEvent) -> str:
    words = esc(event.action.replace("_", " ").replace(".", " › "))
    icon = OUTCOME_ICONS.get(event.outcome, "•")
    details = safe_details(event.details)
    facts = " · ".join(f"{esc(k.replace('_', ' '))}: {esc(v)}" for k, v in details.items())
    text = f"{icon} *{words}* — {event.outcome}" + (f"\n{facts}" if facts else "")
    if is_loud(event):
        text = f":rotating_light: *SECURITY ALERT* {text}"
    return clip(text, 3000)


class AuditThreads:
    def __init__(
        self,
        slack: SlackClient,
        kv: KeyValue,
        channel: str,
        wait_for_case: Callable[[str, float], Awaitable[None]] | None = None,
    ) -> None:
        self.slack = slack
        self.kv = kv
        self.channel = channel
        self.wait_for_case = wait_for_case
        self.locks = KeyedLocks()

    @staticmethod
    async def bucket(bus: Bus) -> KeyValue:
        return await bus.key_value(THREADS_BUCKET, ttl=THREADS_TTL)

    async def on_event(self, message: Message, delivery: Delivery) -> None:
        """Consumer handler of ``audit.>``."""
        if not isinstance(message, AuditEvent):
            return
        try:
            if message.case_id is None:
                await self._standalone(message)
            else:
                async with self.locks.hold(message.case_id):
                    await self._in_thread(message)
        except SlackRateLimited as exc:
            raise RetryLater(max(1.0, exc.retry_after), str(exc)) from None
        except SlackRejected as exc:
            log.warning("audit.post_rejected", error=exc.error, action=message.action)
        except SlackError as exc:
            raise RetryLater(2.0, str(exc)) from None

    async def _standalone(self, event: AuditEvent) -> None:
        if not is_loud(event) and event.severity == "info" and event.category != "security":
            return
        actor = f"<@{event.actor}> " if event.actor and event.actor.startswith("U") else ""
        text = f"{actor}{reply_text(event)}"
        await self.slack.post_message(self.channel, text)
        metrics.AUDIT_POSTS.labels("standalone").inc()

    async def _in_thread(self, event: AuditEvent) -> None:
        assert event.case_id is not None
        key = kv_key(event.case_id)
        # A routine case.opened, every case's first event, can find no thread: the busiest event
        # needs no KV read.
        current = None if event.action == "case.opened" and is_routine(event) else await self._get(key)
        if current is not None and event.event_id in current[0].seen:
            return
        if current is None and is_routine(event):
            metrics.AUDIT_POSTS.labels("not_posted").inc()
            return
        if current is None:
            # The case's views.open goes before its first post (a thread that exists was started after it).
            if self.wait_for_case is not None:
                await self.wait_for_case(event.case_id, OPEN_FIRST_WAIT)
            thread = next_status(Thread(channel=self.channel, ts="", agent=event.actor), event)
            ts = await self.slack.post_message(self.channel, thread.parent_text())
            metrics.AUDIT_POSTS.labels("parent").inc()
            thread = replace(thread, ts=ts)
            revision = await self._save(key, thread, None)
            current = (thread, revision)
        thread, revision = current
        before = thread.parent_text()
        loud = is_loud(event)
        await self.slack.post_message(thread.channel, reply_text(event), thread_ts=thread.ts, broadcast=loud)
        metrics.AUDIT_POSTS.labels("alert" if loud else "reply").inc()
        updated = next_status(thread, event)
        if loud:
            updated = replace(updated, alerts=updated.alerts + 1)
        updated = replace(updated, seen=[*updated.seen, event.event_id][-SEEN_EVENTS:])
        if updated.parent_text() != before:
            await self.slack.update_message(thread.channel, thread.ts, updated.parent_text())
            metrics.AUDIT_POSTS.labels("parent_update").inc()
        await self._save(key, updated, revision)

    async def _get(self, key: str) -> tuple[Thread, int] | None:
        found = await kv_read(self.kv, key)
        if found is None:
            return None
        value, revision = found
        return Thread(**orjson.loads(value)), revision

    async def _save(self, key: str, thread: Thread, revision: int | None) -> int:
        value = orjson.dumps(asdict(thread))
        try:
            if revision is None:
                return int(await self.kv.create(key, value))
            return int(await self.kv.update(key, value, last=revision))
        except (KeyWrongLastSequenceError, APIError):
            # Another replica wrote the thread meanwhile; the per-case lock makes this rare. Last write wins.
            return int(await self.kv.put(key, value))
