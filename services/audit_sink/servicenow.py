"""`ServiceNowClient`: a work note on an incident, request or requested item, through the Table API.

    async with ServiceNowClient.from_settings(settings) as snow:
        record = await snow.add_work_note("INC0010001", "Caller verified by agent@example.com …")

A number names its table by its prefix (``INC`` → ``incident``, ``REQ`` → ``sc_request``, ``RITM`` →
``sc_req_item``); the record is found with ``sysparm_query=number=…`` and then patched by ``sys_id``
with ``{"work_notes": …}``, which ServiceNow appends to the record's journal. An unknown field in a
query is silently dropped by ServiceNow (the query would then match every record), so the number of
the record found is checked. No match is ``200 {"result": []}``, or a 404 on older releases: both
are :class:`ServiceNowNotFound`.

Auth is Basic (``SERVICENOW_USER`` + ``SERVICENOW_PASSWORD``) or a bearer token (``SERVICENOW_TOKEN``).

Errors — httpx failures and ServiceNow's ``{"error": {"message", "detail"}, "status": "failure"}``
become these in :meth:`ServiceNowClient._raise_for`; no text holds a credential::

    ServiceNowError (errors.DeliveryError)
    ├── ServiceNowUnavailable       timeout, connection failure, 5xx, 429 (.retry_after)   TemporaryFailure
    └── ServiceNowRejected          any other 4xx (.status, .reason)                       PermanentFailure
        ├── ServiceNowAuthFailed    401 (credentials), 403 (ACL, business rule, data policy)
        └── ServiceNowNotFound      no record with that number (or hidden by an ACL)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
import orjson

from services.audit_sink.errors import DeliveryError, PermanentFailure, TemporaryFailure, reason_for, retry_after
from shared.settings import MissingSetting, Settings

SYSTEM = "servicenow"
TABLES = {"INC": "incident", "REQ": "sc_request", "RITM": "sc_req_item"}
NUMBER = re.compile(r"^(INC|REQ|RITM)\d{7,}$")
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
USER_AGENT = "helpdesk-verify-audit-sink"


class ServiceNowError(DeliveryError):
    """Base of the ServiceNow client's errors."""


class ServiceNowUnavailable(ServiceNowError, TemporaryFailure):
    """Raised for a timeout, a connection failure, a 5xx or a 429 (``retry_after`` from its headers)."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None) -> None:
        TemporaryFailure.__init__(self, SYSTEM, message, retry_after, status)


class ServiceNowRejected(ServiceNowError, PermanentFailure):
    """Raised for a 4xx answer that trying again cannot fix (a 400, a 405…)."""

    def __init__(self, message: str, status: int | None, reason: str | None = None) -> None:
        PermanentFailure.__init__(self, SYSTEM, message, status, reason or reason_for(status or 0))


class ServiceNowAuthFailed(ServiceNowRejected):
    """Raised for 401 (the credentials) and 403 (an ACL, a business rule or a data policy refused)."""


class ServiceNowNotFound(ServiceNowRejected):
    """Raised when no record has the number (or an ACL hides it)."""


def table_for(number: str) -> str:
    """The table a ServiceNow number lives in; ``ValueError`` for anything else."""
    found = NUMBER.match(number)
    if found is None:
        raise ValueError(f"not a ServiceNow INC/REQ/RITM number: {number[:40]!r}")
    return TABLES[found.group(1)]


@dataclass(frozen=True)
class RecordRef:
    table: str
    sys_id: str
    number: str


class ServiceNowClient:
    """One ``httpx.AsyncClient`` on ``{SERVICENOW_URL}/api/now/table/…``."""

    def __init__(
        self,
        base_url: str,
        *,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        auth: httpx.Auth | None = None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif user and password is not None:
            auth = httpx.BasicAuth(user, password)
        else:
            raise MissingSetting("SERVICENOW_USER + SERVICENOW_PASSWORD", "SERVICENOW_TOKEN")
        self.base_url = base_url.rstrip("/")
        self.http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, auth=auth, timeout=TIMEOUT, transport=transport
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> ServiceNowClient:
        settings.require("SERVICENOW_URL")
        assert settings.servicenow_url is not None
        token = settings.servicenow_token.get_secret_value() if settings.servicenow_token else None
        password = settings.servicenow_password.get_secret_value() if settings.servicenow_password else None
        return cls(settings.servicenow_url, user=settings.servicenow_user, password=password, token=token)

    async def close(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> ServiceNowClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def find(self, number: str) -> RecordRef:
        """The record with ``number`` in its table; :class:`ServiceNowNotFound` if there is none."""
        table = table_for(number)
        params = {
            "sysparm_query": f"number={number}",
            "sysparm_limit": "1",
            "sysparm_fields": "sys_id,number",
            "sysparm_exclude_reference_link": "true",
        }
        body = await self._call("GET", f"/api/now/table/{table}", params=params)
        results = body.get("result")
        if not isinstance(results, list) or not results:
            raise ServiceNowNotFound(f"no {table} record {number}", 404, "not_found")
        first = results[0] if isinstance(results[0], dict) else {}
        # A query ServiceNow did not understand is dropped and matches everything: check the number.
        if _plain(first.get("number")) != number or not _plain(first.get("sys_id")):
            raise ServiceNowNotFound(f"no {table} record {number}", 404, "not_found")
        return RecordRef(table=table, sys_id=_plain(first["sys_id"]), number=number)

    async def add_work_note(self, number: str, text: str) -> RecordRef:
        """Append ``text`` to the work notes of the record ``number``."""
        record = await self.find(number)
        await self._call("PATCH", f"/api/now/table/{record.table}/{record.sys_id}", json={"work_notes": text})
        return record

    async def has_work_note(self, number: str, text: str) -> bool:
        """Whether the work notes of the record ``number`` already hold ``text`` (a note written by an
        attempt whose answer never came back). The journal is read as ServiceNow shows it: the field's
        display value, every entry with its header."""
        record = await self.find(number)
        params = {"sysparm_fields": "work_notes", "sysparm_display_value": "true"}
        body = await self._call("GET", f"/api/now/table/{record.table}/{record.sys_id}", params=params)
        result = body.get("result")
        journal = result.get("work_notes") if isinstance(result, dict) else None
        return isinstance(journal, str) and text.strip() in journal

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            resp = await self.http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ServiceNowUnavailable(f"{method} {path}: timed out") from None
        except httpx.HTTPError as exc:
            raise ServiceNowUnavailable(f"{method} {path}: {type(exc).__name__}") from None
        if resp.status_code >= 400:
            raise self._raise_for(resp, f"{method} {path}")
        try:
            body = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            raise ServiceNowUnavailable(f"{method} {path}: answer is not JSON", status=resp.status_code) from None
        return body if isinstance(body, dict) else {}

    @staticmethod
    def _raise_for(resp: httpx.Response, what: str) -> ServiceNowError:
        status = resp.status_code
        detail = _error_text(resp)
        message = f"{what}: HTTP {status}" + (f" ({detail})" if detail else "")
        if status == 429 or status >= 500 or status == 408:
            return ServiceNowUnavailable(message, retry_after(resp.headers), status)
        if status in (401, 403):
            return ServiceNowAuthFailed(message, status)
        if status == 404:
            return ServiceNowNotFound(message, status, "not_found")
        return ServiceNowRejected(message, status)


def _plain(value: Any) -> str:
    """A field's value whether it came plain or as ``{"value", "display_value"}`` (display_value=all)."""
    if isinstance(value, dict):
        value = value.get("value")
    return value if isinstance(value, str) else ""


def _error_text(resp: httpx.Response) -> str:
    """ServiceNow's ``error.message`` (and ``detail``), clipped; never the request."""
    try:
        body = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return ""
    parts = [str(error.get(k)) for k in ("message", "detail") if error.get(k)]
    return ": ".join(parts)[:200]
