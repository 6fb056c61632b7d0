"""Messages to people other than the agent, from the ``helpdesk.notify.>`` stream.

    notices = Notices(slack, await Notices.bucket(bus))
    await bus.consume(NOTIFY_STREAM, "slack-notify", notices.on_notice, max_in_flight=4)

The worker decides whom to tell; this posts it:

- :class:`ApprovalNotice` ``requested``: the request with Approve / Deny, in ``channel_id``, or as a
  DM to ``manager_email`` (``users.lookupByEmail`` → ``conversations.open`` → ``chat.postMessage``).
  A manager not in Slack: the request goes to ``channel_id`` saying so, or, without one, the
  requester is told it could not be sent. Any other status updates the request (``message``, or the
  one recorded here) to show the outcome, without buttons; a ``note`` (a refused decision) is a reply
  in the request's thread, and the buttons stay while the request is still open.
- :class:`TargetNotice`: a DM to the target user with "This wasn't me"; ``disputed`` updates it.
  A user not in Slack is logged and skipped: nothing would make a retry succeed.
- :class:`SecurityNotice`: posted in ``channel_id``, with "Open in Okta Admin" when there is a link.

A redelivered or republished notice posts nothing twice: before posting, a record is created in KV
(``notices``) under the notice's identity (the approval; the case, time and changes of a target
notice; the ``Nats-Msg-Id`` of a note or an alert), and it keeps the posted message's channel and
``ts``. A record left "posting" by a replica that died mid-post is taken over after
``CLAIM_TIMEOUT``. Rate limits and outages are retried (``RetryLater``); Slack's refusals are
logged with their error code and acknowledged. Neither the approval token nor the notice token is
ever logged or written anywhere but in a button's value.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace

import orjson
from nats.js.errors import APIError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.slack_responder import notice_views
from services.slack_responder.slack_client import SlackClient, SlackError, SlackRateLimited, SlackRejected
from services.slack_responder.store import KeyedLocks
from shared.bus import Bus, Delivery, RetryLater, kv_read
from shared.limits import kv_key
from shared.logging import get_logger
from shared.messages import ApprovalNotice, ApprovalStatus, Message, MessageRef, SecurityNotice, TargetNotice

log = get_logger(__name__)

NOTICES_BUCKET = "notices"
NOTICES_TTL = 3 * 24 * 3600  # longer than the stream keeps a notice (a day) or an approval lives
CLAIM_TIMEOUT = 60.0  # a "posting" record this old was left by a replica that stopped mid-post
CLAIM_RETRY = 2.0  # another replica is posting this notice right now: look again after this
MSG_ID_HEADER = "Nats-Msg-Id"

POSTING = "posting"
POSTED = "posted"
DISPUTED = "disputed"

# Which outcome may replace which on the request: a late "approved" never hides "used"; an approval
# that was never used may still end as "expired".
STATUS_RANK = {
    ApprovalStatus.REQUESTED: 0,
    ApprovalStatus.APPROVED: 1,
    ApprovalStatus.DENIED: 2,
    ApprovalStatus.EXPIRED: 2,
    ApprovalStatus.USED: 3,
}


@dataclass(frozen=True)
class Posted:
    """What was posted for one notice: nothing yet (``posting``), or the message (None: nowhere to post)."""

    state: str
    at: float
    channel: str | None = None
    ts: str | None = None
    status: str | None = None  # an approval's status as the message shows it; a target notice's "disputed"

    @property
    def ref(self) -> MessageRef | None:
        return MessageRef(channel=self.channel, ts=self.ts) if self.channel and self.ts else None


Found = tuple[Posted, int]


def digest(*parts: str) -> str:
    """A short, stable name for a notice's content (never for a token: those stay out of keys)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


def approval_key(notice: ApprovalNotice) -> str:
    return f"approval.{kv_key(notice.case_id)}.{kv_key(notice.approval.approval_id)}"


def note_key(notice: ApprovalNotice, msg_id: str | None) -> str:
    approval = notice.approval
    identity = msg_id or digest(notice.note or "", approval.decided_by or "", str(approval.decided_at or ""))
    return f"{approval_key(notice)}.note.{kv_key(identity)}"


def target_key(notice: TargetNotice) -> str:
    identity = digest(notice.target_email.lower(), notice.at.isoformat(), *notice.changes)
    return f"user.{kv_key(notice.case_id)}.{identity}"


def security_key(notice: SecurityNotice, msg_id: str | None) -> str:
    identity = msg_id or digest(notice.kind, notice.channel_id, notice.text)
    return f"security.{kv_key(notice.case_id)}.{kv_key(identity)}"


class Notices:
    """Consumer of ``helpdesk.notify.>``: posts and updates the messages the worker asks for."""

    def __init__(self, slack: SlackClient, kv: KeyValue, clock: Callable[[], float] = time.time) -> None:
        self.slack = slack
        self.kv = kv
        self.clock = clock
        self.locks = KeyedLocks()

    @staticmethod
    async def bucket(bus: Bus) -> KeyValue:
        # On file (the default): a NATS restart must not make a redelivered notice post again.
        return await bus.key_value(NOTICES_BUCKET, ttl=NOTICES_TTL)

    async def on_notice(self, message: Message, delivery: Delivery) -> None:
        """Consumer handler of ``helpdesk.notify.>``."""
        msg_id = delivery.headers.get(MSG_ID_HEADER) or None
        kind = type(message).__name__
        try:
            if isinstance(message, ApprovalNotice):
                async with self.locks.hold(approval_key(message)):
                    await self._approval(message, msg_id)
            elif isinstance(message, TargetNotice):
                async with self.locks.hold(target_key(message)):
                    await self._target(message)
            elif isinstance(message, SecurityNotice):
                await self._security(message, msg_id)
        except SlackRateLimited as exc:
            raise RetryLater(max(1.0, exc.retry_after), str(exc)) from None
        except SlackRejected as exc:
            # Slack's code only: its detail lines may quote what was sent.
            log.warning("notice.rejected", notice=kind, method=exc.method, error=exc.error)
        except SlackError as exc:
            raise RetryLater(2.0, str(exc)) from None

    # -- approvals ---------------------------------------------------------------------------------

    async def _approval(self, notice: ApprovalNotice, msg_id: str | None) -> None:
        key = approval_key(notice)
        approval_id = notice.approval.approval_id
        if notice.note:
            await self._note(notice, key, msg_id)
            if notice.approval.status != ApprovalStatus.REQUESTED:
                # Refused because the request is over (it expired, someone decided first): the message
                # shows that too, so nobody else clicks a dead button.
                await self._outcome(notice, key)
        elif notice.approval.status == ApprovalStatus.REQUESTED:
            posted = await self._post_once(key, lambda: self._deliver_request(notice), status=ApprovalStatus.REQUESTED)
            if posted:
                log.info("notice.approval.posted", approval_id=approval_id)
        else:
            await self._outcome(notice, key)

    async def _deliver_request(self, notice: ApprovalNotice) -> MessageRef | None:
        approval_id = notice.approval.approval_id
        if notice.manager_email:
            manager = await self.slack.lookup_user_by_email(notice.manager_email)
            if manager is not None:
                text, blocks = notice_views.approval_request(notice)
                return await self.slack.post(await self.slack.open_dm(manager), text, blocks)
            log.warning(
                "notice.approval.manager_not_in_slack", approval_id=approval_id, fallback=bool(notice.channel_id)
            )
            if not notice.channel_id:
                # Nobody can decide: tell the agent who waits for it, rather than let it expire unseen.
                dm = await self.slack.open_dm(notice.requester.user_id)
                await self.slack.post(dm, notice_views.approval_undeliverable(notice))
                return None
            text, blocks = notice_views.approval_request(notice, redirected_from=notice.manager_email)
            return await self.slack.post(notice.channel_id, text, blocks)
        if notice.channel_id:
            text, blocks = notice_views.approval_request(notice)
            return await self.slack.post(notice.channel_id, text, blocks)
        log.warning("notice.approval.nowhere_to_post", approval_id=approval_id)
        return None

    async def _outcome(self, notice: ApprovalNotice, key: str) -> None:
        status = notice.approval.status
        found = await self._get(key)
        record = found[0] if found else None
        shown = ApprovalStatus(record.status) if record and record.status in STATUS_RANK else None
        if shown is not None and STATUS_RANK[shown] >= STATUS_RANK[status]:
            return  # this outcome (or a later one) is on the message already
        ref = notice.message or (record.ref if record else None)
        if ref is None:
            log.warning("notice.approval.no_message", approval_id=notice.approval.approval_id, status=status.value)
            return
        text, blocks = notice_views.approval_outcome(notice)
        await self.slack.update(ref, text, blocks)
        log.info("notice.approval.updated", approval_id=notice.approval.approval_id, status=status.value)
        base = record or Posted(state=POSTED, at=self.clock(), channel=ref.channel, ts=ref.ts)
        await self._save(key, replace(base, status=status.value), found)

    async def _note(self, notice: ApprovalNotice, key: str, msg_id: str | None) -> None:
        ref = notice.message
        if ref is None:
            found = await self._get(key)
            ref = found[0].ref if found else None
        if ref is None:
            log.warning("notice.approval.note_without_message", approval_id=notice.approval.approval_id)
            return
        thread = ref

        async def reply() -> MessageRef:
            return await self.slack.post(thread.channel, notice_views.approval_note(notice), thread_ts=thread.ts)

        if await self._post_once(note_key(notice, msg_id), reply):
            log.info("notice.approval.note_posted", approval_id=notice.approval.approval_id)

    # -- the target user ---------------------------------------------------------------------------

    async def _target(self, notice: TargetNotice) -> None:
        key = target_key(notice)
        if not notice.disputed:
            if await self._post_once(key, lambda: self._deliver_target(notice)):
                log.info("notice.user.posted")
            return
        found = await self._get(key)
        record = found[0] if found else None
        if record is not None and record.status == DISPUTED:
            return
        ref = notice.message or (record.ref if record else None)
        if ref is None:
            log.warning("notice.user.no_message")
            return
        text, blocks = notice_views.target_disputed(notice)
        await self.slack.update(ref, text, blocks)
        log.info("notice.user.disputed_shown")
        base = record or Posted(state=POSTED, at=self.clock(), channel=ref.channel, ts=ref.ts)
        await self._save(key, replace(base, status=DISPUTED), found)

    async def _deliver_target(self, notice: TargetNotice) -> MessageRef | None:
        user_id = await self.slack.lookup_user_by_email(notice.target_email)
        if user_id is None:
            # The email is not a Slack member's (a contractor, a shared mailbox): nothing to retry.
            log.warning("notice.user.not_in_slack", email_domain=notice.target_email.rpartition("@")[2])
            return None
        text, blocks = notice_views.target_notice(notice)
        return await self.slack.post(await self.slack.open_dm(user_id), text, blocks)

    # -- security ----------------------------------------------------------------------------------

    async def _security(self, notice: SecurityNotice, msg_id: str | None) -> None:
        text, blocks = notice_views.security_notice(notice)
        posted = await self._post_once(
            security_key(notice, msg_id), lambda: self.slack.post(notice.channel_id, text, blocks)
        )
        if posted:
            log.info("notice.security.posted", kind=notice.kind)

    # -- posting once ------------------------------------------------------------------------------

    async def _post_once(
        self, key: str, post: Callable[[], Awaitable[MessageRef | None]], status: str | None = None
    ) -> bool:
        """Run ``post`` unless the record at ``key`` says it ran; True when it ran now.

        The record is claimed first (a KV create, or a compare-and-swap over a stale claim), so of two
        deliveries at once only one posts; a failed post gives the claim back for the retry.
        """
        found = await self._get(key)
        if found is not None:
            record = found[0]
            if record.state != POSTING:
                return False  # a redelivery: it was posted (or there was nowhere to post it)
            if self.clock() - record.at < CLAIM_TIMEOUT:
                raise RetryLater(CLAIM_RETRY, "the notice is being posted by another delivery")
        claim = Posted(state=POSTING, at=self.clock(), status=status)
        claimed = await self._write(key, claim, found[1] if found else None)
        if claimed is None:
            raise RetryLater(CLAIM_RETRY, "the notice was claimed by another delivery")
        try:
            ref = await post()
        except BaseException:
            with contextlib.suppress(Exception):
                await self.kv.delete(key, last=claimed)
            raise
        done = replace(claim, state=POSTED, channel=ref.channel if ref else None, ts=ref.ts if ref else None)
        await self._save(key, done, (claim, claimed))
        return True

    # -- KV ----------------------------------------------------------------------------------------

    async def _get(self, key: str) -> Found | None:
        found = await kv_read(self.kv, key)
        if found is None:
            return None
        value, revision = found
        return Posted(**orjson.loads(value)), revision

    async def _write(self, key: str, record: Posted, revision: int | None) -> int | None:
        """Create (``revision`` None) or compare-and-swap; None when another writer got there first."""
        value = orjson.dumps(asdict(record))
        try:
            if revision is None:
                return int(await self.kv.create(key, value))
            return int(await self.kv.update(key, value, last=revision))
        except (KeyWrongLastSequenceError, APIError):
            return None

    async def _save(self, key: str, record: Posted, found: Found | None) -> None:
        if await self._write(key, record, found[1] if found else None) is None:
            # Another delivery wrote meanwhile (the per-key lock makes this a cross-replica race):
            # what was posted is what this record says, so last write wins.
            await self.kv.put(key, orjson.dumps(asdict(record)))
