"""A faithful local Jira Cloud: comments on issues, REST API v3 (ADF bodies) and v2 (plain text).

Routes, status codes and JSON copy Jira Cloud's platform REST API: Basic auth ``email:API token``,
``POST /rest/api/3/issue/{issueIdOrKey}/comment`` answering 201 with the comment, and Jira's error
body ``{"errorMessages": [...], "errors": {...}}`` for 400, 401 and 404. An anonymous call is
allowed and sees no issue (404), as on a site whose projects are not public. A 429 carries
``Retry-After``, ``X-RateLimit-*`` and ``RateLimit-Reason``.

    fake = FakeJira(email="helpdesk-bot@example.com", api_token="tok", issues=["HELP-1"])
    url = await fake.start()                    # JIRA_URL
    fake.rate_limit_next(retry_after=1)         # next request: 429 (jira-per-issue-on-write)
    fake.fail_next(status=503, retry_after=1)   # then a 503 with Retry-After
    fake.answer_late_next(3.0)                  # the next comment is added, its answer comes 3 s later
    ...
    assert fake.comment_texts("HELP-1") == ["Caller verified by …"]
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import secrets
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from sandbox.base import FakeService, json_response

ACCOUNT_ID = "5b10ac8d82e05b22cc7d4ef5"
NOT_FOUND = "Issue does not exist or you do not have permission to see it."
NOT_AUTHENTICATED = "You are not authenticated. Authentication required to perform this operation."


def jira_error(
    status: int,
    messages: list[str] | None = None,
    errors: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """Jira's error body."""
    body = {"errorMessages": messages or [], "errors": errors or {}}
    return json_response(body, status=status, headers=headers or None)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def adf_text(node: Any) -> str:
    """The plain text of an ADF node: paragraphs on their own lines."""
    if not isinstance(node, dict):
        return ""
    if node.get("type") == "text":
        return str(node.get("text", ""))
    parts = [adf_text(child) for child in node.get("content") or []]
    joiner = "\n" if node.get("type") == "doc" else ""
    return joiner.join(parts)


def adf_problem(body: Any) -> str | None:
    """Why ``body`` is not an ADF document Jira accepts, or None."""
    if not isinstance(body, dict) or body.get("type") != "doc" or body.get("version") != 1:
        return "Comment body is not a valid ADF document (type doc, version 1)."
    content = body.get("content")
    if not isinstance(content, list):
        return "Comment body is not a valid ADF document (content must be a list)."
    stack = list(content)
    while stack:
        node = stack.pop()
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            return "Comment body is not a valid ADF document (every node needs a type)."
        if node["type"] == "text" and not isinstance(node.get("text"), str):
            return "Comment body is not a valid ADF document (a text node needs text)."
        stack.extend(node.get("content") or [])
    if not adf_text(body).strip():
        return "Comment body can not be empty!"
    return None


class FakeJira(FakeService):
    """One Jira Cloud site with a few issues and one API user."""

    def __init__(
        self,
        email: str = "helpdesk-bot@example.com",
        api_token: str | None = None,
        issues: list[str] | tuple[str, ...] = ("HELP-1", "HELP-2", "IT2-10"),
    ) -> None:
        super().__init__()
        self.email = email
        self.api_token = api_token or secrets.token_urlsafe(24)
        self.issues: dict[str, str] = {key: str(10000 + i) for i, key in enumerate(issues)}  # key → id
        self.comments: dict[str, list[dict[str, Any]]] = {key: [] for key in issues}
        self._failures: deque[tuple[int, float | None]] = deque()
        self._late_answers: deque[float] = deque()
        self._next_id = 10000
        for version in ("2", "3"):
            self.app.router.add_get(f"/rest/api/{version}/serverInfo", self._server_info)
            self.app.router.add_post(f"/rest/api/{version}/issue/{{key}}/comment", self._add_comment)
            self.app.router.add_get(f"/rest/api/{version}/issue/{{key}}/comment", self._list_comments)

    # Data and scenario switches ----------------------------------------------------------------

    def add_issue(self, key: str) -> None:
        self.issues[key] = str(10000 + len(self.issues))
        self.comments[key] = []

    def comment_texts(self, key: str) -> list[str]:
        """The comments on ``key`` as plain text, oldest first."""
        return [c["text"] for c in self.comments.get(key, [])]

    def rate_limit_next(self, retry_after: float = 1.0, n: int = 1) -> None:
        for _ in range(n):
            self._failures.append((429, retry_after))

    def fail_next(self, status: int = 503, n: int = 1, retry_after: float | None = None) -> None:
        for _ in range(n):
            self._failures.append((status, retry_after))

    def answer_late_next(self, seconds: float) -> None:
        """Add the next comment, then hold its answer ``seconds``: a client that gives up sooner cannot
        tell that it landed."""
        self._late_answers.append(seconds)

    # Plumbing ----------------------------------------------------------------------------------

    def _caller(self, request: web.Request) -> str | web.Response | None:
        """The account calling: the API user, None for an anonymous call, or a 401 answer."""
        header = request.headers.get("Authorization")
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                email, _, token = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                email, token = "", ""
            if hmac.compare_digest(email.encode(), self.email.encode()) and hmac.compare_digest(
                token.encode(), self.api_token.encode()
            ):
                return ACCOUNT_ID
        return jira_error(401, [NOT_AUTHENTICATED], headers={"WWW-Authenticate": 'Basic realm="protected-area"'})

    def _failure(self) -> web.Response | None:
        if not self._failures:
            return None
        status, retry_after = self._failures.popleft()
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["Retry-After"] = str(int(retry_after))
        if status == 429:
            reset = datetime.now(UTC) + timedelta(seconds=retry_after or 1)
            headers.update(
                {
                    "X-RateLimit-Limit": "10",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": reset.strftime("%Y-%m-%dT%H:%MZ"),
                    "RateLimit-Reason": "jira-per-issue-on-write",
                }
            )
            return jira_error(429, ["Rate limit exceeded."], headers=headers)
        return jira_error(status, ["Service unavailable. Please try again later."], headers=headers)

    def _author(self) -> dict[str, Any]:
        return {
            "self": f"{self.url}/rest/api/3/user?accountId={ACCOUNT_ID}",
            "accountId": ACCOUNT_ID,
            "emailAddress": self.email,
            "displayName": "Helpdesk Verify",
            "active": True,
            "timeZone": "Etc/UTC",
            "accountType": "atlassian",
        }

    # Routes ------------------------------------------------------------------------------------

    async def _server_info(self, request: web.Request) -> web.Response:
        now = datetime.now(UTC)
        return json_response(
            {
                "baseUrl": self.url,
                "version": "1001.0.0-SNAPSHOT",
                "versionNumbers": [1001, 0, 0],
                "deploymentType": "Cloud",
                "buildNumber": 100287,
                "buildDate": "2025-06-01T00:00:00.000+0000",
                "serverTime": _stamp(now),
                "scmInfo": "0" * 40,
                "serverTitle": "Jira",
            }
        )

    async def _add_comment(self, request: web.Request) -> web.Response:
        if (failed := self._failure()) is not None:
            return failed
        caller = self._caller(request)
        if isinstance(caller, web.Response):
            return caller
        key = request.match_info["key"]
        if caller is None or key not in self.issues:
            return jira_error(404, [NOT_FOUND])
        try:
            payload = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return jira_error(400, ["Unexpected character: the request body is not valid JSON."])
        if not isinstance(payload, dict) or "body" not in payload:
            return jira_error(400, errors={"comment": "Comment body can not be empty!"})
        v3 = "/api/3/" in request.path
        body = payload["body"]
        if v3:
            problem = adf_problem(body)
            if problem is not None:
                return jira_error(400, errors={"comment": problem})
            text = adf_text(body)
        else:
            if not isinstance(body, str) or not body.strip():
                return jira_error(400, errors={"comment": "Comment body can not be empty!"})
            text = body
        self._next_id += 1
        comment_id = str(self._next_id)
        now = _stamp(datetime.now(UTC))
        comment = {
            "self": f"{self.url}/rest/api/{'3' if v3 else '2'}/issue/{self.issues[key]}/comment/{comment_id}",
            "id": comment_id,
            "author": self._author(),
            "body": body,
            "updateAuthor": self._author(),
            "created": now,
            "updated": now,
            "jsdPublic": True,
        }
        if isinstance(payload.get("visibility"), dict):
            comment["visibility"] = payload["visibility"]
        self.comments[key].append({**comment, "text": text})
        if self._late_answers:
            await asyncio.sleep(self._late_answers.popleft())
        return json_response(comment, status=201)

    async def _list_comments(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        if isinstance(caller, web.Response):
            return caller
        key = request.match_info["key"]
        if caller is None or key not in self.issues:
            return jira_error(404, [NOT_FOUND])
        shown = [{k: v for k, v in c.items() if k != "text"} for c in self.comments[key]]
        if request.query.get("orderBy", "created").startswith("-"):
            shown.reverse()
        try:
            limit = max(0, min(5000, int(request.query.get("maxResults", "5000"))))
            start = max(0, int(request.query.get("startAt", "0")))
        except ValueError:
            return jira_error(400, ["The value for a paging parameter is not a number."])
        page = shown[start : start + limit]
        return json_response({"startAt": start, "maxResults": limit, "total": len(shown), "comments": page})
