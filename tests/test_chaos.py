"""Chaos, bounded: cases run while a worker dies mid-flight and nats-server restarts on its store.

Eight agents verify eight callers (TOTP) and each runs two actions. Meanwhile one of two workers is cut
off NATS without a goodbye (no ack, no heartbeat: its messages come back to the others), a third worker
starts, and nats-server restarts. An agent whose click shows nothing clicks again — the same Slack click,
so the same id. Afterwards, for every case: verified and both actions recorded; exactly one Okta effect
per action; the audit trail has each step once; no code in any log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from services.okta_worker.context import case_id_for
from services.okta_worker.store import CASES_BUCKET
from shared.bus import AUDIT_STREAM, Bus
from shared.messages import (
    ActionKind,
    AuditEvent,
    CaseState,
    ChallengeFactor,
    Command,
    OpenCase,
    RunAction,
    SelectUser,
    SubmitCode,
)
from shared.natsserver import EmbeddedNats
from shared.settings import Settings
from tests.test_worker_flows import AGENT_SLACK, Harness, harness
from tests.test_worker_secrets import _Capture, captured_logs  # noqa: F401 (the fixture)

CASES = 8
RESEND_AFTER = 6.0  # seconds an agent waits before clicking again
DEADLINE = 60.0


async def stored_case(h: Harness, case_id: str) -> Any:
    with contextlib.suppress(Exception):  # NATS may be restarting: None, and the agent looks again
        kv = await h.bus.key_value(CASES_BUCKET)
        entry = await kv.get(case_id)
        if entry.value:
            from services.okta_worker.case import Case

            return Case.model_validate_json(entry.value)
    return None


async def until_stored(
    h: Harness,
    case_id: str,
    done: Callable[[Any], bool],
    command: Callable[[], Command],
    msg_id: str,
    anew: Callable[[Any], bool] = lambda case: False,
) -> Any:
    """Click (``command``) and wait until the stored case shows ``done``. Nothing shown for a while: the
    agent clicks again — the same click, so the same id. What the case says calls for a new click
    (``anew``: a fresh code asked for, an action recorded as not done): a new click, a new id."""
    deadline = time.monotonic() + DEADLINE
    sent_at, click = 0.0, 0
    while time.monotonic() < deadline:
        case = await stored_case(h, case_id)
        if case is not None and done(case):
            return case
        if sent_at and case is not None and case.intent is None and anew(case) and time.monotonic() - sent_at > 0.5:
            click, sent_at = click + 1, 0.0  # what the case shows calls for a new click
        if time.monotonic() - sent_at > RESEND_AFTER:
            with contextlib.suppress(Exception):  # NATS may be restarting: the next round tries again
                await h.bus.publish(command(), msg_id=f"{msg_id}:{click}", timeout=1.0)
            sent_at = time.monotonic()
        await asyncio.sleep(0.1)
    case = await stored_case(h, case_id)
    seen = (case.state, case.intent, case.notice, case.handled[-3:]) if case is not None else None
    raise AssertionError(f"{msg_id} never took effect on {case_id}: {seen}")


async def one_agent(h: Harness, n: int, user_id: str, factor_id: str) -> str:
    trigger = f"{uuid.uuid4().int % 10**12}.{n}.chaos"
    case_id = case_id_for(trigger)
    open_case = OpenCase(agent=h.actor(AGENT_SLACK), trigger_id=trigger)
    case = await until_stored(
        h, case_id, lambda c: c.state == CaseState.SEARCHING, lambda: open_case, f"open:{trigger}"
    )

    def cmd(kind: type[Command], **fields: Any) -> Callable[[], Command]:
        return lambda: kind(agent=case.agent, case_token=case.case_token, **fields)

    await until_stored(
        h, case_id, lambda c: c.state == CaseState.FACTORS, cmd(SelectUser, okta_user_id=user_id), f"{n}:select"
    )
    await until_stored(
        h, case_id, lambda c: c.state == CaseState.CHALLENGE_SENT, cmd(ChallengeFactor, factor_id=factor_id), f"{n}:ch"
    )
    codes = iter(range(10))

    def next_code() -> Command:
        code = passcode(n, next(codes))
        h.okta.set_passcode(user_id, factor_id, code)  # the caller reads out the code on their app now
        return SubmitCode(agent=case.agent, case_token=case.case_token, code=code)

    await until_stored(
        h,
        case_id,
        lambda c: c.state == CaseState.VERIFIED,
        next_code,
        f"{n}:code",
        anew=lambda c: c.notice is not None and "fresh code" in c.notice.text,
    )
    for action in (ActionKind.RESET_LINK, ActionKind.REVOKE_SESSIONS):
        await until_stored(
            h,
            case_id,
            lambda c, a=action: any(r.action == a and r.ok for r in c.results),
            cmd(RunAction, action=action),
            f"{n}:{action.value}",
            anew=lambda c, a=action: any(r.action == a and not r.ok for r in c.results),
        )
    return case_id


def passcode(n: int, attempt: int) -> str:
    return f"{731000 + n * 10 + attempt:06d}"


async def audit_trail(bus: Bus) -> list[AuditEvent]:
    stream = bus.stream_name(AUDIT_STREAM.name)
    info = await bus.js.stream_info(stream)
    events: list[AuditEvent] = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        with contextlib.suppress(Exception):
            raw = await bus.js.get_msg(stream, seq)
            events.append(AuditEvent.decode_bytes(raw.data or b""))
    return events


async def test_cases_survive_a_dead_worker_and_a_nats_restart(
    settings: Settings,
    bus: Bus,
    nats_server: EmbeddedNats | None,
    captured_logs: _Capture,  # noqa: F811
) -> None:
    if nats_server is None:
        pytest.fail("the chaos test restarts nats-server: it needs the one the tests start")
    async with harness(settings, bus, workers=2, challenge_limit=100) as h:
        users = []
        for n in range(CASES):
            user = h.okta.add_user(f"chaos{n}@example.com", "Chaos", f"Caller{n}")
            factor = h.okta.add_factor(user.id, "token:software:totp")
            users.append((user.id, factor.id))
        for uid, _ in users:  # Okta is slow to reset: a worker dies with calls in flight
            h.okta.hang_next(0.6, path_prefix=f"/api/v1/users/{uid}/lifecycle/reset_password")
        agents = [asyncio.create_task(one_agent(h, n, *users[n])) for n in range(CASES)]

        async def calls_in_flight() -> None:
            deadline = time.monotonic() + 30
            while h.okta.hangs_pending == CASES:
                assert time.monotonic() < deadline, "no action reached Okta"
                await asyncio.sleep(0.01)

        await calls_in_flight()
        with contextlib.suppress(Exception):  # a death needs no clean goodbye
            await h.worker_buses[0].nc.close()  # cut off mid-call: no ack, no heartbeat; its work comes back
        await h.start_worker()
        await nats_server.restart()  # on its store: cases (KV, file) stay; in-flight commands do not
        with contextlib.suppress(Exception):  # it may be reconnecting: a close then raises, as death would
            await h.worker_buses[1].nc.close()  # and the second original replica dies too
        await h.start_worker()

        case_ids = await asyncio.wait_for(asyncio.gather(*agents), DEADLINE)

        for n, case_id in enumerate(case_ids):
            case = await stored_case(h, case_id)
            assert case.state == CaseState.VERIFIED and case.intent is None, case.notice
            done = {r.action for r in case.results if r.ok}
            assert done == {ActionKind.RESET_LINK, ActionKind.REVOKE_SESSIONS}, case.results
            uid = users[n][0]
            # exactly one effect per action the agent took (a reconciled "not done" is not an effect)
            links = h.okta.calls_to("POST", f"/api/v1/users/{uid}/lifecycle/reset_password")
            assert len(links) == sum(1 for r in case.results if r.action == ActionKind.RESET_LINK and r.ok)
            ends = h.okta.calls_to("DELETE", f"/api/v1/users/{uid}/sessions")
            assert len(ends) == sum(1 for r in case.results if r.action == ActionKind.REVOKE_SESSIONS and r.ok)

        trail = [e for e in await audit_trail(bus) if e.case_id in case_ids]
        for case_id in case_ids:
            mine = [e for e in trail if e.case_id == case_id]
            steps = [(e.details.get("revision"), e.category, e.action) for e in mine]
            assert len(steps) == len(set(steps)), f"an audit event twice: {sorted(map(str, steps))}"
            actions = [e for e in mine if e.action == "case.action" and e.outcome == "success"]
            assert sorted(str(e.details["action"]) for e in actions) == ["reset_link", "revoke_sessions"]
            assert sum(1 for e in mine if e.action == "case.verified") == 1

        # the trouble did hit calls in flight: their journal entries were reconciled, not lost
        assert any(e.details.get("reconciled") for e in trail), "no interrupted call: the chaos proved nothing"
        assert captured_logs.lines, "no log line captured: the scan would prove nothing"
        codes = {passcode(n, attempt) for n in range(CASES) for attempt in range(10)}
        assert not any(code in line for line in captured_logs.lines for code in codes)
