"""The assurance side of Okta: System Log, user risk, group types, profiles, TAC, session revocation.

FakeOkta's answers are checked against Okta's OpenAPI spec (a copy in `tests/schemas`);
OktaClient is checked against the fake over real HTTP.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from sandbox.okta import TAC_AUTHENTICATOR_ID, FakeOkta, ManualClock, PushOutcome, parse_log_filter
from sandbox.okta_data import (
    ADMIN,
    AGENT,
    AGENT_ADMIN,
    AGENT_ADMIN_LOGIN,
    AGENT_EMAIL,
    AGENT_MOBILE,
    ALICE,
    ALICE_PUSH,
    ALICE_SECOND_EMAIL,
    ALICE_SMS,
    ALICE_TOTP,
    BOB,
    ERIN,
    HELPDESK_APP_GROUP,
    HELPDESK_GROUP,
    MALLORY,
    MANAGER,
    MANAGER_PHONE,
)
from services.okta_worker.okta_client import (
    OktaClient,
    OktaGroup,
    OktaRateLimited,
    OktaRejected,
    SswsAuth,
    TacIssued,
    okta_timestamp,
)
from tests.okta_spec import Validate, okta_validator

TOKEN = "00test-api-token"
SSWS = {"Authorization": f"SSWS {TOKEN}"}

# ------------------------------------------------------------------------------------ spec schemas


@pytest.fixture(scope="module")
def schema() -> Validate:
    return okta_validator("okta-management.yaml")


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


@pytest.fixture
async def client(fake: FakeOkta) -> AsyncIterator[OktaClient]:
    c = OktaClient(fake.url, SswsAuth(TOKEN), backoff=0.01, rate_limit_wait=0.0)
    yield c
    await c.aclose()


def assert_okta_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["errorCode"] == code and body["errorLink"] == code
    assert re.fullmatch(r"oae[A-Za-z0-9]{22}", body["errorId"])
    assert isinstance(body["errorCauses"], list) and body["errorSummary"]
    return body


def iso(moment: float) -> str:
    return okta_timestamp(datetime.fromtimestamp(moment, UTC))


def user_target(event: dict[str, Any]) -> dict[str, Any]:
    return next(t for t in event["target"] if t["type"] == "User")


async def logs(http: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    r = await http.get("/api/v1/logs", params=params)
    assert r.status_code == 200, r.text
    body: list[dict[str, Any]] = r.json()
    return body


# ------------------------------------------------------------------------------ System Log (fake)


async def test_mutations_are_logged_as_okta_logs_them(
    http: httpx.AsyncClient, fake: FakeOkta, clock: ManualClock, schema: Validate
) -> None:
    """Factor delete, reset_factors, password reset/expiry and session revocation write spec-valid LogEvents."""
    await http.delete(f"/api/v1/users/{ALICE}/factors/{ALICE_SMS}")
    clock.advance(1)
    await http.post(f"/api/v1/users/{BOB}/lifecycle/reset_factors")
    clock.advance(1)
    await http.post(f"/api/v1/users/{ALICE}/lifecycle/reset_password", params={"sendEmail": "true"})
    await http.post(f"/api/v1/users/{ALICE}/lifecycle/expire_password_with_temp_password")
    r = await http.delete(f"/api/v1/users/{ALICE}/sessions")
    assert r.status_code == 204

    events = await logs(http)
    assert [(e["eventType"], user_target(e)["id"]) for e in events] == [
        ("user.mfa.factor.deactivate", ALICE),
        ("user.mfa.factor.deactivate", BOB),
        ("user.mfa.factor.deactivate", BOB),
        ("user.mfa.factor.reset_all", BOB),
        ("user.account.reset_password", ALICE),
        ("user.account.reset_password", ALICE),
        ("user.session.end", ALICE),
    ]
    for event in events:
        schema("LogEvent", event)
        assert event["outcome"] == {"result": "SUCCESS"} and event["severity"] == "INFO"
        assert event["actor"]["type"] == "User" and event["displayMessage"]
        assert event["transaction"]["detail"] == {"requestApiTokenId": "00Tsandboxapitoken01"}
        assert event["client"]["ipAddress"] == "127.0.0.1"
        assert event["client"]["geographicalContext"]["country"]
    deactivated = events[0]
    assert {t["type"] for t in deactivated["target"]} == {"User", "AuthenticatorEnrollment"}
    assert next(t for t in deactivated["target"] if t["type"] == "AuthenticatorEnrollment")["id"] == ALICE_SMS
    assert deactivated["debugContext"]["debugData"]["requestUri"] == f"/api/v1/users/{ALICE}/factors/{ALICE_SMS}"
    assert events[-1]["published"] == iso(clock())


async def test_api_token_owner_and_service_app_are_the_actor(http: httpx.AsyncClient, fake: FakeOkta) -> None:
    """An API token's calls are the admin's who made it; a service app's carry the app as actor."""
    fake.api_token_owner = ADMIN
    await http.delete(f"/api/v1/users/{ALICE}/sessions")
    bearer = {"Authorization": f"Bearer {fake.issue_access_token(client_id='0oahelpdeskapp000001')}"}
    await http.delete(f"/api/v1/users/{BOB}/sessions", headers=bearer)
    first, second = await logs(http)
    assert first["actor"]["id"] == ADMIN and first["actor"]["alternateId"] == "admin@example.com"
    assert second["actor"] == {
        "id": "0oahelpdeskapp000001",
        "type": "PublicClientApp",
        "alternateId": "0oahelpdeskapp000001",
        "displayName": "0oahelpdeskapp000001",
    }


async def test_rejected_push_logs_deny_push_with_the_user_as_actor(
    http: httpx.AsyncClient, fake: FakeOkta, schema: Validate
) -> None:
    """A push resolved REJECTED logs user.mfa.okta_verify.deny_push once, actor = the user."""
    fake.push_outcome[ALICE] = PushOutcome("REJECTED", after_polls=0)
    r = await http.post(
        f"/api/v1/users/{ALICE}/factors/{ALICE_PUSH}/verify",
        json={"useNumberMatchingChallenge": True},
        headers={"User-Agent": "test"},
    )
    poll = r.json()["_links"]["poll"]["href"]
    for _ in range(2):
        assert (await http.get(poll)).json()["factorResult"] == "REJECTED"
    denials = await logs(http, filter=f'actor.id eq "{ALICE}" and eventType eq "user.mfa.okta_verify.deny_push"')
    assert len(denials) == 1
    schema("LogEvent", denials[0])
    assert user_target(denials[0])["id"] == ALICE
    assert denials[0]["target"][0]["type"] == "AuthenticatorEnrollment"  # the User is not always first

    fake.push_outcome[ALICE] = PushOutcome(None)
    await http.post(f"/api/v1/users/{ALICE}/factors/{ALICE_PUSH}/verify", json={}, headers={"User-Agent": "test"})
    fake.resolve_push(fake.pushes[-1].id, "REJECTED")
    assert len(fake.logs_for(ALICE, "user.mfa.okta_verify.deny_push")) == 2


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        (f'target.id eq "{ALICE}"', ["a", "b", "c"]),
        (f'target.id eq "{ALICE}" and eventType sw "user.mfa."', ["a", "b"]),
        ('eventType eq "user.mfa.factor.reset_all" or eventType eq "user.session.end"', ["b", "d"]),
        (f'(eventType sw "user.mfa." or eventType sw "user.risk.") and actor.id eq "{ADMIN}"', ["a", "b"]),
        (f'actor.id eq "{BOB}"', ["d"]),
        ('outcome.result eq "DENY"', ["c"]),
        ('eventType ew ".end"', ["d"]),
        ("securityContext.isProxy eq true", ["c"]),
        (f'target.id ne "{ALICE}"', ["d"]),
        ('debugContext.debugData.level eq "HIGH"', ["c"]),
    ],
)
async def test_log_filters(http: httpx.AsyncClient, fake: FakeOkta, expression: str, expected: list[str]) -> None:
    """target.id / actor.id / eventType eq, sw, ew, ne with and, or and parentheses, over seeded events."""
    now = fake.clock()
    seeded = {
        "a": fake.add_log_event("user.mfa.factor.deactivate", ALICE, actor=ADMIN, published=now - 300),
        "b": fake.add_log_event("user.mfa.factor.reset_all", ALICE, actor=ADMIN, published=now - 200),
        "c": fake.add_log_event(
            "user.risk.detect",
            ALICE,
            actor={"id": "system", "type": "SystemPrincipal"},
            outcome="DENY",
            is_proxy=True,
            debug_data={"level": "HIGH"},
            published=now - 100,
        ),
        "d": fake.add_log_event("user.session.end", BOB, published=now - 50),
    }
    names = {e.uuid: name for name, e in seeded.items()}
    found = await logs(http, filter=expression)
    assert [names[e["uuid"]] for e in found] == expected


@pytest.mark.parametrize(
    "expression",
    [
        'eventType zz "x"',
        'published gt "2024-01-01T00:00:00.000Z"',
        'target[type eq "User"].id eq "00u1"',
        'eventType eq "x" and',
        '(eventType eq "x"',
        'debugContext.debugData.requestUri co "/api"',
    ],
)
async def test_bad_log_filter_is_400_e0000053(http: httpx.AsyncClient, schema: Validate, expression: str) -> None:
    """Unknown operators, `published`, `[ ]`, broken syntax and co on requestUri answer 400 E0000053."""
    body = assert_okta_error(await http.get("/api/v1/logs", params={"filter": expression}), 400, "E0000053")
    schema("Error", body)
    assert "eq co sw pr gt ge lt le" in body["errorCauses"][0]["errorSummary"]


def test_parse_log_filter_reads_arrays_and_precedence() -> None:
    """`a or b and c` is `a or (b and c)`; target.id matches any element of the target array."""
    match = parse_log_filter('eventType eq "x" or eventType eq "y" and target.id eq "u1"')
    assert match({"eventType": "x", "target": []})
    assert match({"eventType": "y", "target": [{"id": "f1"}, {"id": "u1"}]})
    assert not match({"eventType": "y", "target": [{"id": "f1"}]})


async def test_since_until_sort_limit_and_paging(http: httpx.AsyncClient, fake: FakeOkta) -> None:
    """since/until bound `published` (default: the last 7 days), sortOrder orders, limit pages by Link."""
    now = fake.clock()
    old = fake.add_log_event("user.session.start", ALICE, published=now - 8 * 86400)
    recent = [fake.add_log_event("user.session.start", ALICE, published=now - 60 * i) for i in (5, 4, 3, 2, 1)]
    assert [e["uuid"] for e in await logs(http)] == [e.uuid for e in recent]
    window = await logs(http, since=iso(now - 4 * 60), until=iso(now - 2 * 60))
    assert [e["uuid"] for e in window] == [e.uuid for e in recent[1:4]]
    assert next(e["uuid"] for e in await logs(http, since=iso(now - 9 * 86400))) == old.uuid
    newest_first = await logs(http, sortOrder="DESCENDING")
    assert [e["uuid"] for e in newest_first] == [e.uuid for e in reversed(recent)]

    r = await http.get("/api/v1/logs", params={"limit": "2"})
    seen = [e["uuid"] for e in r.json()]
    while "next" in r.links:
        r = await http.get(r.links["next"]["url"])
        seen += [e["uuid"] for e in r.json()]
    assert seen == [e.uuid for e in recent]

    assert_okta_error(await http.get("/api/v1/logs", params={"sortOrder": "asc"}), 400, "E0000001")
    assert_okta_error(await http.get("/api/v1/logs", params={"limit": "-1"}), 400, "E0000001")
    assert_okta_error(await http.get("/api/v1/logs", params={"since": "yesterday"}), 400, "E0000001")


async def test_default_limit_is_100_and_max_1000(http: httpx.AsyncClient, fake: FakeOkta) -> None:
    """Without limit a page holds 100 events; a limit above 1000 is read as 1000."""
    now = fake.clock()
    for i in range(1005):
        fake.add_log_event("user.session.start", ERIN, published=now - 1005 + i)
    assert len(await logs(http)) == 100
    assert len(await logs(http, limit="5000")) == 1000


async def test_retention_is_90_days(http: httpx.AsyncClient, fake: FakeOkta) -> None:
    """Events older than 90 days are gone, whatever `since` asks for."""
    now = fake.clock()
    fake.add_log_event("user.session.start", ALICE, published=now - 91 * 86400)
    kept = fake.add_log_event("user.session.start", ALICE, published=now - 89 * 86400)
    assert [e["uuid"] for e in await logs(http, since=iso(now - 100 * 86400))] == [kept.uuid]


async def test_seeded_event_carries_security_context(http: httpx.AsyncClient, fake: FakeOkta, schema: Validate) -> None:
    """add_log_event fills securityContext.risk / userBehaviors, client country, outcome reason."""
    fake.add_log_event(
        "user.authentication.auth_via_mfa",
        ALICE,
        outcome="FAILURE",
        reason="INVALID_CREDENTIALS",
        ip_address="203.0.113.9",
        country="Romania",
        is_proxy=True,
        risk={"level": "HIGH", "reasons": ["Anomalous Location"]},
        user_behaviors={"New Device": "POSITIVE", "New Geo-Location": "NEGATIVE"},
    )
    (event,) = await logs(http)
    schema("LogEvent", event)
    assert event["outcome"] == {"result": "FAILURE", "reason": "INVALID_CREDENTIALS"}
    assert event["client"]["ipAddress"] == "203.0.113.9"
    assert event["client"]["geographicalContext"] == {"country": "Romania"}
    assert event["securityContext"]["isProxy"] is True
    assert event["securityContext"]["risk"] == {"level": "HIGH", "reasons": ["Anomalous Location"]}
    assert [(b["name"], b["result"]) for b in event["securityContext"]["userBehaviors"]] == [
        ("New Device", "POSITIVE"),
        ("New Geo-Location", "NEGATIVE"),
    ]
    assert event["actor"]["id"] == ALICE  # by default the user acted on their own account


async def test_logs_have_their_own_rate_limit_bucket(clock: ManualClock, schema: Validate) -> None:
    """/api/v1/logs counts against logs_rate_limit (default 20) and 429s alone; /api/v1/users keeps going."""
    assert FakeOkta().logs_rate_limit == 20
    okta = FakeOkta.with_demo_data(api_token=TOKEN, clock=clock, logs_rate_limit=3)
    url = await okta.start()
    try:
        async with httpx.AsyncClient(base_url=url, headers=SSWS) as http:
            answers = [await http.get("/api/v1/logs") for _ in range(4)]
            assert [r.status_code for r in answers] == [200, 200, 200, 429]
            assert [r.headers["X-Rate-Limit-Remaining"] for r in answers] == ["2", "1", "0", "0"]
            assert {r.headers["X-Rate-Limit-Limit"] for r in answers} == {"3"}
            schema("Error", assert_okta_error(answers[-1], 429, "E0000047"))
            users = await http.get(f"/api/v1/users/{ALICE}")
            assert users.status_code == 200
            assert users.headers["X-Rate-Limit-Limit"] == "600"
            assert users.headers["X-Rate-Limit-Remaining"] == "599"
            clock.advance(60)
            assert (await http.get("/api/v1/logs")).status_code == 200
    finally:
        await okta.stop()


async def test_hang_next_makes_the_log_slow(http: httpx.AsyncClient, fake: FakeOkta) -> None:
    """hang_next(path_prefix="/api/v1/logs") holds a log query, not a user read."""
    fake.hang_next(30, path_prefix="/api/v1/logs")
    assert (await http.get(f"/api/v1/users/{ALICE}", timeout=1)).status_code == 200
    with pytest.raises(httpx.ReadTimeout):
        await http.get("/api/v1/logs", timeout=0.2)
    assert (await http.get("/api/v1/logs")).status_code == 200


async def test_new_routes_need_their_scopes(http: httpx.AsyncClient, fake: FakeOkta) -> None:
    """logs need okta.logs.read, risk okta.userRisk.read, authenticators okta.authenticators.read."""
    users = {"Authorization": f"Bearer {fake.issue_access_token(['okta.users.read', 'okta.users.manage'])}"}
    for path in ("/api/v1/logs", f"/api/v1/users/{ALICE}/risk", "/api/v1/authenticators"):
        assert_okta_error(await http.get(path, headers=users), 403, "E0000006")
    for scope, path in (
        ("okta.logs.read", "/api/v1/logs"),
        ("okta.userRisk.read", f"/api/v1/users/{ALICE}/risk"),
        ("okta.authenticators.read", "/api/v1/authenticators"),
    ):
        headers = {"Authorization": f"Bearer {fake.issue_access_token([scope])}"}
        assert (await http.get(path, headers=headers)).status_code == 200, scope
    manage = {"Authorization": f"Bearer {fake.issue_access_token(['okta.users.manage'])}"}
    r = await http.post(
        f"/api/v1/users/{ALICE}/authenticator-enrollments/tac",
        json={"authenticatorId": TAC_AUTHENTICATOR_ID},
        headers=manage,
    )
    assert r.status_code == 200


# ------------------------------------------------------------------------------- user risk (fake)


async def test_user_risk_levels(http: httpx.AsyncClient, fake: FakeOkta, schema: Validate) -> None:
    """NONE carries no reason; other levels carry one (override.by.admin unless given)."""
    r = await http.get(f"/api/v1/users/{ALICE}/risk")
    assert r.status_code == 200
    body = r.json()
    schema("UserRiskGetResponse", body)
    assert body["riskLevel"] == "NONE" and "reason" not in body
    assert body["_links"]["self"]["href"] == f"{fake.url}/api/v1/users/{ALICE}/risk"
    assert body["_links"]["user"]["href"] == f"{fake.url}/api/v1/users/{ALICE}"
    fake.set_user_risk(ALICE, "HIGH")
    body = (await http.get(f"/api/v1/users/{ALICE}/risk")).json()
    schema("UserRiskGetResponse", body)
    assert (body["riskLevel"], body["reason"]) == ("HIGH", "override.by.admin")
    fake.set_user_risk("alice@example.com", "MEDIUM", "Anomalous sign-in from a new country")
    body = (await http.get(f"/api/v1/users/{ALICE}/risk")).json()
    assert (body["riskLevel"], body["reason"]) == ("MEDIUM", "Anomalous sign-in from a new country")
    assert_okta_error(await http.get("/api/v1/users/00unobody/risk"), 404, "E0000007")
    with pytest.raises(ValueError):
        fake.set_user_risk(ALICE, "CRITICAL")


@pytest.mark.parametrize(("status", "code"), [(403, "E0000006"), (404, "E0000007")])
async def test_org_without_itp_answers_403_or_404(
    http: httpx.AsyncClient, fake: FakeOkta, schema: Validate, status: int, code: str
) -> None:
    """itp=False: the risk route answers no_itp_status (what a real org answers is undocumented)."""
    fake.itp = False
    fake.no_itp_status = status
    schema("Error", assert_okta_error(await http.get(f"/api/v1/users/{ALICE}/risk"), status, code))


# ------------------------------------------------------------------------- groups, users (fake)


async def test_groups_carry_their_type_and_search_by_name_and_type(http: httpx.AsyncClient, schema: Validate) -> None:
    """Two groups are named "Helpdesk"; search= by profile.name and type tells them apart."""
    both = (await http.get("/api/v1/groups", params={"search": 'profile.name eq "Helpdesk"'})).json()
    assert {(g["id"], g["type"]) for g in both} == {(HELPDESK_GROUP, "OKTA_GROUP"), (HELPDESK_APP_GROUP, "APP_GROUP")}
    for group in both:
        schema("Group", group)
    okta_only = await http.get(
        "/api/v1/groups", params={"search": 'profile.name eq "Helpdesk" and type eq "OKTA_GROUP"'}
    )
    assert [g["id"] for g in okta_only.json()] == [HELPDESK_GROUP]
    imported = next(g for g in both if g["type"] == "APP_GROUP")
    assert imported["objectClass"] == ["okta:windows_security_principal"]
    assert imported["profile"]["windowsDomainQualifiedName"] == "EXAMPLE\\Helpdesk"
    assert imported["_links"]["source"]["href"].endswith("/api/v1/apps/0oasandboxadapp00001")
    picker = (await http.get("/api/v1/groups", params={"q": "Help"})).json()
    assert {g["id"] for g in picker} == {HELPDESK_GROUP, HELPDESK_APP_GROUP}
    mallory = (await http.get(f"/api/v1/users/{MALLORY}/groups")).json()
    assert {(g["profile"]["name"], g["type"]) for g in mallory} == {("Everyone", "BUILT_IN"), ("Helpdesk", "APP_GROUP")}


def test_add_group_type() -> None:
    """add_group(type=…) takes OKTA_GROUP, APP_GROUP or BUILT_IN; group_type= still works."""
    fake = FakeOkta()
    assert fake.add_group("A", type="APP_GROUP").group_type == "APP_GROUP"
    assert fake.add_group("B", group_type="BUILT_IN").group_type == "BUILT_IN"
    assert fake.add_group("C").group_type == "OKTA_GROUP"
    with pytest.raises(ValueError):
        fake.add_group("D", type="SECURITY")


async def test_demo_profiles(http: httpx.AsyncClient, fake: FakeOkta, schema: Validate) -> None:
    """alice's manager is an ACTIVE Okta user; the agent's email is on a second account; a phone is shared."""
    alice = (await http.get(f"/api/v1/users/{ALICE}")).json()
    schema("User", alice)
    assert alice["created"] == "2024-03-01T09:00:00.000Z"
    assert alice["profile"]["managerId"] == MANAGER
    assert alice["profile"]["manager"] == "Mara Manager"
    assert alice["profile"]["secondEmail"] == ALICE_SECOND_EMAIL
    manager = (await http.get(f"/api/v1/users/{MANAGER}")).json()
    assert manager["status"] == "ACTIVE" and manager["profile"]["email"] == "manager@example.com"
    assert manager["profile"]["primaryPhone"] == MANAGER_PHONE
    assert MANAGER not in fake.groups[HELPDESK_GROUP].members
    same_email = (await http.get("/api/v1/users", params={"search": f'profile.email eq "{AGENT_EMAIL}"'})).json()
    assert {u["id"] for u in same_email} == {AGENT, AGENT_ADMIN}
    assert fake.users[AGENT_ADMIN].login == AGENT_ADMIN_LOGIN
    same_phone = (await http.get("/api/v1/users", params={"search": f'profile.mobilePhone eq "{AGENT_MOBILE}"'})).json()
    assert {u["id"] for u in same_phone} == {AGENT, ERIN}


# ---------------------------------------------------------------------------- TAC, sessions (fake)


async def test_authenticators_list_the_tac(http: httpx.AsyncClient, fake: FakeOkta, schema: Validate) -> None:
    """With the tac flag on, an ACTIVE `tac` authenticator with its TTL settings is listed."""
    found = (await http.get("/api/v1/authenticators")).json()
    for authenticator in found:
        schema("AuthenticatorBase", authenticator)
    tac = next(a for a in found if a["key"] == "tac")
    assert (tac["id"], tac["status"], tac["type"]) == (TAC_AUTHENTICATOR_ID, "ACTIVE", "tac")
    config = tac["provider"]["configuration"]
    assert (config["minTtl"], config["maxTtl"], config["defaultTtl"]) == (10, 14400, 120)
    assert 8 <= config["length"] <= 64
    fake.tac = False
    assert all(a["key"] != "tac" for a in (await http.get("/api/v1/authenticators")).json())


async def test_tac_issue_and_replace(
    http: httpx.AsyncClient, fake: FakeOkta, clock: ManualClock, schema: Validate
) -> None:
    """A TAC is issued with its code once; a second one replaces the first; both are recorded."""
    path = f"/api/v1/users/{ALICE}/authenticator-enrollments/tac"
    r = await http.post(
        path, json={"authenticatorId": TAC_AUTHENTICATOR_ID, "profile": {"ttl": "60", "multiUse": False}}
    )
    assert r.status_code == 200, r.text
    first = r.json()
    schema("TacAuthenticatorEnrollment", first)
    assert first["id"].startswith("tac") and len(first["id"]) == 20
    assert (first["status"], first["key"], first["type"]) == ("ACTIVE", "tac", "tac")
    assert first["profile"]["multiUse"] is False
    assert len(first["profile"]["tac"]) == fake.tac_config["length"]
    expires = datetime.fromisoformat(first["profile"]["expiresAt"]).replace(tzinfo=UTC)
    assert abs(expires.timestamp() - (clock() + 3600)) < 1
    assert fake.active_tac(ALICE) == fake.issued_tacs[0]
    assert fake.issued_tacs[0].code == first["profile"]["tac"]

    second = (await http.post(path, json={"authenticatorId": TAC_AUTHENTICATOR_ID})).json()
    assert second["profile"]["tac"] != first["profile"]["tac"]
    assert len(fake.issued_tacs) == 2 and fake.active_tac(ALICE) == fake.issued_tacs[1]
    assert fake.issued_tacs[1].ttl_minutes == 120  # defaultTtl
    clock.advance(120 * 60 + 1)
    assert fake.active_tac(ALICE) is None


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"authenticatorId": "autunknown0000000001"},
        {"authenticatorId": TAC_AUTHENTICATOR_ID, "profile": {"ttl": "5"}},
        {"authenticatorId": TAC_AUTHENTICATOR_ID, "profile": {"ttl": "14401"}},
        {"authenticatorId": TAC_AUTHENTICATOR_ID, "profile": {"ttl": "an hour"}},
        {"authenticatorId": TAC_AUTHENTICATOR_ID, "profile": {"multiUse": True}},
    ],
)
async def test_bad_tac_requests_are_400(
    http: httpx.AsyncClient, fake: FakeOkta, schema: Validate, body: dict[str, Any]
) -> None:
    """A missing or unknown authenticator, a TTL outside the org's bounds, a refused multi-use: 400."""
    r = await http.post(f"/api/v1/users/{ALICE}/authenticator-enrollments/tac", json=body)
    schema("Error", assert_okta_error(r, 400, "E0000001"))
    assert fake.issued_tacs == []


async def test_tac_needs_the_authenticator(http: httpx.AsyncClient, fake: FakeOkta) -> None:
    """Without an ACTIVE TAC authenticator the org refuses to issue one."""
    fake.tac = False
    r = await http.post(
        f"/api/v1/users/{ALICE}/authenticator-enrollments/tac", json={"authenticatorId": TAC_AUTHENTICATOR_ID}
    )
    assert_okta_error(r, 400, "E0000001")


async def test_session_revocation_records_oauth_tokens(http: httpx.AsyncClient, fake: FakeOkta) -> None:
    """DELETE /sessions records (user, oauthTokens); oauthTokens defaults to false as in Okta."""
    assert (await http.delete(f"/api/v1/users/{ALICE}/sessions", params={"oauthTokens": "true"})).status_code == 204
    assert (await http.delete(f"/api/v1/users/{BOB}/sessions")).status_code == 204
    assert fake.revoked_sessions == [(ALICE, True), (BOB, False)]
    bad = await http.delete(f"/api/v1/users/{ALICE}/sessions", params={"oauthTokens": "yes"})
    assert_okta_error(bad, 400, "E0000001")


# ---------------------------------------------------------------------------------- OktaClient


async def test_client_reads_profile_signals(client: OktaClient) -> None:
    """OktaUser carries created, managerId, secondEmail, mobilePhone and primaryPhone."""
    alice = await client.get_user(ALICE)
    assert alice.created == "2024-03-01T09:00:00.000Z"
    assert (alice.manager_id, alice.second_email, alice.mobile_phone) == (MANAGER, ALICE_SECOND_EMAIL, "+14155550101")
    assert alice.primary_phone is None
    manager = await client.get_user(MANAGER)
    assert (manager.primary_phone, manager.mobile_phone, manager.manager_id) == (MANAGER_PHONE, None, None)
    assert (await client.get_user(AGENT)).mobile_phone == AGENT_MOBILE


async def test_client_groups_by_type(client: OktaClient) -> None:
    """user_groups gives id, name and type; find_groups matches the exact name and the type."""
    mallory = await client.user_groups(MALLORY)
    assert OktaGroup(HELPDESK_APP_GROUP, "Helpdesk", "APP_GROUP") in mallory
    assert "Helpdesk" in await client.user_group_names(MALLORY)  # why names alone are unsafe
    agent = await client.user_groups(AGENT)
    assert OktaGroup(HELPDESK_GROUP, "Helpdesk", "OKTA_GROUP") in agent
    assert await client.find_groups("Helpdesk", "OKTA_GROUP") == [OktaGroup(HELPDESK_GROUP, "Helpdesk", "OKTA_GROUP")]
    assert {g.id for g in await client.find_groups("Helpdesk", None)} == {HELPDESK_GROUP, HELPDESK_APP_GROUP}
    assert await client.find_groups("helpdesk", None) == []  # Okta matches case-insensitively; we don't
    assert await client.get_group(HELPDESK_APP_GROUP) == OktaGroup(HELPDESK_APP_GROUP, "Helpdesk", "APP_GROUP")


async def test_client_list_logs(client: OktaClient, fake: FakeOkta, clock: ManualClock) -> None:
    """list_logs sends filter, since/until with milliseconds and Z, and returns the matching events."""
    since = datetime.fromtimestamp(clock() - 3600, UTC)
    fake.add_log_event("user.session.start", ALICE, published=clock() - 7200)
    await client.reset_all_factors(ALICE)
    await client.reset_factor(BOB, "mblbob00000000000001")
    events = await client.list_logs(f'target.id eq "{ALICE}" and eventType sw "user.mfa."', since)
    assert [e["eventType"] for e in events][-1] == "user.mfa.factor.reset_all"
    assert {e["eventType"] for e in events} == {"user.mfa.factor.deactivate", "user.mfa.factor.reset_all"}
    assert all(user_target(e)["id"] == ALICE for e in events)
    query = fake.calls_to("GET", "/api/v1/logs")[-1].query
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", query["since"])
    assert query["limit"] == "100" and "until" not in query
    until = since + timedelta(minutes=1)
    assert await client.list_logs(f'target.id eq "{ALICE}"', since, until=until, limit=5) == []
    assert fake.calls_to("GET", "/api/v1/logs")[-1].query["until"] == okta_timestamp(until)


def test_okta_timestamp() -> None:
    """UTC, milliseconds, Z; a naive datetime is UTC."""
    assert okta_timestamp(datetime(2024, 3, 1, 9, 0, 0, 123456)) == "2024-03-01T09:00:00.123Z"
    paris = datetime(2024, 3, 1, 11, 0, tzinfo=timezone(timedelta(hours=1)))
    assert okta_timestamp(paris) == "2024-03-01T10:00:00.000Z"


async def test_client_logs_rate_limit_does_not_touch_the_users_bucket(clock: ManualClock) -> None:
    """A spent logs bucket raises OktaRateLimited at once; user reads still work and see their own limit."""
    okta = FakeOkta.with_demo_data(api_token=TOKEN, clock=clock, logs_rate_limit=2)
    await okta.start()
    client = OktaClient(okta.url, SswsAuth(TOKEN), backoff=0.01)
    try:
        since = datetime.fromtimestamp(clock() - 60, UTC)
        for _ in range(2):
            await client.list_logs('eventType sw "user."', since)
        started = time.monotonic()
        with pytest.raises(OktaRateLimited) as caught:
            await client.list_logs('eventType sw "user."', since)
        assert time.monotonic() - started < 1.0  # rate_limit_wait=0: no sleeping in place
        assert 0 < caught.value.retry_after <= 61
        user = await client.get_user(ALICE)
        assert user.id == ALICE
        assert client.rate is not None and client.rate.limit == 600 and client.rate.remaining == 599
    finally:
        await client.aclose()
        await okta.stop()


async def test_client_risk(client: OktaClient, fake: FakeOkta) -> None:
    """user_risk reads the level; an org without ITP (403 or 404) is None, not NONE, and not misconfigured."""
    assert await client.user_risk(ALICE) == "NONE"
    fake.set_user_risk(ALICE, "HIGH")
    assert await client.user_risk(ALICE) == "HIGH"
    fake.itp = False
    for status in (403, 404):
        fake.no_itp_status = status
        assert await client.user_risk(ALICE) is None
        assert client.status == "ok"


async def test_client_tac(client: OktaClient, fake: FakeOkta) -> None:
    """tac_authenticator_id finds the ACTIVE tac; create_tac issues, replaces, and hides the code in repr."""
    authenticator = await client.tac_authenticator_id()
    assert authenticator == TAC_AUTHENTICATOR_ID
    with capture_logs() as logged:
        first = await client.create_tac(ALICE, authenticator)
    call = fake.calls_to("POST", f"/api/v1/users/{ALICE}/authenticator-enrollments/tac")[-1]
    assert call.json == {"authenticatorId": TAC_AUTHENTICATOR_ID, "profile": {"ttl": "60", "multiUse": False}}
    assert isinstance(first, TacIssued) and first.code == fake.issued_tacs[-1].code
    assert first.code not in repr(first) and first.code not in str(logged)
    assert first.expires_at and first.expires_at.startswith(str(datetime.now(UTC).year))
    second = await client.create_tac(ALICE, authenticator, ttl_minutes=15)
    assert fake.active_tac(ALICE) is not None and fake.active_tac(ALICE).code == second.code  # type: ignore[union-attr]
    assert fake.issued_tacs[-1].ttl_minutes == 15
    with pytest.raises(OktaRejected) as bad:
        await client.create_tac(ALICE, authenticator, ttl_minutes=5)
    assert bad.value.status == 400


async def test_client_tac_authenticator_absent(client: OktaClient, fake: FakeOkta) -> None:
    """No tac authenticator, an INACTIVE one, or no permission to read authenticators: None."""
    fake.tac_status = "INACTIVE"
    assert await client.tac_authenticator_id() is None
    fake.tac = False
    assert await client.tac_authenticator_id() is None
    fake.tac = True
    fake.tac_status = "ACTIVE"
    token = fake.issue_access_token(["okta.users.read", "okta.users.manage"])
    scoped = OktaClient(fake.url, _BearerAuth(token))
    try:
        assert await scoped.tac_authenticator_id() is None
    finally:
        await scoped.aclose()


async def test_client_revoke_sessions_sends_oauth_tokens(client: OktaClient, fake: FakeOkta) -> None:
    """revoke_sessions sends oauthTokens=true by default (false on request)."""
    await client.revoke_sessions(ALICE)
    await client.revoke_sessions(BOB, oauth_tokens=False)
    assert fake.revoked_sessions == [(ALICE, True), (BOB, False)]
    assert fake.calls_to("DELETE", f"/api/v1/users/{ALICE}/sessions")[0].query == {"oauthTokens": "true"}


async def test_client_sees_a_denied_push_in_the_log(client: OktaClient, fake: FakeOkta, clock: ManualClock) -> None:
    """After the user rejects a push, `actor.id eq` the user finds the deny_push event."""
    fake.push_outcome[ALICE] = PushOutcome("REJECTED", after_polls=0)
    started = await client.verify_push(ALICE, ALICE_PUSH)
    assert (await client.poll_push(started.poll_url)).result == "REJECTED"
    since = datetime.fromtimestamp(clock() - 60, UTC)
    found = await client.list_logs(f'actor.id eq "{ALICE}" and eventType eq "user.mfa.okta_verify.deny_push"', since)
    assert len(found) == 1
    assert fake.factor(ALICE, ALICE_TOTP) is not None  # nothing else changed


class _BearerAuth(SswsAuth):
    """A fixed Bearer token (a service app's token minted by the fake with chosen scopes)."""

    async def headers(self, http: httpx.AsyncClient, method: str, url: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}
