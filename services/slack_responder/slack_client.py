"""The responder's Slack Web API client: slack_sdk's ``AsyncWebClient`` and a small error tree.

    slack = SlackClient.from_settings(settings)             # inside a running event loop
    ref = await slack.open_view(trigger_id, view)            # ViewRef(view_id, hash)
    ref = await slack.update_view(ref.view_id, view, ref.hash)
    ts = await slack.post_message(channel, text, blocks, thread_ts=None)
    user_id = await slack.lookup_user_by_email("jane@example.com")   # None when no member has it
    ref = await slack.post(await slack.open_dm(user_id), text, blocks)   # MessageRef(channel, ts)
    await slack.update(ref, text, blocks)
    await slack.close()

429 answers are retried by slack_sdk's ``AsyncRateLimitErrorRetryHandler``, which sleeps for the
``Retry-After`` Slack sent (added to the default connection-error handler, not replacing it). What
still fails becomes one of::

    SlackError                      base; never carries the token
    ├── SlackUnavailable            connection error, timeout, 5xx: worth retrying later
    ├── SlackRateLimited            still 429 after the built-in retries; .retry_after seconds
    └── SlackRejected               Slack answered {"ok": false, "error": code}; .error
        ├── HashConflict            views.update: the view changed since that hash
        ├── TriggerExpired          views.open: expired_trigger_id / exchanged_trigger_id / invalid_trigger_id
        ├── ViewGone                views.update: not_found (the agent closed the modal)
        └── MessageGone             chat.update / a thread reply: message_not_found, thread_not_found

Every call also records Slack's health as last seen (``status``) for the App Home.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from services.slack_responder import metrics
from shared.messages import MessageRef, ViewRef
from shared.settings import Settings

DEFAULT_TIMEOUT = 10  # seconds per HTTP request; Slack answers views.* in well under a second

# slack_sdk logs request bodies (views, hence a temporary password) at DEBUG: its logger for our
# client never goes below WARNING, whatever the process's log level.
_SDK_LOG = logging.getLogger("helpdesk.slack_responder.slack_sdk")
_SDK_LOG.setLevel(logging.WARNING)


class SlackError(Exception):
    """Base of the responder's Slack errors. Messages name the method, never the token."""

    def __init__(self, method: str, detail: str) -> None:
        super().__init__(f"{method}: {detail}")
        self.method = method


class SlackUnavailable(SlackError):
    """Raised when Slack could not be reached, timed out or answered 5xx."""


class SlackRateLimited(SlackError):
    """Raised when Slack still answers 429 after the built-in Retry-After retries."""

    def __init__(self, method: str, retry_after: float) -> None:
        super().__init__(method, f"rate limited, retry after {retry_after:g} s")
        self.retry_after = retry_after


class SlackRejected(SlackError):
    """Raised when Slack answered ``{"ok": false, "error": ...}``; ``error`` is Slack's code."""

    def __init__(self, method: str, error: str, messages: list[str] | None = None) -> None:
        detail = error if not messages else f"{error} ({'; '.join(messages[:3])})"
        super().__init__(method, detail)
        self.error = error
        self.messages = messages or []


class HashConflict(SlackRejected):
    """Raised by ``views.update`` when the hash given is no longer the view's current hash."""


class TriggerExpired(SlackRejected):
    """Raised by ``views.open`` when the trigger_id is too old, already used, or unknown."""


class ViewGone(SlackRejected):
    """Raised by ``views.update`` when the view no longer exists (the agent closed the modal)."""


class MessageGone(SlackRejected):
    """Raised by ``chat.update`` (``message_not_found``) or a reply (``thread_not_found``) when the
    message is no longer there (deleted, or its channel's retention removed it)."""


_REJECTIONS: dict[str, type[SlackRejected]] = {
    "message_not_found": MessageGone,
    "thread_not_found": MessageGone,
    "hash_conflict": HashConflict,
    "expired_trigger_id": TriggerExpired,
    "exchanged_trigger_id": TriggerExpired,
    "invalid_trigger_id": TriggerExpired,
    "not_found": ViewGone,
}


@dataclass
class SlackStatus:
    """Slack's health as last seen by this process."""

    ok: bool | None = None
    at: float | None = None
    error: str | None = None

    def describe(self) -> str:
        if self.ok is None:
            return "unknown"
        return "ok" if self.ok else f"trouble ({self.error})"


class SlackClient:
    """Typed wrapper of the Web API methods the responder uses."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.web = client
        self.status = SlackStatus()

    @classmethod
    def from_settings(cls, settings: Settings, timeout: int = DEFAULT_TIMEOUT) -> SlackClient:
        """A client with one pooled HTTP session (without it slack_sdk opens a session per call)."""
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout),
            connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=30),
        )
        client = AsyncWebClient(
            token=settings.secret("SLACK_BOT_TOKEN"),
            base_url=settings.slack_api_url,
            timeout=timeout,
            session=session,
            logger=_SDK_LOG,
        )
        # Passing retry_handlers= would replace the defaults (the connection-error handler): append.
        client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
        return cls(client)

    async def close(self) -> None:
        session = self.web.session
        if session is not None and not session.closed:
            await session.close()

    async def _call(self, method: str, call: Callable[[], Awaitable[AsyncSlackResponse]]) -> AsyncSlackResponse:
        started = time.perf_counter()
        outcome = "ok"
        try:
            response = await call()
        except SlackApiError as exc:
            outcome, error = self._classify(method, exc)
            raise error from None
        except (TimeoutError, aiohttp.ClientError, SlackClientError, OSError) as exc:
            outcome = "unavailable"
            self._seen(False, type(exc).__name__)
            raise SlackUnavailable(method, type(exc).__name__) from None
        finally:
            metrics.SLACK_CALLS.labels(method, outcome).inc()
            metrics.SLACK_LATENCY.labels(method).observe(time.perf_counter() - started)
        self._seen(True, None)
        return response

    def _classify(self, method: str, exc: SlackApiError) -> tuple[str, SlackError]:
        response = exc.response
        status = int(getattr(response, "status_code", 200) or 200)
        data: Any = getattr(response, "data", None)
        code = str(data.get("error", "unknown_error")) if isinstance(data, dict) else "unknown_error"
        if status == 429:
            retry_after = _retry_after(getattr(response, "headers", {}) or {})
            self._seen(False, "ratelimited")
            return "ratelimited", SlackRateLimited(method, retry_after)
        if status >= 500:
            self._seen(False, f"HTTP {status}")
            return "unavailable", SlackUnavailable(method, f"HTTP {status}")
        # A rejection means Slack itself answered: it is up.
        self._seen(True, None)
        messages = data.get("response_metadata", {}).get("messages", []) if isinstance(data, dict) else []
        return code, _REJECTIONS.get(code, SlackRejected)(method, code, [str(m) for m in messages])

    def _seen(self, ok: bool, error: str | None) -> None:
        self.status = SlackStatus(ok=ok, at=time.time(), error=error)

    # -- methods ------------------------------------------------------------------------------

    async def open_view(self, trigger_id: str, view: dict[str, Any]) -> ViewRef:
        response = await self._call("views.open", lambda: self.web.views_open(trigger_id=trigger_id, view=view))
        return _view_ref(response)

    async def update_view(self, view_id: str, view: dict[str, Any], hash: str | None) -> ViewRef:
        kwargs: dict[str, Any] = {"view_id": view_id, "view": view}
        if hash:
            kwargs["hash"] = hash
        response = await self._call("views.update", lambda: self.web.views_update(**kwargs))
        return _view_ref(response)

    async def publish_home(self, user_id: str, view: dict[str, Any]) -> None:
        await self._call("views.publish", lambda: self.web.views_publish(user_id=user_id, view=view))

    async def post_message(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
        broadcast: bool = False,
    ) -> str:
        kwargs: dict[str, Any] = {"channel": channel, "text": text, "unfurl_links": False}
        if blocks is not None:
            kwargs["blocks"] = blocks
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
            if broadcast:
                kwargs["reply_broadcast"] = True
        response = await self._call("chat.postMessage", lambda: self.web.chat_postMessage(**kwargs))
        return str(response.get("ts", ""))

    async def update_message(
        self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]] | None = None
    ) -> None:
        kwargs: dict[str, Any] = {"channel": channel, "ts": ts, "text": text}
        if blocks is not None:
            kwargs["blocks"] = blocks
        await self._call("chat.update", lambda: self.web.chat_update(**kwargs))

    async def post(
        self, channel: str, text: str, blocks: list[dict[str, Any]] | None = None, thread_ts: str | None = None
    ) -> MessageRef:
        """``chat.postMessage``; the message's ``MessageRef`` (the channel as Slack answers it: a DM's ``D…`` id)."""
        kwargs: dict[str, Any] = {"channel": channel, "text": text, "unfurl_links": False, "unfurl_media": False}
        if blocks is not None:
            kwargs["blocks"] = blocks
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        response = await self._call("chat.postMessage", lambda: self.web.chat_postMessage(**kwargs))
        return MessageRef(channel=str(response.get("channel") or channel), ts=str(response.get("ts", "")))

    async def update(self, ref: MessageRef, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        """``chat.update`` of a message we posted; ``blocks=[]`` removes its blocks (and buttons)."""
        await self.update_message(ref.channel, ref.ts, text, blocks)

    async def lookup_user_by_email(self, email: str) -> str | None:
        """The id of the member with ``email`` (``users.lookupByEmail``), or None when no member has it."""
        try:
            response = await self._call("users.lookupByEmail", lambda: self.web.users_lookupByEmail(email=email))
        except SlackRejected as exc:
            if exc.error == "users_not_found":
                return None
            raise
        user = response.get("user")
        user_id = user.get("id") if isinstance(user, dict) else None
        return str(user_id) if user_id else None

    async def open_dm(self, user_id: str) -> str:
        """The id (``D…``) of the bot's DM with ``user_id`` (``conversations.open``; opening twice is fine)."""
        response = await self._call("conversations.open", lambda: self.web.conversations_open(users=user_id))
        channel = response.get("channel")
        channel_id = channel.get("id") if isinstance(channel, dict) else None
        if not channel_id:
            raise SlackRejected("conversations.open", "no_channel_in_answer")
        return str(channel_id)

    async def post_ephemeral(
        self, channel: str, user: str, text: str, blocks: list[dict[str, Any]] | None = None
    ) -> None:
        kwargs: dict[str, Any] = {"channel": channel, "user": user, "text": text}
        if blocks is not None:
            kwargs["blocks"] = blocks
        await self._call("chat.postEphemeral", lambda: self.web.chat_postEphemeral(**kwargs))

    async def complete_function(
        self, function_execution_id: str, outputs: dict[str, Any] | None = None, error: str | None = None
    ) -> None:
        """Finish a Workflow Builder step: ``functions.completeSuccess`` with ``outputs``, or ``completeError``."""
        if error is not None:
            await self._call(
                "functions.completeError",
                lambda: self.web.functions_completeError(function_execution_id=function_execution_id, error=error),
            )
            return
        await self._call(
            "functions.completeSuccess",
            lambda: self.web.functions_completeSuccess(
                function_execution_id=function_execution_id, outputs=outputs or {}
            ),
        )

    async def user_info(self, user_id: str) -> dict[str, Any]:
        response = await self._call("users.info", lambda: self.web.users_info(user=user_id))
        user = response.get("user")
        return user if isinstance(user, dict) else {}


def _view_ref(response: AsyncSlackResponse) -> ViewRef:
    view = response.get("view") or {}
    return ViewRef(view_id=str(view.get("id", "")), hash=view.get("hash"))


def _retry_after(headers: Any) -> float:
    for key, value in dict(headers).items():
        if str(key).lower() == "retry-after":
            raw = value[0] if isinstance(value, list) and value else value
            try:
                return float(raw)
            except (TypeError, ValueError):
                return 1.0
    return 1.0
