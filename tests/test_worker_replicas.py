"""Several okta worker replicas on one NATS: shared limits, a push wait that survives a dead replica,
each command handled by exactly one replica, and case writes that never overwrite a newer one."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from sandbox.okta import PushOutcome
from sandbox.okta_data import ALICE, ALICE_PUSH
from services.okta_worker.case import Case
from services.okta_worker.handlers import handle_command
from services.okta_worker.store import CaseStore
from shared.bus import Bus, Delivery
from shared.messages import Actor, CaseSnapshot, CaseState, ChallengeFactor
from shared.settings import Settings
from tests.test_worker_flows import Harness, harness


async def kill(h: Harness, index: int) -> None:
    """Stop a replica the way a crash would: no graceful finish, the connection just goes."""
    worker, wbus = h.workers[index], h.worker_buses[index]
    for sub in worker._subs:
        if sub._loop_task is not None:
            sub._loop_task.cancel()
        for task in list(sub._tasks):
            task.cancel()
    with contextlib.suppress(Exception):
        await wbus.nc.close()
    worker._subs.clear()


async def test_push_bomb_limit_holds_across_two_workers(settings: Settings, bus: Bus) -> None:
    """CHALLENGE_LIMIT counts challenges to one user across replicas: the third push is refused and audited."""
    async with harness(settings, bus, workers=2, challenge_limit=2) as h:
        h.okta.push_outcome[ALICE] = PushOutcome(None)
        contexts = [w.ctx for w in h.workers]
        assert all(contexts)
        for attempt in range(3):
            snap = await h.select(await h.open(), ALICE)
            command = h.cmd(snap, ChallengeFactor, factor_id=ALICE_PUSH)
            ctx = contexts[attempt % 2]
            assert ctx is not None
            await handle_command(ctx, command, Delivery(ChallengeFactor.SUBJECT, 1, {"Nats-Msg-Id": f"bomb-{attempt}"}))
        assert h.okta.push_count(ALICE) == 2
        limited = await h.audit("case.limit_hit", snap.case_id)
        assert limited.severity == "warning" and limited.target == "alice@example.com"
        refused = h.last(snap.case_id)
        assert refused.state == CaseState.FACTORS and "limit" in (refused.notice.text if refused.notice else "")


async def test_killed_worker_mid_push_wait_is_finished_by_another(settings: Settings, bus: Bus) -> None:
    """A replica dies while polling a push; another replica carries the wait on to VERIFIED, with one push sent."""
    async with harness(settings, bus, workers=1, worker_kwargs={"job_ack_wait": 1.0}) as h:
        h.okta.push_outcome[ALICE] = PushOutcome(None)
        snap = await h.select(await h.open(), ALICE)
        sent = await h.challenge(snap, ALICE_PUSH)
        tx = h.okta.last_push(ALICE)
        assert tx is not None
        poll_path = f"/api/v1/users/{ALICE}/factors/{ALICE_PUSH}/transactions/{tx.id}"
        await h.okta.wait_for_call("GET", poll_path, count=2)
        # The next poll hangs inside the first replica: it dies holding the job, unacknowledged.
        h.okta.hang_next(30.0, n=1, path_prefix=poll_path)
        seen = len(h.okta.calls_to("GET", poll_path))
        await h.okta.wait_for_call("GET", poll_path, count=seen + 1)
        await kill(h, 0)
        second = await h.start_worker(job_ack_wait=1.0)
        h.okta.resolve_push(tx.id, "SUCCESS")
        verified = await h.snapshot(snap.case_id, CaseState.VERIFIED, sent.revision)
        assert verified.verified is not None
        assert h.okta.push_count(ALICE) == 1
        assert second.ctx is not None and second.ctx.handled >= 1


async def test_two_replicas_never_both_process_one_command(settings: Settings, bus: Bus) -> None:
    """With two replicas consuming, each of 12 challenge commands is handled once: 12 pushes, 12 verified cases."""
    async with harness(settings, bus, workers=2) as h:
        users = []
        for i in range(12):
            user = h.okta.add_user(f"user{i}@example.com", "User", f"Number{i}")
            factor = h.okta.add_factor(user.id, "push")
            users.append((user.id, factor.id))

        async def case_for(user_id: str) -> CaseSnapshot:
            return await h.select(await h.open(), user_id)

        snaps = await asyncio.gather(*(case_for(uid) for uid, _ in users))
        for snap, (_, fid) in zip(snaps, users, strict=True):
            command = h.cmd(snap, ChallengeFactor, factor_id=fid)
            await h.send(command, msg_id=f"click-{snap.case_id}")
            await h.send(command, msg_id=f"click-{snap.case_id}")  # a retried publish: deduplicated
        await asyncio.gather(*(h.snapshot(s.case_id, CaseState.VERIFIED, s.revision) for s in snaps))
        assert h.okta.push_count() == 12
        assert all(h.okta.push_count(uid) == 1 for uid, _ in users)
        handled = [w.ctx.handled for w in h.workers if w.ctx is not None]
        assert all(n > 0 for n in handled), handled


async def test_a_write_on_a_known_revision_loses_to_a_newer_one(bus: Bus) -> None:
    """A poll writes on the case it read alongside; if another replica wrote since, the change is
    re-applied to the newer case instead of overwriting it."""
    store = CaseStore(await bus.key_value("cases_store_test"))
    now = datetime.now(UTC)
    case = Case(
        case_id="c_store",
        agent=Actor(user_id="U1"),
        case_token="-",
        state=CaseState.SEARCHING,
        created_at=now,
        updated_at=now,
    )
    assert await store.create(case)
    read = await store.get("c_store")
    assert read is not None
    # Another replica writes meanwhile.
    await store.update("c_store", lambda c: c.model_copy(update={"query": "from the other replica"}))

    before, after = await store.update(
        "c_store", lambda c: c.model_copy(update={"state": CaseState.FACTORS}), known=read
    )
    assert before.query == "from the other replica"
    assert after.query == "from the other replica" and after.state == CaseState.FACTORS
    stored = await store.get("c_store")
    assert stored is not None and stored[0] == after
