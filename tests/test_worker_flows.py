"""The okta worker end to end: real NATS, the sandbox Okta, stubs for the responder's two replies.

The responder is another service of ours; here its two request/reply answers (Slack user look-up and
the temporary-password render) are tiny ``bus.serve`` stubs, and the snapshots and audit events it
would consume are read from the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from sandbox.okta import DEFAULT_API_TOKEN, FakeOkta, ManualClock, PushOutcome
from sandbox.okta_data import (
    ADMIN,
    ADMIN_PUSH,
    AGENT,
    ALICE,
    ALICE_EMAIL,
    ALICE_PUSH,
    ALICE_QUESTION,
    ALICE_SMS,
    ALICE_TOTP,
    ALICE_WEBAUTHN,
    BOB,
    BOB_CALL,
    BOB_SMS,
    DAVE,
    DAVE_HARDWARE,
    DAVE_HOTP,
    DAVE_RSA,
    DEMO_ANSWER,
    DEMO_PASSCODE,
    DEMO_YUBIKEY_OTP,
)
from services.okta_worker.app import OktaWorkerService
from shared.bus import Bus, Delivery
from shared.messages import (
    ActionKind,
    Actor,
    AuditEvent,
    BackToSearch,
    CaseSnapshot,
    CaseState,
    ChallengeFactor,
    CloseCase,
    Command,
    HomeOpened,
    HomeSnapshot,
    LookupSlackUser,
    Message,
    OpenCase,
    RefreshCase,
    RenderAck,
    ResendChallenge,
    RunAction,
    SearchUsers,
    SearchUsersReply,
    SelectUser,
    ShowTempPassword,
    SlackUserInfo,
    SubmitCode,
    ViewRef,
)
from shared.settings import Settings

AGENT_SLACK = "U0AGENT01"
OUTSIDER_SLACK = "U0ALICE01"  # alice: an Okta user, not in Helpdesk
NO_EMAIL_SLACK = "U0NOMAIL1"
SLACK_EMAILS = {AGENT_SLACK: "agent@example.com", OUTSIDER_SLACK: "alice@example.com", NO_EMAIL_SLACK: None}
VIEW = ViewRef(view_id="V0CASE0001", hash="h1")


@dataclass
class Harness:
    settings: Settings
    bus: Bus
    okta: FakeOkta
    workers: list[OktaWorkerService] = field(default_factory=list)
    worker_buses: list[Bus] = field(default_factory=list)
    snapshots: list[CaseSnapshot] = field(default_factory=list)
    audits: list[AuditEvent] = field(default_factory=list)
    homes: list[HomeSnapshot] = field(default_factory=list)
    shown: list[ShowTempPassword] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    clock: Callable[[], datetime] | None = None

    async def start_worker(self, **kwargs: Any) -> OktaWorkerService:
        bus = await Bus.connect(self.settings, name=f"okta-worker-{len(self.workers)}")
        await bus.ensure_streams()
        if self.clock is not None:
            kwargs.setdefault("clock", self.clock)
        worker = OktaWorkerService(self.settings, bus, **kwargs)
        await worker.start()
        self.workers.append(worker)
        self.worker_buses.append(bus)
        return worker

    async def send(self, command: Command, msg_id: str | None = None) -> None:
        await self.bus.publish(command, msg_id=msg_id or uuid.uuid4().hex)

    async def wait(self, predicate: Callable[[], Any], timeout: float = 8.0) -> Any:
        async def loop() -> Any:
            while not (found := predicate()):
                self.changed.clear()
                await self.changed.wait()
            return found

        return await asyncio.wait_for(loop(), timeout)

    async def snapshot(self, case_id: str | None, state: CaseState, after: int = 0) -> CaseSnapshot:
        def find() -> CaseSnapshot | None:
            for snap in reversed(self.snapshots):
                if (case_id is None or snap.case_id == case_id) and snap.state == state and snap.revision > after:
                    return snap
            return None

        result: CaseSnapshot = await self.wait(find)
        return result

    async def notice(self, case_id: str, after: int) -> CaseSnapshot:
        result: CaseSnapshot = await self.wait(
            lambda: next((s for s in self.snapshots if s.case_id == case_id and s.revision > after and s.notice), None)
        )
        return result

    async def audit(self, action: str, case_id: str | None = None, category: str = "case") -> AuditEvent:
        result: AuditEvent = await self.wait(
            lambda: next(
                (
                    a
                    for a in self.audits
                    if a.action == action and a.category == category and (case_id is None or a.case_id == case_id)
                ),
                None,
            )
        )
        return result

    # -- a case, step by step ----------------------------------------------------------------------

    def actor(self, user_id: str = AGENT_SLACK) -> Actor:
        return Actor(user_id=user_id)

    async def open(self, agent: str = AGENT_SLACK) -> CaseSnapshot:
        trigger = f"{uuid.uuid4().int % 10**12}.42.abc"
        await self.send(OpenCase(agent=self.actor(agent), trigger_id=trigger))
        first = await self.wait(lambda: next((s for s in self.snapshots if s.trigger_id == trigger), None))
        done: CaseSnapshot = await self.wait(
            lambda: next(
                (
                    s
                    for s in reversed(self.snapshots)
                    if s.case_id == first.case_id and s.state in (CaseState.SEARCHING, CaseState.DENIED)
                ),
                None,
            )
        )
        return done

    def cmd(self, snap: CaseSnapshot, kind: type[Command], **fields: Any) -> Command:
        return kind(agent=snap.agent, case_token=snap.case_token, view=VIEW, **fields)

    async def select(self, snap: CaseSnapshot, user_id: str) -> CaseSnapshot:
        await self.send(self.cmd(snap, SelectUser, okta_user_id=user_id))
        return await self.snapshot(snap.case_id, CaseState.FACTORS, snap.revision)

    async def challenge(self, snap: CaseSnapshot, factor_id: str) -> CaseSnapshot:
        await self.send(self.cmd(snap, ChallengeFactor, factor_id=factor_id))
        return await self.snapshot(snap.case_id, CaseState.CHALLENGE_SENT, snap.revision)

    async def submit(self, snap: CaseSnapshot, code: str) -> None:
        await self.send(self.cmd(snap, SubmitCode, code=code))

    async def verified(self, user_id: str, factor_id: str, code: str | None = None) -> CaseSnapshot:
        snap = await self.select(await self.open(), user_id)
        sent = await self.challenge(snap, factor_id)
        if code is not None:
            await self.submit(sent, code)
        return await self.snapshot(snap.case_id, CaseState.VERIFIED, sent.revision)

    def last(self, case_id: str) -> CaseSnapshot:
        return max((s for s in self.snapshots if s.case_id == case_id), key=lambda s: s.revision)


@contextlib.asynccontextmanager
async def harness(
    settings: Settings,
    bus: Bus,
    *,
    workers: int = 1,
    okta_clock: ManualClock | None = None,
    worker_kwargs: dict[str, Any] | None = None,
    **overrides: Any,
) -> AsyncIterator[Harness]:
    okta = FakeOkta.with_demo_data(clock=okta_clock) if okta_clock else FakeOkta.with_demo_data()
    await okta.start()
    config = {
        "okta_org_url": okta.url,
        "okta_api_token": DEFAULT_API_TOKEN,
        "okta_protected_groups": ["Admins"],
        "okta_verify_attributes": ["employeeNumber"],
        **overrides,
    }
    configured = Settings(_env_file=None, **{**settings.model_dump(), **config})  # type: ignore[call-arg]
    h = Harness(settings=configured, bus=bus, okta=okta)
    if okta_clock is not None:
        h.clock = lambda: datetime.fromtimestamp(okta_clock(), UTC)

    async def on_case(msg: Any) -> None:
        subject = bus.unprefixed(msg.subject)
        if subject == CaseSnapshot.SUBJECT:
            h.snapshots.append(CaseSnapshot.decode_bytes(msg.data))
        elif subject == HomeSnapshot.SUBJECT:
            h.homes.append(HomeSnapshot.decode_bytes(msg.data))
        h.changed.set()

    async def on_audit(msg: Any) -> None:
        h.audits.append(AuditEvent.decode_bytes(msg.data))
        h.changed.set()

    async def lookup(request: LookupSlackUser) -> Message:
        if request.user_id not in SLACK_EMAILS:
            return SlackUserInfo(user_id=request.user_id, error="user_not_found")
        return SlackUserInfo(user_id=request.user_id, email=SLACK_EMAILS[request.user_id])

    async def render(request: ShowTempPassword) -> Message:
        h.shown.append(request)
        h.changed.set()
        return RenderAck(ok=True)

    subs = [
        await bus.nc.subscribe(bus.subject("helpdesk.case.>"), cb=on_case),
        await bus.nc.subscribe(bus.subject("audit.>"), cb=on_audit),
    ]
    await bus.serve(LookupSlackUser, lookup, queue="responder-stub")
    await bus.serve(ShowTempPassword, render, queue="responder-stub")
    for _ in range(workers):
        await h.start_worker(**(worker_kwargs or {}))
    try:
        yield h
    finally:
        for sub in subs:
            await sub.unsubscribe()
        for worker, wbus in zip(h.workers, h.worker_buses, strict=True):
            with contextlib.suppress(Exception):
                await worker.stop()
            await wbus.close()
        await okta.stop()


# ------------------------------------------------------------------------------------------ opening


async def test_open_shows_checking_view_then_search(settings: Settings, bus: Bus) -> None:
    """OpenCase publishes OPENED with the trigger id first, then SEARCHING; the trigger id goes once a view is known."""
    async with harness(settings, bus) as h:
        snap = await h.open()
        assert snap.state == CaseState.SEARCHING
        first = min((s for s in h.snapshots if s.case_id == snap.case_id), key=lambda s: s.revision)
        assert first.state == CaseState.OPENED and first.trigger_id and first.first
        assert snap.trigger_id  # no command has shown a view yet
        assert not snap.first  # only the snapshot published as the case was created is marked first
        await h.audit("case.opened", snap.case_id)
        selected = await h.select(snap, ALICE)
        assert selected.trigger_id is None and selected.view == VIEW


async def test_an_agent_authorized_a_moment_ago_opens_straight_on_the_search(settings: Settings, bus: Bus) -> None:
    """The second case within the authorization cache: one snapshot, SEARCHING with the trigger id, no Okta check."""
    async with harness(settings, bus) as h:
        await h.open()
        okta_calls = len(h.okta.calls)
        again = await h.open()
        await h.audit("case.opened", again.case_id)
        mine = [s for s in h.snapshots if s.case_id == again.case_id]
        assert [(s.state, bool(s.trigger_id), s.first) for s in mine] == [(CaseState.SEARCHING, True, True)]
        assert len(h.okta.calls) == okta_calls
        selected = await h.select(again, ALICE)  # and it goes on as usual
        assert selected.state == CaseState.FACTORS


async def test_agent_outside_helpdesk_group_is_denied(settings: Settings, bus: Bus) -> None:
    """A Slack user whose Okta account is not in the Helpdesk group gets DENIED with a reason and an audit event."""
    async with harness(settings, bus) as h:
        snap = await h.open(OUTSIDER_SLACK)
        assert snap.state == CaseState.DENIED
        assert snap.denial_reason and "Helpdesk" in snap.denial_reason
        event = await h.audit("case.denied", snap.case_id)
        assert event.outcome == "denied" and event.details["reason"] == "not_in_group"
        no_email = await h.open(NO_EMAIL_SLACK)
        assert no_email.state == CaseState.DENIED and "email" in (no_email.denial_reason or "")


async def test_redelivered_open_reuses_the_case(settings: Settings, bus: Bus) -> None:
    """The same OpenCase twice (new msg id, same trigger id) opens one case, not two."""
    async with harness(settings, bus) as h:
        cmd = OpenCase(agent=h.actor(), trigger_id="111.222.same")
        await h.send(cmd)
        await h.send(cmd)
        snap = await h.snapshot(None, CaseState.SEARCHING)
        await h.wait(lambda: sum(1 for a in h.audits if a.action == "case.opened") >= 1)
        assert {s.case_id for s in h.snapshots} == {snap.case_id}
        assert sum(1 for a in h.audits if a.action == "case.opened") == 1
        assert sum(1 for s in h.snapshots if s.first) == 1  # the redelivery's snapshot may find a view open


# ------------------------------------------------------------------------------------------- search


async def test_search_filters_deprovisioned_and_labels(settings: Settings, bus: Bus) -> None:
    """The search answers SCIM starts-with matches with status labels ≤ 75 chars; DEPROVISIONED users are left out."""
    async with harness(settings, bus) as h:
        reply = await bus.request(SearchUsers(query="ali", agent=h.actor()), SearchUsersReply, timeout=3)
        assert {o.id for o in reply.options} == {ALICE, "00ualicia00000000001"}
        assert all(len(o.label) <= 75 for o in reply.options)
        assert any(o.label == "Alice Anderson — alice@example.com (ACTIVE)" for o in reply.options)
        carol = await bus.request(SearchUsers(query="Carol", agent=h.actor()), SearchUsersReply, timeout=3)
        assert carol.options == []
        locked = await bus.request(SearchUsers(query="bob@", agent=h.actor()), SearchUsersReply, timeout=3)
        assert locked.options[0].label.endswith("(LOCKED_OUT)")
        full = await bus.request(SearchUsers(query="dave dunn", agent=h.actor()), SearchUsersReply, timeout=3)
        assert [o.id for o in full.options] == [DAVE]
        outsider = await bus.request(
            SearchUsers(query="ali", agent=h.actor(OUTSIDER_SLACK)), SearchUsersReply, timeout=3
        )
        assert outsider.options == [] and outsider.error


# ------------------------------------------------------------------------------------------ factors


async def test_factor_list_masks_hints_and_marks_unusable(settings: Settings, bus: Bus) -> None:
    """Alice's factors: push first, masked phone and email, the question weak, webauthn not usable with a reason."""
    async with harness(settings, bus) as h:
        snap = await h.select(await h.open(), ALICE)
        by_id = {f.id: f for f in snap.factors}
        assert snap.factors[0].id == ALICE_PUSH
        assert by_id[ALICE_SMS].hint == "••• 0101"
        assert by_id[ALICE_EMAIL].hint == "a•••@example.com"
        assert by_id[ALICE_QUESTION].weak
        assert not by_id[ALICE_WEBAUTHN].usable and by_id[ALICE_WEBAUTHN].reason
        assert by_id["attr:employeeNumber"].weak
        assert "E1002" not in snap.model_dump_json()


@pytest.mark.parametrize(
    ("user", "factor", "code"),
    [
        (ALICE, ALICE_PUSH, None),
        (ALICE, ALICE_SMS, "sent"),
        (ALICE, ALICE_EMAIL, "sent"),
        (BOB, BOB_CALL, "sent"),
        (ALICE, ALICE_TOTP, DEMO_PASSCODE),
        (DAVE, DAVE_HARDWARE, DEMO_YUBIKEY_OTP),
        (DAVE, DAVE_HOTP, DEMO_PASSCODE),
        (DAVE, DAVE_RSA, DEMO_PASSCODE),
        (ALICE, ALICE_QUESTION, DEMO_ANSWER),
    ],
)
async def test_every_factor_type_verifies(
    settings: Settings, bus: Bus, user: str, factor: str, code: str | None
) -> None:
    """Each usable factor type goes from challenge to VERIFIED, with challenge_sent and verified audit events."""
    async with harness(settings, bus) as h:
        snap = await h.select(await h.open(), user)
        sent = await h.challenge(snap, factor)
        assert sent.challenge is not None
        if code is None:
            assert sent.challenge.kind == "push" and sent.challenge.correct_answer is not None
            assert sent.challenge.correct_answer == h.okta.last_push(user).correct_answer  # type: ignore[union-attr]
        else:
            value = h.okta.last_code(user, factor) if code == "sent" else code
            assert value is not None
            await h.submit(sent, value)
        verified = await h.snapshot(snap.case_id, CaseState.VERIFIED, sent.revision)
        assert verified.verified is not None and verified.verified.by_agent == AGENT_SLACK
        assert verified.verified.weak == (factor == ALICE_QUESTION)
        # What it allows is the policy's (tests/test_policy.py): strong → a password; possession → a link.
        strong = factor in (ALICE_PUSH, ALICE_TOTP, DAVE_HARDWARE, DAVE_HOTP, DAVE_RSA)
        assert (ActionKind.TEMP_PASSWORD in verified.actions) == strong
        assert (ActionKind.RESET_LINK in verified.actions) == (factor != ALICE_QUESTION)
        event = await h.audit("case.verified", snap.case_id)
        assert event.actor == AGENT_SLACK and event.details["agent_email"] == "agent@example.com"
        assert event.target == h.okta.user(user).login  # type: ignore[union-attr]
        assert (await h.audit("case.challenge_sent", snap.case_id)).details["factor_type"] == sent.challenge.factor_type


async def test_profile_attribute_is_an_extra_check_only(settings: Settings, bus: Bus) -> None:
    """A matching employeeNumber (compared normalized) does not verify alone; a factor afterwards does, naming both."""
    async with harness(settings, bus) as h:
        snap = await h.select(await h.open(), ALICE)
        sent = await h.challenge(snap, "attr:employeeNumber")
        assert sent.challenge is not None and sent.challenge.kind == "attribute"
        await h.submit(sent, "e-1002 ")
        back = await h.snapshot(snap.case_id, CaseState.FACTORS, sent.revision)
        assert back.notice is not None and "never enough alone" in back.notice.text
        totp = await h.challenge(back, ALICE_TOTP)
        await h.submit(totp, DEMO_PASSCODE)
        verified = await h.snapshot(snap.case_id, CaseState.VERIFIED, totp.revision)
        assert verified.verified is not None and "employeeNumber" in verified.verified.method
        assert all("E1002" not in s.model_dump_json() for s in h.snapshots)


async def test_wrong_code_then_right(settings: Settings, bus: Bus) -> None:
    """One wrong SMS code leaves an attempt-count notice; the right code then verifies."""
    async with harness(settings, bus) as h:
        snap = await h.select(await h.open(), ALICE)
        sent = await h.challenge(snap, ALICE_SMS)
        await h.submit(sent, "000000")
        wrong = await h.notice(snap.case_id, sent.revision)
        assert wrong.state == CaseState.CHALLENGE_SENT
        assert wrong.challenge is not None and wrong.challenge.attempts_left == settings.code_attempts - 1
        assert "left" in wrong.notice.text  # type: ignore[union-attr]
        await h.audit("case.code_wrong", snap.case_id)
        await h.submit(wrong, h.okta.last_code(ALICE, ALICE_SMS) or "")
        await h.snapshot(snap.case_id, CaseState.VERIFIED, wrong.revision)


async def test_wrong_codes_exhaust_attempts_and_fail(settings: Settings, bus: Bus) -> None:
    """After code_attempts wrong codes the case is FAILED (audited) and refuses further challenges."""
    async with harness(settings, bus, code_attempts=2) as h:
        snap = await h.select(await h.open(), ALICE)
        sent = await h.challenge(snap, ALICE_TOTP)
        await h.submit(sent, "111111")
        first = await h.notice(snap.case_id, sent.revision)
        await h.submit(first, "222222")
        failed = await h.snapshot(snap.case_id, CaseState.FAILED, first.revision)
        assert (await h.audit("case.failed", snap.case_id)).details["reason"] == "wrong_code"
        await h.send(h.cmd(failed, ChallengeFactor, factor_id=ALICE_PUSH))
        refused = await h.notice(snap.case_id, failed.revision)
        assert refused.state == CaseState.FAILED and h.okta.push_count(ALICE) == 0


async def test_push_rejected_raises_security_alert(settings: Settings, bus: Bus) -> None:
    """A REJECTED push ends the challenge as REJECTED and publishes a security alert audit event."""
    async with harness(settings, bus) as h:
        h.okta.push_outcome[ALICE] = PushOutcome("REJECTED", after_polls=1)
        snap = await h.select(await h.open(), ALICE)
        sent = await h.challenge(snap, ALICE_PUSH)
        rejected = await h.snapshot(snap.case_id, CaseState.REJECTED, sent.revision)
        assert rejected.notice is not None and rejected.actions == []
        alert = await h.audit("push_rejected", snap.case_id, category="security")
        assert alert.severity == "alert" and alert.outcome == "alert"
        await h.audit("case.rejected", snap.case_id)


async def test_push_timeout_from_okta_and_from_the_cap(settings: Settings, bus: Bus) -> None:
    """Okta's TIMEOUT ends the wait as TIMED_OUT; so does push_max_wait when the user never answers."""
    async with harness(settings, bus, push_max_wait=1) as h:
        h.okta.push_outcome[ALICE] = PushOutcome("TIMEOUT", after_polls=0)
        snap = await h.select(await h.open(), ALICE)
        sent = await h.challenge(snap, ALICE_PUSH)
        await h.snapshot(snap.case_id, CaseState.TIMED_OUT, sent.revision)
        h.okta.push_outcome[ALICE] = PushOutcome(None)
        again = await h.challenge(h.last(snap.case_id), ALICE_PUSH)
        timed_out = await h.snapshot(snap.case_id, CaseState.TIMED_OUT, again.revision)
        assert timed_out.challenge is None
        assert h.okta.last_push(ALICE).cancelled  # type: ignore[union-attr]
        await h.audit("case.timed_out", snap.case_id)


async def test_cancel_stops_the_push_wait(settings: Settings, bus: Bus) -> None:
    """Cancelling a pending push cancels it in Okta, returns to the factor list and ends its poll job."""
    async with harness(settings, bus) as h:
        h.okta.push_outcome[ALICE] = PushOutcome(None)
        snap = await h.select(await h.open(), ALICE)
        sent = await h.challenge(snap, ALICE_PUSH)
        from shared.messages import CancelChallenge

        await h.send(h.cmd(sent, CancelChallenge))
        back = await h.snapshot(snap.case_id, CaseState.FACTORS, sent.revision)
        assert back.challenge is None
        assert h.okta.last_push(ALICE).cancelled  # type: ignore[union-attr]


# -------------------------------------------------------------------------------------- resend, TTL


async def test_resend_respects_thirty_seconds(settings: Settings, bus: Bus) -> None:
    """A resend inside 30 s sends nothing and shows a countdown; after 30 s a new SMS goes out."""
    clock = ManualClock()
    async with harness(settings, bus, okta_clock=clock) as h:
        snap = await h.select(await h.open(), ALICE)
        sent = await h.challenge(snap, ALICE_SMS)
        assert sent.challenge is not None and sent.challenge.resend_available_at is not None
        await h.send(h.cmd(sent, ResendChallenge))
        early = await h.notice(snap.case_id, sent.revision)
        assert early.notice is not None and "30 s" in early.notice.text
        assert early.notice.retry_in is not None and 29 <= early.notice.retry_in <= 30
        assert len(h.okta.sent_codes) == 1
        clock.advance(31)
        await h.send(h.cmd(early, ResendChallenge))
        await h.wait(lambda: len(h.okta.sent_codes) == 2)
        resent = await h.snapshot(snap.case_id, CaseState.CHALLENGE_SENT, early.revision)
        assert resent.challenge is not None and resent.challenge.challenge_id != sent.challenge.challenge_id


async def test_actions_refused_once_verification_expires(settings: Settings, bus: Bus) -> None:
    """After CASE_VERIFIED_TTL an action is refused server-side and the case goes back to the factor list."""
    clock = ManualClock()
    async with harness(settings, bus, okta_clock=clock, case_verified_ttl=600) as h:
        verified = await h.verified(ALICE, ALICE_TOTP, DEMO_PASSCODE)
        clock.advance(601)
        await h.send(h.cmd(verified, RunAction, action=ActionKind.RESET_LINK))
        back = await h.snapshot(verified.case_id, CaseState.FACTORS, verified.revision)
        assert back.notice is not None and "expired" in back.notice.text
        assert not h.okta.calls_to("POST", f"/api/v1/users/{ALICE}/lifecycle/reset_password")


# ------------------------------------------------------------------------------------------ actions


async def test_actions_reset_link_factor_all_sessions(settings: Settings, bus: Bus) -> None:
    """After a strong verification: reset link by email, one factor, sessions — each in Okta and audited."""
    async with harness(settings, bus) as h:
        snap = await h.verified(ALICE, ALICE_TOTP, DEMO_PASSCODE)
        case_id = snap.case_id
        steps = [
            (ActionKind.RESET_LINK, None, ("POST", f"/api/v1/users/{ALICE}/lifecycle/reset_password")),
            (ActionKind.RESET_FACTOR, ALICE_SMS, ("DELETE", f"/api/v1/users/{ALICE}/factors/{ALICE_SMS}")),
            (ActionKind.REVOKE_SESSIONS, None, ("DELETE", f"/api/v1/users/{ALICE}/sessions")),
        ]  # resetting all factors waits for an approval: tests/test_worker_assurance.py
        for action, factor_id, (method, path) in steps:
            await h.send(h.cmd(snap, RunAction, action=action, factor_id=factor_id))
            snap = await h.wait(
                lambda a=action, r=snap.revision: next(
                    (
                        s
                        for s in h.snapshots
                        if s.case_id == case_id and s.revision > r and s.results and s.results[-1].action == a
                    ),
                    None,
                )
            )
            assert snap.results[-1].ok, snap.results[-1].message
            assert h.okta.calls_to(method, path)
        assert (
            h.okta.calls_to("POST", f"/api/v1/users/{ALICE}/lifecycle/reset_password")[0].query["sendEmail"] == "true"
        )
        assert ALICE_SMS not in {f.id for f in snap.factors if f.factor_type == "sms"}
        assert h.okta.calls_to("DELETE", f"/api/v1/users/{ALICE}/sessions")[0].query["oauthTokens"] == "true"
        await h.wait(lambda: sum(1 for a in h.audits if a.action == "case.action") == 3)
        assert {a.details["action"] for a in h.audits if a.action == "case.action"} == {s[0].value for s in steps}


async def test_unlock_only_when_locked_out(settings: Settings, bus: Bus) -> None:
    """Unlock is offered and works for LOCKED_OUT bob; for ACTIVE alice it is not offered and is refused."""
    async with harness(settings, bus) as h:
        snap = await h.select(await h.open(), BOB)
        sent = await h.challenge(snap, BOB_SMS)
        await h.submit(sent, h.okta.last_code(BOB, BOB_SMS) or "")
        verified = await h.snapshot(snap.case_id, CaseState.VERIFIED, sent.revision)
        assert ActionKind.UNLOCK in verified.actions
        await h.send(h.cmd(verified, RunAction, action=ActionKind.UNLOCK))
        await h.audit("case.action", snap.case_id)
        assert h.okta.user(BOB).status == "ACTIVE"  # type: ignore[union-attr]
        after = h.last(snap.case_id)
        assert after.target is not None and after.target.status == "ACTIVE"
        assert ActionKind.UNLOCK not in after.actions

        alice = await h.verified(ALICE, ALICE_TOTP, DEMO_PASSCODE)
        assert ActionKind.UNLOCK not in alice.actions
        await h.send(h.cmd(alice, RunAction, action=ActionKind.UNLOCK))
        refused = await h.notice(alice.case_id, alice.revision)
        assert "not locked" in refused.notice.text  # type: ignore[union-attr]
        assert not h.okta.calls_to("POST", f"/api/v1/users/{ALICE}/lifecycle/unlock")


async def test_protected_target_verified_but_not_reset(settings: Settings, bus: Bus) -> None:
    """A user in OKTA_PROTECTED_GROUPS can be verified; no action is offered and one sent anyway is refused."""
    async with harness(settings, bus) as h:
        snap = await h.select(await h.open(), ADMIN)
        assert snap.target is not None and snap.target.protected
        await h.challenge(snap, ADMIN_PUSH)
        verified = await h.snapshot(snap.case_id, CaseState.VERIFIED)
        assert verified.actions == [] and verified.escalation and "Admins" in verified.escalation
        escalated = await h.audit("case.escalated", snap.case_id)  # the escalation went to the security channel
        assert escalated.outcome == "info"
        await h.send(h.cmd(verified, RunAction, action=ActionKind.TEMP_PASSWORD))
        event = await h.wait(
            lambda: next((a for a in h.audits if a.action == "case.escalated" and a.outcome == "refused"), None)
        )
        assert event.details["reason"] == "escalate"
        assert not h.okta.calls_to("POST", f"/api/v1/users/{ADMIN}/lifecycle/expire_password_with_temp_password")


async def test_agent_cannot_select_own_account(settings: Settings, bus: Bus) -> None:
    """Selecting the agent's own Okta user is refused with a notice; no factors are listed."""
    async with harness(settings, bus) as h:
        snap = await h.open()
        await h.send(h.cmd(snap, SelectUser, okta_user_id=AGENT))
        refused = await h.notice(snap.case_id, snap.revision)
        assert refused.state == CaseState.SEARCHING and refused.factors == []
        assert "own account" in refused.notice.text  # type: ignore[union-attr]


async def test_verify_only_mode_offers_admin_console_link(settings: Settings, bus: Bus) -> None:
    """HELPDESK_MODE=verify-only: the verified view has no actions and links the user in the Admin Console."""
    async with harness(settings, bus, helpdesk_mode="verify-only") as h:
        verified = await h.verified(ALICE, ALICE_TOTP, DEMO_PASSCODE)
        assert verified.mode == "verify-only" and verified.actions == []
        assert verified.admin_url == f"{h.okta.url}/admin/user/profile/view/{ALICE}"
        await h.send(h.cmd(verified, RunAction, action=ActionKind.RESET_LINK))
        await h.audit("case.escalated", verified.case_id)
        assert not h.okta.calls_to("POST", f"/api/v1/users/{ALICE}/lifecycle/reset_password")


async def test_close_back_to_search_and_home(settings: Settings, bus: Bus) -> None:
    """Back to search clears the target; close ends the case; the agent's Home lists it with its outcome,
    and leaves out a case opened and closed without anyone picked."""
    async with harness(settings, bus) as h:
        verified = await h.verified(ALICE, ALICE_TOTP, DEMO_PASSCODE)
        await h.send(h.cmd(verified, CloseCase))
        await h.snapshot(verified.case_id, CaseState.CLOSED)
        await h.audit("case.closed", verified.case_id)
        other = await h.select(await h.open(), DAVE)
        await h.send(h.cmd(other, BackToSearch))
        back = await h.snapshot(other.case_id, CaseState.SEARCHING, other.revision)
        assert back.target is None and back.factors == []
        idle = await h.open()  # opened and closed without picking anyone
        await h.send(h.cmd(idle, CloseCase))
        await h.snapshot(idle.case_id, CaseState.CLOSED)
        await h.send(HomeOpened(agent=h.actor()))
        home = await h.wait(lambda: h.homes[-1] if h.homes else None)
        assert home.okta_status == "ok"
        by_id = {r.case_id: r for r in home.recent}
        assert by_id[verified.case_id].outcome == "verified, closed"
        assert by_id[verified.case_id].target_login == "alice@example.com"
        assert other.case_id in by_id
        assert idle.case_id not in by_id


# ------------------------------------------------------------------------------------ temp password


async def test_temp_password_only_in_the_render_request(settings: Settings, bus: Bus) -> None:
    """The temporary password reaches the responder once; no snapshot has its revision; Done shows the next one."""
    async with harness(settings, bus) as h:
        verified = await h.verified(ALICE, ALICE_TOTP, DEMO_PASSCODE)
        await h.send(h.cmd(verified, RunAction, action=ActionKind.TEMP_PASSWORD))
        shown = await h.wait(lambda: h.shown[-1] if h.shown else None)
        assert shown.case_id == verified.case_id and shown.view == VIEW
        assert shown.target_login == "alice@example.com"
        password = shown.temp_password.get_secret_value()
        assert len(password) >= 8 and password not in repr(shown)
        await h.audit("case.action", verified.case_id)
        assert all(s.revision != shown.revision for s in h.snapshots if s.case_id == verified.case_id)
        assert h.okta.user(ALICE).status == "PASSWORD_EXPIRED"  # type: ignore[union-attr]
        await h.send(h.cmd(verified, RefreshCase))
        done = await h.wait(
            lambda: next(
                (s for s in h.snapshots if s.case_id == verified.case_id and s.revision > shown.revision), None
            )
        )
        assert done.revision == shown.revision + 1
        assert done.results[-1].action == ActionKind.TEMP_PASSWORD and password not in done.model_dump_json()


async def test_redelivered_command_sends_no_second_push(settings: Settings, bus: Bus) -> None:
    """The same challenge command handled twice (a redelivery) sends one push and keeps one challenge."""
    async with harness(settings, bus) as h:
        h.okta.push_outcome[ALICE] = PushOutcome(None)
        snap = await h.select(await h.open(), ALICE)
        worker = h.workers[0]
        assert worker.ctx is not None
        command = h.cmd(snap, ChallengeFactor, factor_id=ALICE_PUSH)
        delivery = Delivery(subject=ChallengeFactor.SUBJECT, num_delivered=1, headers={"Nats-Msg-Id": "act-1"})
        from services.okta_worker.handlers import handle_command

        await handle_command(worker.ctx, command, delivery)
        await handle_command(worker.ctx, command, Delivery(ChallengeFactor.SUBJECT, 2, delivery.headers))
        assert h.okta.push_count(ALICE) == 1
        sent = await h.snapshot(snap.case_id, CaseState.CHALLENGE_SENT)
        # the redelivery publishes the stored revision again (JetStream drops the duplicate): one challenge
        sent_revisions = {
            s.revision for s in h.snapshots if s.case_id == snap.case_id and s.state == CaseState.CHALLENGE_SENT
        }
        assert len(sent_revisions) == 1
        assert sent.challenge is not None
