"""The bus: one NATS connection, the streams and buckets of Helpdesk Verify, and a consumer loop.

A handler takes a typed message and returns (the bus acks), raises :class:`RetryLater` (nak with a
delay: how a push wait stays durable), or :class:`Unprocessable` (logged, then terminated). Any other
exception naks with a growing delay until ``max_deliver``, after which the message is terminated
and logged as poison. Garbled bytes are terminated at once, with the reason logged.

    bus = await Bus.connect(settings, name="okta-worker")
    await bus.ensure_streams()
    sub = await bus.consume(CMD_STREAM, "okta-worker", handle_command)
    await bus.publish(CaseSnapshot(...), msg_id=f"{case_id}:{revision}")
    reply = await bus.request(SearchUsers(...), SearchUsersReply, timeout=2.0)
    await sub.stop(); await bus.close()

Every subject, stream and bucket name is namespaced by ``NATS_PREFIX`` (empty by default), so
several installs — or every test of a suite — can share one NATS server.

Storage follows what must outlive a NATS restart. On file: the cases (KV), the push waits (jobs),
the audit trail and the shared counters. In memory: the commands (a work queue emptied within
milliseconds; a /helpdesk trigger is dead after 3 s anyway) and what is derived for display (case
snapshots, the responder's record of each modal). There a file-backed stream's writes, block
rotation and consumer-state renames (about 30 a second at 200 commands/s) cost the most: in five
interleaved runs of bench/responder_e2e.py at 200/s, p99 to views.open was 33–57 ms on file and
21–35 ms so. A standalone server forgets memory storage when it restarts: the bus declares again
what it declared, after every reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BucketNotFoundError, KeyNotFoundError, NoStreamResponseError, NotFoundError
from nats.js.kv import KeyValue

from shared.logging import get_logger, new_unit_of_work, redact_url
from shared.messages import CASE_ID_HEADER, BadMessage, Encoded, Message, decode
from shared.settings import Settings

log = get_logger(__name__)

M = TypeVar("M", bound=Message)
R = TypeVar("R")


class BusError(RuntimeError):
    """Base of the bus's errors."""


class BusUnavailable(BusError):
    """NATS could not be reached, or no one answered a request in time."""


class RetryLater(Exception):
    """Raised by a handler: nak the message, redeliver after ``delay`` seconds."""

    def __init__(self, delay: float, reason: str = "") -> None:
        super().__init__(reason or f"retry in {delay:.1f}s")
        self.delay = delay


class Unprocessable(Exception):
    """Raised by a handler: the message can never succeed; log the reason and terminate it."""


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: list[str]
    retention: RetentionPolicy = RetentionPolicy.LIMITS
    storage: StorageType = StorageType.FILE
    max_age: float = 24 * 3600
    max_bytes: int = -1  # -1: no limit but max_age


MEMORY_STREAM_MAX_BYTES = 64 * 1024 * 1024  # reserved on the server: ~20,000 snapshots, hours of a busy desk

CMD_STREAM = StreamSpec(
    "HELPDESK_CMD",
    ["helpdesk.cmd.>"],
    RetentionPolicy.WORK_QUEUE,
    StorageType.MEMORY,
    max_age=3600,
    max_bytes=MEMORY_STREAM_MAX_BYTES,
)
JOB_STREAM = StreamSpec("HELPDESK_JOBS", ["helpdesk.job.>"], RetentionPolicy.WORK_QUEUE, max_age=3600)
# Snapshots are for display, rebuilt from the cases KV: an hour, as long as a case token lives.
CASE_STREAM = StreamSpec(
    "HELPDESK_CASE", ["helpdesk.case.>"], storage=StorageType.MEMORY, max_age=3600, max_bytes=MEMORY_STREAM_MAX_BYTES
)
AUDIT_STREAM = StreamSpec("AUDIT", ["audit.>"], max_age=400 * 24 * 3600)
# Messages to approvers, target users and security: on file, a restart must not drop one.
NOTIFY_STREAM = StreamSpec("HELPDESK_NOTIFY", ["helpdesk.notify.>"], max_age=24 * 3600)
STREAMS = (CMD_STREAM, JOB_STREAM, CASE_STREAM, AUDIT_STREAM, NOTIFY_STREAM)

_NAME_OK = re.compile(r"[^A-Za-z0-9_-]")
MEMORY_REFUSED = 10028  # "insufficient memory resources": the server allows no (more) memory storage
MEMORY_HOW = "allow memory storage on the nats-server (NATS Helm chart: config.jetstream.memoryStore.enabled)"
RESTORE_ATTEMPTS = 20  # after a reconnect, JetStream may answer "unavailable" for a moment
PULL_EXPIRES = 1.0  # seconds a pull request stays open on the server (then a 408 ends it)
PULL_SILENCE = 1.5  # seconds without a word on an open pull: it was lost (a reconnect), ask again
INBOX_ROOT = "_INBOX"  # a service's inboxes: _INBOX.<service>.…
JS_API = "$JS.API"  # the JetStream API prefix (nats-py's default, which the bus uses)
KV_STREAM = "KV_{bucket}"  # the stream behind a KV bucket, as every NATS client names it


@dataclass
class Delivery:
    """Delivery facts a handler may want (how often this message was delivered, its subject)."""

    subject: str
    num_delivered: int
    headers: dict[str, str] = field(default_factory=dict)
    _msg: Msg | None = None

    async def in_progress(self) -> None:
        """Tell JetStream the handler is still working (resets ack_wait)."""
        if self._msg is not None:
            await self._msg.in_progress()


Handler = Callable[[Any, Delivery], Awaitable[None]]
Responder = Callable[[Any], Awaitable[Message]]


class Bus:
    """The NATS connection of one service process."""

    def __init__(self, nc: NatsClient, prefix: str = "", name: str = "helpdesk") -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.prefix = prefix.strip(".")
        self.name = name
        self._subscriptions: list[Subscription] = []
        self._services: list[Any] = []
        # What this process declared, to declare again when a restarted server has forgotten it.
        self._streams: dict[str, StreamSpec] = {}
        self._buckets: dict[str, KeyValueConfig] = {}
        self._restoring: asyncio.Task[None] | None = None

    # -- connection -------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls, settings: Settings, name: str, connect_timeout: float = 2.0, initial_attempts: int = 3
    ) -> Bus:
        """Connect as ``name`` with the NATS credentials and TLS of ``settings``.

        ``BusUnavailable`` names the server URLs without their userinfo, never a credential.
        """
        options = connect_options(settings, name)
        shown = redact_url(",".join(options["servers"]))
        clog = log.bind(service=name)
        bus: list[Bus] = []  # the Bus made below, for the callbacks
        first_error: list[str] = []  # why the first connect failed (nats-py tells error_cb only)

        async def disconnected() -> None:
            clog.warning("nats.disconnected")

        async def reconnected() -> None:
            clog.info("nats.reconnected")
            if bus:
                bus[0].restore_in_background()

        async def error(exc: Exception) -> None:
            text = redact_url(str(exc) or type(exc).__name__)
            if not bus and not first_error:  # the cause; a reset of the refused connection follows
                first_error.append(text)
            clog.warning("nats.error", error=text)

        async def closed() -> None:
            clog.info("nats.closed")

        try:
            nc = await nats.connect(
                **options,
                connect_timeout=connect_timeout,
                max_reconnect_attempts=initial_attempts,
                reconnect_time_wait=0.5,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
                error_cb=error,
                closed_cb=closed,
                drain_timeout=5,
            )
        except Exception as exc:  # nats raises several types for an unreachable server
            why = type(exc).__name__ + (f" ({first_error[0]})" if first_error else "")
            raise BusUnavailable(f"cannot connect to NATS at {shown}: {why}") from None
        # Starting fails fast and clearly; once up, a service waits for NATS to come back, forever.
        # (nats-py reads this option on every reconnect; -1 at connect time would retry the first connect forever.)
        nc.options["max_reconnect_attempts"] = -1
        bus.append(cls(nc, prefix=settings.nats_prefix, name=name))
        return bus[0]

    @property
    def is_connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def close(self) -> None:
        """Stop consumers first (unsubscribe pull subscriptions before drain), then drain."""
        if self._restoring is not None:
            self._restoring.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._restoring
        for sub in list(self._subscriptions):
            await sub.stop()
        for svc in list(self._services):
            with contextlib.suppress(Exception):
                await svc.unsubscribe()
        self._services.clear()
        if self.nc.is_closed:
            return
        try:
            await asyncio.wait_for(self.nc.drain(), 6.0)
        except (TimeoutError, ConnectionClosedError, Exception):
            with contextlib.suppress(Exception):
                await self.nc.close()

    # -- names ------------------------------------------------------------------------------

    def subject(self, subject: str) -> str:
        return f"{self.prefix}.{subject}" if self.prefix else subject

    def unprefixed(self, subject: str) -> str:
        if self.prefix and subject.startswith(self.prefix + "."):
            return subject[len(self.prefix) + 1 :]
        return subject

    def stream_name(self, name: str) -> str:
        return _NAME_OK.sub("_", f"{self.prefix}_{name}") if self.prefix else name

    def bucket_name(self, name: str) -> str:
        return _NAME_OK.sub("_", f"{self.prefix}_{name}") if self.prefix else name

    # -- topology ---------------------------------------------------------------------------

    async def ensure_streams(self, specs: tuple[StreamSpec, ...] = STREAMS) -> None:
        """Create (or update) the streams; safe to call from every replica at every start."""
        for spec in specs:
            self._streams[spec.name] = spec
            await self._ensure_stream(spec)

    def _stream_config(self, spec: StreamSpec, storage: StorageType | None = None) -> StreamConfig:
        return StreamConfig(
            name=self.stream_name(spec.name),
            subjects=[self.subject(s) for s in spec.subjects],
            retention=spec.retention,
            storage=storage or spec.storage,
            max_age=spec.max_age,
            max_bytes=spec.max_bytes,
            duplicate_window=120.0,
        )

    async def _ensure_stream(self, spec: StreamSpec) -> None:
        config = self._stream_config(spec)
        try:
            info = await self.js.stream_info(self.stream_name(spec.name))
        except NotFoundError:
            await self._add_stream(config)
            return
        existing = StorageType(info.config.storage) if info.config.storage else None  # nats-py: a plain str
        if existing is not None and existing != spec.storage:
            # NATS cannot change a stream's storage in place. An install from before keeps its
            # stream, updated otherwise; deleting the stream while nothing is in flight moves it.
            log.warning(
                "bus.stream.storage_kept",
                stream=config.name,
                storage=existing.value,
                wanted=spec.storage.value,
                how=f"nats stream rm {config.name} while idle; the services declare it again at start",
            )
            config = self._stream_config(spec, storage=existing)
        await self.js.update_stream(config)

    async def _add_stream(self, config: StreamConfig) -> None:
        """Create a stream; a replica racing us with the same config is no error."""
        await self._memory_or_file(self.js.add_stream, config, stream=config.name)

    async def _memory_or_file(self, create: Callable[[Any], Awaitable[R]], config: Any, **where: Any) -> R:
        """``create(config)``, on file when the server refuses memory storage, which the NATS Helm
        chart does unless memoryStore is enabled."""
        try:
            return await create(config)
        except APIError as exc:
            if config.storage != StorageType.MEMORY or exc.err_code != MEMORY_REFUSED:
                raise
            log.warning("bus.memory_refused", storage="file", how=MEMORY_HOW, **where)
            return await create(replace(config, storage=StorageType.FILE))

    async def streams_present(self, specs: tuple[StreamSpec, ...] | None = None) -> bool:
        """Whether ``specs`` exist (default: the streams this process declared, else all of them)."""
        try:
            for spec in specs or tuple(self._streams.values()) or STREAMS:
                await self.js.stream_info(self.stream_name(spec.name))
        except Exception:
            return False
        return True

    async def key_value(
        self, name: str, ttl: float | None = None, history: int = 1, storage: StorageType = StorageType.FILE
    ) -> KeyValue:
        """The KV bucket ``name`` (namespaced), created on first use; an existing one is used as it is,
        with direct reads turned on if it was created without them."""
        bucket = self.bucket_name(name)
        # Direct reads, as the Go client and `nats kv add` create buckets: a `get` is answered with the
        # raw message ($JS.API.DIRECT.GET) instead of JSON with the value in base64, ~70 µs less each.
        self._buckets[bucket] = KeyValueConfig(bucket=bucket, history=history, ttl=ttl, storage=storage, direct=True)
        try:
            info = await self.js.stream_info(KV_STREAM.format(bucket=bucket))
        except NotFoundError:
            return await self._create_bucket(self._buckets[bucket])
        if not info.config.allow_direct:
            try:
                await self.js.update_stream(replace(info.config, allow_direct=True))
                log.info("bus.bucket.direct_reads_on", bucket=bucket)
            except APIError as exc:  # reads still work, through the JSON API
                log.warning("bus.bucket.direct_reads_refused", bucket=bucket, error=exc.description)
        return await self.js.key_value(bucket)

    async def _create_bucket(self, config: KeyValueConfig) -> KeyValue:
        return await self._memory_or_file(self.js.create_key_value, config, bucket=config.bucket)

    # -- after a server restart ----------------------------------------------------------------

    def restore_in_background(self) -> None:
        """Declare again, soon, what a restarted server may have lost (called on every reconnect)."""
        if self._restoring is None or self._restoring.done():
            self._restoring = asyncio.create_task(self._restore_with_retries(), name=f"restore:{self.name}")

    async def restore_now(self) -> None:
        """Declare again what the server lost, now, joining a restore already on its way."""
        self.restore_in_background()
        assert self._restoring is not None
        await asyncio.shield(self._restoring)

    async def _restore_with_retries(self) -> None:
        for attempt in range(1, RESTORE_ATTEMPTS + 1):
            try:
                await self.restore_topology()
                return
            except Exception as exc:
                log.info("nats.topology.restore_failed", attempt=attempt, error=type(exc).__name__)
                await asyncio.sleep(min(0.1 * attempt, 1.0))  # a retry pace, not a synchronisation wait
        log.error("nats.topology.not_restored", attempts=RESTORE_ATTEMPTS)

    async def restore_topology(self) -> list[str]:
        """Re-create the streams and buckets this process declared that the server no longer has.

        Memory storage does not survive a restart of a standalone nats-server. Returns the names
        re-created; consumers on a re-created stream find their durable again on their next pull
        (``Subscription`` re-creates it after failed fetches).
        """
        restored: list[str] = []
        for spec in list(self._streams.values()):
            name = self.stream_name(spec.name)
            try:
                await self.js.stream_info(name)
            except NotFoundError:
                await self._add_stream(self._stream_config(spec))
                restored.append(name)
        for bucket, config in list(self._buckets.items()):
            try:
                await self.js.key_value(bucket)
            except (BucketNotFoundError, NotFoundError):
                await self._create_bucket(config)
                restored.append(bucket)
        if restored:
            log.warning("nats.topology.restored", service=self.name, restored=restored)
        return restored

    # -- publishing ---------------------------------------------------------------------------

    def _headers(self, message: Message | Encoded, msg_id: str | None) -> dict[str, str] | None:
        # The subject names the type (shared/messages.py decode); headers carry only what it cannot.
        headers: dict[str, str] = {}
        if msg_id:
            headers["Nats-Msg-Id"] = msg_id
        if (cid := message.correlation_id()) is not None:
            headers[CASE_ID_HEADER] = cid
        return headers or None

    async def publish(self, message: Message | Encoded, msg_id: str | None = None, timeout: float = 2.0) -> bool:
        """Publish to JetStream; ``msg_id`` deduplicates within 2 minutes. Returns False for a duplicate."""
        subject, data, headers = self.subject(message.subject()), message.encode(), self._headers(message, msg_id)
        for attempt in (1, 2):
            try:
                ack = await self.js.publish(subject, data, timeout=timeout, headers=headers)
            except NoStreamResponseError:
                # No stream took it: a restarted server that has not got its memory streams back
                # yet (the reconnect's restore may still be on its way). Restore now, try once more.
                if attempt == 2:
                    raise BusUnavailable(f"publish to {message.subject()} failed: no stream") from None
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.restore_now(), timeout)
                continue
            except (NatsTimeoutError, NoRespondersError, ConnectionClosedError, TimeoutError) as exc:
                raise BusUnavailable(f"publish to {message.subject()} failed: {type(exc).__name__}") from None
            return not ack.duplicate
        raise AssertionError("unreachable")

    async def request(self, message: Message, reply_type: type[M], timeout: float = 2.0) -> M:
        """Core request/reply with a deadline; ``BusUnavailable`` on timeout or no responders."""
        try:
            msg = await self.nc.request(
                self.subject(message.subject()),
                message.encode(),
                timeout=timeout,
                headers=self._headers(message, None),
            )
        except NoRespondersError:
            raise BusUnavailable(f"no responders on {message.subject()}") from None
        except (NatsTimeoutError, TimeoutError, ConnectionClosedError) as exc:
            raise BusUnavailable(f"request on {message.subject()} failed: {type(exc).__name__}") from None
        try:
            return reply_type.decode_bytes(msg.data)
        except BadMessage as exc:
            raise BusError(str(exc)) from None

    async def serve(self, message_type: type[M], responder: Callable[[M], Awaitable[Message]], queue: str) -> Any:
        """Answer requests on ``message_type.SUBJECT`` (queue group: one replica answers each)."""
        slog = log.bind(subject=message_type.SUBJECT)

        async def on_request(msg: Msg) -> None:
            new_unit_of_work(case_id=(msg.headers or {}).get(CASE_ID_HEADER))
            try:
                request = message_type.decode_bytes(msg.data)
            except BadMessage as exc:
                slog.warning("bus.request.rejected", reason=str(exc))
                return
            try:
                reply = await responder(request)
            except Exception:
                slog.exception("bus.request.failed")
                return
            with contextlib.suppress(Exception):
                await msg.respond(reply.encode())

        sub = await self.nc.subscribe(self.subject(message_type.SUBJECT), queue=queue, cb=on_request)
        self._services.append(sub)
        return sub  # unsubscribe() it to stop answering before the bus closes

    # -- consuming ---------------------------------------------------------------------------

    async def consume(
        self,
        stream: StreamSpec,
        durable: str,
        handler: Handler,
        filter_subject: str | None = None,
        max_deliver: int = 5,
        ack_wait: float = 30.0,
        max_in_flight: int = 64,
        deliver_new: bool = False,
        max_ack_pending: int = 1000,
    ) -> Subscription:
        """Start a durable pull consumer shared by every replica that uses the same ``durable``.

        ``max_in_flight`` handlers run at once in this process; ``max_ack_pending`` bounds un-acked
        messages across all replicas (a nak'ed job waiting for its delay counts, so a consumer of
        durable waits needs room for every pending wait).
        """
        sub = Subscription(
            bus=self,
            stream=self.stream_name(stream.name),
            durable=_NAME_OK.sub("_", durable),
            subject=self.subject(filter_subject or stream.subjects[0]),
            handler=handler,
            max_deliver=max_deliver,
            ack_wait=ack_wait,
            max_in_flight=max_in_flight,
            deliver_new=deliver_new,
            max_ack_pending=max_ack_pending,
        )
        await sub.start()
        self._subscriptions.append(sub)
        return sub


def connect_options(settings: Settings, name: str) -> dict[str, Any]:
    """nats-py ``connect`` keywords for ``settings``: the servers, credentials, TLS and inbox prefix.

    Each service's replies and pulled messages arrive under ``_INBOX.<name>.``, so that its NATS user
    may subscribe to its own inboxes only (deploy/nats/nats-server.conf).
    """
    settings.require("NATS_URL")
    servers = settings.nats_servers()
    options: dict[str, Any] = {
        "servers": servers,
        "name": name,
        "inbox_prefix": f"{INBOX_ROOT}.{_NAME_OK.sub('_', name)}",
    }
    if settings.nats_creds is not None:
        options["user_credentials"] = str(settings.nats_creds)
    if settings.nats_nkey_seed is not None:
        options["nkeys_seed_str"] = _read("NATS_NKEY_SEED", settings.nats_nkey_seed).strip()
    if settings.nats_user or settings.nats_password is not None:
        settings.require("NATS_USER", "NATS_PASSWORD")
        options["user"] = settings.nats_user
        options["password"] = settings.secret("NATS_PASSWORD")
    if settings.nats_token is not None:
        options["token"] = settings.secret("NATS_TOKEN")
    if settings.nats_tls_cert is not None or settings.nats_tls_key is not None:
        settings.require("NATS_TLS_CERT", "NATS_TLS_KEY")
    wants_tls = any(url.startswith("tls://") for url in servers)
    if wants_tls or settings.nats_tls_ca is not None or settings.nats_tls_cert is not None:
        try:
            context = ssl.create_default_context(cafile=str(settings.nats_tls_ca) if settings.nats_tls_ca else None)
            if settings.nats_tls_cert is not None and settings.nats_tls_key is not None:
                context.load_cert_chain(str(settings.nats_tls_cert), str(settings.nats_tls_key))
        except (OSError, ssl.SSLError) as exc:
            raise BusError(f"NATS_TLS_CA/CERT/KEY: cannot load the TLS files ({exc.strerror or exc})") from None
        options["tls"] = context
    return options


def _read(setting: str, path: Path) -> str:
    try:
        return path.expanduser().read_text()
    except OSError as exc:
        raise BusError(f"{setting}: cannot read {path} ({exc.strerror})") from None


async def kv_read(kv: KeyValue, key: str) -> tuple[bytes, int] | None:
    """The value and revision of ``key``, or None when it is absent.

    A delete or TTL marker counts as absent: nats-py returns it as an entry whose value is None
    instead of raising (reference/tooling.md).
    """
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    if entry.value is None:
        return None
    return entry.value, int(entry.revision or 0)


class Subscription:
    """A consumer loop: fetch, dispatch to the handler with bounded concurrency, settle each message."""

    def __init__(
        self,
        bus: Bus,
        stream: str,
        durable: str,
        subject: str,
        handler: Handler,
        max_deliver: int,
        ack_wait: float,
        max_in_flight: int,
        deliver_new: bool,
        max_ack_pending: int = 1000,
    ) -> None:
        self.bus = bus
        self.stream = stream
        self.durable = durable
        self.subject = subject
        self.handler = handler
        self.max_deliver = max_deliver
        self.config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            max_ack_pending=max(max_ack_pending, max_in_flight),
            filter_subject=subject,
            deliver_policy=DeliverPolicy.NEW if deliver_new else DeliverPolicy.ALL,
        )
        self._max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._inbox: Any = None  # the core subscription the pulled messages arrive on
        self._open_for = 0  # messages the open pull may still bring (0: no pull open)
        self._pull_ended = asyncio.Event()
        self._trouble: tuple[str, bool] | None = None  # why the last pull ended badly; is the durable gone
        self._next_subject = f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._stopping = False
        self.log = log.bind(consumer=durable, stream=stream)

    async def start(self) -> None:
        try:
            await self._subscribe()
        except NotFoundError:
            # The stream is declared by the service that publishes into it (deploy/nats/README.md),
            # which may start after us: pull anyway, the loop declares the durable once it is there.
            self.log.warning("bus.stream.waiting", how="start the service that publishes into it")
        self._loop_task = asyncio.create_task(self._run(), name=f"consume:{self.durable}")

    async def _subscribe(self) -> None:
        if self._inbox is None:
            self._inbox = await self.bus.nc.subscribe(self.bus.nc.new_inbox(), cb=self._arrived)
        # Create or update the durable, so a changed limit (max_ack_pending…) takes effect.
        await self.bus.js.add_consumer(self.stream, self.config)

    async def _pull(self, batch: int) -> None:
        """Ask the consumer for up to ``batch`` messages, each sent to the inbox as soon as it is there."""
        request = f'{{"batch":{batch},"expires":{int(PULL_EXPIRES * 1e9)}}}'.encode()
        await self.bus.nc.publish(self._next_subject, request, reply=self._inbox.subject)

    async def _run(self) -> None:
        """One pull request open at a time, for as many messages as there are free slots; each
        message is handled the moment it arrives, and the next pull goes out when this one ends.

        nats-py's fetch(batch=n) keeps what it has until n messages came or the pull expired: asking
        for many while they trickled in held a command until the next one (~20 ms, every other
        command at 50/s after an idle spell). Asking for one at a time instead cost a pull request
        per message.
        """
        failures = 0
        while not self._stopping:
            if self._trouble is not None:
                (error, gone), self._trouble = self._trouble, None
                failures = await self._failed(failures, error, gone=gone)
                continue
            free = self._max_in_flight - len(self._tasks)
            if free <= 0:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            self._pull_ended.clear()
            self._open_for = free
            try:
                await self._pull(free)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._open_for = 0
                failures = await self._failed(failures, type(exc).__name__)
                continue
            try:
                # The server ends every pull within PULL_EXPIRES; no word at all means it was lost.
                await asyncio.wait_for(self._pull_ended.wait(), PULL_SILENCE)
            except TimeoutError:
                self._open_for = 0
                if self.bus.is_connected:  # while reconnecting, the next pull waits in nats-py's buffer
                    failures = await self._failed(failures, "pull lost")
                continue
            if self._trouble is None:
                failures = 0

    async def _arrived(self, msg: Msg) -> None:
        """The inbox's callback: start a handler for a message; note the end of the pull."""
        headers = msg.headers or {}
        status = headers.get("Status") if not msg.reply else None  # a status has no ack subject
        if status is None:
            if self._stopping:  # the pull outlived the loop: hand the message straight back
                await _quietly(msg.nak())
                return
            task = asyncio.create_task(self._settle(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            self._open_for -= 1
            if self._open_for > 0:
                return
        elif status == "100":
            return  # a heartbeat (none is asked for)
        elif status == "503":
            # No one answers for the consumer: the durable is gone (a memory stream after a server
            # restart). Declare it again at once.
            self._trouble = ("consumer missing", True)
        elif status not in ("404", "408"):  # 408: the pull expired; 409: consumer deleted, leader change…
            self._trouble = (f"{status} {headers.get('Description', '')}".strip(), False)
        self._open_for = 0
        self._pull_ended.set()

    async def _failed(self, failures: int, error: str, *, gone: bool = False) -> int:
        """Log, pause and, after a few failures in a row (at once if the durable is gone), declare
        the durable again."""
        failures += 1
        self.log.warning("bus.fetch.failed", error=error, failures=failures)
        await asyncio.sleep(min(0.2 * failures, 2.0))  # a retry pace, not a synchronisation wait
        if (failures >= 3 or gone) and self.bus.is_connected:
            if gone and self.config.deliver_policy == DeliverPolicy.NEW:
                # The durable went with its memory stream (a server restart): the stream that comes
                # back holds only what was published since, none of it seen. Start at its beginning,
                # or what a replica published before this durable was declared again would be skipped.
                self.config = replace(self.config, deliver_policy=DeliverPolicy.ALL)
            with contextlib.suppress(Exception):
                await self._subscribe()
        return failures

    async def _settle(self, msg: Msg) -> None:
        headers = dict(msg.headers or {})
        new_unit_of_work(case_id=headers.get(CASE_ID_HEADER))
        subject = self.bus.unprefixed(msg.subject)
        delivered = msg.metadata.num_delivered if msg.metadata else 1
        try:
            message = decode(subject, msg.data)
        except BadMessage as exc:
            self.log.warning("bus.message.rejected", subject=subject, reason=str(exc))
            await _quietly(msg.term())
            return
        delivery = Delivery(subject=subject, num_delivered=delivered, headers=headers, _msg=msg)
        try:
            await self.handler(message, delivery)
        except RetryLater as retry:
            await _quietly(msg.nak(delay=retry.delay))
            return
        except Unprocessable as exc:
            self.log.warning("bus.message.unprocessable", subject=subject, reason=str(exc))
            await _quietly(msg.term())
            return
        except asyncio.CancelledError:
            await _quietly(msg.nak())
            raise
        except Exception as exc:
            if delivered >= self.max_deliver:
                self.log.error("bus.message.poison", subject=subject, deliveries=delivered, error=type(exc).__name__)
                await _quietly(msg.term())
            else:
                self.log.warning(
                    "bus.handler.failed",
                    subject=subject,
                    deliveries=delivered,
                    error=type(exc).__name__,
                    exc_info=True,
                )
                await _quietly(msg.nak(delay=min(0.5 * 2**delivered, 15.0)))
            return
        await _quietly(msg.ack())

    async def stop(self, grace: float = 5.0) -> None:
        """Stop fetching, let in-flight handlers finish (up to ``grace`` s), then unsubscribe."""
        if self._stopping:
            return
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop_task
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
        # Acks are fire-and-forget publishes: flush so the server has them before we go.
        with contextlib.suppress(Exception):
            await self.bus.nc.flush(timeout=2)
        if self._inbox is not None:
            with contextlib.suppress(Exception):
                await self._inbox.unsubscribe()
        if self in self.bus._subscriptions:
            self.bus._subscriptions.remove(self)


async def _quietly(awaitable: Awaitable[Any]) -> None:
    # Settling can fail when the connection drops; JetStream redelivers after ack_wait anyway.
    with contextlib.suppress(Exception):
        await awaitable
