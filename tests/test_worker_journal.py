"""Nothing lost, nothing sent twice: an Okta call interrupted by a worker's death is reconciled.

The worker "dies" here as a process would under ``kill -9``: its handler is cancelled mid-call (no
outcome written, no heartbeat), and the command comes back — redelivered to the same or another
replica — to find the journal entry still open.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from sandbox.okta_data import ALICE, ALICE_PUSH, ALICE_SMS, BOB, BOB_SMS
from services.okta_worker.app import ACK_WAIT
from services.okta_worker.context import WorkerContext
from services.okta_worker.handlers import handle_command
from shared.bus import Bus, Delivery
from shared.messages import ActionKind, CaseState, ChallengeFactor, Command, RunAction
from shared.settings import Settings
from tests.test_worker_flows import Harness, harness


async def until(predicate: Any, timeout: float = 8.0) -> Any:
    """Poll a condition the bus does not announce (a request arriving at the fake Okta)."""
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
    return found


async def die_mid_call(h: Harness, ctx: WorkerContext, command: Command, msg_id: str, path: str) -> None:
    """Run ``command`` until its Okta call to ``path`` has arrived, then kill the handler there."""
    h.okta.hang_next(1.0, path_prefix=path)
    task = asyncio.create_task(handle_command(ctx, command, Delivery(command.SUBJECT, 1, {"Nats-Msg-Id": msg_id})))
    await until(lambda: h.okta.hangs_pending == 0 or task.done())
    assert not task.done(), "the handler finished before its Okta call"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def redeliver(ctx: WorkerContext, command: Command, msg_id: str) -> None:
    await handle_command(ctx, command, Delivery(command.SUBJECT, 2, {"Nats-Msg-Id": msg_id}))


def okta_changes(h: Harness, fragment: str) -> int:
    return sum(1 for c in h.okta.calls if c.method in ("POST", "DELETE") and fragment in c.path)


async def test_a_temporary_password_set_before_a_crash_is_recorded_not_lost(settings: Settings, bus: Bus) -> None:
    async with harness(settings, bus) as h:
        ctx = h.workers[0].ctx
        assert ctx is not None
        snap = await h.verified(ALICE, ALICE_PUSH)
        command = h.cmd(snap, RunAction, action=ActionKind.TEMP_PASSWORD)
        await die_mid_call(h, ctx, command, "act-1", f"/api/v1/users/{ALICE}/lifecycle/expire_password")
        await until(lambda: h.okta.issued_temp_passwords)  # Okta did set it after the worker died
        found = await ctx.store.get(snap.case_id)
        assert found is not None and found[0].intent is not None  # the journal entry is open
        await redeliver(ctx, command, "act-1")
        event = await h.wait(
            lambda: next((a for a in h.audits if a.action == "case.action" and a.details.get("reconciled")), None)
        )
        assert event.details["reconciled"] == "done" and event.outcome == "success"
        last = h.last(snap.case_id)
        assert last.results and "never shown" in last.results[-1].message
        assert okta_changes(h, "expire_password") == 1  # nothing run twice
        assert not h.shown  # and the lost password is never shown late
        await redeliver(ctx, command, "act-1")  # a third delivery: the same event again, deduplicated
        assert len({a.event_id for a in h.audits if a.action == "case.action"}) == 1
        assert okta_changes(h, "expire_password") == 1


async def test_an_unlock_that_never_reached_okta_is_recorded_not_done(settings: Settings, bus: Bus) -> None:
    async with harness(settings, bus) as h:
        ctx = h.workers[0].ctx
        assert ctx is not None
        snap = await h.select(await h.open(), BOB)
        sent = await h.challenge(snap, BOB_SMS)
        await h.submit(sent, h.okta.last_code(BOB, BOB_SMS) or "")
        verified = await h.snapshot(snap.case_id, CaseState.VERIFIED, sent.revision)
        command = h.cmd(verified, RunAction, action=ActionKind.UNLOCK)
        # the worker dies while reading the user, before the unlock call
        await die_mid_call(h, ctx, command, "act-2", f"/api/v1/users/{BOB}")
        await redeliver(ctx, command, "act-2")
        event = await h.wait(
            lambda: next((a for a in h.audits if a.action == "case.action" and a.details.get("reconciled")), None)
        )
        assert event.details["reconciled"] == "not_done" and event.outcome == "failure"
        assert "may run it again" in (h.last(snap.case_id).notice.text if h.last(snap.case_id).notice else "")
        assert okta_changes(h, "/lifecycle/unlock") == 0


async def test_an_sms_sent_before_a_crash_is_shown_as_maybe_sent_and_never_resent(settings: Settings, bus: Bus) -> None:
    async with harness(settings, bus) as h:
        ctx = h.workers[0].ctx
        assert ctx is not None
        snap = await h.select(await h.open(), ALICE)
        command = h.cmd(snap, ChallengeFactor, factor_id=ALICE_SMS)
        await die_mid_call(h, ctx, command, "ch-1", f"/api/v1/users/{ALICE}/factors/{ALICE_SMS}/verify")
        await until(lambda: h.okta.last_code(ALICE, ALICE_SMS))  # the SMS went out
        # the agent clicks again meanwhile: refused, nothing sent
        again = h.cmd(snap, ChallengeFactor, factor_id=ALICE_SMS)
        await handle_command(ctx, again, Delivery(again.SUBJECT, 1, {"Nats-Msg-Id": "ch-2"}))
        busy = await h.notice(snap.case_id, snap.revision)
        assert busy.notice and "still running" in busy.notice.text
        await redeliver(ctx, command, "ch-1")
        shown = await h.snapshot(snap.case_id, CaseState.CHALLENGE_SENT, busy.revision)
        assert shown.notice and "may have reached" in shown.notice.text
        assert len([c for c in h.okta.sent_codes if c.factor_id == ALICE_SMS]) == 1
        event = await h.audit("case.challenge_sent", snap.case_id)
        assert event.outcome == "uncertain"
        await h.submit(shown, h.okta.last_code(ALICE, ALICE_SMS) or "")  # it had arrived: it verifies
        await h.snapshot(snap.case_id, CaseState.VERIFIED, shown.revision)


async def test_an_outcome_whose_publish_failed_is_published_by_the_redelivery(settings: Settings, bus: Bus) -> None:
    async with harness(settings, bus) as h:
        ctx = h.workers[0].ctx
        assert ctx is not None
        snap = await h.verified(ALICE, ALICE_PUSH)
        command = h.cmd(snap, RunAction, action=ActionKind.RESET_LINK)
        publish_audit = ctx.publish_audit

        async def crash(*args: Any) -> None:
            raise ConnectionError("the process died here")

        ctx.publish_audit = crash  # type: ignore[method-assign]
        with contextlib.suppress(ConnectionError):
            await handle_command(ctx, command, Delivery(command.SUBJECT, 1, {"Nats-Msg-Id": "act-3"}))
        ctx.publish_audit = publish_audit  # type: ignore[method-assign]
        assert not [a for a in h.audits if a.action == "case.action"]
        await redeliver(ctx, command, "act-3")
        event = await h.wait(lambda: next((a for a in h.audits if a.action == "case.action"), None))
        assert event.outcome == "success" and event.details["action"] == "reset_link"
        assert okta_changes(h, "/lifecycle/reset_password") == 1


async def test_a_dead_workers_command_reaches_another_replica_within_seconds(settings: Settings, bus: Bus) -> None:
    """Two replicas; the one holding an SMS challenge loses NATS mid-call: within ACK_WAIT the other has it."""
    async with harness(settings, bus, workers=2) as h:
        snap = await h.select(await h.open(), ALICE)
        h.okta.hang_next(30.0, path_prefix=f"/api/v1/users/{ALICE}/factors/{ALICE_SMS}/verify")
        await h.send(h.cmd(snap, ChallengeFactor, factor_id=ALICE_SMS), msg_id="ch-dead")
        await until(lambda: h.okta.hangs_pending == 0)
        holder = next(w for w in h.workers if w.ctx is not None and w.ctx.handled and w.ctx is not None)
        died = time.monotonic()
        await h.worker_buses[h.workers.index(holder)].nc.close()  # no more heartbeats, no ack
        shown = await h.snapshot(snap.case_id, CaseState.CHALLENGE_SENT, snap.revision)
        took = time.monotonic() - died
        assert took < ACK_WAIT + 3, took
        assert shown.notice and "may have reached" in shown.notice.text
