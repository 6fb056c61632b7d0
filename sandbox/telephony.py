"""A faithful local Twilio: Programmable Messaging and Voice, with Twilio's failure modes.

Routes, status codes and JSON copy Twilio's REST API 2010-04-01 (``Messages.json``, ``Calls.json``):
form bodies, HTTP basic auth ``AccountSid:AuthToken``, ``201`` with the created resource, and
Twilio's error body ``{"code", "message", "more_info", "status"}`` for every refusal.

    fake = FakeTwilio(invalid_numbers={"+15005550001"}, opted_out={"+15005550004"})
    url = await fake.start()                  # TELEPHONY_PROVIDER_URL
    fake.fail_next(code=20429)                # next request: 429, code 20429
    fake.fail_next(status=503, n=2)           # then two 503s
    fake.latency = 0.3                        # every answer 300 ms late
    fake.hang_next()                          # next request never answered until release()/stop()
    await fake.wait_hanging(1)                # until that many requests are being held
    ...
    assert fake.messages[0]["to"] == "+15551234567"
    await fake.stop()

Scenario switches apply in this order: ``latency``, then a pending hang, then a queued failure, then
the normal checks (auth, required parameters, invalid / opted-out numbers).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import secrets
from collections import defaultdict, deque
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from aiohttp import web

from sandbox.base import FakeService, json_response

API_VERSION = "2010-04-01"
MORE_INFO = "https://www.twilio.com/docs/errors/{code}"

# Twilio's wording for the errors the fake produces, and the HTTP status each comes with.
ERRORS: dict[int, tuple[int, str]] = {
    20003: (401, "Authenticate"),
    20404: (404, "The requested resource {path} was not found"),
    20429: (429, "Too Many Requests"),
    20500: (500, "An internal server error has occurred"),
    20503: (503, "Service is unavailable. Please try again"),
    21205: (400, "Url parameter is required."),
    21211: (400, "The 'To' number {to} is not a valid phone number."),
    21602: (400, "Message body is required."),
    21603: (400, "A 'From' phone number is required."),
    21604: (400, "A 'To' phone number is required."),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21617: (400, "The concatenated message body exceeds the 1600 character limit."),
}
# A failure queued by HTTP status alone is answered with this Twilio code.
CODE_FOR_STATUS = {401: 20003, 404: 20404, 429: 20429, 500: 20500, 502: 20500, 503: 20503, 504: 20500}


def new_sid(prefix: str) -> str:
    """A Twilio-shaped sid: two letters and 32 lowercase hex digits (``SM…``, ``CA…``, ``AC…``)."""
    return prefix + secrets.token_hex(16)


def twilio_error(code: int, status: int | None = None, **fmt: str) -> web.Response:
    """Twilio's error body for ``code`` (``status`` overrides the code's usual HTTP status)."""
    usual_status, template = ERRORS.get(code, (status or 400, "Error {code}"))
    http_status = status or usual_status
    message = template.format_map(defaultdict(str, code=str(code), **fmt))
    body = {"code": code, "message": message, "more_info": MORE_INFO.format(code=code), "status": http_status}
    headers = {"WWW-Authenticate": 'Basic realm="Twilio API"'} if http_status == 401 else None
    return json_response(body, status=http_status, headers=headers)


def _rfc2822(moment: datetime) -> str:
    return format_datetime(moment, usegmt=False)


class FakeTwilio(FakeService):
    """Twilio's Messages and Calls endpoints for one account, with scenario switches.

    ``invalid_numbers`` answer 21211 and ``opted_out`` numbers answer 21610 (SMS only, as Twilio);
    ``messages`` and ``calls`` hold every resource created, as answered.
    """

    def __init__(
        self,
        account_sid: str | None = None,
        auth_token: str | None = None,
        *,
        invalid_numbers: set[str] | None = None,
        opted_out: set[str] | None = None,
        latency: float = 0.0,
    ) -> None:
        super().__init__()
        self.account_sid = account_sid or new_sid("AC")
        self.auth_token = auth_token or secrets.token_hex(16)
        self.invalid_numbers: set[str] = set(invalid_numbers or ())
        self.opted_out: set[str] = set(opted_out or ())
        self.latency = latency
        self.messages: list[dict[str, Any]] = []
        self.calls_created: list[dict[str, Any]] = []
        self._failures: deque[tuple[int, int]] = deque()
        self._hangs = 0
        self._release = asyncio.Event()
        self.hanging = 0  # requests currently held by hang_next
        self._hanging_changed = asyncio.Condition()
        self.created = _rfc2822(datetime.now(UTC))
        self.app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._create_message)
        self.app.router.add_post("/2010-04-01/Accounts/{sid}/Calls.json", self._create_call)
        self.app.router.add_get("/2010-04-01/Accounts/{sid}.json", self._fetch_account)

    # Scenario switches -------------------------------------------------------------------------

    def fail_next(self, code: int | None = None, status: int | None = None, n: int = 1) -> None:
        """Answer the next ``n`` requests with Twilio error ``code`` and/or HTTP ``status``.

        ``fail_next(code=21211)`` → 400 with code 21211; ``fail_next(status=503)`` → 503 with code
        20503; ``fail_next(code=20429)`` → 429.
        """
        if code is None and status is None:
            raise ValueError("fail_next needs a code or a status")
        resolved_code = code if code is not None else CODE_FOR_STATUS.get(status or 500, 20500)
        resolved_status = status if status is not None else ERRORS.get(resolved_code, (400, ""))[0]
        for _ in range(n):
            self._failures.append((resolved_code, resolved_status))

    def hang_next(self, n: int = 1) -> None:
        """Hold the next ``n`` requests unanswered until :meth:`release` or :meth:`stop`."""
        self._hangs += n
        self._release.clear()

    async def wait_hanging(self, n: int = 1) -> None:
        """Return once at least ``n`` requests are being held by :meth:`hang_next`."""
        async with self._hanging_changed:
            await self._hanging_changed.wait_for(lambda: self.hanging >= n)

    def release(self) -> None:
        """Let every held request finish (with a 503: the provider gave up on it)."""
        self._hangs = 0
        self._release.set()

    def reset(self) -> None:
        """Forget queued failures, hangs and latency (recorded calls stay)."""
        self._failures.clear()
        self.latency = 0.0
        self.release()

    async def stop(self) -> None:
        self.release()
        await super().stop()

    @property
    def messages_url(self) -> str:
        return f"{self.url}/2010-04-01/Accounts/{self.account_sid}/Messages.json"

    @property
    def calls_url(self) -> str:
        return f"{self.url}/2010-04-01/Accounts/{self.account_sid}/Calls.json"

    # Request handling --------------------------------------------------------------------------

    async def _scenario(self, request: web.Request) -> web.Response | None:
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        if self._hangs > 0:
            self._hangs -= 1
            self.hanging += 1
            async with self._hanging_changed:
                self._hanging_changed.notify_all()
            try:
                await self._release.wait()
            finally:
                self.hanging -= 1
            return twilio_error(20503)
        if self._failures:
            code, status = self._failures.popleft()
            return twilio_error(code, status, path=request.path)
        return None

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return (
            hmac.compare_digest(user.encode(), self.account_sid.encode())
            and hmac.compare_digest(password.encode(), self.auth_token.encode())
            and request.match_info["sid"] == self.account_sid
        )

    async def _form(self, request: web.Request) -> dict[str, str]:
        posted = await request.post()
        return {k: str(v) for k, v in posted.items()}

    def _check_to(self, to: str) -> web.Response | None:
        if not to:
            return twilio_error(21604)
        digits = to[1:] if to.startswith("+") else ""
        if to in self.invalid_numbers or not digits.isdigit() or not 7 <= len(digits) <= 15:
            return twilio_error(21211, to=to)
        return None

    async def _create_message(self, request: web.Request) -> web.Response:
        if (answer := await self._scenario(request)) is not None:
            return answer
        if not self._authorized(request):
            return twilio_error(20003)
        form = await self._form(request)
        to, sender, body = form.get("To", ""), form.get("From", ""), form.get("Body", "")
        if (refusal := self._check_to(to)) is not None:
            return refusal
        if not sender and not form.get("MessagingServiceSid"):
            return twilio_error(21603)
        if not body and not form.get("MediaUrl") and not form.get("ContentSid"):
            return twilio_error(21602)
        if len(body) > 1600:
            return twilio_error(21617)
        if to in self.opted_out:
            return twilio_error(21610)
        sid = new_sid("SM")
        now = _rfc2822(datetime.now(UTC))
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json"
        message = {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender or None,
            "messaging_service_sid": form.get("MessagingServiceSid") or None,
            "num_media": "0",
            "num_segments": str(-(-len(body) // 153) if len(body) > 160 else 1),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": to,
            "uri": uri,
        }
        self.messages.append(message)
        return json_response(message, status=201)

    async def _fetch_account(self, request: web.Request) -> web.Response:
        """``GET /Accounts/{Sid}.json``: what a credentials check (``helpdesk check``) calls."""
        if (answer := await self._scenario(request)) is not None:
            return answer
        if not self._authorized(request):
            return twilio_error(20003)
        uri = f"/2010-04-01/Accounts/{self.account_sid}.json"
        base = uri.removesuffix(".json")
        return json_response(
            {
                "auth_token": self.auth_token,  # Twilio returns it to the account's own credentials
                "date_created": self.created,
                "date_updated": self.created,
                "friendly_name": "Helpdesk sandbox",
                "owner_account_sid": self.account_sid,
                "sid": self.account_sid,
                "status": "active",
                "subresource_uris": {
                    "messages": f"{base}/Messages.json",
                    "calls": f"{base}/Calls.json",
                },
                "type": "Full",
                "uri": uri,
            }
        )

    async def _create_call(self, request: web.Request) -> web.Response:
        if (answer := await self._scenario(request)) is not None:
            return answer
        if not self._authorized(request):
            return twilio_error(20003)
        form = await self._form(request)
        to, sender = form.get("To", ""), form.get("From", "")
        if (refusal := self._check_to(to)) is not None:
            return refusal
        if not sender:
            return twilio_error(21603)
        if not (form.get("Url") or form.get("Twiml") or form.get("ApplicationSid")):
            return twilio_error(21205)
        sid = new_sid("CA")
        now = _rfc2822(datetime.now(UTC))
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Calls/{sid}.json"
        base = uri.removesuffix(".json")
        call = {
            "account_sid": self.account_sid,
            "annotation": None,
            "answered_by": None,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": now,
            "date_updated": now,
            "direction": "outbound-api",
            "duration": None,
            "end_time": None,
            "forwarded_from": None,
            "from": sender,
            "from_formatted": sender,
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": None,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": sid,
            "start_time": None,
            "status": "queued",
            "subresource_uris": {
                name: f"{base}/{name[0].upper()}{name[1:]}.json"
                for name in ("notifications", "recordings", "payments", "events", "streams")
            },
            "to": to,
            "to_formatted": to,
            "trunk_sid": None,
            "uri": uri,
            "twiml": form.get("Twiml"),
        }
        # Twilio does not echo the TwiML; keep it for inspection, answer without it.
        resource = {k: v for k, v in call.items() if k != "twiml"}
        self.calls_created.append(call)
        return json_response(resource, status=201)
