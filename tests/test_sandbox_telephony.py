"""FakeTwilio answers like Twilio: checked against Twilio's OpenAPI schemas and the official client."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openapi_schema_validator import OAS30Validator

from sandbox.telephony import FakeTwilio

SCHEMAS = Path(__file__).resolve().parent / "schemas"
MESSAGES = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
CALLS = "/2010-04-01/Accounts/{AccountSid}/Calls.json"


@functools.cache
def load_spec(name: str) -> dict[str, Any]:
    """One published spec, copied in ``tests/schemas`` (parsed once per run)."""
    with (SCHEMAS / name).open() as fh:
        return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def spec_validator(spec_name: str, schema: dict[str, Any]) -> OAS30Validator:
    """An OpenAPI 3.0 validator of ``schema`` whose ``#/components/...`` refs resolve in the spec."""
    spec = load_spec(spec_name)
    return OAS30Validator({**schema, "components": spec["components"]})


def twilio_schema(name: str) -> OAS30Validator:
    return spec_validator("twilio-api-v2010.yaml", {"$ref": f"#/components/schemas/{name}"})


def twilio_request_schema(path: str) -> OAS30Validator:
    """The form schema of the POST on ``path`` (CreateMessageRequest / CreateCallRequest)."""
    op = load_spec("twilio-api-v2010.yaml")["paths"][path]["post"]
    return spec_validator(
        "twilio-api-v2010.yaml", op["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    )


def assert_valid(validator: OAS30Validator, instance: Any) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]
    assert not errors, errors


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    fake = FakeTwilio(invalid_numbers={"+15005550001"}, opted_out={"+15005550004"})
    await fake.start()
    yield fake
    await fake.stop()


def _client(fake: FakeTwilio, token: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=fake.url, auth=(fake.account_sid, token or fake.auth_token), timeout=5)


async def test_message_created_matches_twilio_schema(twilio: FakeTwilio) -> None:
    """A valid SMS is answered 201 with a Message resource that validates against Twilio's schema."""
    form = {"To": "+15551234567", "From": "+15557654321", "Body": "Your code is 123456"}
    assert_valid(twilio_request_schema(MESSAGES), form)
    async with _client(twilio) as client:
        resp = await client.post(f"/2010-04-01/Accounts/{twilio.account_sid}/Messages.json", data=form)
    assert resp.status_code == 201
    body = resp.json()
    assert_valid(twilio_schema("api.v2010.account.message"), body)
    assert body["sid"].startswith("SM") and len(body["sid"]) == 34
    assert (body["status"], body["to"], body["from"], body["body"]) == (
        "queued",
        "+15551234567",
        "+15557654321",
        "Your code is 123456",
    )
    assert body["uri"] == f"/2010-04-01/Accounts/{twilio.account_sid}/Messages/{body['sid']}.json"
    assert twilio.messages == [body]


async def test_call_created_matches_twilio_schema(twilio: FakeTwilio) -> None:
    """A call with TwiML is answered 201 with a Call resource that validates against Twilio's schema."""
    form = {"To": "+15551234567", "From": "+15557654321", "Twiml": "<Response><Say>1, 2</Say></Response>"}
    assert_valid(twilio_request_schema(CALLS), form)
    async with _client(twilio) as client:
        resp = await client.post(f"/2010-04-01/Accounts/{twilio.account_sid}/Calls.json", data=form)
    assert resp.status_code == 201
    body = resp.json()
    assert_valid(twilio_schema("api.v2010.account.call"), body)
    assert body["sid"].startswith("CA") and body["status"] == "queued"
    assert twilio.calls_created[0]["twiml"] == form["Twiml"]


@pytest.mark.parametrize("case", ["no-auth", "wrong-token", "other-account"])
async def test_bad_credentials_are_20003(twilio: FakeTwilio, case: str) -> None:
    """Missing or wrong basic auth, or another account's path, is a 401 with code 20003."""
    sid = "AC" + "0" * 32 if case == "other-account" else twilio.account_sid
    auth = None if case == "no-auth" else (twilio.account_sid, "wrong" if case == "wrong-token" else twilio.auth_token)
    async with httpx.AsyncClient(base_url=twilio.url, auth=auth) as client:
        resp = await client.post(f"/2010-04-01/Accounts/{sid}/Messages.json", data={"To": "+1"})
    assert resp.status_code == 401
    assert resp.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }
    assert twilio.messages == []


@pytest.mark.parametrize(
    ("to", "code"),
    [("+15005550001", 21211), ("not-a-number", 21211), ("+15005550004", 21610), ("", 21604)],
)
async def test_recipient_refusals(twilio: FakeTwilio, to: str, code: int) -> None:
    """Invalid, opted-out and missing recipients get Twilio's 400 error bodies."""
    async with _client(twilio) as client:
        resp = await client.post(
            f"/2010-04-01/Accounts/{twilio.account_sid}/Messages.json",
            data={"To": to, "From": "+15557654321", "Body": "x"},
        )
    assert resp.status_code == 400
    body = resp.json()
    assert body["code"] == code and body["status"] == 400
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert twilio.messages == []


async def test_fail_next_queue_then_normal(twilio: FakeTwilio) -> None:
    """Queued failures are answered in order, each once, then requests succeed again."""
    twilio.fail_next(code=20429)
    twilio.fail_next(status=503, n=2)
    twilio.fail_next(code=21610)
    form = {"To": "+15551234567", "From": "+15557654321", "Body": "hi"}
    url = f"/2010-04-01/Accounts/{twilio.account_sid}/Messages.json"
    async with _client(twilio) as client:
        answers = [(await client.post(url, data=form)) for _ in range(5)]
    assert [(r.status_code, r.json()["code"] if r.status_code >= 400 else None) for r in answers] == [
        (429, 20429),
        (503, 20503),
        (503, 20503),
        (400, 21610),
        (201, None),
    ]


async def test_hang_holds_until_release(twilio: FakeTwilio) -> None:
    """A hung request is received but not answered until release()."""
    twilio.hang_next()
    url = f"/2010-04-01/Accounts/{twilio.account_sid}/Messages.json"
    async with _client(twilio) as client:
        pending = asyncio.create_task(client.post(url, data={"To": "+15551234567"}))
        await twilio.wait_for_call("POST", url)
        assert not pending.done() and twilio.hanging == 1
        twilio.release()
        resp = await pending
    assert resp.status_code == 503
    assert twilio.hanging == 0


async def test_hang_released_by_stop() -> None:
    """stop() releases hung requests, so a test never waits on them."""
    fake = FakeTwilio()
    await fake.start()
    fake.hang_next(2)
    url = f"/2010-04-01/Accounts/{fake.account_sid}/Calls.json"
    async with _client(fake) as client:
        pending = [asyncio.create_task(client.post(url, data={"To": "+15551234567"})) for _ in range(2)]
        await fake.wait_for_call("POST", url, count=2)
        await fake.stop()
        results = await asyncio.gather(*pending, return_exceptions=True)
    assert all(isinstance(r, Exception) or r.status_code == 503 for r in results)


async def test_latency_applies_to_every_request(twilio: FakeTwilio) -> None:
    """With ``latency`` set, an answer takes at least that long."""
    twilio.latency = 0.05
    loop = asyncio.get_running_loop()
    async with _client(twilio) as client:
        started = loop.time()
        resp = await client.post(
            f"/2010-04-01/Accounts/{twilio.account_sid}/Messages.json",
            data={"To": "+15551234567", "From": "+15557654321", "Body": "x"},
        )
    assert resp.status_code == 201
    assert loop.time() - started >= 0.05


async def test_official_twilio_client_sends_sms_and_call(twilio: FakeTwilio) -> None:
    """The official twilio client, pointed at the fake, creates a message and a call without complaint."""
    from twilio.base.exceptions import TwilioRestException
    from twilio.http.async_http_client import AsyncTwilioHttpClient
    from twilio.rest import Client

    http_client = AsyncTwilioHttpClient()
    client = Client(twilio.account_sid, twilio.auth_token, http_client=http_client)
    client.api.base_url = twilio.url
    try:
        message = await client.messages.create_async(to="+15551234567", from_="+15557654321", body="Code 42")
        call = await client.calls.create_async(
            to="+15551234567", from_="+15557654321", twiml="<Response><Say>4, 2</Say></Response>"
        )
        with pytest.raises(TwilioRestException) as refused:
            await client.messages.create_async(to="+15005550004", from_="+15557654321", body="x")
    finally:
        await http_client.session.close()
    assert message.sid == twilio.messages[0]["sid"] and message.status == "queued"
    assert message.to == "+15551234567" and message.body == "Code 42"
    assert call.sid == twilio.calls_created[0]["sid"] and call.status == "queued"
    assert refused.value.code == 21610 and refused.value.status == 400


async def test_account_fetch_matches_twilio_schema_and_official_client(twilio: FakeTwilio) -> None:
    """GET /Accounts/{Sid}.json (a credentials check) matches Twilio's schema; the official client reads it."""
    from twilio.http.async_http_client import AsyncTwilioHttpClient
    from twilio.rest import Client

    async with _client(twilio) as client:
        resp = await client.get(f"/2010-04-01/Accounts/{twilio.account_sid}.json")
        refused = await client.get(
            f"/2010-04-01/Accounts/{twilio.account_sid}.json", auth=(twilio.account_sid, "x" * 32)
        )
    assert resp.status_code == 200
    assert_valid(twilio_schema("api.v2010.account"), resp.json())
    assert refused.status_code == 401 and refused.json()["code"] == 20003
    http_client = AsyncTwilioHttpClient()
    official = Client(twilio.account_sid, twilio.auth_token, http_client=http_client)
    official.api.base_url = twilio.url
    try:
        account = await official.api.v2010.accounts(twilio.account_sid).fetch_async()
    finally:
        await http_client.session.close()
    assert account.sid == twilio.account_sid and account.status == "active"
