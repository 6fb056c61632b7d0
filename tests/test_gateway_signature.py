"""Request verification: Slack's published vector, replay window, garbled headers, and a fuzz of it all."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlencode

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import SecretStr
from slack_sdk.signature import Clock

from sandbox.slack_agent import sign
from services.gateway.app import create_gateway
from services.gateway.dispatch import Gateway
from services.gateway.slack_request import (
    RequestVerifier,
    SignatureRejected,
    SlackRequest,
    parse_form,
)
from shared.bus import CMD_STREAM, Bus
from shared.settings import Settings
from tests.conftest import SIGNING_SECRET

# Slack's published example (reference/slack.md).
VECTOR_TIMESTAMP = "1531420618"
VECTOR_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
VECTOR_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


class FixedClock(Clock):
    def __init__(self, now: float) -> None:
        self.value = now

    def now(self) -> float:
        return self.value


def slack_request(route: str, body: bytes, timestamp: str | None, signature: str | None) -> SlackRequest:
    headers: dict[str, str] = {}
    if timestamp is not None:
        headers["X-Slack-Request-Timestamp"] = timestamp
    if signature is not None:
        headers["X-Slack-Signature"] = signature
    return SlackRequest(route=route, body=body, headers=headers)


def command_body(text: str = "alice", trigger_id: str = "111.222.abc") -> bytes:
    return urlencode(
        {
            "team_id": "T0HELPDSK",
            "user_id": "U0AGENT01",
            "user_name": "alex",
            "command": "/helpdesk",
            "text": text,
            "channel_id": "C0HELPDSK",
            "trigger_id": trigger_id,
        }
    ).encode()


def signed(route: str, body: bytes, at: float | None = None, secret: str = SIGNING_SECRET) -> SlackRequest:
    ts = str(int(time.time() if at is None else at))
    return slack_request(route, body, ts, sign(secret, ts, body))


async def command_count(bus: Bus) -> int:
    info = await bus.js.stream_info(bus.stream_name(CMD_STREAM.name))
    return int(info.state.messages)


@pytest.fixture
async def gateway(settings: Settings, bus: Bus) -> AsyncIterator[Gateway]:
    yield create_gateway(settings, bus)


# ------------------------------------------------------------------------------------ the verifier


def test_slacks_published_vector_is_valid() -> None:
    """Slack's documented example request verifies with its documented secret and time."""
    verifier = RequestVerifier(SIGNING_SECRET, clock=FixedClock(int(VECTOR_TIMESTAMP) + 10))
    verifier.verify(slack_request("commands", VECTOR_BODY, VECTOR_TIMESTAMP, VECTOR_SIGNATURE))
    assert sign(SIGNING_SECRET, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


@pytest.mark.parametrize(
    ("timestamp", "signature", "reason"),
    [
        (None, VECTOR_SIGNATURE, "missing_headers"),
        (VECTOR_TIMESTAMP, None, "missing_headers"),
        ("", VECTOR_SIGNATURE, "missing_headers"),
        ("15314206l8", VECTOR_SIGNATURE, "bad_timestamp"),
        ("1531420618.5", VECTOR_SIGNATURE, "bad_timestamp"),
        (" 1531420618", VECTOR_SIGNATURE, "bad_timestamp"),
        ("-1531420618", VECTOR_SIGNATURE, "bad_timestamp"),
        ("١٥٣١٤٢٠٦١٨", VECTOR_SIGNATURE, "bad_timestamp"),
        ("9" * 5000, VECTOR_SIGNATURE, "bad_timestamp"),
        (VECTOR_TIMESTAMP, VECTOR_SIGNATURE.upper(), "malformed_signature"),
        (VECTOR_TIMESTAMP, VECTOR_SIGNATURE[:-1] + "g", "malformed_signature"),
        (VECTOR_TIMESTAMP, VECTOR_SIGNATURE[3:], "malformed_signature"),
        (VECTOR_TIMESTAMP, "v1=" + VECTOR_SIGNATURE[3:], "malformed_signature"),
        (VECTOR_TIMESTAMP, VECTOR_SIGNATURE[:-1] + "é", "malformed_signature"),
        (VECTOR_TIMESTAMP, VECTOR_SIGNATURE[:-1] + "0", "bad_signature"),
        ("1531420619", VECTOR_SIGNATURE, "bad_signature"),
    ],
)
def test_garbled_headers_are_rejected_with_a_reason(timestamp: str | None, signature: str | None, reason: str) -> None:
    """Missing, non-numeric, non-hex or wrong headers are refused, each with its own reason."""
    verifier = RequestVerifier(SIGNING_SECRET, clock=FixedClock(int(VECTOR_TIMESTAMP)))
    with pytest.raises(SignatureRejected) as refused:
        verifier.verify(slack_request("commands", VECTOR_BODY, timestamp, signature))
    assert refused.value.reason == reason


@pytest.mark.parametrize(("offset", "reason"), [(301, "stale_timestamp"), (-301, "future_timestamp")])
def test_timestamps_outside_five_minutes_are_rejected(offset: int, reason: str) -> None:
    """A correctly signed request older or newer than 300 s is a replay and is refused."""
    verifier = RequestVerifier(SIGNING_SECRET, clock=FixedClock(int(VECTOR_TIMESTAMP) + offset))
    with pytest.raises(SignatureRejected) as refused:
        verifier.verify(slack_request("commands", VECTOR_BODY, VECTOR_TIMESTAMP, VECTOR_SIGNATURE))
    assert refused.value.reason == reason


def test_timestamps_at_the_edge_of_the_window_pass() -> None:
    """Exactly 300 s either side is still inside the window."""
    for offset in (300, -300):
        verifier = RequestVerifier(SIGNING_SECRET, clock=FixedClock(int(VECTOR_TIMESTAMP) + offset))
        verifier.verify(slack_request("commands", VECTOR_BODY, VECTOR_TIMESTAMP, VECTOR_SIGNATURE))


def test_a_body_that_is_not_utf8_is_rejected_not_raised() -> None:
    """slack_sdk decodes the body as UTF-8; a binary body is a refusal, not an exception."""
    body = b"\xff\xfe\x00payload"
    ts = str(int(time.time()))
    signature = "v0=" + "0" * 64
    with pytest.raises(SignatureRejected) as refused:
        RequestVerifier(SIGNING_SECRET).verify(slack_request("commands", body, ts, signature))
    assert refused.value.reason == "undecodable_body"


def test_a_body_signed_with_another_secret_is_rejected() -> None:
    """The right shape with the wrong secret is a bad signature."""
    with pytest.raises(SignatureRejected) as refused:
        RequestVerifier(SIGNING_SECRET).verify(signed("commands", command_body(), secret="another-secret-entirely"))
    assert refused.value.reason == "bad_signature"


def test_parse_form_keeps_blank_values() -> None:
    """An empty ``text=`` stays a field, as Slack sends it."""
    assert parse_form(b"text=&command=%2Fhelpdesk")["text"] == ""


# ------------------------------------------------------------------------------------ through the gateway


async def test_published_vector_through_the_gateway_is_accepted(settings: Settings, bus: Bus) -> None:
    """The vector passes the gateway's check (its command is not ours, so the agent gets the help text)."""
    gateway = create_gateway(settings, bus, clock=FixedClock(int(VECTOR_TIMESTAMP)))
    reply = await gateway.handle(slack_request("commands", VECTOR_BODY, VECTOR_TIMESTAMP, VECTOR_SIGNATURE))
    assert reply.status == 200
    assert reply.body is not None and reply.body["response_type"] == "ephemeral"
    assert await command_count(bus) == 0


@pytest.mark.parametrize("route", ["commands", "interactions", "options", "events"])
async def test_unsigned_requests_get_a_short_401_and_publish_nothing(gateway: Gateway, bus: Bus, route: str) -> None:
    """Every route refuses a request without a valid signature with a small JSON 401."""
    body = command_body()
    for request in (
        slack_request(route, body, None, None),
        signed(route, body, at=time.time() - 301),
        # The header holds whole seconds: +301 truncated could land back at 300 s, inside the window.
        signed(route, body, at=time.time() + 302),
        slack_request(route, body, "yesterday", "v0=" + "a" * 64),
        slack_request(route, body, str(int(time.time())), "v0=nothex"),
    ):
        reply = await gateway.handle(request)
        assert reply.status == 401
        assert reply.body == {"ok": False, "error": "invalid_signature"}
    assert await command_count(bus) == 0


async def test_a_valid_signature_publishes(gateway: Gateway, bus: Bus) -> None:
    """The control case: the same body correctly signed is published."""
    reply = await gateway.handle(signed("commands", command_body()))
    assert reply.status == 200 and reply.body is None
    assert await command_count(bus) == 1


async def test_ssl_check_is_answered_without_a_signature(gateway: Gateway, bus: Bus) -> None:
    """Slack's ``ssl_check=1`` probe gets a 200 and publishes nothing."""
    reply = await gateway.handle(slack_request("commands", b"ssl_check=1&token=abc", None, None))
    assert reply.status == 200 and reply.body is None
    assert await command_count(bus) == 0


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("interactions", b"nopayload=1"),
        ("interactions", b"payload=%5B1%2C2%5D"),
        ("options", b"payload=not-json"),
        ("events", b"[]"),
        ("events", b"{"),
        ("commands", b"command=%2Fhelpdesk&user_id=U1"),
        ("interactions", urlencode({"payload": orjson.dumps({"type": "block_actions"}).decode()}).encode()),
    ],
)
async def test_signed_but_malformed_bodies_are_400(gateway: Gateway, bus: Bus, route: str, body: bytes) -> None:
    """A correctly signed body Slack would never send is a 400 with a reason, and nothing is published."""
    reply = await gateway.handle(signed(route, body))
    assert reply.status == 400
    assert reply.body is not None and reply.body["ok"] is False
    assert await command_count(bus) == 0


# ------------------------------------------------------------------------------------ fuzz

_routes = st.sampled_from(["commands", "interactions", "options", "events"])
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
_slackish = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["block_actions", "view_submission", "view_closed", "shortcut", "block_suggestion", "event_callback", "x"]
        ),
        "user": st.one_of(st.none(), st.fixed_dictionaries({"id": st.text(max_size=12)})),
        "actions": _json_values,
        "view": _json_values,
        "trigger_id": _json_values,
        "callback_id": st.sampled_from(["request_access", "helpdesk_code", "helpdesk_case", ""]),
        "event": _json_values,
        "event_id": _json_values,
        "value": _json_values,
        "action_id": st.sampled_from(["select_user", "x", ""]),
    }
)


@st.composite
def _bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["raw", "form", "payload", "json"]))
    if kind == "raw":
        return draw(st.binary(max_size=300))
    if kind == "form":
        fields = draw(st.dictionaries(st.sampled_from(["command", "text", "user_id", "trigger_id", "ssl"]), st.text()))
        if draw(st.booleans()):
            fields["command"] = "/helpdesk"
        return urlencode(fields).encode()
    doc = draw(st.one_of(_slackish, _json_values))
    if kind == "json":
        return orjson.dumps(doc)
    return urlencode({"payload": orjson.dumps(doc).decode()}).encode()


_header_text = st.one_of(st.text(max_size=80), st.just(""), st.just("v0=" + "a" * 64))


@hypothesis_settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    route=_routes,
    body=_bodies(),
    timestamp=st.one_of(st.none(), _header_text, st.integers(-(10**12), 10**13).map(str)),
    signature=st.one_of(st.none(), _header_text),
    sign_it=st.booleans(),
)
async def test_fuzz_never_5xx_and_never_publishes_unsigned(
    gateway: Gateway,
    bus: Bus,
    route: str,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    sign_it: bool,
) -> None:
    """Whatever the body and headers: no 5xx, no exception, and nothing on the bus without a valid signature."""
    before = await command_count(bus)
    request = signed(route, body) if sign_it else slack_request(route, body, timestamp, signature)
    reply = await gateway.handle(request)
    assert reply.status < 500
    assert reply.body is None or reply.body.get("error") != "unprocessable"  # no unexpected exception inside
    if not sign_it:
        assert reply.status in (200, 401)  # 200 only for Slack's ssl_check probe
        assert await command_count(bus) == before


@given(st.dictionaries(st.text(min_size=1), st.text(), max_size=20))
def test_parse_form_agrees_with_the_standard_library(fields: dict[str, str]) -> None:
    """The fast form parser reads any urlencoded form exactly as ``urllib.parse.parse_qs`` does."""
    body = urlencode(fields).encode()
    expected = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
    assert parse_form(body) == expected


async def test_signing_secret_rotation_accepts_either_secret(settings: Settings, bus: Bus) -> None:
    """With SLACK_SIGNING_SECRET_PREVIOUS set, the gateway accepts requests signed with the new or the
    previous secret (Slack switches at its own moment), and still refuses any other."""
    rotating = settings.model_copy(
        update={
            "slack_signing_secret": SecretStr("new-signing-secret-000000000000"),
            "slack_signing_secret_previous": settings.slack_signing_secret,
        }
    )
    verifier = create_gateway(rotating, bus).verifier
    verifier.verify(signed("commands", command_body(), secret=SIGNING_SECRET))
    verifier.verify(signed("commands", command_body(), secret="new-signing-secret-000000000000"))
    with pytest.raises(SignatureRejected) as refused:
        verifier.verify(signed("commands", command_body(), secret="another-secret-entirely"))
    assert refused.value.reason == "bad_signature"
    after = create_gateway(rotating.model_copy(update={"slack_signing_secret_previous": None}), bus).verifier
    with pytest.raises(SignatureRejected):
        after.verify(signed("commands", command_body(), secret=SIGNING_SECRET))
