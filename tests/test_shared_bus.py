"""The bus against a real nats-server: dedupe, settle policies, request/reply, KV and limits."""

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from nats.js.api import KeyValueConfig, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from structlog.testing import capture_logs

from shared.bus import (
    AUDIT_STREAM,
    CASE_STREAM,
    CMD_STREAM,
    JOB_STREAM,
    PULL_EXPIRES,
    Bus,
    BusUnavailable,
    Delivery,
    RetryLater,
    Unprocessable,
)
from shared.limits import RateLimiter, kv_key
from shared.messages import Actor, LookupSlackUser, OpenCase, SlackUserInfo
from shared.natsserver import EmbeddedNats
from shared.settings import Settings


def open_case(trigger: str = "t1") -> OpenCase:
    return OpenCase(agent=Actor(user_id="U1"), trigger_id=trigger)


async def test_publish_deduplicates_by_msg_id(bus: Bus) -> None:
    """A second publish with the same Nats-Msg-Id is a no-op reported as duplicate."""
    assert await bus.publish(open_case(), msg_id="trigger:t1") is True
    assert await bus.publish(open_case(), msg_id="trigger:t1") is False
    info = await bus.js.stream_info(bus.stream_name("HELPDESK_CMD"))
    assert info.state.messages == 1


async def test_consumer_acks_handled_messages(bus: Bus) -> None:
    """A handler that returns gets each message once, typed; acked messages leave the work queue."""
    seen: list[OpenCase] = []
    done = asyncio.Event()

    async def handler(msg: OpenCase, delivery: Delivery) -> None:
        seen.append(msg)
        if len(seen) == 2:
            done.set()

    sub = await bus.consume(CMD_STREAM, "worker", handler)
    await bus.publish(open_case("a"))
    await bus.publish(open_case("b"))
    await asyncio.wait_for(done.wait(), 5)
    await sub.stop()
    assert sorted(m.trigger_id for m in seen) == ["a", "b"]
    assert all(isinstance(m, OpenCase) for m in seen)
    info = await bus.js.consumer_info(bus.stream_name("HELPDESK_CMD"), "worker")
    assert info.num_ack_pending == 0


async def test_message_arriving_while_idle_is_handled_at_once(bus: Bus) -> None:
    """A message published while the consumer waits is handled well before its 1 s pull expires.

    (nats-py's fetch(batch>1) would hold the first message until the batch filled or the pull expired.)
    """
    handled: asyncio.Queue[float] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def handler(msg: OpenCase, delivery: Delivery) -> None:
        handled.put_nowait(loop.time())

    sub = await bus.consume(CMD_STREAM, "idle", handler, max_in_flight=64)
    await bus.publish(open_case("warm-up"))
    await asyncio.wait_for(handled.get(), 5)
    for trigger in ("a", "b"):
        sent = loop.time()
        await bus.publish(open_case(trigger))
        done = await asyncio.wait_for(handled.get(), 5)
        assert done - sent < 0.5
    await sub.stop()


class PullLog:
    """The pull requests a consumer sends, seen by a second subscriber on the consumer's API subject."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    @classmethod
    async def watch(cls, bus: Bus, stream: str, durable: str) -> "PullLog":
        log = cls()

        async def seen(msg: Any) -> None:
            log.batches.append(json.loads(msg.data)["batch"])

        await bus.nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{bus.stream_name(stream)}.{durable}", cb=seen)
        await bus.nc.flush()
        return log


async def test_one_open_pull_brings_each_message_as_it_arrives(bus: Bus) -> None:
    """A consumer keeps one pull request open for as many messages as it has room for: messages that
    trickle in are handled one by one as they come, without a pull request each (which doubled the
    server's CPU per message), and a backlog comes in pulls no larger than the free slots."""
    handled: asyncio.Queue[str] = asyncio.Queue()
    held: list[str] = []
    full, release = asyncio.Event(), asyncio.Event()

    async def handler(msg: OpenCase, delivery: Delivery) -> None:
        if msg.trigger_id.startswith("b"):
            held.append(msg.trigger_id)
            if len(held) == 8:
                full.set()
            await release.wait()
        handled.put_nowait(msg.trigger_id)

    pulls = await PullLog.watch(bus, CMD_STREAM.name, "streaming")
    loop = asyncio.get_running_loop()
    started = loop.time()
    sub = await bus.consume(CMD_STREAM, "streaming", handler, max_in_flight=64)
    for n in range(4):
        await bus.publish(open_case(f"t{n}"))
        assert await asyncio.wait_for(handled.get(), 10) == f"t{n}"
    elapsed = loop.time() - started
    assert pulls.batches[0] == 64
    # A pull ends when it has brought 64 messages or after PULL_EXPIRES (1 s): never one per message.
    assert len(pulls.batches) <= 1 + int(elapsed / PULL_EXPIRES), (pulls.batches, elapsed)
    await sub.stop()

    for n in range(30):
        await bus.publish(open_case(f"b{n}"))
    pulls.batches.clear()
    sub = await bus.consume(CMD_STREAM, "streaming", handler, max_in_flight=8)
    await asyncio.wait_for(full.wait(), 10)
    # Eight handlers busy: the server was asked for eight, so the other 22 wait on its side.
    info = await bus.js.consumer_info(bus.stream_name(CMD_STREAM.name), "streaming")
    assert (info.num_ack_pending, info.num_pending) == (8, 22)
    release.set()
    got = sorted([await asyncio.wait_for(handled.get(), 10) for _ in range(30)])
    await sub.stop()
    assert got == sorted(f"b{n}" for n in range(30))
    assert all(batch <= 8 for batch in pulls.batches), pulls.batches


async def test_consumer_limits_follow_the_code(bus: Bus) -> None:
    """Re-subscribing with a larger max_ack_pending updates the existing durable consumer."""

    async def handler(msg: OpenCase, delivery: Delivery) -> None:
        return None

    sub = await bus.consume(CMD_STREAM, "limits", handler)
    await sub.stop()
    sub = await bus.consume(CMD_STREAM, "limits", handler, max_ack_pending=50_000)
    info = await bus.js.consumer_info(bus.stream_name("HELPDESK_CMD"), "limits")
    await sub.stop()
    assert info.config.max_ack_pending == 50_000


async def test_retry_later_redelivers_after_delay(bus: Bus) -> None:
    """RetryLater naks with a delay; the redelivery counts as delivery 2."""
    deliveries: list[int] = []
    done = asyncio.Event()

    async def handler(msg: OpenCase, delivery: Delivery) -> None:
        deliveries.append(delivery.num_delivered)
        if delivery.num_delivered == 1:
            raise RetryLater(0.2)
        done.set()

    sub = await bus.consume(CMD_STREAM, "retry", handler)
    await bus.publish(open_case())
    await asyncio.wait_for(done.wait(), 5)
    await sub.stop()
    assert deliveries == [1, 2]


async def test_unprocessable_and_garbled_are_terminated_not_redelivered(bus: Bus) -> None:
    """Poison never loops: garbled bytes and Unprocessable are terminated, the loop keeps going."""
    handled: list[str] = []
    done = asyncio.Event()

    async def handler(msg: OpenCase, delivery: Delivery) -> None:
        handled.append(msg.trigger_id)
        if msg.trigger_id == "bad":
            raise Unprocessable("no such case")
        if msg.trigger_id == "last":
            done.set()

    sub = await bus.consume(CMD_STREAM, "poison", handler, max_deliver=3)
    await bus.js.publish(bus.subject(OpenCase.SUBJECT), b"{not json")
    await bus.publish(open_case("bad"))
    await bus.publish(open_case("last"))
    await asyncio.wait_for(done.wait(), 5)
    await sub.stop()
    assert handled == ["bad", "last"]
    info = await bus.js.consumer_info(bus.stream_name("HELPDESK_CMD"), "poison")
    assert info.num_ack_pending == 0 and info.num_redelivered == 0


async def test_failing_handler_terminated_after_max_deliver(bus: Bus) -> None:
    """An exception naks with backoff until max_deliver, then the message is dropped as poison."""
    attempts: list[int] = []
    done = asyncio.Event()

    async def handler(msg: OpenCase, delivery: Delivery) -> None:
        attempts.append(delivery.num_delivered)
        if delivery.num_delivered == 2:
            done.set()
        raise RuntimeError("boom")

    sub = await bus.consume(CMD_STREAM, "fail", handler, max_deliver=2)
    await bus.publish(open_case())
    await asyncio.wait_for(done.wait(), 10)
    await sub.stop()
    assert attempts == [1, 2]


async def test_two_replicas_share_one_durable(settings: Settings) -> None:
    """Two replicas on one durable consumer never both process a command."""
    buses = [await Bus.connect(settings, name=f"r{i}") for i in range(2)]
    await buses[0].ensure_streams()
    seen: list[tuple[int, str]] = []
    done = asyncio.Event()
    total = 40

    def make_handler(replica: int):
        async def handler(msg: OpenCase, delivery: Delivery) -> None:
            seen.append((replica, msg.trigger_id))
            if len(seen) >= total:
                done.set()

        return handler

    subs = [await b.consume(CMD_STREAM, "shared", make_handler(i)) for i, b in enumerate(buses)]
    for i in range(total):
        await buses[0].publish(open_case(f"t{i}"))
    await asyncio.wait_for(done.wait(), 10)
    for s in subs:
        await s.stop()
    for b in buses:
        await b.close()
    triggers = [t for _, t in seen]
    assert len(triggers) == len(set(triggers)) == total


async def test_request_reply_and_no_responders(bus: Bus) -> None:
    """Request/reply returns a typed answer; nobody listening is BusUnavailable at once."""
    with pytest.raises(BusUnavailable):
        await bus.request(LookupSlackUser(user_id="U1"), SlackUserInfo, timeout=0.5)

    async def lookup(req: LookupSlackUser) -> SlackUserInfo:
        return SlackUserInfo(user_id=req.user_id, email="a@example.com")

    await bus.serve(LookupSlackUser, lookup, queue="responder")
    reply = await bus.request(LookupSlackUser(user_id="U7"), SlackUserInfo, timeout=2)
    assert (reply.user_id, reply.email) == ("U7", "a@example.com")


async def test_prefix_isolates_installs(settings: Settings, bus: Bus) -> None:
    """Two prefixes on one server see separate streams."""
    other = await Bus.connect(settings.model_copy(update={"nats_prefix": settings.nats_prefix + "x"}), name="o")
    await other.ensure_streams()
    await bus.publish(open_case())
    info = await other.js.stream_info(other.stream_name("HELPDESK_CMD"))
    assert info.state.messages == 0
    await other.close()


async def test_connect_to_nothing_is_clear(settings: Settings) -> None:
    with pytest.raises(BusUnavailable, match="cannot connect"):
        await Bus.connect(
            settings.model_copy(update={"nats_url": "nats://127.0.0.1:1"}),
            name="x",
            connect_timeout=0.5,
            initial_attempts=1,
        )


async def test_limiter_counts_across_replicas(settings: Settings, bus: Bus) -> None:
    """A limit holds across two processes' limiters sharing one bucket."""
    other = await Bus.connect(settings, name="other")
    a = await RateLimiter.create(bus, "limits")
    b = await RateLimiter.create(other, "limits")
    results = await asyncio.gather(*[(a if i % 2 else b).hit("number:+15551234567", 3, 600) for i in range(6)])
    allowed = [r for r in results if r.allowed]
    assert len(allowed) == 3
    refused = [r for r in results if not r.allowed]
    assert all(0 < r.retry_after <= 600 for r in refused)
    assert await a.count("number:+15551234567") == 3
    await other.close()


async def test_limiter_window_expires_with_key_ttl(bus: Bus) -> None:
    """The window ends by the key's own TTL, also after CAS increments (the update-drops-TTL pitfall)."""
    limiter = await RateLimiter.create(bus, "limits")
    assert (await limiter.hit("k", 2, 1)).allowed
    assert (await limiter.hit("k", 2, 1)).allowed
    assert not (await limiter.hit("k", 2, 1)).allowed
    # Wait for the server-side expiry, observed through KV rather than a fixed sleep.
    for _ in range(100):
        if await limiter.count("k") == 0 and await limiter._get(kv_key("k")) is None:
            break
        await asyncio.sleep(0.1)
    assert await limiter._get(kv_key("k")) is None
    assert (await limiter.hit("k", 2, 1)).allowed


async def test_limiter_remembered_revision_yields_to_other_writers(
    settings: Settings, bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hit on a counter this limiter wrote last is one write; a write elsewhere in between is counted."""
    other = await Bus.connect(settings, name="other")
    a = await RateLimiter.create(bus, "limits")
    b = await RateLimiter.create(other, "limits")
    reads = 0
    get = a.kv.get

    async def counting_get(key: str) -> object:
        nonlocal reads
        reads += 1
        return await get(key)

    monkeypatch.setattr(a.kv, "get", counting_get)
    assert (await a.hit("user:x", 4, 600)).count == 1
    assert (await a.hit("user:x", 4, 600)).count == 2
    assert reads == 0  # created, then incremented on the remembered revision
    assert (await b.hit("user:x", 4, 600)).count == 3
    assert (await a.hit("user:x", 4, 600)).count == 4  # the stale revision is refused, then read
    assert reads == 1
    refused = await a.hit("user:x", 4, 600)
    assert not refused.allowed and refused.count == 4
    assert not (await b.hit("user:x", 4, 600)).allowed
    assert await b.count("user:x") == 4
    await other.close()


def test_kv_key_escapes() -> None:
    assert kv_key("number:+1555") == "number=3A=2B1555"
    assert kv_key("a.b-c_d/e") == "a.b-c_d/e"


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Poll the server until ``check`` holds: JetStream offers no awaitable for a stream coming back."""

    async def loop() -> None:
        while not await check():  # noqa: ASYNC110 - server state to observe, not an event we could be handed
            await asyncio.sleep(0.05)

    await asyncio.wait_for(loop(), timeout)


async def storage_of(bus: Bus, stream: str) -> StorageType:
    return StorageType((await bus.js.stream_info(stream)).config.storage)  # nats-py gives a plain str


async def test_storage_follows_what_must_outlive_a_restart(bus: Bus) -> None:
    """Cases, push waits and the audit trail are on file; commands and display snapshots in memory."""
    assert await storage_of(bus, bus.stream_name(AUDIT_STREAM.name)) is StorageType.FILE
    assert await storage_of(bus, bus.stream_name(JOB_STREAM.name)) is StorageType.FILE
    assert await storage_of(bus, bus.stream_name(CMD_STREAM.name)) is StorageType.MEMORY
    assert await storage_of(bus, bus.stream_name(CASE_STREAM.name)) is StorageType.MEMORY
    await bus.key_value("cases")
    await bus.key_value("views", storage=StorageType.MEMORY)
    assert await storage_of(bus, f"KV_{bus.bucket_name('cases')}") is StorageType.FILE
    assert await storage_of(bus, f"KV_{bus.bucket_name('views')}") is StorageType.MEMORY


async def test_buckets_answer_reads_directly_old_ones_included(bus: Bus) -> None:
    """A get is a direct read (raw message, no JSON API), for new buckets and for one created before."""
    fresh = await bus.key_value("views", storage=StorageType.MEMORY)
    assert (await bus.js.stream_info(f"KV_{bus.bucket_name('views')}")).config.allow_direct is True
    await fresh.put("case", b"on screen")
    assert (await fresh.get("case")).value == b"on screen"

    old = await bus.js.create_key_value(KeyValueConfig(bucket=bus.bucket_name("cases"), ttl=60))
    await old.put("case", b"kept")
    assert (await bus.js.stream_info(f"KV_{bus.bucket_name('cases')}")).config.allow_direct is False
    with capture_logs() as logs:
        reopened = await bus.key_value("cases", ttl=60)
    info = await bus.js.stream_info(f"KV_{bus.bucket_name('cases')}")
    assert info.config.allow_direct is True and info.config.max_age == 60
    assert (await reopened.get("case")).value == b"kept"
    assert [e["bucket"] for e in logs if e["event"] == "bus.bucket.direct_reads_on"] == [bus.bucket_name("cases")]


async def test_memory_streams_and_buckets_come_back_after_a_server_restart(
    nats_server: EmbeddedNats | None, bus: Bus
) -> None:
    """A standalone server forgets memory storage when it restarts; the bus declares it again and
    its consumer on the re-created stream carries on, with nothing done by hand."""
    assert nats_server is not None, "this test restarts the embedded nats-server"
    seen: asyncio.Queue[str | None] = asyncio.Queue()

    async def handler(msg: OpenCase, delivery: Delivery) -> None:
        seen.put_nowait(msg.trigger_id)

    views = await bus.key_value("views", storage=StorageType.MEMORY)
    await views.put("case", b"before")
    sub = await bus.consume(CMD_STREAM, "worker", handler)
    await bus.publish(open_case("before"))
    assert await asyncio.wait_for(seen.get(), 5) == "before"

    await nats_server.stop()
    await nats_server.start()

    async def restored() -> bool:
        try:
            await bus.js.stream_info(bus.stream_name(CMD_STREAM.name))
            await bus.js.stream_info(f"KV_{bus.bucket_name('views')}")
        except Exception:
            return False
        return True

    await eventually(restored)
    assert await storage_of(bus, bus.stream_name(CMD_STREAM.name)) is StorageType.MEMORY
    assert await storage_of(bus, f"KV_{bus.bucket_name('views')}") is StorageType.MEMORY
    with pytest.raises(NotFoundError):
        await views.get("case")  # the bucket is back, empty: what was in memory is gone
    await views.put("case", b"after")
    await bus.publish(open_case("after"))
    assert await asyncio.wait_for(seen.get(), 15) == "after"
    await sub.stop()


async def test_a_publish_that_finds_no_stream_declares_it_again(settings: Settings, bus: Bus) -> None:
    """Just after a server restart the memory streams may not be back yet: the first command then
    still goes through, because the bus declares its streams again and retries once. A stream this
    process never declared stays a clear BusUnavailable."""
    name = bus.stream_name(CMD_STREAM.name)
    await bus.js.delete_stream(name)
    assert await bus.publish(open_case("first-after-restart"))
    info = await bus.js.stream_info(name)
    assert info.state.messages == 1 and StorageType(info.config.storage) is StorageType.MEMORY

    stranger = await Bus.connect(settings.model_copy(update={"nats_prefix": "nostream"}), name="stranger")
    try:
        with pytest.raises(BusUnavailable, match="no stream"):
            await stranger.publish(open_case("nowhere"))
    finally:
        await stranger.close()


async def test_a_stream_from_before_keeps_its_storage_with_a_warning(bus: Bus) -> None:
    """NATS cannot change storage in place: an existing file-backed stream is kept and updated."""
    name = bus.stream_name(CASE_STREAM.name)
    await bus.js.delete_stream(name)
    await bus.js.add_stream(
        StreamConfig(name=name, subjects=[bus.subject("helpdesk.case.>")], storage=StorageType.FILE, max_age=60)
    )
    with capture_logs() as logs:
        await bus.ensure_streams()
    info = await bus.js.stream_info(name)
    assert await storage_of(bus, name) is StorageType.FILE
    assert info.config.max_age == CASE_STREAM.max_age  # the rest of the declaration applied
    kept = [e for e in logs if e["event"] == "bus.stream.storage_kept"]
    assert kept and kept[0]["stream"] == name and kept[0]["wanted"] == "memory"


async def test_a_server_without_memory_storage_gets_file_streams(settings: Settings) -> None:
    """The NATS Helm chart sets max_memory_store 0 unless memoryStore is enabled: the services still
    start, on file, and say what to change."""
    async with EmbeddedNats(config="jetstream { max_memory_store: 0 }") as server:
        on_server = settings.model_copy(update={"nats_url": server.url})
        bus = await Bus.connect(on_server, name="test")
        try:
            with capture_logs() as logs:
                await bus.ensure_streams()
                views = await bus.key_value("views", storage=StorageType.MEMORY)
            assert await storage_of(bus, bus.stream_name(CMD_STREAM.name)) is StorageType.FILE
            assert await storage_of(bus, bus.stream_name(CASE_STREAM.name)) is StorageType.FILE
            assert await storage_of(bus, f"KV_{bus.bucket_name('views')}") is StorageType.FILE
            await views.put("case", b"shown")
            assert await bus.publish(open_case("on-file"))
            refused = {e.get("stream") or e.get("bucket") for e in logs if e["event"] == "bus.memory_refused"}
            assert refused == {
                bus.stream_name(CMD_STREAM.name),
                bus.stream_name(CASE_STREAM.name),
                bus.bucket_name("views"),
            }
            assert all("memoryStore" in e["how"] for e in logs if e["event"] == "bus.memory_refused")
        finally:
            await bus.close()


async def test_connect_failure_names_the_server_without_credentials(settings: Settings) -> None:
    """A password in NATS_URL never reaches the error (nor its traceback: the cause is dropped)."""
    with pytest.raises(BusUnavailable) as failed:
        await Bus.connect(
            settings.model_copy(update={"nats_url": "nats://svc:hunter2-secret@127.0.0.1:1,nats://127.0.0.1:2"}),
            name="x",
            connect_timeout=0.5,
            initial_attempts=1,
        )
    assert "hunter2-secret" not in str(failed.value)
    assert "nats://[redacted]@127.0.0.1:1,nats://127.0.0.1:2" in str(failed.value)
    assert failed.value.__cause__ is None and failed.value.__suppress_context__
