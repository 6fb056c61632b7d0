"""The telephony hook end to end: aiohttp app, real NATS, FakeTwilio as primary and fallback."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import SecretStr
from structlog.testing import capture_logs
from twilio.request_validator import RequestValidator

from sandbox.okta_hook import telephony_request
from sandbox.telephony import FakeTwilio
from services.telephony_hook.app import create_app, create_service
from shared.bus import Bus
from shared.messages import AuditEvent
from shared.settings import MissingSetting, Settings
from tests.test_sandbox_telephony import MESSAGES, assert_valid, spec_validator, twilio_request_schema

HOOK_AUTH = "Basic b2t0YTpzM2NyZXQtaG9vay1hdXRo"
OTP = "739164"
PHONE = "+14155552671"
STATUS_URL = "https://hook.example.com/telephony/status"

# Okta's documented wire form of the error answer (the spec's example shows a list by mistake).
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["errorSummary", "errorCauses"],
            "additionalProperties": False,
            "properties": {
                "errorSummary": {"type": "string", "minLength": 1},
                "errorCauses": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["errorSummary", "reason", "location"],
                        "additionalProperties": False,
                        "properties": {k: {"type": "string"} for k in ("errorSummary", "reason", "location")},
                    },
                },
            },
        }
    },
}


def okta_body(event_id: str | None = None, **message: Any) -> dict[str, Any]:
    """Okta's telephony request (as documented), with ``message`` overriding messageProfile fields."""
    return telephony_request(phone=PHONE, otp=OTP, event_id=event_id, template=f"(HOOK)Your code is {OTP}", **message)


def response_validator() -> Any:
    return spec_validator("okta-management.yaml", {"$ref": "#/components/schemas/TelephonyResponse"})


def assert_okta_answer(answer: dict[str, Any]) -> None:
    """A success answer validates against TelephonyResponse, an error against the documented form."""
    if "error" in answer:
        errors = [e.message for e in Draft202012Validator(ERROR_SCHEMA).iter_errors(answer)]
        assert not errors, errors
        return
    assert_valid(response_validator(), answer)
    assert set(answer) == {"commands"} and len(answer["commands"]) == 1
    command = answer["commands"][0]
    assert command["type"] == "com.okta.telephony.action"
    assert isinstance(command["value"], list) and len(command["value"]) == 1
    assert set(command["value"][0]) == {"status", "provider", "transactionId", "transactionMetadata"}


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
async def primary() -> AsyncIterator[FakeTwilio]:
    fake = FakeTwilio(invalid_numbers={"+14155550199"}, opted_out={"+14155550100"})
    await fake.start()
    yield fake
    await fake.stop()  # releases any hung request


@pytest.fixture
async def fallback() -> AsyncIterator[FakeTwilio]:
    fake = FakeTwilio()
    await fake.start()
    yield fake
    await fake.stop()


def hook_settings(base: Settings, primary: FakeTwilio, fallback: FakeTwilio | None, **extra: Any) -> Settings:
    update: dict[str, Any] = {
        "telephony_hook_auth": SecretStr(HOOK_AUTH),
        "telephony_provider_url": primary.url,
        "telephony_account_sid": primary.account_sid,
        "telephony_auth_token": SecretStr(primary.auth_token),
        "telephony_from": "+14155550000",
        "telephony_deadline_ms": 1500,
        "telephony_status_callback_url": STATUS_URL,
        "telephony_limit_per_number": 50,
        "telephony_limit_per_prefix": 500,
        "telephony_limit_per_user": 50,
    }
    if fallback is not None:
        update |= {
            "telephony_fallback_url": fallback.url,
            "telephony_fallback_account_sid": fallback.account_sid,
            "telephony_fallback_auth_token": SecretStr(fallback.auth_token),
            "telephony_fallback_from": "+14155550001",
        }
    return base.model_copy(update=update | extra)


HookFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def make_hook(
    settings: Settings, bus: Bus, primary: FakeTwilio, fallback: FakeTwilio
) -> AsyncIterator[HookFactory]:
    """Start hook apps (each its own test server); ``own_bus=True`` gives one its own NATS connection."""
    clients: list[TestClient[web.Request, web.Application]] = []
    buses: list[Bus] = []

    async def make(
        *, with_fallback: bool = True, own_bus: bool = False, **extra: Any
    ) -> TestClient[web.Request, web.Application]:
        cfg = hook_settings(settings, primary, fallback if with_fallback else None, **extra)
        hook_bus = bus
        if own_bus:
            hook_bus = await Bus.connect(cfg, name="telephony-hook-2")
            buses.append(hook_bus)
        client = TestClient(TestServer(create_app(cfg, hook_bus)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
    for extra_bus in buses:
        await extra_bus.close()


@pytest.fixture
async def hook(make_hook: HookFactory) -> TestClient[web.Request, web.Application]:
    return await make_hook()


@pytest.fixture
async def audit(bus: Bus) -> AsyncIterator[asyncio.Queue[AuditEvent]]:
    """Every audit event the hook publishes, in order."""
    queue: asyncio.Queue[AuditEvent] = asyncio.Queue()

    async def on_msg(msg: Any) -> None:
        await queue.put(AuditEvent.decode_bytes(msg.data))

    sub = await bus.nc.subscribe(bus.subject("audit.>"), cb=on_msg)
    yield queue
    await sub.unsubscribe()


async def post(
    client: TestClient[web.Request, web.Application], body: Any, auth: str | None = HOOK_AUTH
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = auth
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    resp = await client.post("/telephony/okta", data=data, headers=headers)
    return resp.status, orjson.loads(await resp.read())


def value_of(answer: dict[str, Any]) -> dict[str, Any]:
    return answer["commands"][0]["value"][0]


async def next_audit(queue: asyncio.Queue[AuditEvent], action: str) -> AuditEvent:
    """The next audit event with ``action`` (others are skipped)."""

    async def find() -> AuditEvent:
        while (event := await queue.get()).action != action:
            pass
        return event

    return await asyncio.wait_for(find(), 5)


# -- happy paths -----------------------------------------------------------------------------------


async def test_sms_happy_path(
    hook: TestClient[web.Request, web.Application], primary: FakeTwilio, audit: asyncio.Queue[AuditEvent]
) -> None:
    """An SMS request sends Okta's text once through the primary and answers SUCCESSFUL with its sid."""
    status, answer = await post(hook, okta_body(phoneNumber="4155552671"))
    assert status == 200
    assert_okta_answer(answer)
    sent = primary.messages
    assert len(sent) == 1
    assert value_of(answer)["status"] == "SUCCESSFUL"
    assert value_of(answer)["provider"] == "TWILIO"
    assert value_of(answer)["transactionId"] == sent[0]["sid"]
    assert "attempts=1" in value_of(answer)["transactionMetadata"]
    assert (sent[0]["to"], sent[0]["from"], sent[0]["body"]) == (PHONE, "+14155550000", f"(HOOK)Your code is {OTP}")
    form = primary.calls_to("POST", f"/2010-04-01/Accounts/{primary.account_sid}/Messages.json")[0].form
    assert_valid(twilio_request_schema(MESSAGES), form)
    assert form["StatusCallback"] == STATUS_URL
    event = await next_audit(audit, "sms.sent")
    assert (event.category, event.outcome, event.actor, event.target) == (
        "telephony",
        "success",
        "okta",
        "test.user@example.com",
    )
    assert event.details["sid"] == sent[0]["sid"] and event.details["number"] == "***2671"
    assert OTP not in event.encode().decode() and PHONE not in event.encode().decode()


@pytest.mark.parametrize("channel", ["voice call", "Voice call", "Voice", "CALL"])
async def test_voice_happy_path(
    hook: TestClient[web.Request, web.Application], primary: FakeTwilio, channel: str
) -> None:
    """Any voice-like channel places one call whose TwiML says the digits twice in the user's language."""
    status, answer = await post(hook, okta_body(deliveryChannel=channel, locale="FR-fr", msgTemplate=None))
    assert status == 200
    assert_okta_answer(answer)
    assert primary.messages == [] and len(primary.calls_created) == 1
    call = primary.calls_created[0]
    assert value_of(answer)["transactionId"] == call["sid"] and call["sid"].startswith("CA")
    spoken = ", ".join(OTP)
    assert call["twiml"].count(spoken) == 2
    assert 'language="fr-FR"' in call["twiml"]


async def test_numbers_as_json_numbers(hook: TestClient[web.Request, web.Application], primary: FakeTwilio) -> None:
    """phoneNumber and otpCode sent as JSON numbers (as in Okta's examples) are accepted."""
    status, answer = await post(hook, okta_body(phoneNumber=4155552671, otpCode=int(OTP)))
    assert status == 200 and value_of(answer)["status"] == "SUCCESSFUL"
    assert primary.messages[0]["to"] == PHONE


# -- authentication --------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", [None, "", "Basic wrong", HOOK_AUTH + "x", HOOK_AUTH.lower()])
async def test_header_auth_failures(
    hook: TestClient[web.Request, web.Application], primary: FakeTwilio, auth: str | None
) -> None:
    """A missing or wrong auth header is a 401 and nothing is sent."""
    status, answer = await post(hook, okta_body(), auth=auth)
    assert status == 401
    assert "error" in answer
    assert primary.calls == []


async def test_custom_auth_header(make_hook: HookFactory, primary: FakeTwilio) -> None:
    """TELEPHONY_HOOK_AUTH_HEADER names the header Okta sends; Authorization is then ignored."""
    client = await make_hook(telephony_hook_auth_header="X-Okta-Hook-Key")
    status, _ = await post(client, okta_body(), auth=HOOK_AUTH)
    assert status == 401
    resp = await client.post("/telephony/okta", data=orjson.dumps(okta_body()), headers={"X-Okta-Hook-Key": HOOK_AUTH})
    assert resp.status == 200
    assert len(primary.messages) == 1


class FakeIssuer:
    """An authorization server's JWKS endpoint and token minting, with key rotation."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.app.router.add_get("/oauth2/default/v1/keys", self._keys)
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.published: list[str] = []
        self.fetches = 0
        self.server: TestServer | None = None
        self.rotate()

    def rotate(self) -> str:
        kid = uuid.uuid4().hex[:8]
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.published.append(kid)
        return kid

    async def _keys(self, _: web.Request) -> web.Response:
        self.fetches += 1
        keys = []
        for kid in self.published:
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return web.json_response({"keys": keys})

    @property
    def issuer(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/oauth2/default"))

    def token(self, kid: str | None = None, **claims: Any) -> str:
        kid = kid or self.published[-1]
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "aud": "api://telephony-hook",
            "exp": now + 300,
            "iat": now,
            "scp": ["okta.telephony.hook"],
            "sub": "0oa1",
        } | claims
        return jwt.encode(payload, self.keys[kid], algorithm="RS256", headers={"kid": kid})


@pytest.fixture
async def issuer() -> AsyncIterator[FakeIssuer]:
    fake = FakeIssuer()
    fake.server = TestServer(fake.app)
    await fake.server.start_server()
    yield fake
    await fake.server.close()


@pytest.fixture
async def oauth_hook(make_hook: HookFactory, issuer: FakeIssuer) -> TestClient[web.Request, web.Application]:
    return await make_hook(
        telephony_hook_auth=None,
        telephony_hook_issuer=issuer.issuer,
        telephony_hook_audience="api://telephony-hook",
        telephony_hook_scope="okta.telephony.hook",
    )


async def test_oauth_bearer_accepted(
    oauth_hook: TestClient[web.Request, web.Application], issuer: FakeIssuer, primary: FakeTwilio
) -> None:
    """A valid access token from the issuer authenticates Okta."""
    status, answer = await post(oauth_hook, okta_body(), auth=f"Bearer {issuer.token()}")
    assert status == 200 and value_of(answer)["status"] == "SUCCESSFUL"
    assert len(primary.messages) == 1


@pytest.mark.parametrize(
    "bad",
    ["expired", "wrong_audience", "wrong_issuer", "missing_scope", "bad_signature", "not_a_jwt", "basic", "hs256"],
)
async def test_oauth_failures(
    oauth_hook: TestClient[web.Request, web.Application], issuer: FakeIssuer, primary: FakeTwilio, bad: str
) -> None:
    """Each invalid token is a 401 and nothing is sent."""
    tokens = {
        "expired": lambda: issuer.token(exp=int(time.time()) - 3600),
        "wrong_audience": lambda: issuer.token(aud="api://other"),
        "wrong_issuer": lambda: issuer.token(iss="https://evil.example.com/oauth2/default"),
        "missing_scope": lambda: issuer.token(scp=["okta.users.read"]),
        "bad_signature": lambda: issuer.token()[:-6] + "AAAAAA",
        "not_a_jwt": lambda: "abc.def",
        "basic": lambda: None,
        "hs256": lambda: jwt.encode({"iss": issuer.issuer}, "k" * 32, algorithm="HS256", headers={"kid": "x"}),
    }
    token = tokens[bad]()
    status, _ = await post(oauth_hook, okta_body(), auth=f"Bearer {token}" if token else HOOK_AUTH)
    assert status == 401
    assert primary.calls == []


async def test_oauth_key_rotation_refreshes_jwks(
    oauth_hook: TestClient[web.Request, web.Application], issuer: FakeIssuer
) -> None:
    """A token signed with a new key (unknown kid) makes the hook fetch the JWKS again, once."""
    status, _ = await post(oauth_hook, okta_body(), auth=f"Bearer {issuer.token()}")
    assert status == 200
    fetched = issuer.fetches
    status, _ = await post(oauth_hook, okta_body(), auth=f"Bearer {issuer.token()}")
    assert issuer.fetches == fetched  # cached
    new_kid = issuer.rotate()
    status, _ = await post(oauth_hook, okta_body(), auth=f"Bearer {issuer.token(new_kid)}")
    assert status == 200
    assert issuer.fetches == fetched + 1


# -- validation and refusals -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "location"),
    [
        (b"{not json", "body"),
        (b'"a string"', "body"),
        ({"eventId": "e1"}, "data"),
        (lambda: okta_body(phoneNumber=None), "data.messageProfile.phoneNumber"),
        (lambda: okta_body(otpCode=None), "data.messageProfile.otpCode"),
        (lambda: okta_body(deliveryChannel="pigeon"), "data.messageProfile.deliveryChannel"),
    ],
)
async def test_malformed_bodies_get_error_object(
    hook: TestClient[web.Request, web.Application], primary: FakeTwilio, body: Any, location: str
) -> None:
    """A malformed request is answered 200 with an error object naming the field; nothing is sent."""
    status, answer = await post(hook, body() if callable(body) else body)
    assert status == 200
    assert_okta_answer(answer)
    assert answer["error"]["errorCauses"][0]["location"] == location
    assert location in answer["error"]["errorSummary"]
    assert primary.calls == []


async def test_oversized_body_is_error_object(hook: TestClient[web.Request, web.Application]) -> None:
    """A huge body is not a 413 but the error object."""
    status, answer = await post(hook, b"{" + b" " * 100_000 + b"}")
    assert status == 200 and "error" in answer


async def test_country_not_allowed(
    make_hook: HookFactory, primary: FakeTwilio, audit: asyncio.Queue[AuditEvent]
) -> None:
    """A number outside TELEPHONY_ALLOWED_COUNTRIES is refused with an error object and an audit event."""
    client = await make_hook(telephony_allowed_countries=["US", "CA"])
    status, answer = await post(client, okta_body(phoneNumber="+37120123456"))
    assert status == 200
    assert_okta_answer(answer)
    cause = answer["error"]["errorCauses"][0]
    assert (cause["reason"], cause["location"]) == ("country_not_allowed", "LV")
    assert answer["error"]["errorSummary"] == "Failed to deliver SMS OTP to test.user@example.com"
    assert primary.calls == []
    event = await next_audit(audit, "sms.refused")
    assert event.outcome == "refused" and event.details["reason"] == "country_not_allowed"
    assert event.details["number"] == "***3456"


async def test_premium_rate_refused(hook: TestClient[web.Request, web.Application], primary: FakeTwilio) -> None:
    """A premium-rate number is refused without asking the provider."""
    status, answer = await post(hook, okta_body(phoneNumber="+19005551234"))
    assert status == 200 and answer["error"]["errorCauses"][0]["reason"] == "premium_rate"
    assert primary.calls == []


async def test_velocity_limit_shared_by_two_instances(
    make_hook: HookFactory, primary: FakeTwilio, audit: asyncio.Queue[AuditEvent]
) -> None:
    """Three sends per number per window, counted across two hook instances on their own connections."""
    first = await make_hook(telephony_limit_per_number=3)
    second = await make_hook(telephony_limit_per_number=3, own_bus=True)
    answers = []
    for client in (first, second, first, second):
        status, answer = await post(client, okta_body())
        assert status == 200
        answers.append(answer)
    assert [("error" in a) for a in answers] == [False, False, False, True]
    assert answers[3]["error"]["errorCauses"][0]["reason"] == "limit_number"
    assert len(primary.messages) == 3
    event = await next_audit(audit, "sms.refused")
    assert event.details["reason"] == "limit_number" and event.severity == "warning"
    status, answer = await post(first, okta_body(phoneNumber="+14155552672"))
    assert "commands" in answer  # another number is not affected


async def test_user_limit(make_hook: HookFactory, primary: FakeTwilio) -> None:
    """The per-user limit counts one user's codes whatever the number."""
    client = await make_hook(telephony_limit_per_user=2)
    body = okta_body()
    user = body["data"]["userProfile"]
    results = []
    for number in ("+14155552671", "+14155552672", "+14155552673"):
        req = okta_body(phoneNumber=number)
        req["data"]["userProfile"] = user
        results.append((await post(client, req))[1])
    assert "error" in results[2] and results[2]["error"]["errorCauses"][0]["reason"] == "limit_user"
    assert len(primary.messages) == 2


# -- provider failures -----------------------------------------------------------------------------


@pytest.mark.parametrize(("to", "code"), [("+14155550199", 21211), ("+14155550100", 21610)])
async def test_recipient_refusal_is_error_object(
    hook: TestClient[web.Request, web.Application], primary: FakeTwilio, fallback: FakeTwilio, to: str, code: int
) -> None:
    """21211 (invalid To) and 21610 (opted out) end in the error object; the fallback is not tried."""
    status, answer = await post(hook, okta_body(phoneNumber=to))
    assert status == 200
    assert_okta_answer(answer)
    assert answer["error"]["errorCauses"][0]["reason"] == f"provider_rejected_{code}"
    assert fallback.calls == []


async def test_5xx_fails_over(
    hook: TestClient[web.Request, web.Application], primary: FakeTwilio, fallback: FakeTwilio
) -> None:
    """A 5xx from the primary fails over to the fallback, which delivers."""
    primary.fail_next(status=503)
    status, answer = await post(hook, okta_body())
    assert status == 200
    assert_okta_answer(answer)
    assert value_of(answer)["provider"] == "FALLBACK"
    assert value_of(answer)["transactionId"] == fallback.messages[0]["sid"]
    assert primary.messages == [] and len(fallback.messages) == 1


async def test_both_down_is_error_object(
    hook: TestClient[web.Request, web.Application], primary: FakeTwilio, fallback: FakeTwilio
) -> None:
    """When both providers fail without sending, Okta gets the error object (it will send itself)."""
    primary.fail_next(status=500)
    fallback.fail_next(status=502)
    status, answer = await post(hook, okta_body())
    assert status == 200 and answer["error"]["errorCauses"][0]["reason"] == "provider_unavailable"


async def test_20429_is_retried(hook: TestClient[web.Request, web.Application], primary: FakeTwilio) -> None:
    """20429 (never processed) is retried on the same provider."""
    primary.fail_next(code=20429)
    _, answer = await post(hook, okta_body())
    assert value_of(answer)["status"] == "SUCCESSFUL" and value_of(answer)["provider"] == "TWILIO"
    assert "attempts=2" in value_of(answer)["transactionMetadata"]
    assert len(primary.messages) == 1


async def test_unreachable_primary_fails_over(
    make_hook: HookFactory, primary: FakeTwilio, fallback: FakeTwilio
) -> None:
    """A primary that refuses connections is retried briefly, then the fallback delivers."""
    await primary.stop()
    client = await make_hook()
    _, answer = await post(client, okta_body())
    assert value_of(answer)["provider"] == "FALLBACK"
    assert len(fallback.messages) == 1


@pytest.mark.parametrize("with_fallback", [True, False], ids=["fallback", "no-fallback"])
async def test_hang_answers_pending_inside_deadline(
    make_hook: HookFactory, primary: FakeTwilio, fallback: FakeTwilio, with_fallback: bool
) -> None:
    """A primary that takes the request and never answers: PENDING within the deadline, never re-sent."""
    client = await make_hook(with_fallback=with_fallback, telephony_deadline_ms=800)
    primary.hang_next()
    started = time.monotonic()
    status, answer = await post(client, okta_body())
    elapsed = time.monotonic() - started
    assert status == 200
    assert_okta_answer(answer)
    assert value_of(answer)["status"] == "PENDING" and value_of(answer)["provider"] == "TWILIO"
    assert elapsed < 0.8
    assert len(primary.calls) == 1 and fallback.calls == []


# -- idempotency -----------------------------------------------------------------------------------


async def test_duplicate_event_sends_once(hook: TestClient[web.Request, web.Application], primary: FakeTwilio) -> None:
    """The same eventId again gets the first answer, and nothing is sent twice."""
    body = okta_body()
    _, first = await post(hook, body)
    _, again = await post(hook, body)
    assert again == first and len(primary.messages) == 1


async def test_concurrent_duplicates_send_once(make_hook: HookFactory, primary: FakeTwilio) -> None:
    """Concurrent requests with one eventId, on two instances, make one send and give one answer."""
    first = await make_hook()
    second = await make_hook(own_bus=True)
    primary.latency = 0.1
    body = okta_body()
    results = await asyncio.gather(post(first, body), post(second, body), post(first, body))
    assert len(primary.messages) == 1
    assert all(status == 200 for status, _ in results)
    assert all(answer == results[0][1] for _, answer in results)


async def test_duplicate_of_error_answer(make_hook: HookFactory, primary: FakeTwilio) -> None:
    """A refused eventId stays refused; a repeat is not a second chance to send."""
    client = await make_hook(telephony_allowed_countries=["CA"])
    body = okta_body()
    _, first = await post(client, body)
    _, again = await post(client, body)
    assert "error" in first and again == first and primary.calls == []


# -- status callback -------------------------------------------------------------------------------


async def test_status_callback_good_signature(
    hook: TestClient[web.Request, web.Application], primary: FakeTwilio, audit: asyncio.Queue[AuditEvent]
) -> None:
    """A callback signed with the account's token is accepted and published as an audit event."""
    form = {
        "AccountSid": primary.account_sid,
        "MessageSid": "SM" + "1" * 32,
        "MessageStatus": "delivered",
        "To": PHONE,
        "ApiVersion": "2010-04-01",
    }
    signature = RequestValidator(primary.auth_token).compute_signature(STATUS_URL, form)
    resp = await hook.post("/telephony/status", data=form, headers={"X-Twilio-Signature": signature})
    assert resp.status == 204
    event = await next_audit(audit, "sms.delivery")
    assert event.outcome == "success" and event.details["sid"] == form["MessageSid"]
    assert event.details["status"] == "delivered"
    assert PHONE not in event.encode().decode()


@pytest.mark.parametrize("signature", [None, "bad", "token-of-another-account"])
async def test_status_callback_bad_signature(
    hook: TestClient[web.Request, web.Application], primary: FakeTwilio, signature: str | None
) -> None:
    """A callback without a valid signature is a 401."""
    form = {"AccountSid": primary.account_sid, "MessageSid": "SM" + "1" * 32, "MessageStatus": "failed"}
    if signature == "token-of-another-account":
        signature = RequestValidator("0" * 32).compute_signature(STATUS_URL, form)
    headers = {"X-Twilio-Signature": signature} if signature else {}
    resp = await hook.post("/telephony/status", data=form, headers=headers)
    assert resp.status == 401


# -- secrets stay out of logs ----------------------------------------------------------------------


async def test_no_secret_in_logs(
    hook: TestClient[web.Request, web.Application], primary: FakeTwilio, fallback: FakeTwilio
) -> None:
    """Across a send, a failover, a refusal and a 401, no log event holds the OTP, auth header or token."""
    primary.fail_next(status=503)
    with capture_logs() as events:
        await post(hook, okta_body())
        await post(hook, okta_body(deliveryChannel="voice"))
        await post(hook, okta_body(phoneNumber="+19005551234"))
        await post(hook, okta_body(), auth="Basic not-it")
        await post(hook, b"{broken")
    assert events, "the hook logs its decisions"
    text = repr(events)
    for secret in (OTP, ", ".join(OTP), HOOK_AUTH, primary.auth_token, fallback.auth_token, PHONE):
        assert secret not in text


# -- health, metrics, wiring -----------------------------------------------------------------------


async def test_health_ready_metrics(hook: TestClient[web.Request, web.Application]) -> None:
    """/healthz and /readyz answer; the hook's counters are in the registry (served on METRICS_PORT only)."""
    from prometheus_client import REGISTRY, generate_latest

    await post(hook, okta_body())
    assert (await hook.get("/healthz")).status == 200
    ready = await hook.get("/readyz")
    assert ready.status == 200 and (await ready.json())["checks"]["nats"] == "ok"
    metrics = generate_latest(REGISTRY).decode()
    assert "helpdesk_telephony_sends_total" in metrics
    assert "helpdesk_telephony_request_seconds_bucket" in metrics


async def test_missing_settings_fail_fast(settings: Settings, bus: Bus, primary: FakeTwilio) -> None:
    """Without provider credentials or hook auth the app is not built."""
    with pytest.raises(MissingSetting):
        create_app(settings, bus)
    with pytest.raises(MissingSetting):
        create_app(hook_settings(settings, primary, None, telephony_hook_auth=None), bus)


async def test_create_service_serves_on_a_port(settings: Settings, bus: Bus, primary: FakeTwilio) -> None:
    """create_service binds HOST:TELEPHONY_HOOK_PORT and answers Okta over real HTTP."""
    import httpx

    service = create_service(hook_settings(settings, primary, None, telephony_hook_port=0), bus)
    await service.start()
    try:
        async with httpx.AsyncClient(base_url=service.url) as client:
            resp = await client.post("/telephony/okta", json=okta_body(), headers={"Authorization": HOOK_AUTH})
    finally:
        await service.stop()
    assert resp.status_code == 200 and value_of(resp.json())["status"] == "SUCCESSFUL"


# -- fuzz ------------------------------------------------------------------------------------------

_int64 = st.integers(-(2**63), 2**63 - 1)
_json_leaf = st.none() | st.booleans() | _int64 | st.floats(allow_nan=False) | st.text(max_size=20)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def _bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["raw", "json", "mutated"]))
    if kind == "raw":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return orjson.dumps(draw(_json))
    body = okta_body()
    profile = body["data"]["messageProfile"]
    field = draw(st.sampled_from([*profile, "eventId", "data", "userProfile"]))
    if field == "eventId":
        body["eventId"] = draw(_json)
    elif field == "data":
        body["data"] = draw(_json)
    elif field == "userProfile":
        body["data"]["userProfile"] = draw(_json)
    else:
        profile[field] = draw(_json)
    return orjson.dumps(body)


_header_names = st.sampled_from(["Authorization", "X-Okta-Verification-Challenge", "Content-Type", "X-Forwarded-For"])
_header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60)


@hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=_bodies(),
    headers=st.dictionaries(_header_names, _header_values, max_size=3),
    authorized=st.booleans(),
)
async def test_fuzz_never_5xx(
    hook: TestClient[web.Request, web.Application], body: bytes, headers: dict[str, str], authorized: bool
) -> None:
    """Whatever the body and headers, the hook answers 200 with JSON or 401 — never a 5xx."""
    if authorized:
        headers = {**headers, "Authorization": HOOK_AUTH}
    resp = await hook.post("/telephony/okta", data=body, headers=headers)
    assert resp.status in (200, 401), resp.status
    answer = orjson.loads(await resp.read())
    if resp.status == 200:
        assert_okta_answer(answer)


# -- hostile input: a 4xx, never a 5xx or a traceback ------------------------------------------------


async def raw_post(
    client: TestClient[web.Request, web.Application], path: str, body: bytes, headers: list[tuple[bytes, bytes]]
) -> tuple[int, bytes]:
    """POST with header bytes as given (aiohttp's client would refuse non-UTF-8 ones)."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    head = [f"POST {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Content-Length: %d" % len(body)]
    head += [name + b": " + value for name, value in headers]
    writer.write(b"\r\n".join([*head, b"Connection: close", b"", b""]) + body)
    await writer.drain()
    response = await reader.read()
    writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("value", [b"Basic \xff\xfe", b"Bearer \xff.\xfe.\xfd", HOOK_AUTH.encode() + b"\xc3"])
async def test_non_utf8_authorization_is_401(
    hook: TestClient[web.Request, web.Application], primary: FakeTwilio, value: bytes
) -> None:
    """A non-UTF-8 byte in Authorization is a 401 with the error object, not a 500."""
    status, body = await raw_post(hook, "/telephony/okta", orjson.dumps(okta_body()), [(b"Authorization", value)])
    assert status == 401
    assert "error" in orjson.loads(body)
    assert primary.calls == []


async def test_non_utf8_bearer_token_is_401(
    oauth_hook: TestClient[web.Request, web.Application], primary: FakeTwilio
) -> None:
    """With OAuth configured, a bearer token holding non-UTF-8 bytes is a 401."""
    status, _ = await raw_post(
        oauth_hook, "/telephony/okta", orjson.dumps(okta_body()), [(b"Authorization", b"Bearer ey\xff.x.y")]
    )
    assert status == 401
    assert primary.calls == []


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        (b"MessageSid=SM1&MessageStatus=\xff\xfe", [], 400),
        (b"MessageSid=SM1&MessageStatus=%FF%FE", [], 400),
        (b"MessageSid=SM1&MessageStatus=sent", [(b"X-Twilio-Signature", b"\xff\xfe==")], 401),
        (b"\x00\x01\x02", [(b"Content-Type", b"multipart/form-data; boundary=x")], 415),
    ],
    ids=["raw-bytes", "percent-encoded", "signature-bytes", "not-a-form"],
)
async def test_status_hostile_bodies_are_4xx(
    hook: TestClient[web.Request, web.Application], body: bytes, headers: list[tuple[bytes, bytes]], expected: int
) -> None:
    """A status callback that is not UTF-8, not a form or signed with garbage is a 4xx, never a 5xx."""
    form_type = [(b"Content-Type", b"application/x-www-form-urlencoded")]
    status, _ = await raw_post(hook, "/telephony/status", body, headers if expected == 415 else form_type + headers)
    assert status == expected


def es256_token(issuer: FakeIssuer, kid: str) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec

    now = int(time.time())
    claims = {"iss": issuer.issuer, "aud": "api://telephony-hook", "exp": now + 300, "scp": ["okta.telephony.hook"]}
    key = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})


def hs256_with_public_key(issuer: FakeIssuer, kid: str) -> str:
    """The classic confusion: HS256, with the RSA public key (PEM) as the HMAC secret."""
    import base64
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization

    pem = (
        issuer.keys[kid]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    now = int(time.time())
    claims = {"iss": issuer.issuer, "aud": "api://telephony-hook", "exp": now + 300, "scp": ["okta.telephony.hook"]}
    signing_input = b64(orjson.dumps({"alg": "HS256", "kid": kid, "typ": "JWT"})) + b"." + b64(orjson.dumps(claims))
    return (signing_input + b"." + b64(hmac.new(pem, signing_input, hashlib.sha256).digest())).decode()


def unsigned_token(issuer: FakeIssuer, kid: str) -> str:
    import base64

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claims = {"iss": issuer.issuer, "aud": "api://telephony-hook", "exp": int(time.time()) + 300}
    return f"{b64(orjson.dumps({'alg': 'none', 'kid': kid}))}.{b64(orjson.dumps(claims))}."


@pytest.mark.parametrize(
    "make_token", [es256_token, hs256_with_public_key, unsigned_token], ids=["es256-rsa-kid", "hs256-pubkey", "none"]
)
async def test_jwt_alg_not_fitting_its_key_is_401(
    oauth_hook: TestClient[web.Request, web.Application],
    issuer: FakeIssuer,
    primary: FakeTwilio,
    make_token: Callable[[FakeIssuer, str], str],
) -> None:
    """A token whose header ``alg`` does not fit the key its ``kid`` names is a 401, nothing sent."""
    token = make_token(issuer, issuer.published[-1])
    status, answer = await post(oauth_hook, okta_body(), auth=f"Bearer {token}")
    assert status == 401 and "error" in answer
    assert primary.calls == []


async def test_every_refusal_is_one_json_log_line(
    hook: TestClient[web.Request, web.Application], oauth_hook: TestClient[web.Request, web.Application]
) -> None:
    """Refusals of hostile requests each write JSON lines (undecodable bytes escaped), never a logging error."""
    import io
    import logging

    from shared.logging import configure_logging, get_logger

    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    try:
        await raw_post(hook, "/telephony/okta", b"{}", [(b"Authorization", b"Basic \xff")])
        await raw_post(hook, "/telephony/status", b"a=\xff", [(b"Content-Type", b"application/x-www-form-urlencoded")])
        await raw_post(oauth_hook, "/telephony/okta", b"{}", [(b"Authorization", b"Bearer \xff.\xfe.\xfd")])
        get_logger("test").warning("telephony.test", header="X-Retry-Num: \udcff\udcfe")  # a raw field too
        logging.getLogger().handlers[-1].flush()
    finally:
        configure_logging("DEBUG", "json")
    lines = [line for line in stream.getvalue().splitlines() if line.strip()]
    assert "Logging error" not in stream.getvalue()
    events = [orjson.loads(line)["event"] for line in lines]
    assert events.count("telephony.unauthorized") == 2 and "telephony.status.refused" in events
    assert orjson.loads(lines[-1])["header"] == "X-Retry-Num: \\udcff\\udcfe"


# -- rotating the hook's secret --------------------------------------------------------------------


async def test_previous_secret_accepted_while_set(make_hook: HookFactory, primary: FakeTwilio) -> None:
    """TELEPHONY_HOOK_AUTH_PREVIOUS is accepted beside the new secret; once unset, only the new one is."""
    new = "Basic bmV3LXNlY3JldC12YWx1ZQ=="
    rotating = await make_hook(telephony_hook_auth=SecretStr(new), telephony_hook_auth_previous=SecretStr(HOOK_AUTH))
    assert (await post(rotating, okta_body(), auth=HOOK_AUTH))[0] == 200
    assert (await post(rotating, okta_body(), auth=new))[0] == 200
    assert (await post(rotating, okta_body(), auth="Basic c29tZXRoaW5nLWVsc2U="))[0] == 401
    rotated = await make_hook(telephony_hook_auth=SecretStr(new))
    assert (await post(rotated, okta_body(), auth=HOOK_AUTH))[0] == 401
    assert (await post(rotated, okta_body(), auth=new))[0] == 200
    assert len(primary.messages) == 3


# -- Okta's retries --------------------------------------------------------------------------------


async def test_repeat_while_first_hangs_is_pending(make_hook: HookFactory, primary: FakeTwilio) -> None:
    """A retry that arrives while the first request hangs at the provider is answered PENDING, not an error."""
    client = await make_hook(with_fallback=False, telephony_deadline_ms=800)
    primary.hang_next()
    body = okta_body()
    first = asyncio.create_task(post(client, body))
    await primary.wait_hanging(1)
    status, again = await post(client, body)
    assert status == 200 and value_of(again)["status"] == "PENDING"
    assert value_of((await first)[1])["status"] == "PENDING"
    assert len(primary.calls) == 1


async def test_repeat_of_stale_sending_entry_is_pending(make_hook: HookFactory, bus: Bus, primary: FakeTwilio) -> None:
    """An eventId left "sending" long ago (its request died) gets PENDING at once, and no send."""
    from services.telephony_hook.app import EVENTS_BUCKET
    from services.telephony_hook.ledger import EventLedger

    client = await make_hook()
    body = okta_body()
    ledger = EventLedger(await bus.key_value(EVENTS_BUCKET))
    await ledger.kv.create(ledger.key(body["eventId"]), orjson.dumps({"state": "sending", "at": time.time() - 60}))
    started = time.monotonic()
    status, answer = await post(client, body)
    assert status == 200 and value_of(answer)["status"] == "PENDING"
    assert time.monotonic() - started < 0.5
    assert primary.calls == []


PROJECT_ROOT = Path(__file__).resolve().parents[1]
CHILD_HOOK = """
import asyncio, sys
from services.telephony_hook.app import create_service
from shared.bus import Bus
from shared.logging import configure_logging
from shared.settings import Settings

async def main():
    settings = Settings(_env_file=None)
    configure_logging(settings.log_level, "json")  # stderr: stdout is for the READY line
    bus = await Bus.connect(settings, name="telephony-hook-child")
    await bus.ensure_streams()
    service = create_service(settings, bus)
    await service.start()
    print("READY", service.url, flush=True)
    await asyncio.sleep(120)  # killed long before; a bound if the test dies first

asyncio.run(main())
"""


async def start_child_hook(cfg: Settings, **env: str) -> tuple[asyncio.subprocess.Process, str]:
    """The hook in its own process (so that it can be killed, or overloaded), on ``cfg``'s NATS and providers."""
    import os
    import sys

    values = {
        "NATS_URL": str(cfg.nats_url),
        "NATS_PREFIX": cfg.nats_prefix,
        "LOG_LEVEL": "WARNING",
        "TELEPHONY_HOOK_AUTH": HOOK_AUTH,
        "TELEPHONY_PROVIDER_URL": cfg.telephony_provider_url,
        "TELEPHONY_ACCOUNT_SID": str(cfg.telephony_account_sid),
        "TELEPHONY_AUTH_TOKEN": cfg.secret("TELEPHONY_AUTH_TOKEN"),
        "TELEPHONY_FROM": "+14155550000",
        "TELEPHONY_HOOK_PORT": "0",
        "HOST": "127.0.0.1",
        **env,
    }
    root = PROJECT_ROOT
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD_HOOK,
        env={**os.environ, **values, "PYTHONPATH": str(root)},
        cwd=str(root),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line.startswith(b"READY "), line
    return proc, line.split()[1].decode()


async def test_retry_after_hook_killed_mid_send_is_pending(
    settings: Settings, make_hook: HookFactory, primary: FakeTwilio, fallback: FakeTwilio
) -> None:
    """The hook is killed (SIGKILL) while its send is at the provider: Okta's retry, on another replica,
    gets PENDING — the ledger said "sending" before the send — and the code is not sent again."""
    import aiohttp

    cfg = hook_settings(settings, primary, None)
    proc, url = await start_child_hook(cfg)
    body = okta_body()
    primary.hang_next()
    try:
        async with aiohttp.ClientSession() as session:
            first = asyncio.create_task(
                session.post(f"{url}/telephony/okta", data=orjson.dumps(body), headers={"Authorization": HOOK_AUTH})
            )
            await primary.wait_hanging(1)
            proc.kill()
            await proc.wait()
            with pytest.raises(aiohttp.ClientError):
                await first
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    replica = await make_hook()
    status, answer = await post(replica, body)
    assert status == 200
    assert_okta_answer(answer)
    assert value_of(answer)["status"] == "PENDING"
    assert len(primary.calls) == 1 and fallback.calls == []


# -- overload --------------------------------------------------------------------------------------


async def test_overload_sheds_fast_and_answers_within_3s(
    settings: Settings, primary: FakeTwilio, make_hook: HookFactory
) -> None:
    """600 requests at once at a hook in its own process (more than it has provider connections for),
    provider slow: every answer is a 200 within 3 s; what cannot be served in time gets the error object
    at once, and no code goes out for a request answered with an error."""
    import aiohttp

    cfg = hook_settings(settings, primary, None)
    proc, url = await start_child_hook(
        cfg, TELEPHONY_LIMIT_PER_NUMBER="100000", TELEPHONY_LIMIT_PER_PREFIX="100000", TELEPHONY_LIMIT_PER_USER="100000"
    )
    primary.latency = 1.0
    results: list[tuple[int, float, dict[str, Any], str]] = []
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:

            async def one(i: int) -> None:
                number = f"+1415555{1000 + i:04d}"
                body = orjson.dumps(okta_body(phoneNumber=number))
                started = time.monotonic()
                async with session.post(
                    f"{url}/telephony/okta", data=body, headers={"Authorization": HOOK_AUTH}
                ) as resp:
                    payload = orjson.loads(await resp.read())
                results.append((resp.status, time.monotonic() - started, payload, number))

            await asyncio.gather(*(one(i) for i in range(600)))
    finally:
        proc.kill()
        await proc.wait()
    assert all(status == 200 for status, _, _, _ in results)
    worst = max(elapsed for _, elapsed, _, _ in results)
    assert worst < 3.0, worst
    reasons = Counter(
        p["error"]["errorCauses"][0]["reason"] if "error" in p else value_of(p)["status"] for _, _, p, _ in results
    )
    assert reasons["overloaded"] > 0, reasons
    shed = sorted(elapsed for _, elapsed, p, _ in results if "error" in p)
    served = sorted(elapsed for _, elapsed, p, _ in results if "commands" in p)
    assert shed[len(shed) // 2] < served[len(served) // 2]  # shed at once: they never waited for a provider
    # No error answer went with a send (Okta would send a second code); PENDING means "may have been sent".
    sent_to = {m["to"] for m in primary.messages}
    refused_to = {number for status, _, p, number in results if "error" in p}
    assert not sent_to & refused_to
    assert reasons["SUCCESSFUL"] <= len(primary.calls) <= reasons["SUCCESSFUL"] + reasons["PENDING"], reasons
