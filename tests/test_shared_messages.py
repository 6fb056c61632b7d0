import orjson
import pytest

from shared.messages import (
    COMMANDS,
    Actor,
    AuditEvent,
    BadMessage,
    CaseSnapshot,
    CaseState,
    OpenCase,
    ShowTempPassword,
    SubmitCode,
    decode,
    message_type,
)


def test_round_trip_every_command() -> None:
    """Each command decodes from its own subject into the same typed message."""
    for cls in COMMANDS:
        fields = {"agent": Actor(user_id="U1"), "case_token": "tok"}
        extra = {
            "OpenCase": {"trigger_id": "1.2.3"},
            "SelectUser": {"okta_user_id": "00u1"},
            "ChallengeFactor": {"factor_id": "f1"},
            "SubmitCode": {"code": "123456"},
            "RunAction": {"action": "unlock"},
            "RequestApproval": {"action": "reset_all_factors"},
            "DecideApproval": {"approval_token": "tok", "approve": True},
            "ReportNotMe": {"notice_token": "tok"},
            "RefusedClick": {"kind": "expired"},
            "StartFromMessage": {"text": "verify jdoe", "channel_id": "D1", "in_dm": True},
            "WorkflowStep": {"function_execution_id": "Fx1", "caller": "jdoe@example.com"},
            "SetTicket": {"ticket": "INC0012345"},
            "TicketNoteFailed": {"case_id": "c1", "ticket": "INC0012345", "reason": "not_found"},
        }.get(cls.__name__, {})
        msg = cls(**fields, **extra)
        back = decode(cls.SUBJECT, msg.encode())
        assert type(back) is cls
        assert back == msg


def test_secret_fields_hidden_in_repr_revealed_on_wire() -> None:
    """A code or temporary password never shows in repr, but crosses the wire intact."""
    code = SubmitCode(agent=Actor(user_id="U1"), code="246810")
    assert "246810" not in repr(code) and "246810" not in str(code)
    assert orjson.loads(code.encode())["code"] == "246810"
    tp = ShowTempPassword(
        case_id="c",
        revision=1,
        agent=Actor(user_id="U1"),
        view=None,
        target_login="a",
        temp_password="Zx9!",
        case_token="t",
    )
    assert "Zx9!" not in repr(tp)
    assert decode(ShowTempPassword.SUBJECT, tp.encode()).temp_password.get_secret_value() == "Zx9!"


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"not json", "not JSON"),
        (b"[1,2]", "JSON object"),
        (b'{"schema_version": 99, "agent": {"user_id": "U"}, "code": "1"}', "schema_version"),
        (b'{"agent": {"user_id": "U"}}', "code"),
    ],
)
def test_garbled_messages_are_rejected_with_reason(data: bytes, reason: str) -> None:
    """Garbled bytes become BadMessage naming what is wrong, never another exception."""
    with pytest.raises(BadMessage, match=reason):
        decode(SubmitCode.SUBJECT, data)


def test_unknown_subject_rejected() -> None:
    with pytest.raises(BadMessage, match="no message type"):
        message_type("helpdesk.cmd.unknown")


def test_audit_subject_carries_category_and_action() -> None:
    event = AuditEvent(category="case", action="push.rejected", outcome="alert", case_id="c1")
    assert event.subject() == "audit.case.push.rejected"
    assert isinstance(decode(event.subject(), event.encode()), AuditEvent)


def test_snapshot_correlation_id_is_case_id() -> None:
    snap = CaseSnapshot(case_id="c9", revision=1, state=CaseState.OPENED, agent=Actor(user_id="U"), case_token="t")
    assert snap.correlation_id() == "c9"


def test_wire_form_is_the_json_dump_of_the_model() -> None:
    """``encode`` is compact UTF-8 JSON of ``model_dump(mode="json")``: times in ISO 8601 with ``Z``,
    floats and non-ASCII text as they are, secrets revealed; an audit event's details survive intact."""
    event = AuditEvent(
        category="telephony",
        action="sent",
        outcome="success",
        target="José Müller 📞",
        details={"duration_ms": 12, "ratio": 0.1 + 0.2, "tiny": 1e-7, "ok": True, "none": None},
    )
    code = SubmitCode(agent=Actor(user_id="U1", user_name="ünïcode"), code="246810")
    for message in (event, code):
        wire = message.encode()
        assert wire == orjson.dumps(message.model_dump(mode="json"))
        assert decode(message.subject(), wire) == message
    assert orjson.loads(event.encode())["at"].endswith("Z")
    assert "José Müller 📞".encode() in event.encode()


@pytest.mark.parametrize(
    "fields",
    [
        {
            "user_id": "U1",
            "team_id": "T1",
            "user_name": "alex",
            "trigger_id": "1.2.3",
            "query": "alice",
            "channel_id": "C1",
        },
        {"user_id": "U2", "team_id": None, "user_name": None, "trigger_id": "9.9.9", "query": "", "source": "shortcut"},
        {"user_id": "U3", "team_id": "T3", "user_name": "zoë", "trigger_id": "t", "query": 'José "quoted" 📞'},
    ],
)
def test_open_case_wire_form_decodes_to_the_model(fields: dict[str, str | None]) -> None:
    """The gateway's fast path publishes what the model would, field for field; a field added to
    OpenCase (or Command) and not to OpenCase.wire fails here."""
    wire = OpenCase.wire(**fields)  # type: ignore[arg-type]
    on_wire = orjson.loads(wire.encode())
    assert set(on_wire) == set(OpenCase.model_fields)
    decoded = decode(wire.subject(), wire.encode())
    agent = Actor(user_id=fields["user_id"], team_id=fields["team_id"], user_name=fields["user_name"])
    rest = {k: v for k, v in fields.items() if k not in ("user_id", "team_id", "user_name")}
    built = OpenCase(agent=agent, sent_at=decoded.sent_at, **rest)  # type: ignore[arg-type]
    assert decoded == built
    assert on_wire == orjson.loads(built.encode())
    assert decoded.sent_at.tzinfo is not None and on_wire["sent_at"].endswith("Z")
    assert wire.correlation_id() is None and wire.subject() == OpenCase.SUBJECT
