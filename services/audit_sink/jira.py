"""`JiraClient`: a comment on a Jira Cloud issue, through REST API v3 with an ADF body.

    async with JiraClient.from_settings(settings) as jira:
        comment_id = await jira.add_comment("HELP-42", "Caller verified by agent@example.com …")

``POST {JIRA_URL}/rest/api/3/issue/{key}/comment`` with ``{"body": <ADF doc>}`` answers 201 with the
comment. Auth is Basic ``JIRA_EMAIL:JIRA_API_TOKEN`` (an Atlassian API token). Jira allows anonymous
calls, so a missing or unlicensed account can see a 404 rather than a 401.

Errors — httpx failures and Jira's ``{"errorMessages": [...], "errors": {...}}`` become these in
:meth:`JiraClient._raise_for`; no text holds a credential::

    JiraError (errors.DeliveryError)
    ├── JiraUnavailable         timeout, connection failure, 5xx, 429 (.retry_after)   TemporaryFailure
    └── JiraRejected            400, 413 and other 4xx (.status, .reason)              PermanentFailure
        ├── JiraAuthFailed      401 (credentials), 403 (no permission to comment)
        └── JiraNotFound        404: no such issue, or not visible to the account
"""

from __future__ import annotations

import re
from types import TracebackType
from typing import Any

import httpx
import orjson

from services.audit_sink.errors import DeliveryError, PermanentFailure, TemporaryFailure, reason_for, retry_after
from shared.settings import Settings

SYSTEM = "jira"
ISSUE_KEY = re.compile(r"^[A-Z][A-Z0-9]+-\d+$")
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
RECENT_COMMENTS = 100  # comments read back to find one written by an attempt that timed out
USER_AGENT = "helpdesk-verify-audit-sink"


class JiraError(DeliveryError):
    """Base of the Jira client's errors."""


class JiraUnavailable(JiraError, TemporaryFailure):
    """Raised for a timeout, a connection failure, a 5xx or a 429 (``retry_after`` from its headers)."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None) -> None:
        TemporaryFailure.__init__(self, SYSTEM, message, retry_after, status)


class JiraRejected(JiraError, PermanentFailure):
    """Raised for a 4xx that trying again cannot fix (400 invalid body, 413 too large…)."""

    def __init__(self, message: str, status: int | None, reason: str | None = None) -> None:
        PermanentFailure.__init__(self, SYSTEM, message, status, reason or reason_for(status or 0))


class JiraAuthFailed(JiraRejected):
    """Raised for 401 (bad email or API token) and 403 (the account may not comment here)."""


class JiraNotFound(JiraRejected):
    """Raised for 404: the issue does not exist or the account cannot see it."""


def adf(text: str) -> dict[str, Any]:
    """``text`` as an Atlassian Document Format document: one paragraph per line."""
    paragraphs = [
        {"type": "paragraph", "content": [{"type": "text", "text": line}]} for line in text.splitlines() if line.strip()
    ]
    return {"type": "doc", "version": 1, "content": paragraphs or [{"type": "paragraph", "content": []}]}


class JiraClient:
    """One ``httpx.AsyncClient`` on ``{JIRA_URL}/rest/api/3/…``."""

    def __init__(
        self, base_url: str, email: str, api_token: str, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
            auth=httpx.BasicAuth(email, api_token),
            timeout=TIMEOUT,
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> JiraClient:
        settings.require("JIRA_URL", "JIRA_EMAIL", "JIRA_API_TOKEN")
        assert settings.jira_url is not None and settings.jira_email is not None
        return cls(settings.jira_url, settings.jira_email, settings.secret("JIRA_API_TOKEN"))

    async def close(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> JiraClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def add_comment(self, key: str, text: str) -> str:
        """Comment ``text`` on issue ``key``; returns the new comment's id."""
        body = await self._call("POST", _comments_path(key), json={"body": adf(text)})
        return str(body.get("id", "")) if isinstance(body, dict) else ""

    async def has_comment(self, key: str, text: str) -> bool:
        """Whether one of the newest comments on issue ``key`` is ``text`` (a comment written by an
        attempt whose answer never came back), compared line by line as :func:`adf` writes it."""
        params = {"orderBy": "-created", "maxResults": str(RECENT_COMMENTS)}
        body = await self._call("GET", _comments_path(key), params=params, need_json=True)
        comments = body.get("comments") if isinstance(body, dict) else None
        wanted = _lines(text)
        return any(_lines(_adf_text(c.get("body"))) == wanted for c in comments or [] if isinstance(c, dict))

    async def _call(self, method: str, path: str, *, need_json: bool = False, **kwargs: Any) -> Any:
        """One request; its JSON answer (``{}`` for an unreadable one, unless ``need_json``)."""
        try:
            resp = await self.http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise JiraUnavailable(f"{method} {path}: timed out") from None
        except httpx.HTTPError as exc:
            raise JiraUnavailable(f"{method} {path}: {type(exc).__name__}") from None
        if resp.status_code >= 400:
            raise self._raise_for(resp, f"{method} {path}")
        try:
            return orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            if need_json:
                raise JiraUnavailable(f"{method} {path}: answer is not JSON", status=resp.status_code) from None
            return {}  # the comment was created: its id is only a courtesy

    @staticmethod
    def _raise_for(resp: httpx.Response, what: str) -> JiraError:
        status = resp.status_code
        detail = _error_text(resp)
        message = f"{what}: HTTP {status}" + (f" ({detail})" if detail else "")
        if status == 429 or status >= 500 or status == 408:
            return JiraUnavailable(message, retry_after(resp.headers), status)
        if status in (401, 403):
            return JiraAuthFailed(message, status)
        if status == 404:
            return JiraNotFound(message, status)
        return JiraRejected(message, status)


def _comments_path(key: str) -> str:
    if not ISSUE_KEY.match(key):
        raise ValueError(f"not a Jira issue key: {key[:40]!r}")
    return f"/rest/api/3/issue/{key}/comment"


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _adf_text(node: Any) -> str:
    """The text of an ADF document: its text nodes, one line per paragraph."""
    if isinstance(node, str):
        return node  # a v2 (wiki markup) body
    if not isinstance(node, dict):
        return ""
    if node.get("type") == "text":
        return str(node.get("text", ""))
    inner = "".join(_adf_text(child) for child in node.get("content") or [])
    return inner + "\n" if node.get("type") == "paragraph" else inner


def _error_text(resp: httpx.Response) -> str:
    """Jira's ``errorMessages`` and ``errors`` joined and clipped."""
    try:
        body = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(body, dict):
        return ""
    parts = [str(m) for m in body.get("errorMessages") or [] if m]
    errors = body.get("errors")
    if isinstance(errors, dict):
        parts += [f"{k}: {v}" for k, v in errors.items()]
    return "; ".join(parts)[:200]
