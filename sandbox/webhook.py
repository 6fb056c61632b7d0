"""A SIEM-style receiver of the signed audit webhook, for tests and the demo.

It checks ``X-Helpdesk-Signature`` the way a receiver should (HMAC-SHA256 over ``f"{t}.{body}"``,
constant-time compare, ``t`` within five minutes), keeps each delivery, and counts repeats of an
``Idempotency-Key`` instead of storing them twice.

    receiver = FakeWebhookReceiver(secret="whsec-…")
    url = await receiver.start()                # AUDIT_WEBHOOK_URL = url + "/audit"
    receiver.fail_next(status=500, n=2)         # the next two deliveries: 500
    ...
    assert receiver.events[0]["action"] == "case.verified"
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import deque
from typing import Any

import orjson
from aiohttp import web

from sandbox.base import FakeService, json_response

TOLERANCE = 300  # seconds a signature's timestamp may be away from the receiver's clock


def verify_signature(
    secret: str, header: str, body: bytes, now: float | None = None, tolerance: int = TOLERANCE
) -> bool:
    """Whether ``header`` (``t=…,v1=…``) signs ``body`` with ``secret``, recently enough."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, candidate) for candidate in parts.get("v1", []))


class FakeWebhookReceiver(FakeService):
    """``POST /audit``: 401 for a bad signature, 400 without an idempotency key, else 202."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret
        self.events: list[dict[str, Any]] = []
        self.keys: set[str] = set()
        self.repeats = 0
        self.refused: list[str] = []  # why each refused delivery was refused
        self._failures: deque[tuple[int, float | None]] = deque()
        self.app.router.add_post("/audit", self._receive)

    def fail_next(self, status: int = 500, n: int = 1, retry_after: float | None = None) -> None:
        for _ in range(n):
            self._failures.append((status, retry_after))

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self._failures:
            status, retry_after = self._failures.popleft()
            headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else None
            return json_response({"error": "unavailable"}, status=status, headers=headers)
        if not verify_signature(self.secret, request.headers.get("X-Helpdesk-Signature", ""), body):
            self.refused.append("signature")
            return json_response({"error": "bad signature"}, status=401)
        key = request.headers.get("Idempotency-Key")
        if not key:
            self.refused.append("idempotency key")
            return json_response({"error": "Idempotency-Key required"}, status=400)
        if key in self.keys:
            self.repeats += 1
            return json_response({"status": "duplicate"}, status=200)
        self.keys.add(key)
        self.events.append(orjson.loads(body))
        return json_response({"status": "accepted"}, status=202)
