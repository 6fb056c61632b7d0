"""FakeOkta answers like a real Okta org: routes, status codes, headers and spec-valid JSON."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sandbox.okta import (
    DEFAULT_API_TOKEN,
    OKTA_RATE_LIMITS,
    RATE_BUCKETS,
    FakeOkta,
    ManualClock,
    PushOutcome,
    parse_search,
    rate_bucket,
)
from sandbox.okta_data import (
    ADMIN,
    ADMINS_GROUP,
    AGENT,
    ALICE,
    ALICE_EMAIL,
    ALICE_PUSH,
    ALICE_QUESTION,
    ALICE_SMS,
    ALICE_TOTP,
    ALICIA,
    BOB,
    BOB_CALL,
    BOB_SMS,
    CAROL,
    DAVE,
    DAVE_HARDWARE,
    DAVE_HOTP,
    DAVE_RSA,
    DEMO_ANSWER,
    DEMO_PASSCODE,
    DEMO_YUBIKEY_OTP,
    ERIN,
    HELPDESK_GROUP,
)
from tests.okta_spec import Validate, okta_spec, okta_validator

TOKEN = "00test-api-token"
SSWS = {"Authorization": f"SSWS {TOKEN}"}
CLIENT_ID = "0oahelpdeskverify001"
KID = "helpdesk-key-1"

# ------------------------------------------------------------------------------------ spec schemas


@pytest.fixture(scope="module")
def schema() -> Validate:
    return okta_validator("okta-management.yaml")


@pytest.fixture(scope="module")
def oauth_schema() -> Validate:
    return okta_validator("okta-oauth.yaml")


def spec_example(name: str) -> Any:
    spec, _ = okta_spec("okta-management.yaml")
    return spec["components"]["examples"][name]["value"]


def without_profile(body: dict[str, Any]) -> dict[str, Any]:
    """Known spec slip: the verify schemas declare `profile` as a map of objects, yet Okta's own
    examples (and the wire) carry strings there, e.g. `profile.phoneNumber`; see
    `test_verify_profile_follows_okta_examples`."""
    return {k: v for k, v in body.items() if k != "profile"}


def factor_schema_name(factor_type: str) -> str:
    spec, _ = okta_spec("okta-management.yaml")
    mapping = spec["components"]["schemas"]["UserFactor"]["discriminator"]["mapping"]
    return str(mapping[factor_type]).rsplit("/", 1)[-1]


# --------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(time.time())


@pytest.fixture
async def fake(clock: ManualClock) -> AsyncIterator[FakeOkta]:
    okta = FakeOkta.with_demo_data(api_token=TOKEN, clock=clock)
    await okta.start()
    yield okta
    await okta.stop()


@pytest.fixture
async def http(fake: FakeOkta) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.url, headers=SSWS, timeout=5) as client:
        yield client


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def assert_okta_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["errorCode"] == code
    assert body["errorLink"] == code
    assert re.fullmatch(r"oae[A-Za-z0-9]{22}", body["errorId"])
    assert isinstance(body["errorCauses"], list)
    assert body["errorSummary"]
    return body


# ------------------------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "SSWS wrong"}, {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": TOKEN}],
    ids=["none", "wrong-ssws", "api-token-as-bearer", "no-scheme"],
)
async def test_api_calls_without_a_valid_token_answer_401_e0000011(
    fake: FakeOkta, schema: Validate, headers: dict[str, str]
) -> None:
    """Every /api/v1 call needs SSWS <api token> or an issued access token."""
    async with httpx.AsyncClient(base_url=fake.url) as client:
        r = await client.get("/api/v1/users", headers=headers)
    body = assert_okta_error(r, 401, "E0000011")
    assert body["errorSummary"] == "Invalid token provided"
    assert body["errorCauses"] == []
    schema("Error", body)


async def test_fake_without_api_token_refuses_ssws() -> None:
    """FakeOkta(api_token=None) is an OAuth-only org: no SSWS token is accepted."""
    okta = FakeOkta(api_token=None)
    url = await okta.start()
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            r = await client.get("/api/v1/users", headers={"Authorization": f"SSWS {DEFAULT_API_TOKEN}"})
        assert_okta_error(r, 401, "E0000011")
    finally:
        await okta.stop()


# ------------------------------------------------------------------------------------------ users


async def test_get_user_by_id_and_by_login_matches_the_user_schema(http: httpx.AsyncClient, schema: Validate) -> None:
    """A user is found by id or login and is a spec-valid User with its lifecycle links."""
    by_id = await http.get(f"/api/v1/users/{BOB}")
    by_login = await http.get("/api/v1/users/BOB@example.com")
    assert by_id.status_code == by_login.status_code == 200
    assert by_id.json()["id"] == by_login.json()["id"] == BOB
    user = by_id.json()
    schema("User", user)
    assert user["status"] == "LOCKED_OUT"
    assert user["profile"]["login"] == "bob@example.com"
    assert user["profile"]["employeeNumber"] == "E1004"
    assert user["_links"]["unlock"]["href"].endswith(f"/api/v1/users/{BOB}/lifecycle/unlock")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", user["created"])


async def test_unknown_user_is_404_e0000007(http: httpx.AsyncClient, schema: Validate) -> None:
    """An unknown user id or login answers Okta's resource-not-found error."""
    r = await http.get("/api/v1/users/nobody@example.com")
    body = assert_okta_error(r, 404, "E0000007")
    assert body["errorSummary"] == "Not found: Resource not found: nobody@example.com (User)"
    schema("Error", body)
    assert_okta_error(await http.get("/api/v1/users/00unknown/factors"), 404, "E0000007")


async def test_search_includes_deprovisioned_users(http: httpx.AsyncClient, schema: Validate) -> None:
    """search= returns DEPROVISIONED users (as Okta does); the plain list and q= do not."""
    search = 'profile.login sw "ALI" or profile.firstName sw "car"'
    r = await http.get("/api/v1/users", params={"search": search})
    assert r.status_code == 200
    found = {u["id"]: u["status"] for u in r.json()}
    assert found == {ALICE: "ACTIVE", ALICIA: "ACTIVE", CAROL: "DEPROVISIONED"}
    for user in r.json():
        schema("User", user)
        assert set(user["_links"]) == {"self"}

    only_deprovisioned = await http.get("/api/v1/users", params={"search": 'status eq "DEPROVISIONED"'})
    assert [u["id"] for u in only_deprovisioned.json()] == [CAROL]

    listed = await http.get("/api/v1/users")
    assert CAROL not in {u["id"] for u in listed.json()}
    assert len(listed.json()) == 11  # every demo user but carol

    q = await http.get("/api/v1/users", params={"q": "car"})
    assert q.json() == []
    q = await http.get("/api/v1/users", params={"q": "ali"})
    assert {u["id"] for u in q.json()} == {ALICE, ALICIA}


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ('profile.email eq "ALICE@example.com"', {ALICE}),
        ('profile.lastName co "nde"', {ALICE}),
        ('profile.login co "ali" and status eq "active"', {ALICE, ALICIA}),
        ('(profile.firstName sw "bo" or profile.firstName sw "dav") and status eq "ACTIVE"', {DAVE}),
        ('profile.firstName sw "bo" or profile.firstName sw "dav" and status eq "ACTIVE"', {BOB, DAVE}),
        ('profile.employeeNumber eq "E1006"', {DAVE}),
        ('profile.department eq "Engineering" and profile.mobilePhone pr', {ALICE, BOB}),
        (r'profile.lastName eq "O\"Neil"', set()),
        ('id eq "00uerin0000000000001"', {ERIN}),
        ('profile.Login eq "alice@example.com"', set()),
    ],
)
async def test_search_operators(http: httpx.AsyncClient, search: str, expected: set[str]) -> None:
    """eq/sw/co/pr with and/or precedence, parentheses, escapes; values case-insensitive, names not."""
    r = await http.get("/api/v1/users", params={"search": search})
    assert r.status_code == 200, r.text
    assert {u["id"] for u in r.json()} == expected


@pytest.mark.parametrize(
    "search", ['profile.department co "Eng"', 'profile.login ne "x"', 'profile.login eq "x" or', '(status eq "A"']
)
async def test_invalid_search_is_400_e0000031(http: httpx.AsyncClient, search: str) -> None:
    """co outside login/email/first/last name, ne, and malformed expressions are refused."""
    assert_okta_error(await http.get("/api/v1/users", params={"search": search}), 400, "E0000031")


def test_parse_search_binds_and_tighter_than_or() -> None:
    """`a or b and c` means `a or (b and c)`."""
    match = parse_search('status eq "A" or status eq "B" and id eq "1"')
    assert match({"status": "a", "id": "2"})
    assert not match({"status": "b", "id": "2"})
    assert match({"status": "B", "id": "1"})


async def test_pagination_follows_the_link_header(http: httpx.AsyncClient) -> None:
    """Pages come only through Link rel="next" (with the search kept) until the last page has none."""
    params: dict[str, str] | None = {"search": 'profile.email co "example.com"', "limit": "3"}
    url = "/api/v1/users"
    seen: list[str] = []
    pages = 0
    while url:
        r = await http.get(url, params=params)
        assert r.status_code == 200
        assert 'rel="self"' in r.headers["link"]
        seen += [u["id"] for u in r.json()]
        pages += 1
        url = r.links.get("next", {}).get("url", "")
        params = None
    assert pages == 4
    assert len(seen) == len(set(seen)) == 12
    assert CAROL in seen


async def test_user_groups_are_spec_valid_groups(http: httpx.AsyncClient, schema: Validate) -> None:
    """GET /users/{id}/groups lists the user's groups, Everyone included."""
    r = await http.get(f"/api/v1/users/{AGENT}/groups")
    assert r.status_code == 200
    names = {g["profile"]["name"]: g for g in r.json()}
    assert set(names) == {"Everyone", "Helpdesk"}
    assert names["Helpdesk"]["id"] == HELPDESK_GROUP
    assert names["Everyone"]["type"] == "BUILT_IN"
    for group in r.json():
        schema("Group", group)
    members = await http.get(f"/api/v1/groups/{ADMINS_GROUP}/users")
    assert [u["id"] for u in members.json()] == [ADMIN]


# ---------------------------------------------------------------------------------------- factors


async def test_factor_list_matches_the_spec_per_factor_type(http: httpx.AsyncClient, schema: Validate) -> None:
    """Each factor validates against the spec schema its factorType maps to."""
    types: dict[str, set[str]] = {}
    for user in (ALICE, BOB, DAVE, AGENT):
        r = await http.get(f"/api/v1/users/{user}/factors")
        assert r.status_code == 200
        types[user] = {f["factorType"] for f in r.json()}
        for factor in r.json():
            schema(factor_schema_name(factor["factorType"]), factor)
            assert factor["_links"]["verify"]["href"].endswith(f"/factors/{factor['id']}/verify")
    assert types[ALICE] == {"push", "sms", "email", "token:software:totp", "question", "webauthn"}
    assert types[BOB] == {"sms", "call"}
    assert types[DAVE] == {"token:hardware", "token:hotp", "token"}
    assert (await http.get(f"/api/v1/users/{ERIN}/factors")).json() == []


async def _push(http: httpx.AsyncClient, user: str = ALICE, factor: str = ALICE_PUSH) -> httpx.Response:
    return await http.post(f"/api/v1/users/{user}/factors/{factor}/verify", json={"useNumberMatchingChallenge": True})


async def test_push_with_number_matching_waits_then_succeeds(
    http: httpx.AsyncClient, fake: FakeOkta, schema: Validate
) -> None:
    """201 WAITING with correctAnswer; the poll href answers WAITING, then SUCCESS (default outcome)."""
    r = await _push(http)
    assert r.status_code == 201
    body = r.json()
    schema("UserFactorVerifyResponseWaiting", without_profile(body))
    answer = body["_embedded"]["challenge"]["correctAnswer"]
    assert isinstance(answer, int) and 10 <= answer <= 99
    poll = body["_links"]["poll"]["href"]
    assert body["_links"]["cancel"]["href"] == poll
    assert re.fullmatch(rf"{fake.url}/api/v1/users/{ALICE}/factors/{ALICE_PUSH}/transactions/v2mst\.[\w-]{{22}}", poll)

    first = await http.get(poll)
    assert first.status_code == 200
    assert first.json()["factorResult"] == "WAITING"
    assert first.json()["_embedded"]["challenge"]["correctAnswer"] == answer
    schema("UserFactorPushTransactionWaitingNMC", first.json())
    second = await http.get(poll)
    assert second.json() == {"factorResult": "SUCCESS"}
    schema("UserFactorPushTransaction", second.json())
    assert fake.push_count(ALICE) == 1
    assert fake.push_count() == 1


@pytest.mark.parametrize("result", ["REJECTED", "TIMEOUT", "SUCCESS"])
async def test_push_outcome_scenario(http: httpx.AsyncClient, fake: FakeOkta, schema: Validate, result: str) -> None:
    """push_outcome[user] = PushOutcome(result, after_polls=2): two WAITING polls, then the result."""
    fake.push_outcome[ALICE] = PushOutcome(result, after_polls=2)
    poll = (await _push(http)).json()["_links"]["poll"]["href"]
    results = [(await http.get(poll)).json()["factorResult"] for _ in range(4)]
    assert results == ["WAITING", "WAITING", result, result]
    final = (await http.get(poll)).json()
    if result != "SUCCESS":
        schema(f"UserFactorPushTransaction{result.title()}", final)
        assert final["_links"]["verify"]["href"].endswith(f"/factors/{ALICE_PUSH}/verify")


async def test_unanswered_push_times_out_at_expiry_then_disappears(
    http: httpx.AsyncClient, fake: FakeOkta, clock: ManualClock
) -> None:
    """A push nobody answers stays WAITING until expiresAt, then TIMEOUT, later 404 E0000191."""
    fake.push_outcome[ALICE_PUSH] = PushOutcome(None)
    r = await http.post(f"/api/v1/users/{ALICE}/factors/{ALICE_PUSH}/verify", params={"tokenLifetimeSeconds": "60"})
    assert "_embedded" not in r.json()  # no number matching asked for
    poll = r.json()["_links"]["poll"]["href"]
    clock.advance(59)
    assert (await http.get(poll)).json()["factorResult"] == "WAITING"
    clock.advance(2)
    assert (await http.get(poll)).json()["factorResult"] == "TIMEOUT"
    clock.advance(fake.push_retention + 1)
    assert_okta_error(await http.get(poll), 404, "E0000191")


async def test_resolve_push_decides_the_next_poll(http: httpx.AsyncClient, fake: FakeOkta) -> None:
    """resolve_push(txid, result) lets a test answer the push at a moment of its choosing."""
    fake.push_outcome[ALICE] = PushOutcome(None)
    poll = (await _push(http)).json()["_links"]["poll"]["href"]
    assert (await http.get(poll)).json()["factorResult"] == "WAITING"
    tx = fake.last_push(ALICE)
    assert tx is not None and poll.endswith(tx.id)
    fake.resolve_push(tx.id, "REJECTED")
    assert (await http.get(poll)).json()["factorResult"] == "REJECTED"


async def test_push_without_user_agent_is_refused(http: httpx.AsyncClient, fake: FakeOkta) -> None:
    """Okta requires a User-Agent header to verify a push; nothing is sent without one."""
    request = http.build_request("POST", f"/api/v1/users/{ALICE}/factors/{ALICE_PUSH}/verify", json={})
    del request.headers["User-Agent"]
    r = await http.send(request)
    assert_okta_error(r, 400, "E0000001")
    assert fake.push_count() == 0


async def test_unknown_transaction_and_factor_are_404(http: httpx.AsyncClient) -> None:
    """Polling a transaction that does not exist, or verifying an unknown factor, is E0000007."""
    r = await http.get(f"/api/v1/users/{ALICE}/factors/{ALICE_PUSH}/transactions/v2mst.AAAAAAAAAAAAAAAAAAAAAA")
    assert_okta_error(r, 404, "E0000007")
    r = await http.post(f"/api/v1/users/{ALICE}/factors/opfnope/verify", json={})
    assert_okta_error(r, 404, "E0000007")


async def test_verify_profile_follows_okta_examples(http: httpx.AsyncClient, schema: Validate) -> None:
    """The challenge `profile` has the shape of Okta's published examples (which the schema contradicts)."""
    sms = (await http.post(f"/api/v1/users/{BOB}/factors/{BOB_SMS}/verify", json={})).json()
    example = spec_example("UserFactorChallengeSmsResponse")
    assert set(sms["profile"]) == set(example["profile"]) == {"phoneNumber"}
    assert set(sms["_links"]) == set(example["_links"])
    push = (await _push(http)).json()
    waiting = spec_example("UserFactorVerifyPushTransactionWaitingNMC")
    assert set(push["profile"]) == set(waiting["profile"]) == {"credentialId"}
    assert set(push) == set(waiting)
    with pytest.raises(AssertionError, match="is not of type 'object'"):
        schema("UserFactorVerifyResponse", example)


async def test_sms_challenge_then_passcode(
    http: httpx.AsyncClient, fake: FakeOkta, clock: ManualClock, schema: Validate
) -> None:
    """{} sends a code (CHALLENGE); a resend within 30 s is 429 E0000109; wrong code 403 E0000068."""
    verify = f"/api/v1/users/{ALICE}/factors/{ALICE_SMS}/verify"
    r = await http.post(verify, json={})
    assert r.status_code == 200
    schema("UserFactorVerifyResponse", without_profile(r.json()))
    assert r.json()["factorResult"] == "CHALLENGE"
    assert r.json()["profile"]["phoneNumber"] == "+14155550101"
    code = fake.last_code(ALICE, ALICE_SMS)
    assert code is not None and re.fullmatch(r"\d{6}", code)
    assert fake.sent_codes[-1].destination == "+14155550101"

    clock.advance(29)
    again = await http.post(verify, json={})
    assert_okta_error(again, 429, "E0000109")
    assert again.headers["X-Rate-Limit-Remaining"] != "0"  # a throttle, not the org rate limit

    wrong = await http.post(verify, json={"passCode": "000000" if code != "000000" else "111111"})
    body = assert_okta_error(wrong, 403, "E0000068")
    assert body["errorSummary"] == "Invalid Passcode/Answer"
    assert body["errorCauses"][0]["errorSummary"]
    schema("Error", body)

    ok = await http.post(verify, json={"passCode": code})
    assert ok.status_code == 200
    assert ok.json() == {"factorResult": "SUCCESS"}
    assert_okta_error(await http.post(verify, json={"passCode": code}), 403, "E0000068")

    clock.advance(2)
    assert (await http.post(verify, json={})).status_code == 200
    assert fake.last_code(ALICE, ALICE_SMS) is not None
    assert len(fake.sent_codes) == 2


@pytest.mark.parametrize(
    ("user", "factor", "window", "code"),
    [(BOB, BOB_CALL, 30, "E0000133"), (ALICE, ALICE_EMAIL, 5, "E0000118")],
    ids=["call", "email"],
)
async def test_resend_throttle_per_factor_type(
    http: httpx.AsyncClient, clock: ManualClock, user: str, factor: str, window: int, code: str
) -> None:
    """Voice calls may be resent after 30 s, emails after 5 s; sooner is a 429 with the type's code."""
    verify = f"/api/v1/users/{user}/factors/{factor}/verify"
    assert (await http.post(verify, json={})).json()["factorResult"] == "CHALLENGE"
    clock.advance(window - 0.5)
    assert_okta_error(await http.post(verify, json={}), 429, code)
    clock.advance(1)
    assert (await http.post(verify, json={})).status_code == 200


async def test_sms_code_expires_with_token_lifetime(
    http: httpx.AsyncClient, fake: FakeOkta, clock: ManualClock
) -> None:
    """A code sent with tokenLifetimeSeconds=60 is refused after 60 s."""
    verify = f"/api/v1/users/{ALICE}/factors/{ALICE_SMS}/verify"
    await http.post(verify, json={}, params={"tokenLifetimeSeconds": "60"})
    code = fake.last_code(ALICE, ALICE_SMS)
    clock.advance(61)
    assert_okta_error(await http.post(verify, json={"passCode": code}), 403, "E0000068")


@pytest.mark.parametrize(
    ("user", "factor", "passcode"),
    [
        (ALICE, ALICE_TOTP, DEMO_PASSCODE),
        (DAVE, DAVE_HARDWARE, DEMO_YUBIKEY_OTP),
        (DAVE, DAVE_HOTP, DEMO_PASSCODE),
        (DAVE, DAVE_RSA, DEMO_PASSCODE),
    ],
    ids=["totp", "hardware", "hotp", "rsa"],
)
async def test_token_factor_passcode_and_reuse(
    http: httpx.AsyncClient, fake: FakeOkta, user: str, factor: str, passcode: str
) -> None:
    """Token factors accept the code set by the test once; reuse is 403 E0000082, wrong 403 E0000068."""
    verify = f"/api/v1/users/{user}/factors/{factor}/verify"
    assert_okta_error(await http.post(verify, json={"passCode": "999999"}), 403, "E0000068")
    ok = await http.post(verify, json={"passCode": passcode})
    assert ok.status_code == 200 and ok.json() == {"factorResult": "SUCCESS"}
    assert_okta_error(await http.post(verify, json={"passCode": passcode}), 403, "E0000082")
    fake.set_passcode(user, factor, "246810")
    assert (await http.post(verify, json={"passCode": "246810"})).json() == {"factorResult": "SUCCESS"}


async def test_security_question(http: httpx.AsyncClient) -> None:
    """question factors take {"answer"}; the comparison ignores case."""
    verify = f"/api/v1/users/{ALICE}/factors/{ALICE_QUESTION}/verify"
    assert_okta_error(await http.post(verify, json={"answer": "mona lisa"}), 403, "E0000068")
    ok = await http.post(verify, json={"answer": DEMO_ANSWER.upper()})
    assert ok.json() == {"factorResult": "SUCCESS"}


async def test_repeated_wrong_codes_lock_the_user_until_unlock(http: httpx.AsyncClient, fake: FakeOkta) -> None:
    """max_factor_attempts wrong codes lock the user: verify is then 403 E0000069 until unlock."""
    fake.max_factor_attempts = 3
    verify = f"/api/v1/users/{ALICE}/factors/{ALICE_TOTP}/verify"
    for _ in range(3):
        assert_okta_error(await http.post(verify, json={"passCode": "000001"}), 403, "E0000068")
    assert_okta_error(await http.post(verify, json={"passCode": DEMO_PASSCODE}), 403, "E0000069")
    assert (await http.get(f"/api/v1/users/{ALICE}")).json()["status"] == "LOCKED_OUT"
    assert (await http.post(f"/api/v1/users/{ALICE}/lifecycle/unlock")).status_code == 200
    assert (await http.post(verify, json={"passCode": DEMO_PASSCODE})).json() == {"factorResult": "SUCCESS"}


# -------------------------------------------------------------------------------------- lifecycle


async def test_reset_password(http: httpx.AsyncClient, schema: Validate) -> None:
    """sendEmail is required; false returns a resetPasswordUrl, true returns {}; the user is in RECOVERY."""
    path = f"/api/v1/users/{ALICE}/lifecycle/reset_password"
    assert_okta_error(await http.post(path), 400, "E0000028")
    r = await http.post(path, params={"sendEmail": "false"})
    assert r.status_code == 200
    schema("ResetPasswordToken", r.json())
    assert r.json()["resetPasswordUrl"].startswith(f"{http.base_url}".rstrip("/") + "/signin/reset-password/")
    assert (await http.post(path, params={"sendEmail": "true"})).json() == {}
    assert (await http.get(f"/api/v1/users/{ALICE}")).json()["status"] == "RECOVERY"


@pytest.mark.parametrize(
    ("path", "params"),
    [("expire_password_with_temp_password", {}), ("expire_password", {"tempPassword": "true"})],
)
async def test_temporary_password(http: httpx.AsyncClient, schema: Validate, path: str, params: dict[str, str]) -> None:
    """Both temp-password paths answer a fresh random tempPassword and expire the password."""
    url = f"/api/v1/users/{DAVE}/lifecycle/{path}"
    first, second = (await http.post(url, params=params)).json(), (await http.post(url, params=params)).json()
    schema("TempPassword", first)
    assert re.fullmatch(r"[A-Za-z0-9]{8}", first["tempPassword"])
    assert first["tempPassword"] != second["tempPassword"]
    assert (await http.get(f"/api/v1/users/{DAVE}")).json()["status"] == "PASSWORD_EXPIRED"


async def test_expire_password_without_temp_password_returns_the_user(
    http: httpx.AsyncClient, schema: Validate
) -> None:
    """expire_password alone answers the User in PASSWORD_EXPIRED."""
    r = await http.post(f"/api/v1/users/{ERIN}/lifecycle/expire_password")
    schema("User", r.json())
    assert r.json()["status"] == "PASSWORD_EXPIRED"


async def test_unlock_only_locked_out_users(http: httpx.AsyncClient) -> None:
    """Unlocking bob (LOCKED_OUT) makes him ACTIVE; unlocking an ACTIVE user is 403 E0000032."""
    r = await http.post(f"/api/v1/users/{BOB}/lifecycle/unlock")
    assert r.status_code == 200 and r.json() == {}
    assert (await http.get(f"/api/v1/users/{BOB}")).json()["status"] == "ACTIVE"
    assert_okta_error(await http.post(f"/api/v1/users/{BOB}/lifecycle/unlock"), 403, "E0000032")


async def test_reset_factors_unenroll_and_sessions(http: httpx.AsyncClient, fake: FakeOkta) -> None:
    """DELETE factor is 204, reset_factors clears all, DELETE sessions is 204."""
    r = await http.delete(f"/api/v1/users/{ALICE}/factors/{ALICE_SMS}")
    assert r.status_code == 204 and r.content == b""
    assert_okta_error(await http.get(f"/api/v1/users/{ALICE}/factors/{ALICE_SMS}"), 404, "E0000007")
    assert len((await http.get(f"/api/v1/users/{ALICE}/factors")).json()) == 5
    assert (await http.post(f"/api/v1/users/{ALICE}/lifecycle/reset_factors")).status_code == 200
    assert (await http.get(f"/api/v1/users/{ALICE}/factors")).json() == []
    assert (await http.delete(f"/api/v1/users/{ALICE}/sessions")).status_code == 204
    user = fake.user(ALICE)
    assert user is not None and user.active_sessions == 0
    assert len(fake.calls_to("DELETE", f"/api/v1/users/{ALICE}/sessions")) == 1


# ------------------------------------------------------------------------------------ rate limits


async def test_every_answer_carries_rate_limit_headers(http: httpx.AsyncClient, clock: ManualClock) -> None:
    """Limit, Remaining (counting down) and Reset (epoch seconds, within the minute) on every answer."""
    first = await http.get(f"/api/v1/users/{ALICE}")
    second = await http.get("/api/v1/users/nobody")
    for r in (first, second):
        assert r.headers["X-Rate-Limit-Limit"] == "600"
        assert clock() <= int(r.headers["X-Rate-Limit-Reset"]) <= clock() + 60
    assert int(second.headers["X-Rate-Limit-Remaining"]) == int(first.headers["X-Rate-Limit-Remaining"]) - 1


async def test_rate_limit_next_answers_429_e0000047(
    http: httpx.AsyncClient, fake: FakeOkta, clock: ManualClock, schema: Validate
) -> None:
    """rate_limit_next(2, reset_in=30): two 429s with Remaining 0 and Reset now+30, then normal."""
    fake.rate_limit_next(2, reset_in=30)
    for _ in range(2):
        r = await http.get(f"/api/v1/users/{ALICE}")
        body = assert_okta_error(r, 429, "E0000047")
        assert body["errorSummary"] == "API call exceeded rate limit due to too many requests."
        schema("Error", body)
        assert r.headers["X-Rate-Limit-Remaining"] == "0"
        assert r.headers["X-Rate-Limit-Reset"] == str(int(clock() + 30))
    assert (await http.get(f"/api/v1/users/{ALICE}")).status_code == 200


async def test_exceeding_the_limit_is_429_until_the_window_resets(clock: ManualClock) -> None:
    """With rate_limit=3 the 4th call in a minute is 429; the next minute is fresh."""
    okta = FakeOkta.with_demo_data(api_token=TOKEN, clock=clock, rate_limit=3)
    url = await okta.start()
    try:
        async with httpx.AsyncClient(base_url=url, headers=SSWS) as client:
            statuses = [(await client.get(f"/api/v1/users/{ALICE}")).status_code for _ in range(4)]
            assert statuses == [200, 200, 200, 429]
            clock.advance(60)
            assert (await client.get(f"/api/v1/users/{ALICE}")).status_code == 200
    finally:
        await okta.stop()


@pytest.mark.parametrize(
    ("method", "path", "bucket"),
    [
        ("GET", "/api/v1/users", "/api/v1/users"),
        ("POST", "/api/v1/users", "/api/v1/users"),
        ("GET", "/api/v1/users/00u1/factors", "/api/v1/users"),
        ("POST", "/api/v1/users/00u1/factors/opf1/verify", "/api/v1/users"),
        ("GET", "/api/v1/users/00u1/factors/opf1/transactions/v2mst.x", "/api/v1/users"),
        ("POST", "/api/v1/users/00u1/lifecycle/reset_factors", "/api/v1/users"),
        ("GET", "/api/v1/users/00u1/groups", "/api/v1/users"),
        ("GET", "/api/v1/users/00u1", "/api/v1/users/{id}"),
        ("GET", "/api/v1/users/alice@example.com", "/api/v1/users/{id}"),
        ("POST", "/api/v1/users/00u1", "/api/v1/users/{id} POST/PUT/DELETE"),
        ("DELETE", "/api/v1/users/00u1", "/api/v1/users/{id} POST/PUT/DELETE"),
        ("GET", "/api/v1/groups", "/api/v1/groups"),
        ("GET", "/api/v1/groups/00g1/users", "/api/v1/groups"),
        ("GET", "/api/v1/groups/00g1", "/api/v1/groups/{id}"),
        ("GET", "/api/v1/logs", "/api/v1/logs"),
        ("GET", "/api/v1/authenticators", "/api/v1"),
        ("POST", "/oauth2/v1/token", "/oauth2/v1/token"),
    ],
)
def test_requests_count_against_their_endpoint_family(method: str, path: str, bucket: str) -> None:
    """Each request falls in one of Okta's buckets: a user's sub-resources with /api/v1/users, a user GET alone."""
    assert rate_bucket(method, path) == bucket
    assert bucket in RATE_BUCKETS


def test_published_limits_are_okta_workforce_figures() -> None:
    """OKTA_RATE_LIMITS holds Okta's published per-minute figures; an unknown bucket name is refused."""
    assert OKTA_RATE_LIMITS["/api/v1/users"] == 600
    assert OKTA_RATE_LIMITS["/api/v1/users/{id}"] == 2000
    assert OKTA_RATE_LIMITS["/api/v1/logs"] == 120
    with pytest.raises(ValueError, match="unknown rate-limit bucket"):
        FakeOkta(limits={"/api/v1/userz": 1})


async def test_each_bucket_has_its_own_headers(clock: ManualClock) -> None:
    """Search, factors, verify and poll share /api/v1/users' window; a user GET and groups count their own."""
    okta = FakeOkta.with_demo_data(
        api_token=TOKEN, clock=clock, limits={"/api/v1/users": 10, "/api/v1/users/{id}": 7, "/api/v1/groups": 3}
    )
    url = await okta.start()
    try:
        async with httpx.AsyncClient(base_url=url, headers=SSWS) as http:
            answers = [
                await http.get("/api/v1/users", params={"search": 'profile.login sw "ali"'}),
                await http.get(f"/api/v1/users/{ALICE}/factors"),
                push := await http.post(
                    f"/api/v1/users/{ALICE}/factors/{ALICE_PUSH}/verify",
                    json={"useNumberMatchingChallenge": True},
                    headers={"User-Agent": "test"},
                ),
                await http.get(push.json()["_links"]["poll"]["href"]),
            ]
            assert [r.status_code for r in answers] == [200, 200, 201, 200]
            assert [r.headers["X-Rate-Limit-Limit"] for r in answers] == ["10"] * 4
            assert [r.headers["X-Rate-Limit-Remaining"] for r in answers] == ["9", "8", "7", "6"]
            user = await http.get(f"/api/v1/users/{ALICE}")
            assert (user.headers["X-Rate-Limit-Limit"], user.headers["X-Rate-Limit-Remaining"]) == ("7", "6")
            groups = await http.get("/api/v1/groups")
            assert (groups.headers["X-Rate-Limit-Limit"], groups.headers["X-Rate-Limit-Remaining"]) == ("3", "2")
            resets = {int(r.headers["X-Rate-Limit-Reset"]) for r in [*answers, user, groups]}
            assert resets == {(int(clock()) // 60 + 1) * 60}  # the next minute boundary, epoch seconds
            assert okta.bucket_remaining("/api/v1/users") == 6
    finally:
        await okta.stop()


async def test_a_spent_bucket_answers_429_alone_until_its_window_resets(clock: ManualClock, schema: Validate) -> None:
    """/api/v1/users at its limit: 429 E0000047 with Remaining 0 there, other buckets answer; next minute fresh."""
    okta = FakeOkta.with_demo_data(api_token=TOKEN, clock=clock, limits={"/api/v1/users": 2})
    url = await okta.start()
    try:
        async with httpx.AsyncClient(base_url=url, headers=SSWS) as http:
            statuses = [(await http.get(f"/api/v1/users/{ALICE}/factors")).status_code for _ in range(2)]
            spent = await http.get("/api/v1/users", params={"q": "ali"})
            assert statuses == [200, 200]
            schema("Error", assert_okta_error(spent, 429, "E0000047"))
            assert spent.headers["X-Rate-Limit-Limit"] == "2"
            assert spent.headers["X-Rate-Limit-Remaining"] == "0"
            assert int(spent.headers["X-Rate-Limit-Reset"]) == (int(clock()) // 60 + 1) * 60
            assert (await http.get(f"/api/v1/users/{ALICE}")).status_code == 200  # its own bucket
            assert (await http.get("/api/v1/groups")).status_code == 200
            clock.advance(60 - clock() % 60)
            fresh = await http.get(f"/api/v1/users/{ALICE}/factors")
            assert fresh.status_code == 200
            assert fresh.headers["X-Rate-Limit-Remaining"] == "1"
    finally:
        await okta.stop()


async def test_one_request_over_the_concurrency_limit_is_429_with_zero_limit(clock: ManualClock) -> None:
    """With concurrency_limit=1 and one request in flight, the next is 429 E0000047, Limit and Remaining 0."""
    okta = FakeOkta.with_demo_data(api_token=TOKEN, clock=clock, concurrency_limit=1)
    url = await okta.start()
    try:
        async with httpx.AsyncClient(base_url=url, headers=SSWS, timeout=5) as http:
            okta.hang_next(30, path_prefix="/api/v1/logs")
            slow = asyncio.create_task(http.get("/api/v1/logs"))
            await okta.wait_for_call("GET", "/api/v1/logs")
            over = await http.get(f"/api/v1/users/{ALICE}")
            assert_okta_error(over, 429, "E0000047")
            assert (over.headers["X-Rate-Limit-Limit"], over.headers["X-Rate-Limit-Remaining"]) == ("0", "0")
            assert int(over.headers["X-Rate-Limit-Reset"]) >= int(clock())
            okta.release_hangs()
            assert (await slow).status_code == 200
            assert okta.in_flight == 0
            assert (await http.get(f"/api/v1/users/{ALICE}")).status_code == 200
    finally:
        await okta.stop()


async def test_fail_next_and_hang_next(http: httpx.AsyncClient, fake: FakeOkta, schema: Validate) -> None:
    """fail_next answers the given status once; hang_next holds a request past the client's timeout."""
    fake.fail_next(503)
    r = await http.get(f"/api/v1/users/{ALICE}")
    assert r.status_code == 503 and "X-Rate-Limit-Limit" in r.headers
    fake.fail_next(500)
    schema("Error", assert_okta_error(await http.get(f"/api/v1/users/{ALICE}"), 500, "E0000009"))
    fake.hang_next(30)
    with pytest.raises(httpx.ReadTimeout):
        await http.get(f"/api/v1/users/{ALICE}", timeout=0.2)
    assert (await http.get(f"/api/v1/users/{ALICE}")).status_code == 200


# ------------------------------------------------------------------------------ OAuth and scopes


def client_assertion(
    key: Any,
    aud: str,
    *,
    client_id: str = CLIENT_ID,
    expires_in: float = 300,
    jti: str | None = None,
    kid: str | None = KID,
    alg: str = "RS256",
) -> str:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "iat": now,
        "exp": now + int(expires_in),
        "jti": jti or secrets.token_urlsafe(16),
    }
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid} if kid else None)


def token_form(assertion: str, scope: str = "okta.users.read okta.users.manage") -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }


@pytest.fixture
async def anon(fake: FakeOkta, rsa_key: rsa.RSAPrivateKey) -> AsyncIterator[httpx.AsyncClient]:
    fake.register_client(CLIENT_ID, rsa_key.public_key(), KID)
    async with httpx.AsyncClient(base_url=fake.url, timeout=5) as client:
        yield client


async def test_private_key_jwt_issues_a_bearer_token(
    anon: httpx.AsyncClient, fake: FakeOkta, rsa_key: rsa.RSAPrivateKey, oauth_schema: Validate
) -> None:
    """A valid private_key_jwt assertion gets a 1 h Bearer token that works on the API."""
    aud = f"{fake.url}/oauth2/v1/token"
    r = await anon.post("/oauth2/v1/token", data=token_form(client_assertion(rsa_key, aud)))
    assert r.status_code == 200, r.text
    body = r.json()
    oauth_schema("TokenResponseOrgAs", body)
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "okta.users.read okta.users.manage"
    assert r.headers["Cache-Control"] == "no-store"
    api = await anon.get(f"/api/v1/users/{ALICE}", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert api.status_code == 200


@pytest.mark.parametrize(
    "case", ["jti-reused", "wrong-aud", "expired", "exp-too-far", "wrong-key", "unknown-kid", "iss-sub-mismatch"]
)
async def test_bad_client_assertions_are_refused(
    anon: httpx.AsyncClient, fake: FakeOkta, rsa_key: rsa.RSAPrivateKey, oauth_schema: Validate, case: str
) -> None:
    """Reused jti, wrong aud, expired or too-long-lived, badly signed assertions: invalid_client."""
    aud = f"{fake.url}/oauth2/v1/token"
    if case == "jti-reused":
        assertion = client_assertion(rsa_key, aud, jti="same-jti")
        assert (await anon.post("/oauth2/v1/token", data=token_form(assertion))).status_code == 200
        assertion = client_assertion(rsa_key, aud, jti="same-jti")
    elif case == "wrong-aud":
        assertion = client_assertion(rsa_key, "https://example.okta.com/oauth2/default/v1/token")
    elif case == "expired":
        assertion = client_assertion(rsa_key, aud, expires_in=-5)
    elif case == "exp-too-far":
        assertion = client_assertion(rsa_key, aud, expires_in=7200)
    elif case == "wrong-key":
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        assertion = client_assertion(other, aud)
    elif case == "unknown-kid":
        assertion = client_assertion(rsa_key, aud, kid="rotated-away")
    else:
        now = int(time.time())
        claims = {"iss": CLIENT_ID, "sub": "someone-else", "aud": aud, "exp": now + 60, "jti": "x1"}
        assertion = jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": KID})
    r = await anon.post("/oauth2/v1/token", data=token_form(assertion))
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_client"
    assert r.json()["error_description"]
    oauth_schema("OAuthError", r.json())


async def test_token_endpoint_other_errors(anon: httpx.AsyncClient, fake: FakeOkta, rsa_key: rsa.RSAPrivateKey) -> None:
    """Unknown client 401 invalid_client; unknown scope invalid_scope; other grants unsupported."""
    aud = f"{fake.url}/oauth2/v1/token"
    r = await anon.post("/oauth2/v1/token", data=token_form(client_assertion(rsa_key, aud, client_id="0oanobody")))
    assert (r.status_code, r.json()["error"]) == (401, "invalid_client")
    r = await anon.post(
        "/oauth2/v1/token", data=token_form(client_assertion(rsa_key, aud), scope="okta.factors.manage")
    )
    assert (r.status_code, r.json()["error"]) == (400, "invalid_scope")
    form = token_form(client_assertion(rsa_key, aud)) | {"grant_type": "password"}
    r = await anon.post("/oauth2/v1/token", data=form)
    assert (r.status_code, r.json()["error"]) == (400, "unsupported_grant_type")
    form = token_form(client_assertion(rsa_key, aud))
    del form["client_assertion_type"]
    assert (await anon.post("/oauth2/v1/token", data=form)).status_code == 401


async def test_jwk_and_ec_keys_can_be_registered(anon: httpx.AsyncClient, fake: FakeOkta) -> None:
    """register_client accepts a JWK dict (here ES256) as well as PEM / key objects."""
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True)
    fake.register_client("0oaecclient000000001", jwk, "ec-1", scopes=["okta.users.read"])
    assertion = client_assertion(
        ec_key, f"{fake.url}/oauth2/v1/token", client_id="0oaecclient000000001", kid="ec-1", alg="ES256"
    )
    r = await anon.post("/oauth2/v1/token", data=token_form(assertion, scope="okta.users.read"))
    assert r.status_code == 200, r.text
    pem = ec_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    fake.register_client("0oaecclient000000002", pem.decode())
    assertion = client_assertion(
        ec_key, f"{fake.url}/oauth2/v1/token", client_id="0oaecclient000000002", kid=None, alg="ES256"
    )
    assert (await anon.post("/oauth2/v1/token", data=token_form(assertion))).status_code == 200


async def test_bearer_tokens_are_held_to_their_scopes(
    anon: httpx.AsyncClient, fake: FakeOkta, schema: Validate
) -> None:
    """okta.users.read reads but cannot verify or unlock (403 E0000006); groups.read cannot read users."""
    read = {"Authorization": f"Bearer {fake.issue_access_token(['okta.users.read'])}"}
    assert (await anon.get(f"/api/v1/users/{ALICE}/factors", headers=read)).status_code == 200
    r = await anon.post(f"/api/v1/users/{ALICE}/factors/{ALICE_SMS}/verify", json={}, headers=read)
    schema("Error", assert_okta_error(r, 403, "E0000006"))
    assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    assert_okta_error(await anon.post(f"/api/v1/users/{BOB}/lifecycle/unlock", headers=read), 403, "E0000006")
    groups = {"Authorization": f"Bearer {fake.issue_access_token(['okta.groups.read'])}"}
    assert_okta_error(await anon.get(f"/api/v1/users/{ALICE}", headers=groups), 403, "E0000006")
    assert (await anon.get(f"/api/v1/groups/{HELPDESK_GROUP}/users", headers=groups)).status_code == 200
    manage = {"Authorization": f"Bearer {fake.issue_access_token(['okta.users.manage'])}"}
    assert (await anon.post(f"/api/v1/users/{BOB}/lifecycle/unlock", headers=manage)).status_code == 200
    assert (await anon.get(f"/api/v1/users/{BOB}", headers=manage)).status_code == 200


async def test_expired_access_token_is_401(anon: httpx.AsyncClient, fake: FakeOkta, clock: ManualClock) -> None:
    """An access token stops working after its hour (or when the test expires it)."""
    headers = {"Authorization": f"Bearer {fake.issue_access_token()}"}
    assert (await anon.get("/api/v1/users", headers=headers)).status_code == 200
    clock.advance(3601)
    r = await anon.get("/api/v1/users", headers=headers)
    assert_okta_error(r, 401, "E0000011")
    assert "expired" in r.headers["WWW-Authenticate"]


# ------------------------------------------------------------------------------------------- DPoP


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def dpop_proof(
    key: ec.EllipticCurvePrivateKey,
    method: str,
    url: str,
    *,
    nonce: str | None = None,
    access_token: str | None = None,
    jti: str | None = None,
) -> str:
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    claims: dict[str, Any] = {
        "htm": method,
        "htu": url,
        "iat": int(time.time()),
        "jti": jti or secrets.token_urlsafe(12),
    }
    if nonce:
        claims["nonce"] = nonce
    if access_token:
        claims["ath"] = _b64url(hashlib.sha256(access_token.encode()).digest())
    return jwt.encode(claims, key, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": jwk})


async def test_dpop_nonce_dance_and_bound_token(
    anon: httpx.AsyncClient, fake: FakeOkta, rsa_key: rsa.RSAPrivateKey
) -> None:
    """require_dpop: no proof 400; proof without nonce 400 use_dpop_nonce + DPoP-Nonce; then a DPoP token."""
    fake.require_dpop = True
    token_url = f"{fake.url}/oauth2/v1/token"
    dpop_key = ec.generate_private_key(ec.SECP256R1())

    r = await anon.post(token_url, data=token_form(client_assertion(rsa_key, token_url)))
    assert (r.status_code, r.json()["error"]) == (400, "invalid_dpop_proof")

    assertion = client_assertion(rsa_key, token_url)
    r = await anon.post(
        token_url, data=token_form(assertion), headers={"DPoP": dpop_proof(dpop_key, "POST", token_url)}
    )
    assert (r.status_code, r.json()["error"]) == (400, "use_dpop_nonce")
    nonce = r.headers["DPoP-Nonce"]

    proof = dpop_proof(dpop_key, "POST", token_url, nonce=nonce)
    r = await anon.post(token_url, data=token_form(assertion), headers={"DPoP": proof})
    assert r.status_code == 200, r.text
    assert r.json()["token_type"] == "DPoP"
    token = r.json()["access_token"]

    api = f"{fake.url}/api/v1/users/{ALICE}"
    ok = await anon.get(
        api, headers={"Authorization": f"DPoP {token}", "DPoP": dpop_proof(dpop_key, "GET", api, access_token=token)}
    )
    assert ok.status_code == 200, ok.text

    as_bearer = await anon.get(api, headers={"Authorization": f"Bearer {token}"})
    assert_okta_error(as_bearer, 401, "E0000011")
    no_proof = await anon.get(api, headers={"Authorization": f"DPoP {token}"})
    assert_okta_error(no_proof, 401, "E0000011")
    wrong_ath = await anon.get(
        api, headers={"Authorization": f"DPoP {token}", "DPoP": dpop_proof(dpop_key, "GET", api, access_token="other")}
    )
    assert_okta_error(wrong_ath, 401, "E0000011")
    assert 'error="invalid_dpop_proof"' in wrong_ath.headers["WWW-Authenticate"]
    other_key = ec.generate_private_key(ec.SECP256R1())
    stolen = await anon.get(
        api, headers={"Authorization": f"DPoP {token}", "DPoP": dpop_proof(other_key, "GET", api, access_token=token)}
    )
    assert_okta_error(stolen, 401, "E0000011")
    wrong_method = await anon.get(
        api, headers={"Authorization": f"DPoP {token}", "DPoP": dpop_proof(dpop_key, "POST", api, access_token=token)}
    )
    assert_okta_error(wrong_method, 401, "E0000011")
    replay = dpop_proof(dpop_key, "GET", api, access_token=token, jti="once")
    assert (await anon.get(api, headers={"Authorization": f"DPoP {token}", "DPoP": replay})).status_code == 200
    again = await anon.get(api, headers={"Authorization": f"DPoP {token}", "DPoP": replay})
    assert_okta_error(again, 401, "E0000011")


# ------------------------------------------------------------------------------------ official SDK


async def test_official_okta_sdk_works_against_the_fake(
    fake: FakeOkta, rsa_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Okta's Python SDK (private key + DPoP) gets a token, searches users and parses every factor."""
    okta_client = pytest.importorskip("okta.client")
    monkeypatch.setenv("OKTA_TESTING_TESTINGDISABLEHTTPSCHECK", "true")  # the fake speaks plain http
    fake.register_client(CLIENT_ID, rsa_key.public_key(), KID)
    fake.require_dpop = True
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    client = okta_client.Client(
        {
            "orgUrl": fake.url,
            "authorizationMode": "PrivateKey",
            "clientId": CLIENT_ID,
            "scopes": ["okta.users.read"],
            "privateKey": pem,
            "kid": KID,
            "dpopEnabled": True,
        }
    )
    users, _, err = await client.list_users(search='profile.login sw "ali"')
    assert err is None
    assert sorted(u.profile.login for u in users) == ["alice@example.com", "alicia@example.com"]
    factors, _, err = await client.list_factors(ALICE)
    assert err is None
    assert len(factors) == 6
    assert fake.issued_tokens and fake.issued_tokens[-1].token_type == "DPoP"
    assert all(c.headers["Authorization"].startswith("DPoP ") for c in fake.calls if c.path.startswith("/api/"))


# -------------------------------------------------------------------------------------- seed data


def test_demo_org_shape() -> None:
    """The demo org holds Okta-shaped ids and the users other tests and the demo rely on."""
    okta = FakeOkta.with_demo_data()
    assert all(len(i) == 20 for i in okta.users)
    assert all(len(f) == 20 for u in okta.users.values() for f in u.factors)
    agent = okta.user("agent@example.com")
    assert agent is not None and agent.id == AGENT
    assert AGENT in okta.groups[HELPDESK_GROUP].members
    assert okta.groups[ADMINS_GROUP].members == [ADMIN]
    assert {u.status for u in okta.users.values()} == {"ACTIVE", "LOCKED_OUT", "DEPROVISIONED"}
    assert all("employeeNumber" in u.profile for u in okta.users.values())
    added = okta.add_user("zed@example.com", "Zed", "Zimmer", groups=["Helpdesk"])
    factor = okta.add_factor(added.id, "sms")
    assert factor.profile == {"phoneNumber": "+14155550100"} and factor.id.startswith("mbl")
    assert okta.group("Helpdesk") is okta.groups[HELPDESK_GROUP]
    assert added.id in okta.groups[HELPDESK_GROUP].members
