"""``helpdesk demo``: the whole product against the sandbox, no credentials, as a readable transcript.

It starts an embedded nats-server, the fakes of Slack, Okta and Twilio, and all four services, then
plays Slack and Okta exactly as they would — signed HTTP requests to the real routes — and prints
what the agent sees (rendered from the very views sent to the fake Slack) and what each service did
(the calls the fakes received). At the end it checks that no secret reached a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any, TextIO
from urllib.parse import urlencode

import httpx

from helpdesk.audit_cli import AuditQuery, run_audit
from helpdesk.sandbox_stack import DEMO_HOOK_AUTH, SandboxStack
from sandbox import okta_data as org
from sandbox.okta import PushOutcome
from sandbox.okta_hook import telephony_request
from sandbox.slack import (
    AGENT_USER_ID,
    ALICE_USER_ID,
    APPROVALS_CHANNEL_ID,
    AUDIT_CHANNEL_ID,
    SECOND_AGENT_USER_ID,
    SECURITY_CHANNEL_ID,
    FakeSlack,
)
from services.okta_worker.policy import load_policy
from shared import ui
from shared.logging import configure_logging

ViewCheck = Callable[[dict[str, Any]], bool]
BOX_WIDTH = 96  # columns of a rendered view in the transcript


def actions_in(view: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(action_id, value) of every interactive element in a view."""
    found: list[tuple[str, str | None]] = []
    for block in view.get("blocks", []):
        elements = list(block.get("elements", []) or [])
        if block.get("accessory"):
            elements.append(block["accessory"])
        if block.get("element"):
            elements.append(block["element"])
        for element in elements:
            if isinstance(element, dict) and element.get("action_id"):
                found.append((element["action_id"], element.get("value")))
    return found


def has_action(action_id: str, value: str | None = None) -> ViewCheck:
    return lambda view: any(a == action_id and (value is None or v == value) for a, v in actions_in(view))


def clip(value: object, limit: int = 60) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def has_block(block_id: str) -> ViewCheck:
    return lambda view: any(b.get("block_id") == block_id for b in view.get("blocks", []))


def has_text(text: str) -> ViewCheck:
    return lambda view: text.lower() in FakeSlack.render_text(view).lower()


class Transcript:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = time.perf_counter()

    def line(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def scene(self, number: int, title: str) -> None:
        self.line()
        self.line(f"━━━ {number}. {title} " + "━" * max(3, 70 - len(title)))

    def say(self, who: str, text: str) -> None:
        self.line(f"  {who:<9}▸ {text}")

    def view(self, view: dict[str, Any], caption: str) -> None:
        self.line(f"  {'slack':<9}◂ {caption}")
        rows: list[str] = []
        lines = FakeSlack.render_text(view).rstrip().splitlines()
        if lines and "(untitled)" in lines[0]:  # a message, not a modal: no title bar
            lines = lines[2:]
        for row in lines:
            rows.extend(textwrap.wrap(row, BOX_WIDTH, subsequent_indent="  ") or [""])
        width = max(len(row) for row in rows) + 2
        self.line("    ┌" + "─" * width)
        for row in rows:
            self.line(f"    │ {row}")
        self.line("    └" + "─" * width)


class Demo:
    def __init__(self, stack: SandboxStack, transcript: Transcript) -> None:
        self.stack = stack
        self.t = transcript
        self.agent = stack.agent()
        self._okta_mark = 0
        self._first_case = True  # the checking-access and search views are shown once

    # -- waiting for what the agent would see --------------------------------------------------

    async def until(self, probe: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
        """Wait until ``probe()`` returns something (the services work asynchronously)."""
        slack = self.stack.slack
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (value := probe()) is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(what)
            slack.call_event.clear()
            # Wake on the next Slack call, and re-check every 50 ms anyway: the fake's event fires as a
            # request arrives (before it changes a view), and Okta/Twilio calls do not set it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(slack.call_event.wait(), min(remaining, 0.05))
        return value

    async def view_until(self, view_id: str, check: ViewCheck, timeout: float = 10.0) -> dict[str, Any]:
        """The agent's modal once it satisfies ``check``."""
        views = self.stack.slack.views

        def probe() -> dict[str, Any] | None:
            view = views.get(view_id)
            return view if view is not None and check(view) else None

        try:
            return await self.until(probe, "the modal did not reach the expected state", timeout)
        except TimeoutError:
            shown = FakeSlack.render_text(views[view_id]) if view_id in views else "(no view)"
            raise TimeoutError(f"the modal did not reach the expected state; it shows:\n{shown}") from None

    async def opened_view(self, trigger_id: str) -> dict[str, Any]:
        view: dict[str, Any] = await self.until(
            lambda: self.stack.slack.last_view_for(trigger_id), "the modal was not opened"
        )
        return view

    def okta_calls(self) -> None:
        """What the worker asked Okta since the last time, one line per call."""
        calls = self.stack.okta.calls[self._okta_mark :]
        self._okta_mark = len(self.stack.okta.calls)
        for call in calls:
            if call.path.endswith("/groups") or (call.method == "GET" and "/transactions/" in call.path):
                continue  # authorization look-ups and push polls: summarised below
            body = ""
            if call.json:
                body = " " + ", ".join(
                    f"{k}={'•••' if k in ('passCode', 'answer') else v}" for k, v in call.json.items()
                )
            query = f"?{'&'.join(f'{k}={clip(v)}' for k, v in call.query.items())}" if call.query else ""
            self.t.say("okta", f"{call.method} {call.path}{query}{body}")
        polls = sum(1 for c in calls if c.method == "GET" and "/transactions/" in c.path)
        if polls:
            self.t.say("okta", f"{polls} poll(s) of the push transaction (durable JetStream jobs)")

    # -- scenes ----------------------------------------------------------------------------------

    async def open_case(self, query: str) -> dict[str, Any]:
        started = time.perf_counter()
        form = self.agent.slash_command_form(query)
        trigger = form["trigger_id"]
        response = await self.agent.post("/slack/commands", urlencode(form).encode())
        ack_ms = (time.perf_counter() - started) * 1000
        self.t.say("agent", f"/helpdesk {query}")
        self.t.say("gateway", f"HTTP {response.status_code} in {ack_ms:.1f} ms (Slack allows 3,000 ms)")
        view = await self.opened_view(trigger)
        opened_ms = (time.perf_counter() - started) * 1000
        if self._first_case:
            self.t.view(view, f"views.open, {opened_ms:.0f} ms after the command")
        else:
            # An agent authorized a moment ago (the worker's AUTH_CACHE_SECONDS) gets the search at once.
            shows = "straight on the user search" if has_action(ui.ACTION_SELECT_USER)(view) else "checking access"
            self.t.say("slack", f"views.open, {opened_ms:.0f} ms after the command, {shows}")
        return view

    async def choose_user(self, view: dict[str, Any], query: str, user_id: str) -> dict[str, Any]:
        """`/helpdesk <query>`: one match is picked at once; several are offered first; else the search."""
        picked, offered = has_action(ui.ACTION_CHALLENGE), has_action(ui.ACTION_PICK_USER)
        view = await self.view_until(view["id"], lambda v: picked(v) or offered(v))
        self._first_case = False
        if picked(view):
            self.t.view(view, f"views.update: exactly one user matches “{query}”: picked at once, factors listed")
            return view
        self.t.view(view, f"views.update: several users match “{query}”: offered first, the search below")
        await self.agent.click(view, ui.ACTION_PICK_USER, user_id)
        self.t.say("agent", "picks one")
        view = await self.view_until(view["id"], picked)
        self.t.view(view, "views.update: the caller's enrolled factors")
        return view

    async def push_to_temp_password(self) -> None:
        self.t.scene(1, "Okta Verify push with number matching → temporary password")
        okta = self.stack.okta
        okta.push_outcome[org.ALICE_PUSH] = PushOutcome(None)  # the caller answers when the demo says so
        view = await self.open_case("ali")
        view = await self.choose_user(view, "ali", org.ALICE)
        await self.agent.click(view, ui.ACTION_CHALLENGE, org.ALICE_PUSH)
        self.t.say("agent", "sends an Okta Verify push")
        push = await self._wait_for(lambda: okta.last_push(org.ALICE))
        view = await self.view_until(view["id"], has_text(str(push.correct_answer)))
        self.t.view(view, "views.update: the number to read to the caller")
        self.okta_calls()
        self.t.say("caller", f"taps {push.correct_answer} in Okta Verify and approves")
        okta.resolve_push(push.id, "SUCCESS")
        view = await self.view_until(view["id"], has_action(ui.ACTION_RUN))
        self.t.view(view, "views.update: verified")
        self.okta_calls()
        await self.agent.click(view, ui.ACTION_RUN, "temp_password")
        self.t.say("agent", "issues a temporary password")
        view = await self.view_until(view["id"], has_action(ui.ACTION_REFRESH))
        self.t.view(view, "views.update: shown once, to this agent only (never logged or stored)")
        self.okta_calls()
        await self.agent.click(view, ui.ACTION_REFRESH)
        self.t.say("agent", "clicks Done")
        view = await self.view_until(view["id"], has_action(ui.ACTION_RUN))
        self.t.view(view, "views.update: back to the case, the password gone from the screen")

    async def sms_wrong_then_right(self) -> None:
        self.t.scene(2, "SMS code: one wrong code, then the right one → unlock")
        okta = self.stack.okta
        view = await self.open_case("bob")
        view = await self.choose_user(view, "bob", org.BOB)
        await self.agent.click(view, ui.ACTION_CHALLENGE, org.BOB_SMS)
        self.t.say("agent", "sends an SMS code")
        view = await self.view_until(view["id"], has_block(ui.BLOCK_CODE))
        self.t.view(view, "views.update: code entry")
        self.okta_calls()
        code = await self._wait_for(lambda: okta.last_code(org.BOB, org.BOB_SMS))
        wrong = "000000" if code != "000000" else "111111"
        self.t.say("caller", "reads out a code from an old message")
        response = await self.agent.submit(view, {ui.BLOCK_CODE: {ui.ACTION_CODE: wrong}})
        self.t.say("gateway", f"view_submission answered: {self._response_action(response)}")
        view = await self.view_until(view["id"], lambda v: has_block(ui.BLOCK_CODE)(v) and has_text("left")(v))
        self.t.view(view, "views.update: Okta said E0000068, attempts left shown")
        self.okta_calls()
        self.t.say("caller", "reads out the code just received")
        response = await self.agent.submit(view, {ui.BLOCK_CODE: {ui.ACTION_CODE: code}})
        self.t.say("gateway", f"view_submission answered: {self._response_action(response)}")
        view = await self.view_until(view["id"], has_action(ui.ACTION_RUN, "unlock"))
        self.t.view(view, "views.update: verified; bob is LOCKED_OUT, so Unlock is offered")
        self.okta_calls()
        await self.agent.click(view, ui.ACTION_RUN, "unlock")
        self.t.say("agent", "unlocks the account")
        view = await self.view_until(view["id"], has_text("unlock"))
        await self._wait_for(lambda: okta.user(org.BOB).status == "ACTIVE" or None)  # type: ignore[union-attr]
        view = self.stack.slack.views[view["id"]]
        self.t.view(view, "views.update: result")
        self.okta_calls()

    async def guards(self) -> None:
        self.t.scene(3, "Guards: a rejected push raises an alert; a protected admin can be verified, not reset")
        okta = self.stack.okta
        okta.push_outcome[org.ADMIN_PUSH] = PushOutcome(None)
        view = await self.open_case("admin")
        view = await self.choose_user(view, "admin", org.ADMIN)
        await self.agent.click(view, ui.ACTION_CHALLENGE, org.ADMIN_PUSH)
        self.t.say("agent", "sends an Okta Verify push")
        first = await self._wait_for(lambda: okta.last_push(org.ADMIN))
        view = await self.view_until(view["id"], has_text(str(first.correct_answer)))
        self.t.say("caller", "did not ask for this: taps Deny in Okta Verify")
        okta.resolve_push(first.id, "REJECTED")
        view = await self.view_until(view["id"], has_text("reject"))
        self.t.view(view, "views.update: rejected (a security alert goes to the audit channel)")
        await self.agent.click(view, ui.ACTION_CANCEL)
        view = await self.view_until(view["id"], has_action(ui.ACTION_CHALLENGE, org.ADMIN_PUSH))
        await self.agent.click(view, ui.ACTION_CHALLENGE, org.ADMIN_PUSH)
        self.t.say("agent", "tries again with the real caller on the line")
        second = await self._wait_for(lambda: p if (p := okta.last_push(org.ADMIN)) is not first else None)
        view = await self.view_until(view["id"], has_text(str(second.correct_answer)))
        self.t.say("caller", f"taps {second.correct_answer} and approves")
        okta.resolve_push(second.id, "SUCCESS")
        view = await self.view_until(view["id"], has_text("verified"))
        self.t.view(view, "views.update: verified, but admin@example.com is in a protected group: escalate")

    async def assurance(self) -> None:
        self.t.scene(4, "Assurance: the question alone changes nothing; step up; four eyes; the user told")
        okta, slack = self.stack.okta, self.stack.slack
        self._okta_mark = len(okta.calls)
        assert self.stack.settings is not None
        policy = load_policy(self.stack.settings.helpdesk_policy, self.stack.settings.case_verified_ttl)
        self.t.say("ops", "helpdesk policy")
        for row in policy.describe().splitlines()[2:9]:  # the actions and what each needs
            self.t.line(f"    {row.strip()}")
        view = await self.open_case("alice")
        view = await self.choose_user(view, "alice", org.ALICE)
        await self.agent.click(view, ui.ACTION_CHALLENGE, org.ALICE_QUESTION)
        self.t.say("agent", "asks the security question")
        view = await self.view_until(view["id"], has_block(ui.BLOCK_CODE))
        await self.agent.submit(view, {ui.BLOCK_CODE: {ui.ACTION_CODE: org.DEMO_ANSWER}})
        self.t.say("caller", "answers it (anyone who read their social media could)")
        view = await self.view_until(view["id"], has_action(ui.ACTION_STEP_UP))
        self.t.view(view, "views.update: a weak check: every action says what it still needs")
        await self.agent.forge_click(view, ui.ACTION_RUN, "reset_all_factors")
        self.t.say("attacker", "replays a signed click on “Reset all factors”, a button the view does not show")
        view = await self.view_until(view["id"], has_text(":x: Reset all factors needs"))
        notice = next(line for line in FakeSlack.render_text(view).splitlines() if ":x:" in line)
        self.t.say("worker", f"refused before any Okta call, on top of the modal: {notice.strip()}")
        await self.agent.click(view, ui.ACTION_STEP_UP)
        self.t.say("agent", "clicks “Verify another factor” and sends an Okta Verify push")
        view = await self.view_until(view["id"], has_action(ui.ACTION_CHALLENGE, org.ALICE_PUSH))
        before = okta.last_push(org.ALICE)
        await self.agent.click(view, ui.ACTION_CHALLENGE, org.ALICE_PUSH)
        push = await self._wait_for(lambda: p if (p := okta.last_push(org.ALICE)) is not before else None)
        view = await self.view_until(view["id"], has_text(str(push.correct_answer)))
        self.t.say("caller", f"taps {push.correct_answer} and approves")
        okta.resolve_push(push.id, "SUCCESS")
        view = await self.view_until(view["id"], has_action(ui.ACTION_REQUEST_APPROVAL, "reset_all_factors"))
        self.t.view(view, "views.update: strong now; resetting every factor still needs a second person")
        self.okta_calls()
        posted = len(slack.messages_in(APPROVALS_CHANNEL_ID))
        await self.agent.click(view, ui.ACTION_REQUEST_APPROVAL, "reset_all_factors")
        self.t.say("agent", "clicks “Request approval”")
        request = await self._wait_for(lambda: next(iter(slack.messages_in(APPROVALS_CHANNEL_ID)[posted:]), None))
        self.t.view(request, "chat.postMessage to #helpdesk-approvals")
        await self.agent.click_posted(APPROVALS_CHANNEL_ID, request["ts"], ui.ACTION_APPROVE)
        self.t.say("agent", "(the same agent) clicks Approve on their own request")
        await self._wait_for(lambda: slack.thread(APPROVALS_CHANNEL_ID, request["ts"])[1:] or None)
        reply = slack.thread(APPROVALS_CHANNEL_ID, request["ts"])[-1]
        self.t.say("slack", f"thread reply: {reply.get('text', '')}")
        approver = self.agent.as_user(SECOND_AGENT_USER_ID)
        await approver.click_posted(APPROVALS_CHANNEL_ID, request["ts"], ui.ACTION_APPROVE)
        self.t.say("approver", "Sam, another help-desk agent, checks the request and clicks Approve")
        view = await self.view_until(view["id"], has_action(ui.ACTION_RUN, "reset_all_factors"))
        self.t.view(view, "views.update: the agent's modal, live: approved once, for a few minutes")
        dms = len(slack.dm_messages(ALICE_USER_ID))
        await self.agent.click(view, ui.ACTION_RUN, "reset_all_factors")
        self.t.say("agent", "resets all of alice's factors")
        view = await self.view_until(view["id"], has_text("factors were reset"))
        self.okta_calls()
        updated = await self._wait_for(
            lambda: (
                m
                if "used" in str((m := slack.message(APPROVALS_CHANNEL_ID, request["ts"]) or {}).get("text"))
                else None
            )
        )
        self.t.say("slack", f"the request now reads: {updated.get('text', '')}")
        dm = await self._wait_for(lambda: next(iter(slack.dm_messages(ALICE_USER_ID)[dms:]), None))
        self.t.view(dm, "chat.postMessage: a DM to alice, the real user")
        alerts = len(slack.messages_in(SECURITY_CHANNEL_ID))
        alice = self.agent.as_user(ALICE_USER_ID)
        await alice.click_posted(slack.dm_channel_id(ALICE_USER_ID), dm["ts"], ui.ACTION_NOT_ME)
        self.t.say("alice", "did not call the help desk: clicks “This wasn't me”")
        alert = await self._wait_for(lambda: next(iter(slack.messages_in(SECURITY_CHANNEL_ID)[alerts:]), None))
        self.okta_calls()
        self.t.view(alert, "chat.postMessage to #security-alerts")
        view = await self.view_until(view["id"], has_text("not theirs"))
        self.t.say("slack", "the agent's modal: the case is marked disputed")

    async def click_to_open(self, channel_id: str, message: dict[str, Any], value: str | None = None) -> dict[str, Any]:
        """Click "Verify <name>" on a message the app posted: the modal it opens (found by the click's trigger)."""
        payload = self.agent.message_click_payload(message, channel_id, ui.ACTION_START_FOR, value)
        await self.agent.post_payload("/slack/interactions", payload)
        view: dict[str, Any] = await self.until(
            lambda: self.stack.slack.last_view_for(payload["trigger_id"]), "the modal was not opened"
        )
        return view

    async def slack_reach(self) -> None:
        self.t.scene(5, "Slack wherever the agent is: a DM, an @mention, a Workflow Builder step, the ticket")
        slack = self.stack.slack
        dm = slack.dm_channel_id(AGENT_USER_ID)
        seen = len(slack.dm_messages(AGENT_USER_ID))
        await self.agent.direct_message("verify bob@example.com INC0012345")
        self.t.say("agent", "DMs the app: “verify bob@example.com INC0012345”")
        reply = await self._wait_for(lambda: next(iter(slack.dm_messages(AGENT_USER_ID)[seen:]), None))
        self.t.view(reply, "chat.postMessage in the DM: a button per match (a message has no trigger_id)")
        view = await self.click_to_open(dm, reply)
        self.t.say("agent", "clicks “Verify: Bob Baker”")
        view = await self.view_until(
            view["id"], lambda v: has_action(ui.ACTION_CHALLENGE)(v) and has_text("INC0012345")(v)
        )
        self.t.view(view, "views.open → update: bob already picked, the ticket attached to every audit event")
        await self.agent.close(view)
        ephemerals = len(slack.ephemerals)
        await self.agent.mention("help")
        self.t.say("agent", "writes “@Helpdesk help” in #helpdesk")
        answer = await self._wait_for(lambda: next(iter(slack.ephemerals[ephemerals:]), None))
        self.t.view(answer["message"], "chat.postEphemeral: only the agent sees it")
        seen = len(slack.dm_messages(AGENT_USER_ID))
        execution, _ = await self.agent.run_workflow_step("dave@example.com", ticket="HELP-42")
        self.t.say("workflow", "a Workflow Builder form runs the step “Verify caller” for dave@example.com (HELP-42)")
        offer = await self._wait_for(lambda: next(iter(slack.dm_messages(AGENT_USER_ID)[seen:]), None))
        self.t.view(offer, "chat.postMessage: a DM to the person running the workflow")
        view = await self.click_to_open(dm, offer)
        view = await self.view_until(view["id"], has_action(ui.ACTION_CHALLENGE, org.DAVE_RSA))
        await self.agent.click(view, ui.ACTION_CHALLENGE, org.DAVE_RSA)
        self.t.say("agent", "asks dave for the code on his RSA SecurID token")
        view = await self.view_until(view["id"], has_block(ui.BLOCK_CODE))
        await self.agent.submit(view, {ui.BLOCK_CODE: {ui.ACTION_CODE: org.DEMO_PASSCODE}})
        await self.view_until(view["id"], has_text("CALLER VERIFIED"))
        done = await self._wait_for(lambda: slack.function_runs.get(execution))
        self.t.say("slack", f"functions.completeSuccess, outputs: {done['outputs']}")
        jira, servicenow = self.stack.jira, self.stack.servicenow
        comment = await self._wait_for(lambda: next(iter(jira.comment_texts("HELP-42")), None))
        self.t.say("tickets", f"Jira comment on HELP-42 (the audit sink, REST v3): {comment}")
        note = await self._wait_for(lambda: next(iter(servicenow.work_notes("INC0012345")), None))
        self.t.say("tickets", f"ServiceNow work note on INC0012345 (the audit sink, Table API): {note}")

    async def telephony_hook(self) -> None:
        self.t.scene(6, "Okta's telephony inline hook: an SMS code and a voice call")
        twilio = self.stack.twilio
        async with httpx.AsyncClient(base_url=self.stack.hook_url, timeout=5) as client:
            for n, (channel, number) in enumerate((("SMS", "+14155550123"), ("voice call", "+14155550199"))):
                otp = f"{480_000 + n * 1_111:06d}"
                event = telephony_request(
                    channel,
                    number,
                    otp,
                    event_id=f"demo-event-{n}",
                    template=f"Your Example Co. verification code is {otp}",
                    login="alice@example.com",
                    user_id=org.ALICE,
                )
                started = time.perf_counter()
                response = await client.post("/telephony/okta", json=event, headers={"Authorization": DEMO_HOOK_AUTH})
                took = (time.perf_counter() - started) * 1000
                self.t.say("okta", f"POST /telephony/okta ({channel} to {number}, code •••••{otp[-1]})")
                answer = response.json()["commands"][0]["value"][0]
                self.t.say(
                    "hook",
                    f"HTTP {response.status_code} in {took:.0f} ms: com.okta.telephony.action {answer['status']} "
                    f"via {answer['provider']}, transactionId {answer['transactionId']}",
                )
                sent = twilio.messages[-1] if channel == "SMS" else twilio.calls_created[-1]
                content = sent.get("body") or sent.get("twiml") or ""
                masked = content.replace(otp, "••••••").replace(", ".join(otp), "•, •, •, •, •, •")
                self.t.say(
                    "provider", f"{'Messages' if channel == 'SMS' else 'Calls'}.json to {sent.get('to')}: {masked}"
                )
            again = await client.post(
                "/telephony/okta",
                json=telephony_request("SMS", "+14155550123", "480000", event_id="demo-event-0"),
                headers={"Authorization": DEMO_HOOK_AUTH},
            )
            self.t.say("okta", "retries the first event (same eventId)")
            self.t.say(
                "hook", f"HTTP {again.status_code}: the first answer again; sends so far: {len(twilio.messages)} SMS"
            )

    async def audit_query(self) -> None:
        """`helpdesk audit`: the trail read from the durable stream, as a table."""
        assert self.stack.settings is not None
        out = io.StringIO()
        query = AuditQuery(action="case.action", limit=8)
        await run_audit(self.stack.settings, query, "table", out)
        self.t.say("ops", "helpdesk audit --action case.action --limit 8")
        for row in out.getvalue().rstrip().splitlines():
            self.t.line(f"    {row}")

    async def audit_and_home(self) -> None:
        self.t.scene(7, "The audit channel and App Home")
        slack = self.stack.slack
        await self.agent.app_home_opened()
        self.t.say("agent", "opens the app's Home tab")
        home = await self._wait_for(lambda: slack.home_views.get(AGENT_USER_ID))
        self.t.view(home, "views.publish: App Home")
        parents = [
            m for m in slack.messages_in(AUDIT_CHANNEL_ID) if not m.get("thread_ts") or m.get("thread_ts") == m["ts"]
        ]
        for parent in parents:
            thread = slack.thread(AUDIT_CHANNEL_ID, parent["ts"])
            self.t.line(f"  #helpdesk-audit ▸ {thread[0].get('text', '')}")
            for reply in thread[1:]:
                first, *more = str(reply.get("text", "")).splitlines() or [""]
                self.t.line(f"      ↳ {first}")
                for row in more:
                    self.t.line(f"        {row}")

    # -- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def _response_action(response: httpx.Response) -> str:
        if not response.content:
            return f"HTTP {response.status_code}, empty"
        body = response.json()
        return f"response_action={body.get('response_action')}"

    async def _wait_for(self, probe: Callable[[], Any]) -> Any:
        return await self.until(probe, "the sandbox did not see the expected call")


def secrets_in_logs(log_text: str, stack: SandboxStack) -> list[str]:
    """Which of the run's secrets appear in the captured log output (should be none)."""
    assert stack.settings is not None
    candidates = {
        "temporary password": list(stack.okta.issued_temp_passwords),
        "temporary access code": [t.code for t in stack.okta.issued_tacs],
        "one-time code": [c.code for c in stack.okta.sent_codes] + ["480000", "481111"],
        "bot token": [stack.settings.secret("SLACK_BOT_TOKEN")],
        "signing secret": [stack.settings.secret("SLACK_SIGNING_SECRET")],
        "Okta API token": [stack.settings.secret("OKTA_API_TOKEN")],
        "hook auth": [DEMO_HOOK_AUTH],
        "provider token": [stack.settings.secret("TELEPHONY_AUTH_TOKEN")],
        "ticket credentials": [stack.servicenow.password, stack.jira.api_token],
    }
    return [name for name, values in candidates.items() if any(v and v in log_text for v in values)]


async def run_demo(verbose: bool = False, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    logs = io.StringIO()
    configure_logging("DEBUG", "json", logs)
    transcript = Transcript(out)
    transcript.line(
        "Helpdesk Verify — demo against the sandbox (local fakes of Slack, Okta and Twilio; no credentials)"
    )
    async with SandboxStack() as stack:
        assert stack.settings is not None
        transcript.line(
            f"  nats-server {stack.settings.nats_url} · gateway {stack.gateway_url} · hook {stack.hook_url}"
        )
        demo = Demo(stack, transcript)
        try:
            await demo.push_to_temp_password()
            await demo.sms_wrong_then_right()
            await demo.guards()
            await demo.assurance()
            await demo.slack_reach()
            await demo.telephony_hook()
            await demo.audit_and_home()
            await demo.audit_query()
        except TimeoutError as exc:
            transcript.line(f"\n✗ demo stopped: {exc}")
            if verbose:
                print(logs.getvalue(), file=sys.stderr)
            return 1
        leaked = secrets_in_logs(logs.getvalue(), stack)
    lines = logs.getvalue().count("\n")
    transcript.scene(8, "Secrets")
    transcript.line(f"  {lines} log lines written; secrets found in them: {', '.join(leaked) if leaked else 'none'}")
    if verbose:
        print(logs.getvalue(), file=sys.stderr)
    return 1 if leaked else 0
