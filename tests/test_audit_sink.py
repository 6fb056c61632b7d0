"""The audit sink on a real NATS: ticket notes in ServiceNow and Jira, the signed webhook, retries."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from helpdesk.runner import ServiceGroup, service_names
from sandbox.jira import FakeJira
from sandbox.servicenow import FakeServiceNow
from sandbox.webhook import FakeWebhookReceiver, verify_signature
from services.audit_sink import jira as jira_client
from services.audit_sink import servicenow as servicenow_client
from services.audit_sink.app import AuditSinkService, NothingToSink, create_service
from services.audit_sink.errors import retry_after
from services.audit_sink.handlers import NOTE_FAILED
from services.audit_sink.notes import CaseSummary, note_text, summarize, ticket_of
from shared.bus import Bus
from shared.messages import AuditEvent, TicketNoteFailed
from shared.settings import MissingSetting, Settings

SN_PASSWORD = "sn-Pa55word-never-logged"
SN_TOKEN = "sn-bearer-token-never-logged-0123456789"
JIRA_TOKEN = "ATATT3xFfGF0-jira-api-token-never-logged"
HOOK_SECRET = "whsec-audit-hook-secret-never-logged"
AGENT = "agent@example.com"
WAIT = 8.0  # seconds a test waits on a fake: retries with their backoff happen inside it


def event(name: str, outcome: str = "success", ticket: str | None = "INC0010001", case_id: str = "c1", **extra: Any):
    details: dict[str, Any] = {"agent_email": AGENT, "assurance": "strong (Okta Verify push)", "revision": 4}
    if ticket is not None:
        details["ticket"] = ticket
    details.update(extra)
    return AuditEvent(
        category="case",
        action=name,
        outcome=outcome,  # type: ignore[arg-type]
        actor="U0AGENT01",
        target="alice@example.com",
        case_id=case_id,
        details=details,
    )


async def written(kv: Any, key: str, timeout: float = 5.0) -> bytes:
    """The KV record ``key`` once it is there (it is put right after the note is written)."""
    watcher = await kv.watch(key)
    try:
        while True:
            entry = await watcher.updates(timeout=timeout)
            if entry is not None and entry.value:
                return bytes(entry.value)
    finally:
        await watcher.stop()


@pytest.fixture
async def servicenow() -> AsyncIterator[FakeServiceNow]:
    fake = FakeServiceNow(user="helpdesk.integration", password=SN_PASSWORD, token=SN_TOKEN)
    for number in ("INC0010001", "REQ0010002", "RITM0010003"):
        fake.add_record(number)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def jira() -> AsyncIterator[FakeJira]:
    fake = FakeJira(email="helpdesk-bot@example.com", api_token=JIRA_TOKEN, issues=["HELP-1", "HELP-2"])
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[FakeWebhookReceiver]:
    fake = FakeWebhookReceiver(secret=HOOK_SECRET)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def sink_settings(
    settings: Settings, servicenow: FakeServiceNow, jira: FakeJira, receiver: FakeWebhookReceiver
) -> Settings:
    return configure(
        settings,
        **{
            "servicenow_url": servicenow.url,
            "servicenow_user": "helpdesk.integration",
            "servicenow_password": SN_PASSWORD,
            "jira_url": jira.url,
            "jira_email": "helpdesk-bot@example.com",
            "jira_api_token": JIRA_TOKEN,
            "audit_webhook_url": f"{receiver.url}/audit?tenant=helpdesk",
            "audit_webhook_secret": HOOK_SECRET,
        },
    )


def configure(settings: Settings, **values: Any) -> Settings:
    """``settings`` with ``values``, validated as if read from the environment (secrets become SecretStr)."""
    return Settings(_env_file=None, **{**settings.model_dump(), **values})  # type: ignore[call-arg]


@contextlib.asynccontextmanager
async def running(settings: Settings, bus: Bus, **overrides: Any) -> AsyncIterator[AuditSinkService]:
    configured = configure(settings, **overrides)
    service = create_service(configured, bus)
    service.backoff_base = 0.1
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def collect_audit(bus: Bus, action: str) -> tuple[list[AuditEvent], asyncio.Event, Any]:
    found: list[AuditEvent] = []
    arrived = asyncio.Event()

    async def on(msg: Any) -> None:
        found.append(AuditEvent.decode_bytes(msg.data))
        arrived.set()

    sub = await bus.nc.subscribe(bus.subject(f"audit.*.{action}"), cb=on)
    return found, arrived, sub


# ----------------------------------------------------------------------------------------- ServiceNow


@pytest.mark.parametrize(
    ("number", "table"), [("INC0010001", "incident"), ("REQ0010002", "sc_request"), ("RITM0010003", "sc_req_item")]
)
async def test_servicenow_work_note_lands_in_the_table_its_number_names(
    sink_settings: Settings, bus: Bus, servicenow: FakeServiceNow, number: str, table: str
) -> None:
    """A verified case with an INC/REQ/RITM ticket gets a work note on that record, found by number."""
    async with running(sink_settings, bus):
        await bus.publish(event("case.verified", ticket=number, factor_type="push"))
        notes = await servicenow.until(lambda: servicenow.work_notes(number), timeout=WAIT)
    assert "verified by agent@example.com" in notes[0] and "Okta Verify push" in notes[0]
    assert "alice@example.com" in notes[0] and "strong" in notes[0]
    find = servicenow.calls_to("GET", f"/api/now/table/{table}")[0]
    assert find.query["sysparm_query"] == f"number={number}"
    patch = next(c for c in servicenow.calls if c.method == "PATCH")
    assert patch.path.startswith(f"/api/now/table/{table}/") and set(patch.json) == {"work_notes"}
    assert patch.headers["Authorization"].startswith("Basic ")


async def test_servicenow_bearer_token_is_used_when_set(
    sink_settings: Settings, bus: Bus, servicenow: FakeServiceNow
) -> None:
    """With SERVICENOW_TOKEN the Table API is called with a bearer token instead of Basic auth."""
    async with running(sink_settings, bus, servicenow_token=SN_TOKEN, servicenow_password=None):
        await bus.publish(event("case.verified"))
        await servicenow.until(lambda: servicenow.work_notes("INC0010001"), timeout=WAIT)
    assert all(c.headers["Authorization"] == f"Bearer {SN_TOKEN}" for c in servicenow.calls)


async def test_a_case_writes_verified_action_and_closing_notes(
    sink_settings: Settings, bus: Bus, servicenow: FakeServiceNow
) -> None:
    """Verified, each action (done, failed, uncertain) and the close each write a note; the closing one
    sums up how the caller was verified and what was done. Events without a note (opened) write none."""
    async with running(sink_settings, bus):
        for e in (
            event("case.opened", "info"),
            event("case.verified", factor_type="token:software:totp"),
            event("case.action", action="reset_link"),
            event("case.action", "failure", action="unlock", error="not_locked"),
            event("case.action", "uncertain", action="revoke_sessions"),
            event("case.closed", "info", outcome_before="verified"),
        ):
            await bus.publish(e)
        notes = await servicenow.until(
            lambda: (n := servicenow.work_notes("INC0010001")) and len(n) >= 5 and n, timeout=WAIT
        )
    assert len(notes) == 5
    assert "password reset link emailed (done)" in notes[1]
    assert "account unlocked (FAILED)" in notes[2] and "not locked" in notes[2]
    assert "outcome uncertain" in notes[3] and "Admin Console" in notes[3]
    closing = notes[4]
    assert "closed by agent@example.com" in closing and "TOTP" in closing
    assert "password reset link emailed (done), account unlocked (FAILED)" in closing


async def test_rate_limit_and_503_are_retried_then_written_once(
    sink_settings: Settings, bus: Bus, servicenow: FakeServiceNow
) -> None:
    """A 429 (Retry-After honoured) and a 503 are retried from the stream; the note is written once, and
    the same event delivered again (same event_id) writes no second note: the KV record says it is done."""
    servicenow.rate_limit_next(retry_after=1)
    servicenow.fail_next(status=503)
    verified = event("case.verified")
    async with running(sink_settings, bus) as service:
        started = asyncio.get_running_loop().time()
        await bus.publish(verified)
        await servicenow.until(lambda: servicenow.work_notes("INC0010001"), timeout=WAIT)
        assert asyncio.get_running_loop().time() - started >= 1.0  # Retry-After: 1
        assert len(servicenow.calls_to("GET", "/api/now/table/incident")) == 3
        assert service.tickets is not None
        record = await written(service.tickets.kv, f"note.{verified.event_id}")
        assert b'"written"' in record
        later = event("case.closed", "info")
        await bus.publish(verified, msg_id="again")  # a redelivery of the same event
        await bus.publish(later)
        await servicenow.until(lambda: len(servicenow.work_notes("INC0010001")) >= 2, timeout=WAIT)
    assert len(servicenow.work_notes("INC0010001")) == 2


async def record_status(kv: Any, key: str, status: str, timeout: float = 8.0) -> dict[str, Any]:
    """The KV record ``key`` once its status is ``status`` (``writing`` comes first)."""
    import orjson

    watcher = await kv.watch(key)
    try:
        while True:
            entry = await watcher.updates(timeout=timeout)
            if entry is not None and entry.value and (record := orjson.loads(entry.value))["status"] == status:
                return dict(record)
    finally:
        await watcher.stop()


@pytest.mark.parametrize("system", ["servicenow", "jira"])
async def test_a_note_whose_answer_was_lost_is_found_not_written_twice(
    system: str,
    sink_settings: Settings,
    bus: Bus,
    servicenow: FakeServiceNow,
    jira: FakeJira,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ticket system applied the note but answered after the sink gave up (a timeout): the next
    delivery finds the note in the ticket and writes no second one."""
    monkeypatch.setattr(servicenow_client, "TIMEOUT", httpx.Timeout(0.5))
    monkeypatch.setattr(jira_client, "TIMEOUT", httpx.Timeout(0.5))
    ticket = "INC0010001" if system == "servicenow" else "HELP-1"
    notes = (lambda: servicenow.work_notes(ticket)) if system == "servicenow" else (lambda: jira.comment_texts(ticket))
    (servicenow if system == "servicenow" else jira).answer_late_next(3.0)
    verified = event("case.verified", ticket=ticket)
    async with running(sink_settings, bus) as service:
        assert service.tickets is not None
        await bus.publish(verified)
        record = await record_status(service.tickets.kv, f"note.{verified.event_id}", "written")
        assert record["ref"] == "found"
        assert len(notes()) == 1 and "verified by agent@example.com" in notes()[0]
        closed = event("case.closed", "info", ticket=ticket)
        await bus.publish(closed)  # the next note goes out as usual
        await record_status(service.tickets.kv, f"note.{closed.event_id}", "written")
    assert len(notes()) == 2


async def test_missing_ticket_is_recorded_as_note_failed(
    sink_settings: Settings, bus: Bus, servicenow: FakeServiceNow
) -> None:
    """A ticket number with no record is permanent: no retry, a ``ticket.note_failed`` audit event."""
    found, arrived, sub = await collect_audit(bus, NOTE_FAILED)
    told: list[TicketNoteFailed] = []
    agent_told = asyncio.Event()

    async def on_command(msg: Any) -> None:
        told.append(TicketNoteFailed.decode_bytes(msg.data))
        agent_told.set()

    commands = await bus.nc.subscribe(bus.subject(TicketNoteFailed.SUBJECT), cb=on_command)
    try:
        async with running(sink_settings, bus):
            await bus.publish(event("case.verified", ticket="INC0099999"))
            await asyncio.wait_for(arrived.wait(), 8)
            await asyncio.wait_for(agent_told.wait(), 8)  # the agent's modal is told too
    finally:
        await sub.unsubscribe()
        await commands.unsubscribe()
    assert told[0].case_id == "c1" and told[0].ticket == "INC0099999" and told[0].reason == "not_found"
    failed = found[0]
    assert failed.action == NOTE_FAILED and failed.category == "case" and failed.outcome == "failure"
    assert failed.case_id == "c1" and failed.details["ticket"] == "INC0099999"
    assert failed.details["reason"] == "not_found" and failed.details["system"] == "servicenow"
    assert len(servicenow.calls_to("GET", "/api/now/table/incident")) == 1


async def test_acl_and_bad_credentials_are_permanent(
    sink_settings: Settings, bus: Bus, servicenow: FakeServiceNow, jira: FakeJira
) -> None:
    """An ACL 403 on the table and a Jira 401 end in ``ticket.note_failed`` (forbidden, unauthorized)."""
    servicenow.deny_writes("sc_request")
    found, arrived, sub = await collect_audit(bus, NOTE_FAILED)
    try:
        async with running(sink_settings, bus, jira_api_token="wrong-token"):
            await bus.publish(event("case.verified", ticket="REQ0010002", case_id="c-sn"))
            await bus.publish(event("case.verified", ticket="HELP-1", case_id="c-jira"))

            async def both() -> None:
                while len(found) < 2:
                    arrived.clear()
                    await arrived.wait()

            await asyncio.wait_for(both(), 8)
    finally:
        await sub.unsubscribe()
    reasons = {e.case_id: (e.details["reason"], e.details["status"]) for e in found}
    assert reasons == {"c-sn": ("forbidden", 403), "c-jira": ("unauthorized", 401)}
    assert servicenow.work_notes("REQ0010002") == [] and jira.comment_texts("HELP-1") == []


# ------------------------------------------------------------------------------------------------ Jira


async def test_jira_comment_is_v3_with_an_adf_body(sink_settings: Settings, bus: Bus, jira: FakeJira) -> None:
    """A Jira key gets a REST v3 comment with an ADF document, Basic email:token auth."""
    async with running(sink_settings, bus):
        await bus.publish(event("case.verified", ticket="HELP-2", factor_type="sms"))
        texts = await jira.until(lambda: jira.comment_texts("HELP-2"), timeout=WAIT)
    assert "verified by agent@example.com with an SMS code" in texts[0]
    call = jira.calls_to("POST", "/rest/api/3/issue/HELP-2/comment")[0]
    body = call.json["body"]
    assert body["type"] == "doc" and body["version"] == 1 and body["content"][0]["type"] == "paragraph"
    assert call.headers["Authorization"].startswith("Basic ")


async def test_jira_429_is_retried_after_its_retry_after(sink_settings: Settings, bus: Bus, jira: FakeJira) -> None:
    """Jira's 429 (per-issue write limit) and a 503 are retried; one comment results."""
    jira.rate_limit_next(retry_after=1)
    jira.fail_next(status=503, retry_after=0)
    async with running(sink_settings, bus):
        await bus.publish(event("case.action", ticket="HELP-1", action="unlock"))
        await jira.until(lambda: jira.comment_texts("HELP-1"), timeout=WAIT)
    assert len(jira.calls_to("POST", "/rest/api/3/issue/HELP-1/comment")) == 3
    assert len(jira.comment_texts("HELP-1")) == 1


async def test_jira_missing_issue_is_note_failed(sink_settings: Settings, bus: Bus, jira: FakeJira) -> None:
    """A key Jira does not know (404 with Jira's error body) is permanent."""
    found, arrived, sub = await collect_audit(bus, NOTE_FAILED)
    try:
        async with running(sink_settings, bus):
            await bus.publish(event("case.closed", "info", ticket="NOPE-404"))
            await asyncio.wait_for(arrived.wait(), 8)
    finally:
        await sub.unsubscribe()
    assert found[0].details["system"] == "jira" and found[0].details["status"] == 404


# --------------------------------------------------------------------------------------------- webhook


async def test_webhook_is_signed_keyed_and_retried_on_500(
    sink_settings: Settings, bus: Bus, receiver: FakeWebhookReceiver
) -> None:
    """Every event is POSTed with a verifiable signature and its event_id as Idempotency-Key; two 500s
    are retried from the stream and the receiver gets the event (no ticket needed)."""
    receiver.fail_next(status=500, n=2)
    sent = event("case.opened", "info", ticket=None)
    async with running(sink_settings, bus):
        await bus.publish(sent)
        await receiver.until(lambda: receiver.events, timeout=WAIT)
    assert receiver.events[0]["event_id"] == sent.event_id and receiver.events[0]["action"] == "case.opened"
    calls = receiver.calls_to("POST", "/audit")
    assert len(calls) == 3
    for call in calls:
        assert call.headers["Idempotency-Key"] == sent.event_id
        assert verify_signature(HOOK_SECRET, call.headers["X-Helpdesk-Signature"], call.body)
        assert not verify_signature("another-secret", call.headers["X-Helpdesk-Signature"], call.body)
        assert call.query == {"tenant": "helpdesk"}
    assert calls[0].headers["X-Helpdesk-Event"] == "audit.case.case.opened"


async def test_webhook_4xx_is_permanent(sink_settings: Settings, bus: Bus, receiver: FakeWebhookReceiver) -> None:
    """A 400 is not retried: the event is acked and the next one delivered."""
    receiver.fail_next(status=400)
    first, second = event("case.opened", "info"), event("case.step_up", "info")
    async with running(sink_settings, bus):
        await bus.publish(first)
        await receiver.until(lambda: receiver.calls_to("POST", "/audit"), timeout=WAIT)
        await bus.publish(second)
        await receiver.until(lambda: receiver.events, timeout=WAIT)
        await asyncio.sleep(0.5)  # a retry of the first would come after ~0.1 s
    keys = [c.headers["Idempotency-Key"] for c in receiver.calls_to("POST", "/audit")]
    assert keys == [first.event_id, second.event_id]


# ------------------------------------------------------------------------------------ secrets, settings


async def test_no_secret_reaches_the_logs_or_the_notes(
    sink_settings: Settings, bus: Bus, servicenow: FakeServiceNow, jira: FakeJira, receiver: FakeWebhookReceiver
) -> None:
    """Failures of every kind are logged without a password, token, webhook secret or webhook URL query."""
    servicenow.fail_next(status=503)
    jira.rate_limit_next(retry_after=0)
    receiver.fail_next(status=500)
    with capture_logs() as logs:
        async with running(sink_settings, bus, servicenow_password="wrong-" + SN_PASSWORD):
            found, arrived, sub = await collect_audit(bus, NOTE_FAILED)
            await bus.publish(event("case.verified"))
            await bus.publish(event("case.verified", ticket="HELP-1", case_id="c2"))
            await asyncio.wait_for(arrived.wait(), 8)
            await jira.until(lambda: jira.comment_texts("HELP-1"), timeout=WAIT)
            await receiver.until(lambda: len(receiver.events) >= 2, timeout=WAIT)
            await sub.unsubscribe()
    text = repr(logs) + repr(found) + " ".join(jira.comment_texts("HELP-1"))
    assert logs, "the sink logs what it does"
    for secret in (SN_PASSWORD, JIRA_TOKEN, HOOK_SECRET, "tenant=helpdesk"):
        assert secret not in text
    assert any(e["event"] == "audit_sink.note_failed" for e in logs)


def test_settings_decide_what_runs(settings: Settings) -> None:
    """Nothing set → the sink is skipped; a part set without its credentials is a MissingSetting."""
    bus: Any = None
    with pytest.raises(NothingToSink):
        create_service(settings, bus)
    with pytest.raises(MissingSetting, match="SERVICENOW_TOKEN"):
        create_service(configure(settings, servicenow_url="https://x.service-now.com"), bus)
    with pytest.raises(MissingSetting, match="JIRA_EMAIL"):
        create_service(configure(settings, jira_url="https://x.atlassian.net"), bus)
    with pytest.raises(MissingSetting, match="AUDIT_WEBHOOK_SECRET"):
        create_service(configure(settings, audit_webhook_url="https://siem.example.com/in"), bus)
    assert "audit-sink" in service_names("run") and service_names("audit-sink") == ["audit-sink"]


async def test_helpdesk_run_skips_the_sink_when_unconfigured_and_runs_it_when_set(
    settings: Settings, sink_settings: Settings
) -> None:
    """`helpdesk run` names the sink as skipped without its settings, and starts it with them."""
    group = ServiceGroup(settings, ["audit-sink", "slack-responder"], embedded=False, optional=True)
    await group.start()
    try:
        assert list(group.skipped) == ["audit-sink"] and "AUDIT_WEBHOOK_URL" in str(group.skipped["audit-sink"])
    finally:
        await group.stop()
    group = ServiceGroup(sink_settings, ["audit-sink"], embedded=False)
    await group.start()
    try:
        assert [n for n, _ in group.services] == ["audit-sink"]
    finally:
        await group.stop()


# ----------------------------------------------------------------------------------------------- units


def test_tickets_are_recognised_and_nothing_else() -> None:
    """ServiceNow numbers and Jira keys are told apart; anything else names no ticket."""
    assert ticket_of(event("case.verified", ticket="RITM0010003")) == ticket_of(
        event("case.verified", ticket=" RITM0010003 ")
    )
    assert ticket_of(event("case.verified", ticket="INC0010001")).system == "servicenow"  # type: ignore[union-attr]
    assert ticket_of(event("case.verified", ticket="IT2-10")).system == "jira"  # type: ignore[union-attr]
    for bad in ("INC123", "help-1", "H-1", "INC0010001; DROP", ""):
        assert ticket_of(event("case.verified", ticket=bad)) is None


def test_closing_note_sums_up_and_never_quotes_free_text() -> None:
    """The summary keeps how and what; an error detail that is not a plain code is not quoted."""
    summary = summarize(CaseSummary(), event("case.verified", factor_type="push"))
    summary = summarize(summary, event("case.action", action="temp_password"))
    closing = note_text(event("case.closed", "info"), summary)
    assert "Okta Verify push" in closing and "temporary password set (done)" in closing
    leaky = note_text(event("case.action", "failure", action="unlock", error="Bearer abc.def secret"), summary)
    assert "Bearer" not in leaky


def test_retry_after_reads_seconds_dates_and_rate_limit_resets() -> None:
    """Retry-After in seconds or as an HTTP date, else X-RateLimit-Reset (Unix or ISO 8601)."""
    now = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
    assert retry_after({"Retry-After": "7"}, now) == 7
    assert retry_after({"Retry-After": "Wed, 01 Jan 2025 00:00:30 GMT"}, now) == 30
    assert retry_after({"X-RateLimit-Reset": str(int(now) + 12)}, now) == 12
    assert retry_after({"X-RateLimit-Reset": "2025-01-01T00:01Z"}, now) == 60
    assert retry_after({}, now) is None
