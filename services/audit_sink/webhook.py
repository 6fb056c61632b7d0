"""`WebhookClient`: every audit event POSTed to ``AUDIT_WEBHOOK_URL``, signed, with an idempotency key.

    async with WebhookClient(url, secret) as hook:
        await hook.deliver(event)

The body is the event's JSON (``docs/audit-event.schema.json``). Headers:

- ``X-Helpdesk-Signature: t=<unix seconds>,v1=<hex>`` — HMAC-SHA256 with ``AUDIT_WEBHOOK_SECRET`` over
  ``f"{t}.{body}"`` (the raw body bytes), as Slack and Stripe sign theirs. A receiver recomputes it,
  compares in constant time, and refuses a ``t`` more than five minutes away from its clock.
- ``Idempotency-Key: <event_id>`` — the same on every retry: delivery is at least once, and a
  receiver drops the repeats by this key.
- ``X-Helpdesk-Event: audit.<category>.<action>``.

Answers: 2xx delivered; 408, 429 and 5xx (and no answer) are :class:`WebhookUnavailable` (retried,
``Retry-After`` honoured); any other status is :class:`WebhookRejected` (never retried)::

    WebhookError (errors.DeliveryError)
    ├── WebhookUnavailable      timeout, connection failure, 5xx, 408, 429   TemporaryFailure
    └── WebhookRejected         any other non-2xx (.status)                  PermanentFailure
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from types import TracebackType

import httpx

from services.audit_sink.errors import DeliveryError, PermanentFailure, TemporaryFailure, reason_for, retry_after
from shared.messages import AuditEvent

SYSTEM = "webhook"
SIGNATURE_HEADER = "X-Helpdesk-Signature"
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
USER_AGENT = "helpdesk-verify-audit-sink"


class WebhookError(DeliveryError):
    """Base of the webhook client's errors."""


class WebhookUnavailable(WebhookError, TemporaryFailure):
    """Raised for no answer in time, a refused connection, 408, 429 or 5xx."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None) -> None:
        TemporaryFailure.__init__(self, SYSTEM, message, retry_after, status)


class WebhookRejected(WebhookError, PermanentFailure):
    """Raised for any other non-2xx answer: the receiver refuses this event for good."""

    def __init__(self, message: str, status: int) -> None:
        PermanentFailure.__init__(self, SYSTEM, message, status, reason_for(status))


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Helpdesk-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


class WebhookClient:
    """POSTs audit events to one URL; the URL (which may carry a token) is never logged or raised."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self.secret = secret
        self.clock = clock
        self.http = httpx.AsyncClient(
            headers={"User-Agent": USER_AGENT}, timeout=TIMEOUT, transport=transport, follow_redirects=False
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> WebhookClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def deliver(self, event: AuditEvent) -> int:
        """POST ``event``; returns the HTTP status of a delivered event."""
        body = event.encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": event.event_id,
            "X-Helpdesk-Event": event.subject(),
            SIGNATURE_HEADER: signature(self.secret, int(self.clock()), body),
        }
        try:
            resp = await self.http.post(self.url, content=body, headers=headers)
        except httpx.TimeoutException:
            raise WebhookUnavailable("POST timed out") from None
        except httpx.HTTPError as exc:
            raise WebhookUnavailable(f"POST failed: {type(exc).__name__}") from None
        status = resp.status_code
        if 200 <= status < 300:
            return status
        if status in (408, 429) or status >= 500:
            raise WebhookUnavailable(f"HTTP {status}", retry_after(resp.headers), status)
        raise WebhookRejected(f"HTTP {status}", status)
