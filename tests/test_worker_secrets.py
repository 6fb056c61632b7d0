"""No secret of a case — an SMS code, a security answer, a temporary password, the Okta token — ever
reaches a log line, the KV buckets, a stream, an audit event or a snapshot."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from nats.js.errors import NotFoundError

from sandbox.okta import DEFAULT_API_TOKEN
from sandbox.okta_data import ALICE, ALICE_QUESTION, ALICE_SMS, ALICE_TOTP, DEMO_ANSWER, DEMO_PASSCODE
from services.okta_worker.store import AGENTS_BUCKET, CASES_BUCKET
from shared.bus import AUDIT_STREAM, CASE_STREAM, CMD_STREAM, JOB_STREAM, NOTIFY_STREAM, Bus
from shared.messages import ActionKind, CaseState, RefreshCase, RunAction, StepUp
from shared.settings import Settings
from tests.test_worker_flows import harness


class _Capture(logging.Handler):
    """Every record as rendered by the product's formatter, plus the raw event it was made from."""

    def __init__(self, formatter: logging.Formatter | None) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        self.lines.append(repr(record.msg))


@pytest.fixture
def captured_logs() -> Iterator[_Capture]:
    root = logging.getLogger()
    ours = next((h for h in root.handlers if getattr(h, "_helpdesk", False)), None)
    capture = _Capture(ours.formatter if ours else None)
    root.addHandler(capture)
    yield capture
    root.removeHandler(capture)


async def stored_bytes(bus: Bus) -> list[bytes]:
    """Everything kept in NATS for this install: every message of every stream, every KV entry."""
    blobs: list[bytes] = []
    for spec in (CMD_STREAM, JOB_STREAM, CASE_STREAM, AUDIT_STREAM, NOTIFY_STREAM):
        name = bus.stream_name(spec.name)
        info = await bus.js.stream_info(name)
        for seq in range(max(1, info.state.first_seq), info.state.last_seq + 1):
            try:
                msg = await bus.js.get_msg(name, seq)
            except NotFoundError:
                continue
            blobs.append(msg.data or b"")
    for bucket in (CASES_BUCKET, AGENTS_BUCKET):
        kv = await bus.key_value(bucket)
        for key in await kv.keys():
            entry = await kv.get(key)
            blobs.append(entry.value or b"")
    return blobs


async def test_no_secret_in_logs_kv_streams_or_audit(settings: Settings, bus: Bus, captured_logs: _Capture) -> None:
    """An SMS code, a security answer and a temporary password pass through a case and are found nowhere after."""
    async with harness(settings, bus) as h:
        snap = await h.select(await h.open(), ALICE)
        sent = await h.challenge(snap, ALICE_SMS)
        await h.submit(sent, "987654")  # a wrong code is a secret too
        wrong = await h.notice(snap.case_id, sent.revision)
        code = h.okta.last_code(ALICE, ALICE_SMS)
        assert code is not None
        await h.submit(wrong, code)
        by_sms = await h.snapshot(snap.case_id, CaseState.VERIFIED, wrong.revision)
        await h.send(h.cmd(by_sms, StepUp))  # a password needs a strong factor: step up with TOTP
        factors = await h.snapshot(snap.case_id, CaseState.FACTORS, by_sms.revision)
        totp = await h.challenge(factors, ALICE_TOTP)
        await h.submit(totp, DEMO_PASSCODE)
        verified = await h.snapshot(snap.case_id, CaseState.VERIFIED, totp.revision)

        second = await h.select(await h.open(), ALICE)
        question = await h.challenge(second, ALICE_QUESTION)
        await h.submit(question, DEMO_ANSWER)
        await h.snapshot(second.case_id, CaseState.VERIFIED, question.revision)

        await h.send(h.cmd(verified, RunAction, action=ActionKind.TEMP_PASSWORD))
        shown = await h.wait(lambda: h.shown[-1] if h.shown else None)
        password = shown.temp_password.get_secret_value()
        await h.audit("case.action", verified.case_id)
        await h.send(h.cmd(verified, RefreshCase))
        await h.wait(lambda: h.last(verified.case_id).revision > shown.revision)

        secrets = {
            "sms code": code,
            "wrong code": "987654",
            "answer": DEMO_ANSWER,
            "temp password": password,
            "okta token": DEFAULT_API_TOKEN,
        }
        blobs = await stored_bytes(bus)
        assert blobs, "nothing stored: the scan would prove nothing"
        published = [s.model_dump_json() for s in h.snapshots] + [a.model_dump_json() for a in h.audits]
        assert captured_logs.lines, "no log line captured: the scan would prove nothing"
        for what, secret in secrets.items():
            assert not any(secret.encode() in blob for blob in blobs), f"{what} stored in NATS"
            assert not any(secret in text for text in published), f"{what} in a snapshot or audit event"
            assert not any(secret in line for line in captured_logs.lines), f"{what} in a log line"
