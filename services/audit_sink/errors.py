"""What a delivery to a ticket system or the webhook can end in, shared by the three clients.

Each client (``servicenow.py``, ``jira.py``, ``webhook.py``) maps its HTTP answers onto these two
kinds in one place, so the handler only asks "again later, or never"::

    DeliveryError              base; .system names the API, str() never holds a credential
    ├── TemporaryFailure       timeout, connection failure, 5xx, 408, 429 (.retry_after seconds or None)
    └── PermanentFailure       any other refusal: 400, 401/403, 404… (.status, .reason)

    try:
        await client.add_note(ticket, text)
    except TemporaryFailure as exc:
        raise RetryLater(exc.retry_after or backoff)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER = 3600.0  # a server asking for more than an hour is waited out an hour at a time


class DeliveryError(Exception):
    """Base of the sink's delivery errors; the message is safe to log (no credential, no body)."""

    def __init__(self, system: str, message: str) -> None:
        super().__init__(f"{system}: {message}")
        self.system = system
        self.message = message


class TemporaryFailure(DeliveryError):
    """Raised when trying again later may succeed: a timeout, a refused connection, 5xx, 408 or 429.

    ``retry_after`` is what the server asked for (``Retry-After``, a rate-limit reset), else None.
    """

    def __init__(self, system: str, message: str, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(system, message)
        self.retry_after = retry_after
        self.status = status


class PermanentFailure(DeliveryError):
    """Raised when the same request can never succeed: bad credentials, no such ticket, a refused body.

    ``reason`` is a short word for the audit event (``not_found``, ``unauthorized``, ``forbidden``,
    ``rejected``); ``status`` the HTTP status, when there was one.
    """

    def __init__(self, system: str, message: str, status: int | None, reason: str) -> None:
        super().__init__(system, message)
        self.status = status
        self.reason = reason


def reason_for(status: int) -> str:
    return {401: "unauthorized", 403: "forbidden", 404: "not_found"}.get(status, "rejected")


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asks us to wait: ``Retry-After`` (seconds or an HTTP date), else
    ``X-RateLimit-Reset`` (Unix seconds as ServiceNow sends it, or ISO 8601 as Jira does); None if neither."""
    now = time.time() if now is None else now
    value = (headers.get("Retry-After") or "").strip()
    if value:
        try:
            return _clamp(float(value))
        except ValueError:
            pass
        try:
            return _clamp(parsedate_to_datetime(value).timestamp() - now)
        except (TypeError, ValueError, IndexError):
            pass
    reset = (headers.get("X-RateLimit-Reset") or "").strip()
    if reset:
        try:
            return _clamp(float(reset) - now)
        except ValueError:
            pass
        try:
            return _clamp(datetime.fromisoformat(reset.replace("Z", "+00:00")).timestamp() - now)
        except ValueError:
            pass
    return None


def _clamp(seconds: float) -> float:
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
