"""A faithful local fake of the Slack Web API, served by aiohttp under ``/api/<method>``.

Point the real ``slack_sdk`` client at it through ``base_url``; the fake answers with Slack's JSON
(HTTP 200 and ``{"ok": false, "error": ...}`` for API errors, 429 with ``Retry-After`` when
rate-limited) and keeps what it was sent, so tests can assert on views, messages and threads:

    fake = FakeSlack(bot_token="xoxb-test")
    url = await fake.start()
    client = AsyncWebClient(token="xoxb-test", base_url=f"{url}/api/")

    trigger_id = fake.issue_trigger(AGENT_USER_ID)        # what a slash command would carry
    opened = await client.views_open(trigger_id=trigger_id, view=View(type="modal", ...))
    print(fake.render_text(fake.views[opened["view"]["id"]]))

    fake.rate_limit_next("chat.postMessage", retry_after=1)   # next call: 429 + Retry-After: 1
    fake.fail_next("views.update", error="hash_conflict")     # next call: {"ok": false, ...}
    fake.advance(3.5)                                         # trigger ids issued before have expired
    await fake.stop()

Methods served: ``auth.test``, ``views.open``, ``views.push``, ``views.update``, ``views.publish``,
``chat.postMessage``, ``chat.update``, ``chat.postEphemeral``, ``users.info``,
``users.lookupByEmail``, ``conversations.open``, ``conversations.info`` (``is_member``: the bot is in
every channel of ``add_channel`` until ``leave_channel``) and ``apps.connections.open`` (the app-level
token ``app_token`` only, as Slack). Every answer to the bot token carries ``X-OAuth-Scopes`` with
``scopes`` (what the install granted; a test removes one to see ``helpdesk check`` notice).
A DM is the channel ``D…`` that ``conversations.open`` gives for a user (the same id every time;
posting to the user id lands there too):

    dm = (await client.conversations_open(users=EMPLOYEE_USER_ID))["channel"]["id"]
    await client.chat_postMessage(channel=dm, text="hi", blocks=[...])
    fake.dm_messages(EMPLOYEE_USER_ID)            # what the user sees in the DM, oldest first
    fake.message(dm, ts)                          # one message as stored (blocks, edited, replies)

A click on a posted message's button goes to the gateway through :class:`sandbox.slack_agent.SlackAgent`
(``click_posted``). Arguments are read from the query string, a form-encoded body (JSON
strings inside form fields such as ``view`` or ``blocks`` are decoded, as Slack does) or a JSON body
(which is what ``AsyncWebClient`` sends for ``views.*`` and ``chat.*``). The token is taken from
``Authorization: Bearer …`` or, as Slack allows for form and query arguments, a ``token`` field.
"""

from __future__ import annotations

import copy
import json
import random
import re
import secrets
import string
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from helpdesk.manifest import BOT_SCOPES
from sandbox.base import FakeService, json_response

TEAM_ID = "T0HELPDSK"
TEAM_NAME = "Helpdesk Sandbox"
TEAM_URL = "https://helpdesk-sandbox.slack.com/"
APP_ID = "A0HELPDESK"
BOT_ID = "B0HELPDESK"
BOT_USER_ID = "U0HELPBOT"
BOT_USER_NAME = "helpdesk"

AGENT_USER_ID = "U0AGENT01"
AGENT_EMAIL = "agent@example.com"
SECOND_AGENT_USER_ID = "U0AGENT02"
SECOND_AGENT_EMAIL = "agent2@example.com"
EMPLOYEE_USER_ID = "U0EMPLOY1"
EMPLOYEE_EMAIL = "employee@example.com"
MANAGER_USER_ID = "U0MANAGR1"
MANAGER_EMAIL = "manager@example.com"
# Slack members for the sandbox Okta org's users (sandbox/okta_data.py), who get the target notices.
ALICE_USER_ID = "U0ALICE01"
ALICE_EMAIL = "alice@example.com"
BOB_USER_ID = "U0BOB0001"
BOB_EMAIL = "bob@example.com"

AUDIT_CHANNEL_ID = "C0AUDIT01"
AUDIT_CHANNEL_NAME = "helpdesk-audit"
HELPDESK_CHANNEL_ID = "C0HELPDSK"
GENERAL_CHANNEL_ID = "C0GENERAL"
APPROVALS_CHANNEL_ID = "C0APPROVL"
APPROVALS_CHANNEL_NAME = "helpdesk-approvals"
SECURITY_CHANNEL_ID = "C0SECURTY"
SECURITY_CHANNEL_NAME = "security-alerts"

DEFAULT_BOT_TOKEN = "xoxb-sandbox-0000000000-helpdesk"
DEFAULT_APP_TOKEN = "xapp-1-A0HELPDESK-0000000000-sandbox"

MODAL_TEXT_LIMIT = 24
MAX_VIEW_BLOCKS = 100
MAX_MESSAGE_BLOCKS = 50
MAX_PRIVATE_METADATA = 3000
MAX_CALLBACK_ID = 255
MAX_VIEW_STACK = 3
MAX_MPIM_USERS = 8  # conversations.open: a group DM of up to 8 people besides the bot

_ALNUM = string.ascii_uppercase + string.digits
_BLOCK_ID_CHARS = string.ascii_letters + string.digits
_MRKDWN_LINK = re.compile(r"<([^<>|]+)\|([^<>]+)>")
_MRKDWN_MENTION = re.compile(r"<([@#!])([^<>|]+)>")

Args = dict[str, Any]
MethodHandler = Callable[[Args], Awaitable[web.Response]]


@dataclass
class _Trigger:
    """A trigger_id as Slack hands one out: valid for a few seconds, exchangeable once."""

    user_id: str
    issued_at: float
    view_id: str | None = None
    used: bool = False


@dataclass
class _Injected:
    """A scripted answer for the next ``remaining`` calls of one method."""

    remaining: int
    error: str = ""
    retry_after: int | None = None


@dataclass
class _Channel:
    id: str
    name: str
    is_im: bool = False
    messages: list[dict[str, Any]] = field(default_factory=list)


class SlackApiFailure(Exception):
    """Raised inside a method handler to answer ``{"ok": false, "error": ...}`` (HTTP 200)."""

    def __init__(self, error: str, messages: Iterable[str] = ()) -> None:
        super().__init__(error)
        self.error = error
        self.messages = list(messages)


def _slack_error(error: str, messages: Iterable[str] = ()) -> web.Response:
    payload: dict[str, Any] = {"ok": False, "error": error}
    if messages := list(messages):
        payload["response_metadata"] = {"messages": messages}
    return json_response(payload)


def _ok(**payload: Any) -> web.Response:
    return json_response({"ok": True, **payload})


def _text_of(obj: Any) -> str:
    """The text of a Block Kit text object (plain_text or mrkdwn), or ``""``."""
    if isinstance(obj, dict):
        return str(obj.get("text", ""))
    if isinstance(obj, str):
        return obj
    return ""


class FakeSlack(FakeService):
    """The Slack Web API methods this project calls, with Slack's errors and limits.

    ``clock`` returns epoch seconds (default ``time.time``); ``advance(seconds)`` moves the fake's
    notion of now forward, so trigger expiry is tested without sleeping.
    """

    def __init__(
        self,
        bot_token: str = DEFAULT_BOT_TOKEN,
        *,
        clock: Callable[[], float] = time.time,
        expire_trigger_after: float = 3.0,
    ) -> None:
        super().__init__()
        self.bot_token = bot_token
        self.app_token = DEFAULT_APP_TOKEN
        self.scopes: list[str] = list(BOT_SCOPES)  # what installing the app from its manifest grants
        self.left_channels: set[str] = set()
        self.clock = clock
        self.expire_trigger_after = expire_trigger_after
        self.team_id = TEAM_ID
        self._offset = 0.0
        self._last_ts_micros = 0
        self._trigger_seq = 0

        self.views: dict[str, dict[str, Any]] = {}
        """view_id → the current view object, as Slack would return it (modals and home tabs)."""
        self.opened_views: list[dict[str, Any]] = []
        """Every view as returned by a successful ``views.open``, in order (snapshots)."""
        self.home_views: dict[str, dict[str, Any]] = {}
        """user_id → the last view published to that user's App Home."""
        self.ephemerals: list[dict[str, Any]] = []
        """Every ``chat.postEphemeral``: ``{"channel", "user" (who sees it), "message"}``."""
        self.users: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, _Channel] = {}
        self.api_log: list[tuple[str, Args]] = []
        """(method, parsed arguments) for every ``/api/<method>`` request, failed ones included."""

        self._triggers: dict[str, _Trigger] = {}
        self._trigger_views: dict[str, str] = {}
        self._stacks: dict[str, list[str]] = {}
        self._modal_owners: dict[str, str] = {}
        self._external_ids: dict[str, str] = {}
        self._injected: dict[str, list[_Injected]] = {}
        # Workflow Builder step runs: execution id → None while running, then {"outputs"} or {"error"}.
        self.function_runs: dict[str, dict[str, Any] | None] = {}

        self._methods: dict[str, MethodHandler] = {
            "auth.test": self._auth_test,
            "views.open": self._views_open,
            "views.push": self._views_push,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "users.info": self._users_info,
            "users.lookupByEmail": self._users_lookup_by_email,
            "conversations.open": self._conversations_open,
            "conversations.info": self._conversations_info,
            "functions.completeSuccess": self._functions_complete_success,
            "functions.completeError": self._functions_complete_error,
        }
        self.app.router.add_route("*", "/api/{method}", self._dispatch)

        self.add_user(AGENT_USER_ID, AGENT_EMAIL, "Alex Agent", "alex")
        self.add_user(SECOND_AGENT_USER_ID, SECOND_AGENT_EMAIL, "Sam Support", "sam")
        self.add_user(EMPLOYEE_USER_ID, EMPLOYEE_EMAIL, "Erin Employee", "erin")
        self.add_user(MANAGER_USER_ID, MANAGER_EMAIL, "Morgan Manager", "morgan")
        self.add_user(ALICE_USER_ID, ALICE_EMAIL, "Alice Doe", "alice")
        self.add_user(BOB_USER_ID, BOB_EMAIL, "Bob Baker", "bob")
        self.add_user(BOT_USER_ID, "", "Helpdesk Verify", BOT_USER_NAME, is_bot=True)
        self.add_channel(AUDIT_CHANNEL_ID, AUDIT_CHANNEL_NAME)
        self.add_channel(HELPDESK_CHANNEL_ID, "helpdesk")
        self.add_channel(GENERAL_CHANNEL_ID, "general")
        self.add_channel(APPROVALS_CHANNEL_ID, APPROVALS_CHANNEL_NAME)
        self.add_channel(SECURITY_CHANNEL_ID, SECURITY_CHANNEL_NAME)

    # ------------------------------------------------------------------ time and scenario switches

    def now(self) -> float:
        """The fake's current time: ``clock()`` plus everything ``advance`` added."""
        return self.clock() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the fake's clock forward (trigger expiry, message ts), without sleeping."""
        self._offset += seconds

    def rate_limit_next(self, method: str, retry_after: int = 1, n: int = 1) -> None:
        """Answer the next ``n`` calls of ``method`` with 429, ``Retry-After`` and ``ratelimited``."""
        self._injected.setdefault(method, []).append(_Injected(remaining=n, retry_after=retry_after))

    def fail_next(self, method: str, error: str = "internal_error", n: int = 1) -> None:
        """Answer the next ``n`` calls of ``method`` with ``{"ok": false, "error": error}``."""
        self._injected.setdefault(method, []).append(_Injected(remaining=n, error=error))

    def issue_trigger(self, user_id: str = AGENT_USER_ID, *, view_id: str | None = None) -> str:
        """A fresh trigger_id, as carried by a slash command, shortcut or block action.

        ``view_id`` marks a trigger that comes from an interaction inside that modal, which is
        what ``views.push`` needs to know which stack to push onto.
        """
        self._trigger_seq += 1
        now = self.now()
        trigger_id = f"{int(now * 1000) + self._trigger_seq}.{self.team_id_number}.{secrets.token_hex(16)}"
        self._triggers[trigger_id] = _Trigger(user_id=user_id, issued_at=now, view_id=view_id)
        return trigger_id

    @property
    def team_id_number(self) -> int:
        """A stable numeric form of the team id, the middle part of a trigger_id."""
        return int.from_bytes(self.team_id.encode(), "big") % 10**11

    # ------------------------------------------------------------------ seeding

    def add_user(
        self,
        user_id: str,
        email: str,
        real_name: str,
        display_name: str = "",
        *,
        tz: str = "Europe/Amsterdam",
        tz_offset: int = 3600,
        is_bot: bool = False,
        deleted: bool = False,
    ) -> dict[str, Any]:
        """Add (or replace) a workspace member; returns the ``users.info`` user object."""
        name = display_name or (email.split("@")[0] if email else user_id.lower())
        profile: dict[str, Any] = {
            "title": "",
            "phone": "",
            "skype": "",
            "real_name": real_name,
            "real_name_normalized": real_name,
            "display_name": display_name,
            "display_name_normalized": display_name,
            "fields": None,
            "status_text": "",
            "status_emoji": "",
            "status_expiration": 0,
            "avatar_hash": secrets.token_hex(6),
            "first_name": real_name.split(" ")[0] if real_name else "",
            "last_name": " ".join(real_name.split(" ")[1:]),
            "image_24": f"https://avatars.example.com/{user_id}_24.png",
            "image_72": f"https://avatars.example.com/{user_id}_72.png",
            "team": self.team_id,
        }
        if email:
            profile["email"] = email
        if is_bot:
            profile["bot_id"] = BOT_ID
            profile["api_app_id"] = APP_ID
        user: dict[str, Any] = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "deleted": deleted,
            "color": "9f69e7",
            "real_name": real_name,
            "tz": tz,
            "tz_label": "Central European Time",
            "tz_offset": tz_offset,
            "profile": profile,
            "is_admin": False,
            "is_owner": False,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": is_bot,
            "is_app_user": False,
            "updated": int(self.now()),
            "is_email_confirmed": bool(email),
            "who_can_share_contact_card": "EVERYONE",
        }
        self.users[user_id] = user
        return user

    def add_channel(self, channel_id: str, name: str) -> None:
        """Add a channel the bot is a member of (``chat.*`` accept its id, ``name`` or ``#name``)."""
        self.channels.setdefault(channel_id, _Channel(id=channel_id, name=name))

    def leave_channel(self, channel_id: str) -> None:
        """The bot is no longer in ``channel_id``: ``conversations.info`` says ``is_member: false``."""
        self.left_channels.add(channel_id)

    # ------------------------------------------------------------------ helpers for tests and demo

    def last_view_for(self, key: str) -> dict[str, Any] | None:
        """The current view opened or pushed with trigger ``key``, or with view/external id ``key``."""
        view_id = self._trigger_views.get(key) or self._external_ids.get(key) or key
        return self.views.get(view_id)

    def view_stack(self, view_id: str) -> list[dict[str, Any]]:
        """The open modal stack that holds ``view_id``, root first; empty once closed."""
        view = self.views.get(view_id)
        if view is None:
            return []
        return [self.views[v] for v in self._stacks.get(view["root_view_id"], [])]

    def replace_view(self, view_id: str, view_in: dict[str, Any]) -> dict[str, Any]:
        """What Slack does with a ``response_action: update`` answer: the view is swapped in place,
        same id, new hash. Returns the stored view."""
        current = self.views[view_id]
        updated = self._materialize(
            view_in,
            view_id=current["id"],
            root_view_id=current["root_view_id"],
            previous_view_id=current["previous_view_id"],
        )
        self._store(updated)
        return updated

    def close_view(self, view_id: str) -> None:
        """The user closes a modal: ``view_id`` and every view pushed above it go away."""
        view = self.views.get(view_id)
        if view is None or view["type"] != "modal":
            return
        stack = self._stacks.get(view["root_view_id"], [])
        if view_id in stack:
            for closed in stack[stack.index(view_id) :]:
                gone = self.views.pop(closed, None)
                if gone and gone.get("external_id"):
                    self._external_ids.pop(gone["external_id"], None)
            del stack[stack.index(view_id) :]
        if not stack:
            self._stacks.pop(view["root_view_id"], None)

    def messages_in(self, channel: str) -> list[dict[str, Any]]:
        """Every message in ``channel`` (id or name), parents and replies, oldest first."""
        found = self._find_channel(channel)
        return list(found.messages) if found else []

    def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """The thread whose parent has ``ts``: ``[parent, *replies]``, or ``[]`` if no such message."""
        messages = self.messages_in(channel)
        parent = next((m for m in messages if m["ts"] == ts), None)
        if parent is None:
            return []
        return [parent, *[m for m in messages if m.get("thread_ts") == ts and m["ts"] != ts]]

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        """The message with ``ts`` in ``channel`` (id, name, or a user id for the bot's DM with them)."""
        return next((m for m in self.messages_in(channel) if m["ts"] == ts), None)

    def resolve_channel(self, channel: str) -> str | None:
        """The id of ``channel`` given as an id, a name (``#name``) or a user id (their DM), or None."""
        found = self._find_channel(channel)
        return found.id if found else None

    def dm_channel_id(self, user_id: str) -> str:
        """The id of the bot's DM with ``user_id``, as ``conversations.open`` gives it (stable)."""
        return "D" + user_id[1:]

    def dm_messages(self, user_id: str) -> list[dict[str, Any]]:
        """Every message in the bot's DM with ``user_id``, oldest first (``[]`` if none was sent)."""
        found = self.channels.get(self.dm_channel_id(user_id))
        return list(found.messages) if found else []

    def user_by_email(self, email: str) -> dict[str, Any] | None:
        """The member whose profile email is ``email`` (case-insensitive), as ``users.lookupByEmail`` finds it."""
        wanted = email.strip().lower()
        if not wanted:
            return None
        return next((u for u in self.users.values() if u["profile"].get("email", "").lower() == wanted), None)

    def method_calls(self, method: str) -> list[Args]:
        """The parsed arguments of every call to ``method`` (e.g. ``"views.update"``), in order."""
        return [args for name, args in self.api_log if name == method]

    # ------------------------------------------------------------------ dispatch

    async def _dispatch(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        try:
            args, token = await self._parse(request)
        except SlackApiFailure as failure:
            self.api_log.append((method, {}))
            return _slack_error(failure.error, failure.messages)
        self.api_log.append((method, args))
        handler = self._methods.get(method)
        if handler is None and method != "apps.connections.open":
            return json_response({"ok": False, "error": "unknown_method"}, status=404)
        if not token:
            return _slack_error("not_authed")
        if method == "apps.connections.open":
            return self._apps_connections_open(token)
        if token != self.bot_token:
            return _slack_error("invalid_auth")
        injected = self._take_injected(method)
        if injected is not None:
            if injected.retry_after is not None:
                return json_response(
                    {"ok": False, "error": "ratelimited"},
                    status=429,
                    headers={"Retry-After": str(injected.retry_after)},
                )
            return _slack_error(injected.error)
        assert handler is not None
        try:
            response = await handler(args)
        except SlackApiFailure as failure:
            response = _slack_error(failure.error, failure.messages)
        response.headers["X-OAuth-Scopes"] = ",".join(self.scopes)
        return response

    def _apps_connections_open(self, token: str) -> web.Response:
        if token == self.bot_token:
            return _slack_error("not_allowed_token_type")
        if token != self.app_token:
            return _slack_error("invalid_auth")
        return _ok(url=f"wss://wss-primary.slack.com/link/?ticket={secrets.token_hex(16)}&app_id={APP_ID}")

    def _take_injected(self, method: str) -> _Injected | None:
        queue = self._injected.get(method)
        if not queue:
            return None
        injected = queue[0]
        injected.remaining -= 1
        if injected.remaining <= 0:
            queue.pop(0)
        return injected

    @staticmethod
    async def _parse(request: web.Request) -> tuple[Args, str]:
        """Merge query, form and JSON arguments; decode JSON strings in form fields like Slack."""
        args: Args = dict(request.query)
        body = await request.read()
        ctype = request.headers.get("Content-Type", "")
        if body and "application/json" in ctype:
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise SlackApiFailure("invalid_json") from exc
            if not isinstance(payload, dict):
                raise SlackApiFailure("invalid_json")
            args.update(payload)
        elif body:
            args.update(parse_qsl(body.decode(errors="replace"), keep_blank_values=True))
        for key in ("view", "blocks", "attachments"):
            if isinstance(args.get(key), str) and args[key]:
                try:
                    args[key] = orjson.loads(args[key])
                except orjson.JSONDecodeError as exc:
                    error = "invalid_blocks_format" if key == "blocks" else "invalid_arguments"
                    raise SlackApiFailure(error, [f"[ERROR] invalid json [json-pointer:/{key}]"]) from exc
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        # Slack takes a token argument from form or query, never from a JSON body.
        form_token = args.pop("token", "")
        return args, token or (form_token if "application/json" not in ctype else "")

    # ------------------------------------------------------------------ auth / users

    async def _auth_test(self, args: Args) -> web.Response:
        return _ok(
            url=TEAM_URL,
            team=TEAM_NAME,
            user=BOT_USER_NAME,
            team_id=self.team_id,
            user_id=BOT_USER_ID,
            bot_id=BOT_ID,
            is_enterprise_install=False,
        )

    async def _users_info(self, args: Args) -> web.Response:
        user_id = args.get("user")
        if not user_id:
            raise SlackApiFailure("invalid_arguments", ["[ERROR] missing required field: user"])
        user = self.users.get(str(user_id))
        if user is None:
            raise SlackApiFailure("user_not_found")
        user = copy.deepcopy(user)
        if _truthy(args.get("include_locale")):
            user["locale"] = "en-US"
        return _ok(user=user)

    async def _users_lookup_by_email(self, args: Args) -> web.Response:
        email = str(args.get("email", ""))
        if not email:
            raise SlackApiFailure("invalid_arguments", ["[ERROR] missing required field: email"])
        user = self.user_by_email(email)
        if user is None:
            raise SlackApiFailure("users_not_found")
        return _ok(user=copy.deepcopy(user))

    # ------------------------------------------------------------------ conversations

    async def _conversations_info(self, args: Args) -> web.Response:
        if not {"channels:read", "groups:read"} & set(self.scopes):
            raise SlackApiFailure("missing_scope")
        channel = self.channels.get(str(args.get("channel", "")))
        if channel is None:
            raise SlackApiFailure("channel_not_found")
        return _ok(
            channel={
                "id": channel.id,
                "name": channel.name,
                "is_channel": not channel.is_im,
                "is_im": channel.is_im,
                "is_member": channel.id not in self.left_channels,
            }
        )

    async def _conversations_open(self, args: Args) -> web.Response:
        """A DM with one user (``D…``, the same id every time) or a group DM with several (``G…``)."""
        if args.get("channel"):
            found = self._find_channel(str(args["channel"]))
            if found is None or not found.is_im:
                raise SlackApiFailure("channel_not_found")
            return _ok(no_op=True, already_open=True, channel={"id": found.id})
        users = [u.strip() for u in str(args.get("users") or "").split(",") if u.strip()]
        if not users:
            raise SlackApiFailure("users_list_not_supplied")
        if len(users) > MAX_MPIM_USERS:
            raise SlackApiFailure("too_many_users")
        for user_id in users:
            user = self.users.get(user_id)
            if user is None:
                raise SlackApiFailure("user_not_found")
            if user["deleted"]:
                raise SlackApiFailure("user_disabled")
        if len(users) == 1:
            channel_id, name = self.dm_channel_id(users[0]), users[0]
        else:
            members = sorted(set(users))
            channel_id = "G" + "".join(m[1:4] for m in members)[:10].upper()
            name = "mpdm-" + "--".join(self.users[m]["name"] for m in members) + "-1"
        already_open = channel_id in self.channels
        channel = self.channels.setdefault(channel_id, _Channel(id=channel_id, name=name, is_im=True))
        payload: dict[str, Any] = {"id": channel.id}
        if _truthy(args.get("return_im")):
            payload.update(
                created=int(self.now()),
                is_im=len(users) == 1,
                is_mpim=len(users) > 1,
                user=users[0] if len(users) == 1 else None,
                is_open=True,
                last_read="0000000000.000000",
            )
        if already_open:
            return _ok(no_op=True, already_open=True, channel=payload)
        return _ok(channel=payload)

    # ------------------------------------------------------------------ views

    def _exchange_trigger(self, args: Args) -> _Trigger:
        trigger_id = args.get("trigger_id") or args.get("interactivity_pointer")
        if not trigger_id:
            raise SlackApiFailure("invalid_arguments", ["[ERROR] missing required field: trigger_id"])
        trigger = self._triggers.get(str(trigger_id))
        if trigger is None:
            raise SlackApiFailure("invalid_trigger_id")
        if trigger.used:
            raise SlackApiFailure("exchanged_trigger_id")
        if self.now() - trigger.issued_at > self.expire_trigger_after:
            raise SlackApiFailure("expired_trigger_id")
        return trigger

    async def _views_open(self, args: Args) -> web.Response:
        view_in = _validate_view(args.get("view"), allowed_types=("modal",))
        trigger = self._exchange_trigger(args)
        self._check_external_id(view_in)
        trigger.used = True
        view_id = self._new_view_id()
        view = self._materialize(view_in, view_id=view_id, root_view_id=view_id, previous_view_id=None)
        self._stacks[view_id] = [view_id]
        self._modal_owners[view_id] = trigger.user_id
        self._store(view, trigger_id=str(args.get("trigger_id") or args.get("interactivity_pointer")))
        self.opened_views.append(_json_copy(view))
        return _ok(view=view)

    async def _views_push(self, args: Args) -> web.Response:
        view_in = _validate_view(args.get("view"), allowed_types=("modal",))
        trigger = self._exchange_trigger(args)
        stack = self._stack_for(trigger)
        if stack is None:
            raise SlackApiFailure("not_found")
        if len(stack) >= MAX_VIEW_STACK:
            raise SlackApiFailure("push_limit_reached")
        self._check_external_id(view_in)
        trigger.used = True
        view_id = self._new_view_id()
        view = self._materialize(view_in, view_id=view_id, root_view_id=stack[0], previous_view_id=stack[-1])
        stack.append(view_id)
        self._store(view, trigger_id=str(args.get("trigger_id") or args.get("interactivity_pointer")))
        return _ok(view=view)

    async def _views_update(self, args: Args) -> web.Response:
        view_id = args.get("view_id")
        external_id = args.get("external_id")
        if not view_id and not external_id:
            raise SlackApiFailure("invalid_arguments", ["[ERROR] missing required field: view_id or external_id"])
        current_id = str(view_id) if view_id else self._external_ids.get(str(external_id), "")
        current = self.views.get(current_id)
        if current is None or (view_id and external_id and current.get("external_id") != external_id):
            raise SlackApiFailure("not_found")
        view_in = _validate_view(args.get("view"), allowed_types=(current["type"],))
        if args.get("hash") and args["hash"] != current["hash"]:
            raise SlackApiFailure("hash_conflict")
        new_external = view_in.get("external_id", "")
        if new_external and self._external_ids.get(new_external, current_id) != current_id:
            raise SlackApiFailure("duplicate_external_id")
        view = self._materialize(
            view_in,
            view_id=current_id,
            root_view_id=current["root_view_id"],
            previous_view_id=current["previous_view_id"],
        )
        if current.get("external_id") and current["external_id"] != new_external:
            self._external_ids.pop(current["external_id"], None)
        self._store(view)
        if view["type"] == "home":
            user_id = next(u for u, v in self.home_views.items() if v["id"] == current_id)
            self.home_views[user_id] = view
        return _ok(view=view)

    async def _views_publish(self, args: Args) -> web.Response:
        user_id = str(args.get("user_id", ""))
        if not user_id:
            raise SlackApiFailure("invalid_arguments", ["[ERROR] missing required field: user_id"])
        view_in = _validate_view(args.get("view"), allowed_types=("home",))
        if user_id not in self.users:
            raise SlackApiFailure("user_not_found")
        previous = self.home_views.get(user_id)
        if previous is not None and args.get("hash") and args["hash"] != previous["hash"]:
            raise SlackApiFailure("hash_conflict")
        view_id = previous["id"] if previous else self._new_view_id()
        if previous is None:
            self._check_external_id(view_in)
        view = self._materialize(view_in, view_id=view_id, root_view_id=view_id, previous_view_id=None)
        self._store(view)
        self.home_views[user_id] = view
        return _ok(view=view)

    def _stack_for(self, trigger: _Trigger) -> list[str] | None:
        if trigger.view_id:
            view = self.views.get(trigger.view_id)
            return self._stacks.get(view["root_view_id"]) if view else None
        # A trigger not tied to a view: the user's most recently opened modal that is still open.
        for root_id in reversed(self._modal_owners):
            if self._modal_owners[root_id] == trigger.user_id and root_id in self._stacks:
                return self._stacks[root_id]
        return None

    def _check_external_id(self, view_in: dict[str, Any]) -> None:
        external_id = view_in.get("external_id")
        if external_id and external_id in self._external_ids:
            raise SlackApiFailure("duplicate_external_id")

    def _store(self, view: dict[str, Any], trigger_id: str | None = None) -> None:
        self.views[view["id"]] = view
        if view.get("external_id"):
            self._external_ids[view["external_id"]] = view["id"]
        if trigger_id:
            self._trigger_views[trigger_id] = view["id"]

    def _new_view_id(self) -> str:
        while True:
            view_id = "V" + _random_id(_ALNUM, 10)
            if view_id not in self.views:
                return view_id

    def _new_hash(self) -> str:
        return f"{int(self.now())}.{secrets.token_hex(4)}"

    def _materialize(
        self,
        view_in: dict[str, Any],
        *,
        view_id: str,
        root_view_id: str,
        previous_view_id: str | None,
    ) -> dict[str, Any]:
        """The view object Slack returns: the request's view plus ids, hash, state and defaults."""
        blocks = _json_copy(view_in.get("blocks", []))
        for block in blocks:
            block.setdefault("block_id", _random_id(_BLOCK_ID_CHARS, 5))
        view: dict[str, Any] = {
            "id": view_id,
            "team_id": self.team_id,
            "type": view_in["type"],
            "blocks": _with_emoji_flags(blocks),
            "private_metadata": view_in.get("private_metadata", ""),
            "callback_id": view_in.get("callback_id", ""),
            "state": {"values": {}},
            "hash": self._new_hash(),
            "title": _with_emoji_flags(view_in.get("title")),
            "clear_on_close": bool(view_in.get("clear_on_close", False)),
            "notify_on_close": bool(view_in.get("notify_on_close", False)),
            "close": _with_emoji_flags(view_in.get("close")),
            "submit": _with_emoji_flags(view_in.get("submit")),
            "previous_view_id": previous_view_id,
            "root_view_id": root_view_id,
            "app_id": APP_ID,
            "app_installed_team_id": self.team_id,
            "external_id": view_in.get("external_id", ""),
            "bot_id": BOT_ID,
        }
        if "submit_disabled" in view_in:
            view["submit_disabled"] = bool(view_in["submit_disabled"])
        return view

    # ------------------------------------------------------------------ chat

    def _find_channel(self, channel: str) -> _Channel | None:
        if channel in self.channels:
            return self.channels[channel]
        name = channel.removeprefix("#")
        for found in self.channels.values():
            if found.name == name and not found.is_im:
                return found
        if channel in self.users and not self.users[channel]["deleted"]:
            # Posting to a user id lands in the bot's DM with that user, as on Slack.
            dm_id = self.dm_channel_id(channel)
            return self.channels.setdefault(dm_id, _Channel(id=dm_id, name=channel, is_im=True))
        member = "U" + channel[1:] if channel.startswith("D") else ""
        if member in self.users and not self.users[member]["deleted"]:
            # The DM's id, before conversations.open was called: the bot and the user have a DM already.
            return self.channels.setdefault(channel, _Channel(id=channel, name=member, is_im=True))
        return None

    def _require_channel(self, args: Args) -> _Channel:
        channel = str(args.get("channel", ""))
        found = self._find_channel(channel) if channel else None
        if found is None:
            raise SlackApiFailure("channel_not_found")
        return found

    def _next_ts(self) -> str:
        micros = max(int(self.now() * 1_000_000), self._last_ts_micros + 1)
        self._last_ts_micros = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    @staticmethod
    def _content(args: Args) -> tuple[str, list[dict[str, Any]] | None, list[Any] | None]:
        text = str(args.get("text") or "")
        blocks = args.get("blocks") or None
        attachments = args.get("attachments") or None
        if not text and not blocks and not attachments:
            raise SlackApiFailure("no_text")
        if blocks is not None:
            if not isinstance(blocks, list) or not all(isinstance(b, dict) and b.get("type") for b in blocks):
                raise SlackApiFailure("invalid_blocks", ["[ERROR] each block needs a type [json-pointer:/blocks]"])
            if len(blocks) > MAX_MESSAGE_BLOCKS:
                raise SlackApiFailure(
                    "invalid_blocks",
                    [f"[ERROR] must be less than {MAX_MESSAGE_BLOCKS + 1} items [json-pointer:/blocks]"],
                )
        return text, blocks, attachments

    def _message(self, ts: str, text: str, blocks: list[dict[str, Any]] | None) -> dict[str, Any]:
        message: dict[str, Any] = {
            "user": BOT_USER_ID,
            "type": "message",
            "ts": ts,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "text": text,
            "team": self.team_id,
            "bot_profile": {"id": BOT_ID, "app_id": APP_ID, "name": "Helpdesk Verify", "deleted": False},
        }
        if blocks is not None:
            block_list = _json_copy(blocks)
            for block in block_list:
                block.setdefault("block_id", _random_id(_BLOCK_ID_CHARS, 5))
            message["blocks"] = block_list
        return message

    async def _chat_post_message(self, args: Args) -> web.Response:
        channel = self._require_channel(args)
        text, blocks, attachments = self._content(args)
        thread_ts = str(args.get("thread_ts") or "")
        parent: dict[str, Any] | None = None
        if thread_ts:
            parent = next((m for m in channel.messages if m["ts"] == thread_ts), None)
            if parent is None:
                raise SlackApiFailure("thread_not_found")
            if parent.get("thread_ts") and parent["thread_ts"] != parent["ts"]:
                # A reply's ts given as thread_ts: Slack files the message under the real parent.
                parent = next(m for m in channel.messages if m["ts"] == parent["thread_ts"])
        ts = self._next_ts()
        message = self._message(ts, text, blocks)
        if attachments is not None:
            message["attachments"] = attachments
        if parent is not None:
            message["thread_ts"] = parent["ts"]
            message["parent_user_id"] = parent["user"]
            parent["thread_ts"] = parent["ts"]
            parent["reply_count"] = parent.get("reply_count", 0) + 1
            parent["reply_users"] = sorted({*parent.get("reply_users", []), BOT_USER_ID})
            parent["reply_users_count"] = len(parent["reply_users"])
            parent["latest_reply"] = ts
        channel.messages.append(message)
        return _ok(channel=channel.id, ts=ts, message=_json_copy(message))

    async def _chat_update(self, args: Args) -> web.Response:
        channel = self._require_channel(args)
        ts = str(args.get("ts") or "")
        message = next((m for m in channel.messages if m["ts"] == ts), None)
        if message is None:
            raise SlackApiFailure("message_not_found")
        text, blocks, attachments = self._content(args)
        message["text"] = text
        if blocks is not None:
            message["blocks"] = self._message(ts, text, blocks)["blocks"]
        elif args.get("blocks") == []:
            # Slack: "to remove previous blocks, include an empty array"; without the field they stay.
            message.pop("blocks", None)
        if attachments is not None:
            message["attachments"] = attachments
        message["edited"] = {"user": BOT_USER_ID, "ts": self._next_ts()}
        return _ok(channel=channel.id, ts=ts, text=text, message=_json_copy(message))

    async def _chat_post_ephemeral(self, args: Args) -> web.Response:
        channel = self._require_channel(args)
        user_id = str(args.get("user") or "")
        if user_id not in self.users:
            raise SlackApiFailure("user_not_found")
        text, blocks, _attachments = self._content(args)
        ts = self._next_ts()
        message = self._message(ts, text, blocks)
        self.ephemerals.append({"channel": channel.id, "user": user_id, "message": message})
        return _ok(message_ts=ts)

    # ------------------------------------------------------------------ Workflow Builder steps

    def function_executed(self, execution_id: str | None = None) -> str:
        """A run of a custom step begins (Slack then sends ``function_executed``): its ``Fx…`` id."""
        execution_id = execution_id or "Fx" + _random_id(_ALNUM, 10)
        self.function_runs[execution_id] = None
        return execution_id

    def _function_run(self, args: Args) -> str:
        execution_id = str(args.get("function_execution_id") or "")
        if execution_id not in self.function_runs:
            raise SlackApiFailure("function_execution_not_found")
        if self.function_runs[execution_id] is not None:
            raise SlackApiFailure("execution_not_in_running_state")
        return execution_id

    async def _functions_complete_success(self, args: Args) -> web.Response:
        """``functions.completeSuccess``: the outputs must be a JSON object (slack_sdk sends it as a string)."""
        execution_id = self._function_run(args)
        outputs = args.get("outputs")
        if isinstance(outputs, str):
            try:
                outputs = json.loads(outputs)
            except ValueError:
                raise SlackApiFailure("invalid_arguments") from None
        if not isinstance(outputs, dict):
            raise SlackApiFailure("parameter_validation_failed")
        self.function_runs[execution_id] = {"outputs": outputs}
        return _ok()

    async def _functions_complete_error(self, args: Args) -> web.Response:
        execution_id = self._function_run(args)
        error = str(args.get("error") or "")
        if not error:
            raise SlackApiFailure("invalid_arguments")
        self.function_runs[execution_id] = {"error": error}
        return _ok()

    # ------------------------------------------------------------------ rendering

    @staticmethod
    def render_text(view: dict[str, Any], *, ansi: bool = False) -> str:
        """A readable plain-text picture of a view, as a person would see it in Slack.

        Buttons show as ``[ Label ]``, menus as ``[ Placeholder ▾ ]``, inputs as ``Label: ____``,
        context as dimmed lines (prefixed ``·``, or ANSI dim when ``ansi``), dividers as a rule.
        """
        return _Renderer(ansi=ansi).view(view)


# ---------------------------------------------------------------------- validation


_IDS = random.Random()  # ids and block_ids need to be unique, not secret: cheaper than ``secrets``


def _random_id(alphabet: str, length: int) -> str:
    return "".join(_IDS.choices(alphabet, k=length))


def _json_copy(value: Any) -> Any:
    """A deep copy of JSON data (what every view and message here is), ~7x faster than deepcopy."""
    return orjson.loads(orjson.dumps(value))


def _validate_view(view: Any, *, allowed_types: tuple[str, ...]) -> dict[str, Any]:
    """Slack's checks on a view that this project can trip over; errors as Slack words them."""
    if not isinstance(view, dict):
        raise SlackApiFailure("invalid_arguments", ["[ERROR] missing required field: view"])
    problems: list[str] = []
    view_type = view.get("type")
    if view_type not in allowed_types:
        problems.append(f"[ERROR] must be one of {', '.join(allowed_types)} [json-pointer:/view/type]")
    if view_type == "modal":
        if not isinstance(view.get("title"), dict):
            problems.append("[ERROR] missing required field: title [json-pointer:/view]")
        for key in ("title", "submit", "close"):
            text = _text_of(view.get(key))
            if len(text) > MODAL_TEXT_LIMIT:
                problems.append(_too_long(MODAL_TEXT_LIMIT, f"/view/{key}/text"))
            if key in view and view[key] is not None and _as_dict(view[key]).get("type") != "plain_text":
                problems.append(f"[ERROR] must be plain_text [json-pointer:/view/{key}/type]")
    blocks = view.get("blocks")
    if not isinstance(blocks, list):
        problems.append("[ERROR] missing required field: blocks [json-pointer:/view]")
        blocks = []
    if len(blocks) > MAX_VIEW_BLOCKS:
        problems.append(f"[ERROR] must be less than {MAX_VIEW_BLOCKS + 1} items [json-pointer:/view/blocks]")
    seen_block_ids: set[str] = set()
    has_input = False
    for index, block in enumerate(blocks):
        if not isinstance(block, dict) or not block.get("type"):
            problems.append(f"[ERROR] missing required field: type [json-pointer:/view/blocks/{index}]")
            continue
        has_input = has_input or block["type"] == "input"
        block_id = block.get("block_id")
        if block_id is not None:
            if block_id in seen_block_ids:
                problems.append(f"[ERROR] duplicate block_id: {block_id} [json-pointer:/view/blocks/{index}/block_id]")
            seen_block_ids.add(block_id)
    if view_type == "modal" and has_input and not view.get("submit"):
        problems.append("[ERROR] submit is required when the view has an input block [json-pointer:/view]")
    if len(str(view.get("private_metadata", ""))) > MAX_PRIVATE_METADATA:
        problems.append(_too_long(MAX_PRIVATE_METADATA, "/view/private_metadata"))
    for key in ("callback_id", "external_id"):
        if len(str(view.get(key, ""))) > MAX_CALLBACK_ID:
            problems.append(_too_long(MAX_CALLBACK_ID, f"/view/{key}"))
    if problems:
        raise SlackApiFailure("invalid_arguments", problems)
    return view


def _too_long(limit: int, pointer: str) -> str:
    return f"[ERROR] must be less than {limit + 1} characters [json-pointer:{pointer}]"


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _with_emoji_flags(value: Any) -> Any:
    """Slack echoes every plain_text object back with ``"emoji": true`` filled in."""
    if isinstance(value, list):
        return [_with_emoji_flags(item) for item in value]
    if isinstance(value, dict):
        result = {k: _with_emoji_flags(v) for k, v in value.items()}
        if result.get("type") == "plain_text" and "text" in result:
            result.setdefault("emoji", True)
        return result
    return value


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in {"1", "true"}


# ---------------------------------------------------------------------- rendering


class _Renderer:
    """Turns Block Kit into lines of text; unknown elements degrade to their type name."""

    RULE = "─" * 40

    def __init__(self, *, ansi: bool) -> None:
        self.ansi = ansi

    def _dim(self, text: str) -> str:
        return f"\x1b[2m{text}\x1b[0m" if self.ansi else f"· {text}"

    def _bold(self, text: str) -> str:
        return f"\x1b[1m{text}\x1b[0m" if self.ansi else text

    @staticmethod
    def text(obj: Any) -> str:
        """A text object's words, with mrkdwn links and mentions made readable."""
        raw = _text_of(obj)
        if _as_dict(obj).get("type") == "mrkdwn" or "<" in raw:
            raw = _MRKDWN_LINK.sub(r"\2", raw)
            raw = _MRKDWN_MENTION.sub(lambda m: ("@" if m.group(1) == "@" else m.group(1)) + m.group(2), raw)
        return raw

    def view(self, view: dict[str, Any]) -> str:
        lines: list[str] = []
        if view.get("type") == "home":
            lines.append(self._bold("App Home"))
        else:
            title = self.text(view.get("title")) or "(untitled)"
            lines.append(self._bold(f"╭─ {title} ─╮"))
        lines.append(self.RULE)
        for block in view.get("blocks", []):
            lines.extend(self.block(block))
        footer = [f"[ {self.text(view[key])} ]" for key in ("close", "submit") if view.get(key)]
        if footer:
            lines.append(self.RULE)
            lines.append("  ".join(footer))
        return "\n".join(lines)

    def block(self, block: dict[str, Any]) -> list[str]:
        kind = block.get("type", "")
        if kind == "header":
            text = self.text(block.get("text"))
            return [self._bold(text.upper() if not self.ansi else text)]
        if kind == "divider":
            return [self.RULE]
        if kind == "section":
            return self._section(block)
        if kind == "context":
            parts = [self.element(e) for e in block.get("elements", [])]
            return [self._dim("  ".join(p for p in parts if p))]
        if kind == "actions":
            parts = [self.element(e) for e in block.get("elements", [])]
            return ["  ".join(p for p in parts if p)]
        if kind == "input":
            return self._input(block)
        if kind == "image":
            title = self.text(block.get("title"))
            return [f"[image: {block.get('alt_text', '')}]" + (f" {title}" if title else "")]
        if kind == "rich_text":
            return self._rich_text(block.get("elements", []))
        if kind == "markdown":
            return str(block.get("text", "")).splitlines()
        if kind == "video":
            return [f"[video: {self.text(block.get('title'))}]"]
        if kind == "file":
            return [f"[file: {block.get('external_id', '')}]"]
        return [f"[{kind} block]"]

    def _section(self, block: dict[str, Any]) -> list[str]:
        lines = self.text(block.get("text")).splitlines() if block.get("text") else []
        fields = [self.text(f) for f in block.get("fields", [])]
        for i in range(0, len(fields), 2):
            lines.append("    ".join(f.replace("\n", " ") for f in fields[i : i + 2]))
        accessory = block.get("accessory")
        if accessory:
            rendered = self.element(accessory)
            if lines and "\n" not in rendered:
                lines[0] = f"{lines[0]}  {rendered}"
            else:
                lines.extend(rendered.splitlines())
        return lines

    def _input(self, block: dict[str, Any]) -> list[str]:
        label = self.text(block.get("label"))
        if block.get("optional"):
            label += " (optional)"
        element = _as_dict(block.get("element"))
        kind = element.get("type", "")
        if kind in {"plain_text_input", "email_text_input", "number_input", "url_text_input"}:
            shown = element.get("initial_value") or "____"
            placeholder = self.text(element.get("placeholder"))
            lines = [f"{label}: {shown}" + (f"  ({placeholder})" if placeholder and shown == "____" else "")]
        elif kind in {"checkboxes", "radio_buttons"}:
            lines = [f"{label}:", *self._choices(element)]
        else:
            lines = [f"{label}: {self.element(element)}"]
        if block.get("hint"):
            lines.append(self._dim(self.text(block.get("hint"))))
        return lines

    def _choices(self, element: dict[str, Any]) -> list[str]:
        radio = element.get("type") == "radio_buttons"
        initial = element.get("initial_options") or (
            [element["initial_option"]] if element.get("initial_option") else []
        )
        chosen = {o.get("value") for o in initial}
        marks = ("(•)", "( )") if radio else ("[x]", "[ ]")
        return [
            f"  {marks[0] if o.get('value') in chosen else marks[1]} {self.text(o.get('text'))}"
            for o in element.get("options", [])
        ]

    def element(self, element: Any) -> str:
        if not isinstance(element, dict):
            return ""
        kind = element.get("type", "")
        if kind in {"plain_text", "mrkdwn"}:
            return self.text(element)
        if kind == "image":
            return f"[image: {element.get('alt_text', '')}]"
        if kind == "button":
            label = f"[ {self.text(element.get('text'))} ]"
            if self.ansi and element.get("style") in {"primary", "danger"}:
                color = "32" if element["style"] == "primary" else "31"
                return f"\x1b[{color}m{label}\x1b[0m"
            return label
        if kind.endswith("_select") or kind.startswith("multi_"):
            initial = element.get("initial_option") or next(iter(element.get("initial_options", [])), None)
            shown = self.text(_as_dict(initial).get("text")) if initial else self.text(element.get("placeholder"))
            return f"[ {shown or 'Select'} ▾ ]"
        if kind == "overflow":
            return "[ … ]"
        if kind in {"datepicker", "timepicker", "datetimepicker"}:
            shown = element.get("initial_date") or element.get("initial_time") or self.text(element.get("placeholder"))
            return f"[ {shown or kind} ▾ ]"
        if kind in {"checkboxes", "radio_buttons"}:
            return "\n".join(self._choices(element))
        if kind in {"plain_text_input", "email_text_input", "number_input", "url_text_input"}:
            return element.get("initial_value") or "____"
        return f"[{kind}]"

    def _rich_text(self, elements: list[dict[str, Any]]) -> list[str]:
        lines: list[str] = []
        for element in elements:
            kind = element.get("type")
            if kind == "rich_text_list":
                bullet_ordered = element.get("style") == "ordered"
                for n, item in enumerate(element.get("elements", []), start=1):
                    marker = f"{n}." if bullet_ordered else "•"
                    lines.append(f"  {marker} {self._inline(item.get('elements', []))}")
            elif kind == "rich_text_quote":
                lines.extend(f"> {line}" for line in self._inline(element.get("elements", [])).splitlines())
            elif kind == "rich_text_preformatted":
                lines.extend(f"    {line}" for line in self._inline(element.get("elements", [])).splitlines())
            else:
                lines.extend(self._inline(element.get("elements", [])).splitlines() or [""])
        return lines

    @staticmethod
    def _inline(parts: list[dict[str, Any]]) -> str:
        out: list[str] = []
        for part in parts:
            kind = part.get("type")
            if kind == "text":
                out.append(str(part.get("text", "")))
            elif kind == "link":
                out.append(str(part.get("text") or part.get("url", "")))
            elif kind == "user":
                out.append(f"@{part.get('user_id', '')}")
            elif kind == "channel":
                out.append(f"#{part.get('channel_id', '')}")
            elif kind == "usergroup":
                out.append(f"@{part.get('usergroup_id', '')}")
            elif kind == "emoji":
                out.append(f":{part.get('name', '')}:")
            elif kind == "broadcast":
                out.append(f"@{part.get('range', 'here')}")
            elif kind == "date":
                out.append(str(part.get("fallback", part.get("timestamp", ""))))
        return "".join(out)
