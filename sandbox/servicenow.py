"""A faithful local ServiceNow Table API: find a task record by number, append a work note.

Routes, status codes and JSON copy the Table API (``/api/now/table/{table}``): Basic or Bearer auth,
``{"result": …}`` answers with ``X-Total-Count`` on lists, and ServiceNow's error body
``{"error": {"message", "detail"}, "status": "failure"}`` for every refusal. Query parts naming an
unknown field are silently dropped, as ServiceNow does (so such a query matches every record).
``sysparm_display_value`` ``false``/``true``/``all`` and ``sysparm_fields`` shape the records.
A PATCH (or PUT) with ``work_notes`` appends an entry to the record's journal.

    fake = FakeServiceNow(user="helpdesk.integration", password="pw")
    url = await fake.start()                    # SERVICENOW_URL (start(ssl_context=…) for https)
    sys_id = fake.add_record("INC0010001")      # its table from the prefix: incident
    fake.rate_limit_next(retry_after=2)         # next request: 429 with Retry-After, X-RateLimit-*
    fake.fail_next(status=503, n=2)             # then two 503s
    fake.deny_writes("sc_request")              # ACL: a PATCH there is a 403
    fake.answer_late_next(3.0)                  # the next write is applied, its answer comes 3 s later
    fake.legacy_empty_404 = True                # no match → 404, as releases before Helsinki
    ...
    assert fake.work_notes("INC0010001") == ["Caller verified by …"]
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from sandbox.base import FakeService, json_response

TABLES = {"INC": "incident", "REQ": "sc_request", "RITM": "sc_req_item"}
RATE_LIMIT_RULE = "Helpdesk integration limit"
RATE_LIMIT = 1000  # requests per hour of the rule above, as an admin would set it


@dataclass(frozen=True)
class JournalEntry:
    table: str
    sys_id: str
    number: str
    element: str  # "work_notes"
    value: str
    created_by: str
    created_on: str


def sn_error(
    status: int, message: str, detail: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    """ServiceNow's error body."""
    body = {"error": {"message": message, "detail": detail}, "status": "failure"}
    return json_response(body, status=status, headers=headers)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


class FakeServiceNow(FakeService):
    """The Table API of one instance, for the task tables the help desk writes to."""

    def __init__(self, user: str = "helpdesk.integration", password: str | None = None, token: str | None = None):
        super().__init__()
        self.user = user
        self.password = password or secrets.token_urlsafe(16)
        self.token = token or secrets.token_urlsafe(32)  # as from POST /oauth_token.do
        self.records: dict[str, dict[str, dict[str, Any]]] = {table: {} for table in TABLES.values()}
        self.journal: list[JournalEntry] = []
        self.denied_writes: set[str] = set()
        self.legacy_empty_404 = False
        self.rate_limit_rule: str | None = None  # set: every answer carries X-RateLimit-* of that rule
        self._failures: deque[tuple[int, float | None]] = deque()
        self._late_answers: deque[float] = deque()
        self.app.router.add_get("/api/now/table/{table}", self._list)
        self.app.router.add_get("/api/now/table/{table}/{sys_id}", self._get)
        self.app.router.add_patch("/api/now/table/{table}/{sys_id}", self._update)
        self.app.router.add_put("/api/now/table/{table}/{sys_id}", self._update)

    # Data and scenario switches ----------------------------------------------------------------

    def add_record(self, number: str, short_description: str = "Caller needs a password reset") -> str:
        """A record in the table its number's prefix names; returns its sys_id."""
        table = next(t for p, t in sorted(TABLES.items(), key=lambda i: -len(i[0])) if number.startswith(p))
        sys_id = secrets.token_hex(16)
        now = _now()
        self.records[table][sys_id] = {
            "sys_id": sys_id,
            "number": number,
            "short_description": short_description,
            "state": "2",
            "sys_class_name": table,
            "work_notes": "",
            "sys_created_on": now,
            "sys_updated_on": now,
            "sys_updated_by": "admin",
            "sys_mod_count": "0",
        }
        return sys_id

    def work_notes(self, number: str) -> list[str]:
        """The work notes written on the record ``number``, oldest first."""
        return [e.value for e in self.journal if e.number == number and e.element == "work_notes"]

    def rate_limit_next(self, retry_after: float = 2.0, n: int = 1) -> None:
        """Answer the next ``n`` requests 429, as a rate-limit rule over its hourly count does."""
        for _ in range(n):
            self._failures.append((429, retry_after))

    def fail_next(self, status: int = 503, n: int = 1, retry_after: float | None = None) -> None:
        """Answer the next ``n`` requests with ``status`` (a 5xx from a node, a proxy)."""
        for _ in range(n):
            self._failures.append((status, retry_after))

    def answer_late_next(self, seconds: float) -> None:
        """Apply the next write, then hold its answer ``seconds`` (a slow node): a client that gives up
        sooner cannot tell that the note landed."""
        self._late_answers.append(seconds)

    def deny_writes(self, table: str) -> None:
        """An ACL refuses updates on ``table`` to the integration user (403)."""
        self.denied_writes.add(table)

    # Plumbing ----------------------------------------------------------------------------------

    def _rate_headers(self) -> dict[str, str]:
        if self.rate_limit_rule is None:
            return {}
        reset = int(time.time() // 3600 + 1) * 3600
        return {
            "X-RateLimit-Limit": str(RATE_LIMIT),
            "X-RateLimit-Reset": str(reset),
            "X-RateLimit-Rule": self.rate_limit_rule,
        }

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return hmac.compare_digest(value.strip().encode(), self.token.encode())
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user.encode(), self.user.encode()) and hmac.compare_digest(
            password.encode(), self.password.encode()
        )

    def _refusal(self, request: web.Request) -> web.Response | None:
        """What answers before the route: a queued failure, the credentials, ``Accept``, the table."""
        if self._failures:
            status, retry_after = self._failures.popleft()
            if status == 429:
                headers = {
                    "Retry-After": str(int(retry_after if retry_after is not None else 2)),
                    "X-RateLimit-Limit": str(RATE_LIMIT),
                    "X-RateLimit-Reset": str(int(time.time() + (retry_after or 2))),
                    "X-RateLimit-Rule": self.rate_limit_rule or RATE_LIMIT_RULE,
                }
                return sn_error(429, "Too many requests", "Rate limit exceeded for this rule", headers)
            plain = {"Retry-After": str(int(retry_after))} if retry_after is not None else None
            return sn_error(status, "Service Unavailable" if status == 503 else "Internal server error", None, plain)
        if not self._authorized(request):
            return sn_error(
                401,
                "User Not Authenticated",
                "Required to provide Auth information",
                {"WWW-Authenticate": 'BASIC realm="Service-now"'},
            )
        accept = request.headers.get("Accept", "*/*")
        if "json" not in accept and "*/*" not in accept:
            return sn_error(406, "Requested response format not supported", f"Accept: {accept[:60]}")
        if request.match_info["table"] not in self.records:
            return sn_error(400, f"Invalid table {request.match_info['table']}", None)
        return None

    def _shape(self, record: dict[str, Any], request: web.Request) -> dict[str, Any]:
        fields = [f for f in request.query.get("sysparm_fields", "").split(",") if f]
        mode = request.query.get("sysparm_display_value", "false").lower()
        out: dict[str, Any] = {}
        for name, value in record.items():
            if fields and name not in fields:
                continue
            display = self._journal_text(record) if name == "work_notes" else value
            if mode == "all":
                out[name] = {"display_value": display, "value": value}
            elif mode == "true":
                out[name] = display
            else:
                out[name] = value
        return out

    def _journal_text(self, record: dict[str, Any]) -> str:
        entries = [e for e in reversed(self.journal) if e.sys_id == record["sys_id"]]
        return "".join(f"{e.created_on} - {e.created_by} (Work notes)\n{e.value}\n\n" for e in entries)

    # Routes ------------------------------------------------------------------------------------

    async def _list(self, request: web.Request) -> web.Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        records = list(self.records[request.match_info["table"]].values())
        order: str | None = None
        for part in request.query.get("sysparm_query", "").split("^"):
            if part.startswith("ORDERBY"):
                order = part.removeprefix("ORDERBYDESC").removeprefix("ORDERBY")
                continue
            name, sep, value = part.partition("=")
            if not sep or not records or name not in records[0]:
                continue  # ServiceNow drops what it does not understand, silently
            records = [r for r in records if str(r.get(name)) == value]
        if order and records and order in records[0]:
            records.sort(key=lambda r: str(r.get(order)))
        total = len(records)
        if total == 0 and self.legacy_empty_404:
            return sn_error(404, "No Record found", "Records matching query not found. Check query parameter or offset")
        offset = int(request.query.get("sysparm_offset", "0") or 0)
        limit = int(request.query.get("sysparm_limit", "10000") or 10000)
        page = records[offset : offset + limit]
        headers = {"X-Total-Count": str(total), **self._rate_headers()}
        return json_response({"result": [self._shape(r, request) for r in page]}, headers=headers)

    async def _get(self, request: web.Request) -> web.Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        record = self.records[request.match_info["table"]].get(request.match_info["sys_id"])
        if record is None:
            return sn_error(404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval")
        return json_response({"result": self._shape(record, request)}, headers=self._rate_headers())

    async def _update(self, request: web.Request) -> web.Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        table = request.match_info["table"]
        record = self.records[table].get(request.match_info["sys_id"])
        if record is None:
            return sn_error(404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval")
        if "json" not in request.headers.get("Content-Type", ""):
            return sn_error(415, "Unsupported Media Type", "Content-Type must be application/json")
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return sn_error(400, "Exception while reading request", "The payload is not valid JSON.")
        if not isinstance(body, dict):
            return sn_error(400, "Exception while reading request", "The payload is not a JSON object.")
        if table in self.denied_writes:
            return sn_error(403, "Operation Failed", "ACL Exception Update Failed due to security constraints")
        user = self.user if request.headers.get("Authorization", "").lower().startswith("basic") else "oauth.client"
        for name, value in body.items():
            if name == "work_notes":
                if value:
                    self.journal.append(
                        JournalEntry(table, record["sys_id"], record["number"], name, str(value), user, _now())
                    )
            elif name in record and name not in ("sys_id", "number"):
                record[name] = str(value)
        record["sys_updated_on"] = _now()
        record["sys_updated_by"] = user
        record["sys_mod_count"] = str(int(record["sys_mod_count"]) + 1)
        if self._late_answers:
            await asyncio.sleep(self._late_answers.popleft())
        return json_response({"result": self._shape(record, request)}, headers=self._rate_headers())
