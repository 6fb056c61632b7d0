"""Slack's side of the wire towards the gateway: the payloads Slack sends when an agent acts, signed.

A help-desk agent in a real workspace types ``/helpdesk``, clicks buttons in a modal, picks a user in
an ``external_select``, submits a code, closes the modal, opens the App Home. Slack turns each of
those into an HTTP POST to the app (form-encoded slash commands; ``payload=<json>`` for
interactivity and options; a JSON body for events), signed with the app's signing secret. This class
builds exactly those requests and POSTs them to the gateway with httpx:

    fake = FakeSlack(bot_token=...)
    async with SlackAgent(gateway_url, signing_secret, fake) as agent:
        response = await agent.slash_command("alice")          # 200, empty body
        view = fake.views[...]                                  # opened by the responder
        await agent.options("ali", view)                        # {"options": [...]}
        await agent.select_user(view, "00u1alice", "Alice Doe (alice@example.com)")
        await agent.click(fake.views[view["id"]], ACTION_CHALLENGE, value="opf1sms")
        await agent.submit(fake.views[view["id"]], {BLOCK_CODE: {ACTION_CODE: "123456"}})

        # A button in a message the app posted (a channel or a DM), clicked by another member:
        approver = agent.as_user(SECOND_AGENT_USER_ID)
        await approver.click_posted(APPROVALS_CHANNEL_ID, ts, ACTION_APPROVE)
        await agent.as_user(ALICE_USER_ID).click_posted(fake.dm_channel_id(ALICE_USER_ID), ts, ACTION_NOT_ME)

With a :class:`~sandbox.slack.FakeSlack`, trigger ids come from ``fake.issue_trigger`` (so the
responder's ``views.open`` works at the fake), and what Slack itself does with a synchronous answer
is mirrored onto the fake: a ``response_action: update`` replaces the view (new hash), an empty
answer to a submission closes the modal, closing a modal removes it. Without a fake, trigger ids
are made up in Slack's shape.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson

from sandbox.slack import AGENT_USER_ID, APP_ID, HELPDESK_CHANNEL_ID, TEAM_ID, FakeSlack

TEAM_DOMAIN = "helpdesk-sandbox"
VERIFICATION_TOKEN = "sandboxverificationtoken0"  # the legacy ``token`` field Slack still sends


class ElementNotFound(LookupError):
    """Raised by :meth:`SlackAgent.click` when the view has no element with that action id (and value)."""


class MessageNotFound(LookupError):
    """Raised by :meth:`SlackAgent.click_posted` when the fake holds no message with that ts in that channel."""


def sign(signing_secret: str, timestamp: str, body: bytes) -> str:
    """Slack's v0 signature: ``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{body}``."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


def iter_elements(view: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Every interactive element of a view as ``(block, element)``: actions, accessories, inputs."""
    for block in view.get("blocks", []):
        kind = block.get("type")
        if kind == "actions":
            for element in block.get("elements", []):
                yield block, element
        elif kind == "section" and isinstance(block.get("accessory"), dict):
            yield block, block["accessory"]
        elif kind == "input" and isinstance(block.get("element"), dict):
            yield block, block["element"]


class SlackAgent:
    """A simulated Slack client of one agent, talking to the gateway the way Slack does."""

    def __init__(
        self,
        gateway_url: str,
        signing_secret: str,
        fake_slack: FakeSlack | None = None,
        user_id: str = AGENT_USER_ID,
        team_id: str = TEAM_ID,
        *,
        user_name: str = "alex",
        channel_id: str = HELPDESK_CHANNEL_ID,
        api_app_id: str = APP_ID,
        clock: Callable[[], float] = time.time,
        http: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self.signing_secret = signing_secret
        self.fake = fake_slack
        self.user_id = user_id
        self.team_id = team_id
        self.user_name = user_name
        self.channel_id = channel_id
        self.api_app_id = api_app_id
        self.clock = clock
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(timeout=timeout)
        self.last_errors: dict[str, str] = {}
        """The ``errors`` of the last ``response_action: errors`` answer to :meth:`submit`."""

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    def as_user(self, user_id: str, user_name: str | None = None) -> SlackAgent:
        """The same workspace seen by another member (sharing this agent's HTTP client), e.g. an approver."""
        if user_name is None:
            member = self.fake.users.get(user_id) if self.fake is not None else None
            user_name = str(member["name"]) if member else user_id.lower()
        return SlackAgent(
            self.gateway_url,
            self.signing_secret,
            self.fake,
            user_id=user_id,
            team_id=self.team_id,
            user_name=user_name,
            channel_id=self.channel_id,
            api_app_id=self.api_app_id,
            clock=self.clock,
            http=self.http,
        )

    async def __aenter__(self) -> SlackAgent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ wire

    def trigger(self, view_id: str | None = None) -> str:
        """A fresh trigger_id: from the fake when there is one, else made up in Slack's shape."""
        if self.fake is not None:
            return self.fake.issue_trigger(self.user_id, view_id=view_id)
        return f"{int(self.clock() * 1000)}.{secrets.randbelow(10**11)}.{secrets.token_hex(16)}"

    def action_ts(self) -> str:
        now = self.clock()
        return f"{int(now)}.{secrets.randbelow(10**6):06d}"

    def signed_headers(self, body: bytes, content_type: str, timestamp: str | None = None) -> dict[str, str]:
        ts = timestamp if timestamp is not None else str(int(self.clock()))
        return {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": sign(self.signing_secret, ts, body),
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        }

    async def post(
        self,
        path: str,
        body: bytes,
        content_type: str = "application/x-www-form-urlencoded",
        headers: dict[str, str] | None = None,
        timestamp: str | None = None,
    ) -> httpx.Response:
        """POST ``body`` to ``path`` signed as Slack does; ``headers`` override (for broken requests)."""
        sent = self.signed_headers(body, content_type, timestamp)
        sent.update(headers or {})
        return await self.http.post(f"{self.gateway_url}{path}", content=body, headers=sent)

    async def post_payload(self, path: str, payload: dict[str, Any], **kwargs: Any) -> httpx.Response:
        """An interactivity request: form field ``payload`` holding the JSON."""
        body = urlencode({"payload": orjson.dumps(payload).decode()}).encode()
        return await self.post(path, body, **kwargs)

    # ------------------------------------------------------------------ shared payload parts

    def _team(self) -> dict[str, Any]:
        return {"id": self.team_id, "domain": TEAM_DOMAIN}

    def _user(self) -> dict[str, Any]:
        return {"id": self.user_id, "username": self.user_name, "name": self.user_name, "team_id": self.team_id}

    def _envelope(self, kind: str) -> dict[str, Any]:
        return {
            "type": kind,
            "team": self._team(),
            "user": self._user(),
            "api_app_id": self.api_app_id,
            "token": VERIFICATION_TOKEN,
            "is_enterprise_install": False,
            "enterprise": None,
        }

    # ------------------------------------------------------------------ slash command and shortcut

    def slash_command_form(self, text: str = "", command: str = "/helpdesk") -> dict[str, str]:
        """The form fields of a slash command, in Slack's order."""
        trigger_id = self.trigger()
        return {
            "token": VERIFICATION_TOKEN,
            "team_id": self.team_id,
            "team_domain": TEAM_DOMAIN,
            "channel_id": self.channel_id,
            "channel_name": "helpdesk",
            "user_id": self.user_id,
            "user_name": self.user_name,
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": f"https://hooks.slack.com/commands/{self.team_id}/{secrets.randbelow(10**12)}/"
            f"{secrets.token_urlsafe(18)}",
            "trigger_id": trigger_id,
        }

    async def slash_command(self, text: str = "", command: str = "/helpdesk", **kwargs: Any) -> httpx.Response:
        """The agent types ``{command} {text}`` (POST /slack/commands)."""
        body = urlencode(self.slash_command_form(text, command)).encode()
        return await self.post("/slack/commands", body, **kwargs)

    async def shortcut(self, callback_id: str = "request_access", **kwargs: Any) -> httpx.Response:
        """The agent runs the global shortcut (POST /slack/interactions)."""
        payload = {
            **self._envelope("shortcut"),
            "callback_id": callback_id,
            "trigger_id": self.trigger(),
            "action_ts": self.action_ts(),
        }
        return await self.post_payload("/slack/interactions", payload, **kwargs)

    # ------------------------------------------------------------------ inside a view

    def _view_for_payload(self, view: dict[str, Any], values: dict[str, Any] | None = None) -> dict[str, Any]:
        sent = copy.deepcopy(view)
        state = sent.setdefault("state", {"values": {}})
        state.setdefault("values", {})
        for block_id, actions in (values or {}).items():
            state["values"].setdefault(block_id, {}).update(actions)
        return sent

    @staticmethod
    def _container(view: dict[str, Any]) -> dict[str, Any]:
        return {"type": "view", "view_id": view.get("id")}

    def find_element(
        self, view: dict[str, Any], action_id: str, value: str | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The ``(block, element)`` with ``action_id`` (and ``value``, when several share the id)."""
        matches = [(b, e) for b, e in iter_elements(view) if e.get("action_id") == action_id]
        if value is not None:
            matches = [(b, e) for b, e in matches if e.get("value") == value] or [
                (b, e) for b, e in matches if any(o.get("value") == value for o in _options_of(e))
            ]
        if not matches:
            shown = f"{action_id!r}" + (f" with value {value!r}" if value is not None else "")
            raise ElementNotFound(f"no element {shown} in view {view.get('id')!r}")
        return matches[0]

    def _action(self, block: dict[str, Any], element: dict[str, Any], value: str | None) -> dict[str, Any]:
        kind = element.get("type", "button")
        action: dict[str, Any] = {
            "action_id": element.get("action_id"),
            "block_id": block.get("block_id"),
            "type": kind,
            "action_ts": self.action_ts(),
        }
        if kind == "button":
            action["text"] = element.get("text")
            if "value" in element:
                action["value"] = element["value"]
            if "style" in element:
                action["style"] = element["style"]
        elif kind in {"static_select", "external_select", "overflow", "radio_buttons"}:
            option = next((o for o in _options_of(element) if o.get("value") == value), None)
            if option is None and value is not None:
                option = {"text": {"type": "plain_text", "text": value, "emoji": True}, "value": value}
            action["selected_option"] = option
        elif value is not None:
            action["value"] = value
        return action

    async def _block_actions(
        self, view: dict[str, Any], actions: list[dict[str, Any]], state: dict[str, Any] | None = None, **kwargs: Any
    ) -> httpx.Response:
        payload = {
            **self._envelope("block_actions"),
            "container": self._container(view),
            "trigger_id": self.trigger(view_id=view.get("id") if view.get("type") == "modal" else None),
            "view": self._view_for_payload(view, state),
            "actions": actions,
        }
        return await self.post_payload("/slack/interactions", payload, **kwargs)

    async def click(
        self, view: dict[str, Any], action_id: str, value: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """The agent clicks the element ``action_id`` (the one with ``value`` if several share the id)."""
        block, element = self.find_element(view, action_id, value)
        return await self._block_actions(view, [self._action(block, element, value)], **kwargs)

    async def forge_click(self, view: dict[str, Any], action_id: str, value: str, **kwargs: Any) -> httpx.Response:
        """A click on a button the view does not show, as someone replaying an edited payload sends it:
        signed like Slack, from the view's own case, with an ``action_id`` and ``value`` of our choosing."""
        action = {"action_id": action_id, "block_id": "forged", "type": "button", "value": value}
        action["action_ts"] = self.action_ts()
        return await self._block_actions(view, [action], **kwargs)

    def _response_url(self) -> str:
        return f"https://hooks.slack.com/actions/{self.team_id}/{secrets.randbelow(10**12)}/{secrets.token_urlsafe(18)}"

    def _channel_ref(self, channel_id: str) -> dict[str, Any]:
        """``channel`` of a message interaction: Slack names a DM ``directmessage``."""
        found = self.fake.channels.get(channel_id) if self.fake is not None else None
        if found is None:
            return {"id": channel_id, "name": "helpdesk" if channel_id == self.channel_id else channel_id.lower()}
        return {"id": channel_id, "name": "directmessage" if found.is_im else found.name}

    def message_click_payload(
        self,
        message: dict[str, Any],
        channel_id: str,
        action_id: str,
        value: str | None = None,
        *,
        ephemeral: bool = False,
    ) -> dict[str, Any]:
        """The ``block_actions`` payload of a click on a button of ``message`` in ``channel_id``.

        As Slack sends it: ``container`` (``type: "message"``, ``message_ts``, ``channel_id``,
        ``is_ephemeral``), ``channel``, ``user``, ``trigger_id``, ``response_url``, ``actions`` and, for a
        message that is not ephemeral, the ``message`` itself.
        """
        block, element = self.find_element(message, action_id, value)
        ts = str(message.get("ts") or self.action_ts())
        payload: dict[str, Any] = {
            **self._envelope("block_actions"),
            "container": {"type": "message", "message_ts": ts, "channel_id": channel_id, "is_ephemeral": ephemeral},
            "channel": self._channel_ref(channel_id),
            "trigger_id": self.trigger(),
            "response_url": self._response_url(),
            "state": {"values": {}},
            "actions": [self._action(block, element, value)],
        }
        if not ephemeral:
            payload["message"] = copy.deepcopy(message)
        return payload

    async def click_message(
        self,
        message: dict[str, Any],
        action_id: str,
        value: str | None = None,
        channel_id: str | None = None,
        ephemeral: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:
        """The agent clicks a button in a message (e.g. the ephemeral "Open Helpdesk Verify" offer)."""
        payload = self.message_click_payload(
            message, channel_id or self.channel_id, action_id, value, ephemeral=ephemeral
        )
        return await self.post_payload("/slack/interactions", payload, **kwargs)

    async def click_posted(
        self, channel_id: str, ts: str, action_id: str, value: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """This member clicks the button ``action_id`` of the message ``ts`` the app posted in
        ``channel_id`` (a channel, or a DM id from ``fake.dm_channel_id(user)``), as the fake holds it now."""
        if self.fake is None:
            raise MessageNotFound("click_posted needs the FakeSlack that holds the message")
        message = self.fake.message(channel_id, ts)
        if message is None:
            raise MessageNotFound(f"no message {ts!r} in {channel_id!r}")
        payload = self.message_click_payload(
            message, self.fake.resolve_channel(channel_id) or channel_id, action_id, value
        )
        return await self.post_payload("/slack/interactions", payload, **kwargs)

    async def select_user(
        self,
        view: dict[str, Any],
        okta_user_id: str,
        label: str,
        action_id: str = "select_user",
        **kwargs: Any,
    ) -> httpx.Response:
        """The agent picks ``label`` (value ``okta_user_id``) in the user search ``external_select``."""
        block, element = self.find_element(view, action_id)
        option = {"text": {"type": "plain_text", "text": label, "emoji": True}, "value": okta_user_id}
        action = {
            "type": element.get("type", "external_select"),
            "action_id": action_id,
            "block_id": block.get("block_id"),
            "selected_option": option,
            "action_ts": self.action_ts(),
        }
        state = {str(block.get("block_id")): {action_id: {"type": action["type"], "selected_option": option}}}
        return await self._block_actions(view, [action], state, **kwargs)

    async def options(
        self, query: str, view: dict[str, Any], action_id: str = "select_user", **kwargs: Any
    ) -> httpx.Response:
        """Slack asks for the options of an ``external_select`` as the agent types ``query``."""
        try:
            block, _element = self.find_element(view, action_id)
            block_id = block.get("block_id")
        except ElementNotFound:
            block_id = None
        payload = {
            **self._envelope("block_suggestion"),
            "container": self._container(view),
            "action_id": action_id,
            "block_id": block_id,
            "value": query,
            "view": self._view_for_payload(view),
        }
        return await self.post_payload("/slack/options", payload, **kwargs)

    async def submit(self, view: dict[str, Any], values: dict[str, dict[str, str]], **kwargs: Any) -> httpx.Response:
        """The agent fills the inputs (``values[block_id][action_id] = text``) and presses Submit."""
        kinds = {(b.get("block_id"), e.get("action_id")): e.get("type") for b, e in iter_elements(view)}
        state = {
            block_id: {
                action_id: {"type": kinds.get((block_id, action_id)) or "plain_text_input", "value": text}
                for action_id, text in actions.items()
            }
            for block_id, actions in values.items()
        }
        payload = {
            **self._envelope("view_submission"),
            "trigger_id": self.trigger(view_id=view.get("id")),
            "view": self._view_for_payload(view, state),
            "response_urls": [],
        }
        response = await self.post_payload("/slack/interactions", payload, **kwargs)
        self._apply_submission_answer(view, response)
        return response

    def _apply_submission_answer(self, view: dict[str, Any], response: httpx.Response) -> None:
        """Do what Slack does with the answer to a submission: errors, update, close."""
        self.last_errors = {}
        if response.status_code != 200:
            return
        answer: Any = None
        if response.content:
            try:
                answer = response.json()
            except ValueError:
                answer = None
        action = answer.get("response_action") if isinstance(answer, dict) else None
        if action == "errors":
            self.last_errors = dict(answer.get("errors") or {})
            return
        if self.fake is None or view.get("id") not in self.fake.views:
            return
        current = self.fake.views[view["id"]]
        if action == "update" and isinstance(answer.get("view"), dict):
            self.fake.replace_view(current["id"], answer["view"])
        elif action in (None, "clear"):
            self.fake.close_view(current["root_view_id"] if action == "clear" else current["id"])

    async def close(self, view: dict[str, Any], **kwargs: Any) -> httpx.Response | None:
        """The agent closes the modal; Slack sends ``view_closed`` only if the view asked for it.

        Returns the gateway's response, or None when the view had ``notify_on_close`` false.
        """
        if self.fake is not None and view.get("id") in self.fake.views:
            self.fake.close_view(view["id"])
        if view.get("notify_on_close") is False:
            return None
        payload = {**self._envelope("view_closed"), "view": self._view_for_payload(view), "is_cleared": False}
        return await self.post_payload("/slack/interactions", payload, **kwargs)

    # ------------------------------------------------------------------ App Home and events

    def event_body(self, event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
        """The Events API envelope (``event_callback``) around ``event``."""
        now = int(self.clock())
        return {
            "token": VERIFICATION_TOKEN,
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "api_app_id": self.api_app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or "Ev" + uuid.uuid4().hex[:10].upper(),
            "event_time": now,
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": "U0HELPBOT",
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": "4-" + secrets.token_urlsafe(24),
        }

    async def event(
        self,
        event: dict[str, Any] | None = None,
        *,
        body: dict[str, Any] | None = None,
        event_id: str | None = None,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        **kwargs: Any,
    ) -> httpx.Response:
        """POST an Events API request: ``event`` wrapped in an envelope, or a whole ``body``.

        ``retry_num`` sends it the way Slack retries an unanswered event (``X-Slack-Retry-Num``).
        """
        sent = body if body is not None else self.event_body(event or {}, event_id)
        headers = dict(kwargs.pop("headers", None) or {})
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason
        return await self.post(
            "/slack/events", orjson.dumps(sent), content_type="application/json", headers=headers, **kwargs
        )

    def app_home_opened_body(self, tab: str = "home", event_id: str | None = None) -> dict[str, Any]:
        event: dict[str, Any] = {
            "type": "app_home_opened",
            "user": self.user_id,
            "channel": "D" + self.user_id[1:],
            "tab": tab,
            "event_ts": f"{self.clock():.6f}",
        }
        if self.fake is not None and self.user_id in self.fake.home_views:
            event["view"] = copy.deepcopy(self.fake.home_views[self.user_id])
        return self.event_body(event, event_id)

    async def app_home_opened(
        self, tab: str = "home", event_id: str | None = None, retry_num: int | None = None, **kwargs: Any
    ) -> httpx.Response:
        """The agent opens the app's Home tab (``app_home_opened``)."""
        return await self.event(body=self.app_home_opened_body(tab, event_id), retry_num=retry_num, **kwargs)

    async def direct_message(self, text: str, **kwargs: Any) -> httpx.Response:
        """This member writes ``text`` to the app in its Messages tab (``message.im``)."""
        ts = self.action_ts()
        channel = self.fake.dm_channel_id(self.user_id) if self.fake is not None else "D" + self.user_id[1:]
        event = {
            "type": "message",
            "channel": channel,
            "user": self.user_id,
            "text": text,
            "ts": ts,
            "event_ts": ts,
            "channel_type": "im",
        }
        return await self.event(event, **kwargs)

    async def mention(self, text: str, channel_id: str | None = None, **kwargs: Any) -> httpx.Response:
        """This member @mentions the app in a channel (``app_mention``): "<@BOT> ``text``"."""
        ts = self.action_ts()
        event = {
            "type": "app_mention",
            "user": self.user_id,
            "text": f"<@U0HELPBOT> {text}",
            "ts": ts,
            "channel": channel_id or self.channel_id,
            "event_ts": ts,
        }
        return await self.event(event, **kwargs)

    async def run_workflow_step(
        self, caller: str, ticket: str | None = None, execution_id: str | None = None, **kwargs: Any
    ) -> tuple[str, httpx.Response]:
        """Workflow Builder runs the "Verify caller" step for this member (``function_executed``)."""
        execution = self.fake.function_executed(execution_id) if self.fake is not None else (execution_id or "Fx1")
        inputs: dict[str, Any] = {"agent": self.user_id, "caller": caller}
        if ticket:
            inputs["ticket"] = ticket
        event = {
            "type": "function_executed",
            "function": {
                "id": "Fn0VERIFYCALLER",
                "callback_id": "verify_caller",
                "title": "Verify caller",
                "description": "Verify the caller against their Okta factors",
                "type": "app",
                "input_parameters": [],
                "output_parameters": [],
                "app_id": self.api_app_id,
                "date_created": int(self.clock()),
                "date_updated": int(self.clock()),
            },
            "inputs": inputs,
            "function_execution_id": execution,
            "workflow_execution_id": "Wx" + uuid.uuid4().hex[:10].upper(),
            "event_ts": self.action_ts(),
            "bot_access_token": "xwfp-" + secrets.token_urlsafe(24),
        }
        return execution, await self.event(event, **kwargs)

    async def url_verification(self, challenge: str) -> httpx.Response:
        """Slack checks the events URL when it is configured."""
        body = {"token": VERIFICATION_TOKEN, "challenge": challenge, "type": "url_verification"}
        return await self.event(body=body)


def _options_of(element: dict[str, Any]) -> list[dict[str, Any]]:
    options = list(element.get("options") or [])
    for group in element.get("option_groups") or []:
        options.extend(group.get("options") or [])
    if element.get("initial_option"):
        options.append(element["initial_option"])
    return options
