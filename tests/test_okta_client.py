"""OktaClient against the sandbox Okta: auth modes, rate limits, retries and the error tree."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sandbox.okta import DEFAULT_API_TOKEN, FakeOkta, PushOutcome
from sandbox.okta_data import ALICE, ALICE_PUSH, ALICE_SMS, ALICE_TOTP, DEMO_PASSCODE
from services.okta_worker.okta_client import (
    USER_AGENT,
    OktaClient,
    OktaError,
    OktaMisconfigured,
    OktaNotFound,
    OktaRateLimited,
    OktaRejected,
    OktaResendTooSoon,
    OktaUnavailable,
    OktaWrongCode,
    PrivateKeyJwtAuth,
    SswsAuth,
    auth_from_settings,
)
from shared.settings import MissingSetting, Settings

CLIENT_ID = "0oahelpdeskapp00001"


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture
async def okta() -> AsyncIterator[FakeOkta]:
    fake = FakeOkta.with_demo_data()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def client(okta: FakeOkta) -> AsyncIterator[OktaClient]:
    c = OktaClient(okta.url, SswsAuth(DEFAULT_API_TOKEN), backoff=0.01)
    yield c
    await c.aclose()


def oauth_client(okta: FakeOkta, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, dpop: bool = False) -> OktaClient:
    okta.register_client(CLIENT_ID, key, kid="key-1")
    return OktaClient(okta.url, PrivateKeyJwtAuth(okta.url, CLIENT_ID, pem(key), "key-1", dpop=dpop), backoff=0.01)


async def test_ssws_lists_factors_and_records_rate_limit(client: OktaClient, okta: FakeOkta) -> None:
    """An SSWS call returns the factors and keeps the X-Rate-Limit headers it saw."""
    factors = await client.list_factors(ALICE)
    assert {f["id"] for f in factors} >= {ALICE_PUSH, ALICE_SMS}
    assert okta.calls[-1].headers["Authorization"] == f"SSWS {DEFAULT_API_TOKEN}"
    assert client.rate is not None and client.rate.limit == okta.rate_limit
    assert client.rate.remaining < client.rate.limit


async def test_push_sends_number_matching_and_user_agent(client: OktaClient, okta: FakeOkta) -> None:
    """A push asks for number matching, carries our User-Agent, and returns the number and poll link."""
    okta.push_outcome[ALICE] = PushOutcome("SUCCESS", after_polls=1)
    started = await client.verify_push(ALICE, ALICE_PUSH)
    call = okta.calls_to("POST", f"/api/v1/users/{ALICE}/factors/{ALICE_PUSH}/verify")[0]
    assert call.json == {"useNumberMatchingChallenge": True}
    assert call.headers["User-Agent"] == USER_AGENT
    assert started.correct_answer == okta.last_push(ALICE).correct_answer  # type: ignore[union-attr]
    assert (await client.poll_push(started.poll_url)).result == "WAITING"
    assert (await client.poll_push(started.poll_url)).result == "SUCCESS"


async def test_wrong_code_and_resend_too_soon_are_typed(client: OktaClient, okta: FakeOkta) -> None:
    """E0000068 becomes OktaWrongCode, E0000109 OktaResendTooSoon with 30 s; neither message holds the code."""
    with pytest.raises(OktaWrongCode) as wrong:
        await client.verify_code(ALICE, ALICE_TOTP, "000000")
    assert wrong.value.status == 403 and wrong.value.error_code == "E0000068"
    assert "000000" not in str(wrong.value)
    await client.send_challenge(ALICE, ALICE_SMS)
    with pytest.raises(OktaResendTooSoon) as soon:
        await client.send_challenge(ALICE, ALICE_SMS)
    assert soon.value.retry_after == 30.0 and soon.value.error_code == "E0000109"
    await client.verify_code(ALICE, ALICE_TOTP, DEMO_PASSCODE)


async def test_rate_limited_then_success_after_reset(client: OktaClient, okta: FakeOkta) -> None:
    """A 429 whose Reset is near is waited out (not blindly retried) and the call then succeeds."""
    okta.rate_limit_next(1, reset_in=1.0)
    started = time.monotonic()
    factors = await client.list_factors(ALICE)
    assert factors
    assert len(okta.calls_to("GET", f"/api/v1/users/{ALICE}/factors")) == 2
    assert time.monotonic() - started >= 0.05


async def test_rate_limited_far_reset_raises_with_retry_after(okta: FakeOkta) -> None:
    """A 429 whose Reset is beyond the wait budget raises OktaRateLimited carrying the wait."""
    client = OktaClient(okta.url, SswsAuth(DEFAULT_API_TOKEN), rate_limit_wait=1.0)
    okta.rate_limit_next(1, reset_in=30.0)
    with pytest.raises(OktaRateLimited) as limited:
        await client.list_factors(ALICE)
    assert 25 <= limited.value.retry_after <= 32
    await client.aclose()


async def test_idempotent_get_retried_after_5xx(client: OktaClient, okta: FakeOkta) -> None:
    """A GET that meets a 503 is retried with backoff and succeeds."""
    okta.fail_next(503, n=1, path_prefix=f"/api/v1/users/{ALICE}/factors")
    assert await client.list_factors(ALICE)
    assert len(okta.calls_to("GET", f"/api/v1/users/{ALICE}/factors")) == 2


async def test_verify_post_never_resent_after_5xx(client: OktaClient, okta: FakeOkta) -> None:
    """A verify POST that meets a 500 is not re-sent (it may have sent an SMS): OktaUnavailable, maybe_sent."""
    okta.fail_next(500, n=1, path_prefix=f"/api/v1/users/{ALICE}/factors/{ALICE_SMS}/verify")
    with pytest.raises(OktaUnavailable) as failed:
        await client.send_challenge(ALICE, ALICE_SMS)
    assert failed.value.maybe_sent
    assert len(okta.calls_to("POST", f"/api/v1/users/{ALICE}/factors/{ALICE_SMS}/verify")) == 1


async def test_timeout_becomes_unavailable(okta: FakeOkta) -> None:
    """A hung answer beyond the client timeout is OktaUnavailable, after the GET's retries."""
    http = httpx.AsyncClient(timeout=0.2)
    client = OktaClient(okta.url, SswsAuth(DEFAULT_API_TOKEN), http=http, retries=1, backoff=0.01)
    okta.hang_next(5.0, n=2, path_prefix="/api/v1/users/")
    with pytest.raises(OktaUnavailable):
        await client.get_user(ALICE)
    await http.aclose()


async def test_bad_token_is_misconfigured_and_never_printed(okta: FakeOkta) -> None:
    """A refused API token is OktaMisconfigured; neither str nor repr of the error or client holds it."""
    secret = "00wrong-token-value-123456"
    client = OktaClient(okta.url, SswsAuth(secret))
    with pytest.raises(OktaMisconfigured) as bad:
        await client.ping()
    assert bad.value.status == 401
    for text in (str(bad.value), repr(bad.value), repr(client), repr(client.auth)):
        assert secret not in text
    await client.aclose()


@pytest.mark.parametrize(
    ("status", "expected"),
    [(500, OktaUnavailable), (502, OktaUnavailable), (404, OktaNotFound), (400, OktaRejected)],
)
async def test_nothing_escapes_the_error_tree(okta: FakeOkta, status: int, expected: type[OktaError]) -> None:
    """Every failure of a call surfaces as an OktaError subclass, never an httpx or JSON error."""
    client = OktaClient(okta.url, SswsAuth(DEFAULT_API_TOKEN), retries=0)
    if status == 404:
        call = client.get_user("00unobody0000000000")
    elif status == 400:
        call = client.search_users('profile.login zz "x"')
    else:
        okta.fail_next(status, n=1)
        call = client.get_user(ALICE)
    with pytest.raises(expected):
        await call
    await client.aclose()


async def test_private_key_jwt_assertion_and_token_cache(okta: FakeOkta) -> None:
    """The service app's assertion is RS256 with kid, aud = token URL, exp ≤ 1 h, fresh jti; the token is cached."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    client = oauth_client(okta, key)
    for _ in range(3):
        await client.get_user(ALICE)
    token_calls = okta.calls_to("POST", "/oauth2/v1/token")
    assert len(token_calls) == 1
    form = token_calls[0].form
    assert form["scope"] == (
        "okta.users.read okta.users.manage okta.groups.read okta.logs.read okta.userRisk.read okta.authenticators.read"
    )
    assertion = form["client_assertion"]
    header = jwt.get_unverified_header(assertion)
    claims = jwt.decode(assertion, key.public_key(), algorithms=["RS256"], audience=f"{okta.url}/oauth2/v1/token")
    assert header["kid"] == "key-1" and header["alg"] == "RS256"
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert 0 < claims["exp"] - claims["iat"] <= 3600
    assert okta.calls[-1].headers["Authorization"].startswith("Bearer ")
    # An expired token → 401 → one new token with a new jti, and the call still succeeds.
    okta.expire_access_tokens()
    await client.get_user(ALICE)
    token_calls = okta.calls_to("POST", "/oauth2/v1/token")
    assert len(token_calls) == 2
    second = jwt.decode(token_calls[1].form["client_assertion"], options={"verify_signature": False})
    assert second["jti"] != claims["jti"]
    await client.aclose()


async def test_reused_assertion_jti_is_refused(okta: FakeOkta) -> None:
    """The sandbox refuses a replayed assertion, and the client maps that refusal to OktaMisconfigured."""
    key = ec.generate_private_key(ec.SECP256R1())
    client = oauth_client(okta, key)
    auth = client.auth
    assert isinstance(auth, PrivateKeyJwtAuth)
    assertion = auth.assertion()
    auth.assertion = lambda: assertion  # type: ignore[method-assign]
    await client.get_user(ALICE)
    auth.invalidate()
    with pytest.raises(OktaMisconfigured) as replay:
        await client.get_user(ALICE)
    assert "already been used" in replay.value.message
    assert assertion not in str(replay.value)
    await client.aclose()


async def test_dpop_nonce_retry_and_bound_calls(okta: FakeOkta) -> None:
    """With DPoP required, the token request retries with the server's nonce; API calls send DPoP + ath proofs."""
    okta.require_dpop = True
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    client = oauth_client(okta, key, dpop=True)
    await client.get_user(ALICE)
    await client.list_factors(ALICE)
    token_calls = okta.calls_to("POST", "/oauth2/v1/token")
    assert len(token_calls) == 2  # use_dpop_nonce, then the token
    retry_proof = jwt.decode(token_calls[1].headers["DPoP"], options={"verify_signature": False})
    assert retry_proof["nonce"]
    api_call = okta.calls[-1]
    assert api_call.headers["Authorization"].startswith("DPoP ")
    proof = jwt.decode(api_call.headers["DPoP"], options={"verify_signature": False})
    assert proof["htm"] == "GET" and "ath" in proof
    assert okta.issued_tokens[-1].token_type == "DPoP"
    await client.aclose()


def test_auth_from_settings_needs_complete_credentials() -> None:
    """Settings without an API token or a complete service app refuse to build an auth."""
    with pytest.raises(MissingSetting):
        auth_from_settings(Settings(_env_file=None, okta_org_url="https://acme.okta.com"))  # type: ignore[call-arg]
    auth = auth_from_settings(
        Settings(_env_file=None, okta_org_url="https://acme.okta.com", okta_api_token="t0k")  # type: ignore[call-arg]
    )
    assert isinstance(auth, SswsAuth)


async def test_okta_calls_go_through_the_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """An org behind an egress proxy: HTTP(S)_PROXY from the environment carries the worker's calls."""
    seen: list[str] = []

    async def proxy(request: web.Request) -> web.Response:
        seen.append(str(request.url))  # a proxy gets the absolute URL of the origin
        return web.json_response({"id": "00u1", "status": "ACTIVE", "profile": {"login": "a@example.com"}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    try:
        async with OktaClient("http://acme.okta.invalid", SswsAuth(DEFAULT_API_TOKEN)) as okta:
            user = await okta.get_user("00u1")
        assert user.id == "00u1"
        assert seen == ["http://acme.okta.invalid/api/v1/users/00u1"]
    finally:
        await runner.cleanup()
