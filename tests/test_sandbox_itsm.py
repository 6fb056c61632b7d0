"""The ServiceNow and Jira fakes, checked with the official Python clients and the documented shapes.

``pysnc`` (ServiceNow's own client) talks https only: the fake serves TLS with a throwaway
self-signed certificate, trusted through ``REQUESTS_CA_BUNDLE``. ``jira`` (v2, plain-text comments)
and ``atlassian-python-api``'s ``JiraCloud`` (v3, ADF) are pointed at the Jira fake. The clients are
synchronous: they run in a thread while the fake answers on the event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sandbox.jira import FakeJira
from sandbox.servicenow import FakeServiceNow
from services.audit_sink.jira import adf

PASSWORD = "sn-password-for-the-fake"
JIRA_EMAIL = "helpdesk-bot@example.com"
JIRA_TOKEN = "jira-api-token-for-the-fake"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 / localhost and its key, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "fake.crt", directory / "fake.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
async def snow_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeServiceNow]:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    fake = FakeServiceNow(user="helpdesk.integration", password=PASSWORD)
    fake.add_record("INC0010001")
    fake.add_record("RITM0010003")
    await fake.start(ssl_context=context)
    yield fake
    await fake.stop()


@pytest.fixture
async def jira() -> AsyncIterator[FakeJira]:
    fake = FakeJira(email=JIRA_EMAIL, api_token=JIRA_TOKEN, issues=["HELP-1"])
    await fake.start()
    yield fake
    await fake.stop()


# ------------------------------------------------------------------------------------------- ServiceNow


async def test_pysnc_finds_a_record_by_number_and_appends_a_work_note(snow_tls: FakeServiceNow) -> None:
    """pysnc's query (display_value=all, ORDERBY, X-Total-Count) and update (PATCH of the changed field)."""
    from pysnc import ServiceNowClient

    def note() -> tuple[str, int]:
        client = ServiceNowClient(snow_tls.url, ("helpdesk.integration", PASSWORD))
        gr = client.GlideRecord("sc_req_item")
        gr.add_query("number", "RITM0010003")
        gr.query()
        assert gr.next()
        number = gr.get_value("number")
        gr.work_notes = "Caller verified by agent@example.com"
        gr.update()
        return number, len(gr)

    number, count = await asyncio.to_thread(note)
    assert (number, count) == ("RITM0010003", 1)
    assert snow_tls.work_notes("RITM0010003") == ["Caller verified by agent@example.com"]
    query = snow_tls.calls_to("GET", "/api/now/table/sc_req_item")[0].query
    assert query["sysparm_display_value"] == "all" and query["sysparm_query"].startswith("number=RITM0010003")
    patch = next(c for c in snow_tls.calls if c.method == "PATCH")
    assert patch.json == {"work_notes": "Caller verified by agent@example.com"}


async def test_pysnc_maps_the_fakes_refusals_to_its_exceptions(snow_tls: FakeServiceNow) -> None:
    """401 → AuthenticationException, 403 (ACL) → RoleException, an unknown sys_id → get() is False,
    a 429 with Retry-After is retried by pysnc's own retry and then answered."""
    from pysnc import ServiceNowClient
    from pysnc.exceptions import AuthenticationException, RoleException

    def run() -> None:
        bad = ServiceNowClient(snow_tls.url, ("helpdesk.integration", "wrong"), auto_retry=False)
        with pytest.raises(AuthenticationException):
            bad.GlideRecord("incident").query()
        client = ServiceNowClient(snow_tls.url, ("helpdesk.integration", PASSWORD))
        assert client.GlideRecord("incident").get("0" * 32) is False
        snow_tls.rate_limit_next(retry_after=1)
        gr = client.GlideRecord("incident")
        assert gr.get("number", "INC0010001")
        snow_tls.deny_writes("incident")
        gr.work_notes = "refused"
        with pytest.raises(RoleException):
            gr.update()

    await asyncio.to_thread(run)
    assert snow_tls.work_notes("INC0010001") == []


async def test_table_api_documented_shapes(snow_tls: FakeServiceNow) -> None:
    """Empty result is 200 {"result": []} (404 on legacy releases); an unknown field in the query is
    dropped (matching everything); errors carry {"error": {"message", "detail"}, "status": "failure"};
    a 429 carries Retry-After and X-RateLimit-*."""
    verify = ssl.create_default_context(cafile=os.environ["REQUESTS_CA_BUNDLE"])
    auth = ("helpdesk.integration", PASSWORD)
    async with httpx.AsyncClient(base_url=snow_tls.url, auth=auth, verify=verify) as http:
        empty = await http.get("/api/now/table/incident", params={"sysparm_query": "number=INC0000000"})
        assert empty.status_code == 200 and empty.json() == {"result": []} and empty.headers["X-Total-Count"] == "0"
        loose = await http.get("/api/now/table/incident", params={"sysparm_query": "numbr=INC0000000"})
        assert len(loose.json()["result"]) == 1  # the misspelt field was dropped
        snow_tls.legacy_empty_404 = True
        legacy = await http.get("/api/now/table/incident", params={"sysparm_query": "number=INC0000000"})
        assert legacy.status_code == 404 and legacy.json()["status"] == "failure"
        snow_tls.rate_limit_next(retry_after=3)
        limited = await http.get("/api/now/table/incident")
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
        assert all(h in limited.headers for h in ("X-RateLimit-Limit", "X-RateLimit-Reset", "X-RateLimit-Rule"))
        anonymous = await http.get("/api/now/table/incident", auth=None)
        assert anonymous.status_code == 401
        assert set(anonymous.json()) == {"error", "status"} and set(anonymous.json()["error"]) == {"message", "detail"}
        bearer = await http.get(
            "/api/now/table/incident", auth=None, headers={"Authorization": f"Bearer {snow_tls.token}"}
        )
        assert bearer.status_code == 200


# ------------------------------------------------------------------------------------------------- Jira


async def test_jira_library_adds_a_v2_comment_and_raises_on_404(jira: FakeJira) -> None:
    """The ``jira`` client reads serverInfo when built, comments through v2, and sees a 404 as JIRAError."""
    from jira import JIRA, JIRAError

    def run() -> tuple[str, int]:
        client = JIRA(server=jira.url, basic_auth=(JIRA_EMAIL, JIRA_TOKEN), max_retries=0)
        comment = client.add_comment("HELP-1", "Caller verified by agent@example.com")
        with pytest.raises(JIRAError) as missing:
            client.add_comment("HELP-999", "nobody sees this")
        return comment.id, missing.value.status_code

    comment_id, status = await asyncio.to_thread(run)
    assert comment_id and status == 404
    assert jira.comment_texts("HELP-1") == ["Caller verified by agent@example.com"]
    assert jira.calls_to("GET", "/rest/api/2/serverInfo")


async def test_atlassian_jira_cloud_adds_a_v3_adf_comment(jira: FakeJira) -> None:
    """atlassian-python-api's JiraCloud posts an ADF body to v3 and gets the 201 comment back."""
    from atlassian.jira import JiraCloud
    from requests import HTTPError

    def run() -> dict[str, object]:
        client = JiraCloud(jira.url, username=JIRA_EMAIL, password=JIRA_TOKEN)
        created = client.add_comment("HELP-1", data={"body": adf("Caller verified\nactions: unlocked")})
        with pytest.raises(HTTPError):
            JiraCloud(jira.url, username=JIRA_EMAIL, password="wrong").add_comment(
                "HELP-1", data={"body": adf("refused")}
            )
        return dict(created)

    created = await asyncio.to_thread(run)
    assert created["body"]["type"] == "doc"  # type: ignore[index]
    assert {"id", "self", "author", "created", "updated"} <= set(created)
    assert jira.comment_texts("HELP-1") == ["Caller verified\nactions: unlocked"]


async def test_jira_documented_error_bodies(jira: FakeJira) -> None:
    """400 (not ADF), 401 (bad token), 404 (no issue; anonymous sees none) carry {"errorMessages", "errors"};
    a 429 carries Retry-After, X-RateLimit-* and RateLimit-Reason."""
    auth = (JIRA_EMAIL, JIRA_TOKEN)
    url = "/rest/api/3/issue/HELP-1/comment"
    async with httpx.AsyncClient(base_url=jira.url) as http:
        plain = await http.post(url, auth=auth, json={"body": "not adf"})
        assert plain.status_code == 400 and set(plain.json()) == {"errorMessages", "errors"}
        assert "comment" in plain.json()["errors"]
        wrong = await http.post(url, auth=(JIRA_EMAIL, "wrong"), json={"body": adf("x")})
        assert wrong.status_code == 401 and wrong.json()["errorMessages"]
        anonymous = await http.post(url, json={"body": adf("x")})
        assert anonymous.status_code == 404
        missing = await http.post("/rest/api/3/issue/HELP-404/comment", auth=auth, json={"body": adf("x")})
        assert missing.status_code == 404 and missing.json()["errors"] == {}
        assert "does not exist" in missing.json()["errorMessages"][0]
        jira.rate_limit_next(retry_after=5)
        limited = await http.post(url, auth=auth, json={"body": adf("x")})
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "5"
        assert limited.headers["RateLimit-Reason"] and limited.headers["X-RateLimit-Reset"]
