"""ProviderClient: one Twilio-compatible account (Twilio, SignalWire LaML …) over one aiohttp session.

    client = ProviderClient(ProviderConfig.primary(settings))
    sent = await client.send_sms("+14155552671", "Your code is 123456", budget=1.5)
    sent.sid                                   # "SM…"
    await client.aclose()

Errors — every aiohttp error and every provider error body becomes one of these, here and only here::

    ProviderError                      base; .provider, .maybe_sent
    ├── ProviderRejected               a 4xx with the provider's error .code (21211, 21610, 20429 …)
    ├── ProviderUnavailable            5xx, refused/reset connection, an answer we cannot read
    └── ProviderTimeout                no answer in time; .maybe_sent says whether the request went out

``maybe_sent`` is the one fact the caller must respect: Twilio has no idempotency key, so a request
that went out and was not answered may still be delivered and must never be sent again.
No error text holds the auth token, the message body or the full number.

The client is aiohttp's, not httpx: httpcore scans every pooled connection (a ``poll()`` each) on every
request, which cost the hook more CPU than everything else together under load (issue 17).
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
from pydantic import SecretStr

from shared.settings import Settings

CONNECT_TIMEOUT = 1.0  # seconds; a provider that does not accept a connection by then is down
KEEPALIVE_EXPIRY = 15.0  # seconds an idle pooled connection is kept (aiohttp's default)
MAX_CONNECTIONS = 256  # to all providers together
RETRYABLE_CODES = frozenset({20429})  # "too many concurrent requests": never processed, safe to retry


class ProviderError(Exception):
    """Base of the provider errors; ``maybe_sent`` is True when the message may have gone out."""

    maybe_sent: bool = False

    def __init__(self, provider: str, detail: str) -> None:
        super().__init__(f"{provider}: {detail}")
        self.provider = provider
        self.detail = detail

    @property
    def retryable(self) -> bool:
        """True when the request surely was not processed and may be sent again to the same provider."""
        return False


class ProviderRejected(ProviderError):
    """Raised when the provider answers 4xx: ``code`` is its error code (``None`` if it gave none)."""

    def __init__(self, provider: str, code: int | None, status: int) -> None:
        super().__init__(provider, f"rejected with HTTP {status}, code {code}")
        self.code = code
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES


class ProviderUnavailable(ProviderError):
    """Raised on a 5xx, a connection that could not be made or broke, or an unreadable answer.

    ``connect_failed`` is True when no connection was made (nothing sent: retry is safe); a connection
    that broke after the request was written sets ``maybe_sent``.
    """

    def __init__(
        self,
        provider: str,
        detail: str,
        *,
        status: int | None = None,
        connect_failed: bool = False,
        maybe_sent: bool = False,
    ) -> None:
        super().__init__(provider, detail)
        self.status = status
        self.connect_failed = connect_failed
        self.maybe_sent = maybe_sent

    @property
    def retryable(self) -> bool:
        return self.connect_failed


class ProviderTimeout(ProviderError):
    """Raised when the provider did not answer in time.

    ``maybe_sent`` is False only when the request surely did not leave (connect or pool timeout).
    """

    def __init__(self, provider: str, maybe_sent: bool) -> None:
        super().__init__(provider, "timed out after the request was sent" if maybe_sent else "timed out connecting")
        self.maybe_sent = maybe_sent

    @property
    def retryable(self) -> bool:
        return not self.maybe_sent


@dataclass(frozen=True)
class ProviderConfig:
    """One provider account: its name for Okta (``provider``), origin, credentials and sender."""

    name: str
    url: str
    account_sid: str
    auth_token: SecretStr
    from_number: str

    @classmethod
    def primary(cls, settings: Settings) -> ProviderConfig:
        """The ``TELEPHONY_*`` account (``MissingSetting`` if a part is unset)."""
        settings.require("TELEPHONY_ACCOUNT_SID", "TELEPHONY_AUTH_TOKEN", "TELEPHONY_FROM")
        return cls(
            name=settings.telephony_provider_name,
            url=settings.telephony_provider_url,
            account_sid=str(settings.telephony_account_sid),
            auth_token=SecretStr(settings.secret("TELEPHONY_AUTH_TOKEN")),
            from_number=str(settings.telephony_from),
        )

    @classmethod
    def fallback(cls, settings: Settings) -> ProviderConfig | None:
        """The ``TELEPHONY_FALLBACK_*`` account, or ``None`` when its URL is unset.

        Its sid, token and sender default to the primary's (a second region of the same account).
        """
        if not settings.telephony_fallback_url:
            return None
        token = settings.telephony_fallback_auth_token or settings.telephony_auth_token
        sid = settings.telephony_fallback_account_sid or settings.telephony_account_sid
        sender = settings.telephony_fallback_from or settings.telephony_from
        if not (token and sid and sender):
            settings.require(
                "TELEPHONY_FALLBACK_ACCOUNT_SID", "TELEPHONY_FALLBACK_AUTH_TOKEN", "TELEPHONY_FALLBACK_FROM"
            )
        return cls(
            name=settings.telephony_fallback_name,
            url=settings.telephony_fallback_url,
            account_sid=str(sid),
            auth_token=SecretStr(token.get_secret_value() if token else ""),
            from_number=str(sender),
        )

    def __repr__(self) -> str:
        return f"ProviderConfig(name={self.name!r}, url={self.url!r})"


@dataclass(frozen=True)
class Sent:
    """A message or call the provider accepted: its ``sid`` and its first ``status`` (``queued`` …)."""

    provider: str
    sid: str
    status: str


def provider_session() -> aiohttp.ClientSession:
    """The one HTTP session the providers share (open it inside a running event loop, close it at stop)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_EXPIRY),
        headers={"User-Agent": "helpdesk-verify-telephony-hook"},
        skip_auto_headers=("Accept-Encoding",),
    )


class ProviderClient:
    """Messages.json and Calls.json of one Twilio-compatible account."""

    def __init__(self, config: ProviderConfig, http: aiohttp.ClientSession | None = None) -> None:
        self.config = config
        self.name = config.name
        self._own_http = http is None
        self._http = http
        base = f"{config.url.rstrip('/')}/2010-04-01/Accounts/{config.account_sid}"
        self._messages_url = f"{base}/Messages.json"
        self._calls_url = f"{base}/Calls.json"
        credentials = f"{config.account_sid}:{config.auth_token.get_secret_value()}".encode()
        self._headers = {
            "Authorization": "Basic " + base64.b64encode(credentials).decode(),
            "Content-Type": "application/x-www-form-urlencoded",
        }

    def __repr__(self) -> str:
        return f"ProviderClient({self.name!r})"

    async def send_sms(self, to: str, body: str, budget: float, status_callback: str | None = None) -> Sent:
        """Create a Message (``To``, ``From``, ``Body``) within ``budget`` seconds."""
        form = {"To": to, "From": self.config.from_number, "Body": body}
        if status_callback:
            form["StatusCallback"] = status_callback
        return await self._create(self._messages_url, form, budget)

    async def start_call(self, to: str, twiml: str, budget: float, status_callback: str | None = None) -> Sent:
        """Create a Call that plays ``twiml`` within ``budget`` seconds."""
        form = {"To": to, "From": self.config.from_number, "Twiml": twiml}
        if status_callback:
            form["StatusCallback"] = status_callback
            form["StatusCallbackEvent"] = "completed"
        return await self._create(self._calls_url, form, budget)

    async def aclose(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.close()

    async def _create(self, url: str, form: dict[str, str], budget: float) -> Sent:
        if self._http is None:
            self._http = provider_session()
        # ``connect`` covers waiting for a pooled connection and opening one: expiring there, nothing
        # was sent. Any later expiry (``total``) may follow a request the provider received.
        timeout = aiohttp.ClientTimeout(total=budget, connect=min(budget, CONNECT_TIMEOUT))
        try:
            # The outer bound covers what the client's own timeouts might not.
            async with asyncio.timeout(budget + 0.05):
                async with self._http.post(
                    url, data=urlencode(form).encode(), headers=self._headers, timeout=timeout, allow_redirects=False
                ) as response:
                    return self._interpret(response.status, await response.read())
        except aiohttp.ConnectionTimeoutError:
            raise ProviderTimeout(self.name, maybe_sent=False) from None
        except TimeoutError:
            raise ProviderTimeout(self.name, maybe_sent=True) from None
        except aiohttp.ClientConnectorError as exc:
            raise ProviderUnavailable(
                self.name, f"connection failed ({type(exc).__name__})", connect_failed=True
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            # Disconnects and protocol errors happen after the request was written: it may have been processed.
            raise ProviderUnavailable(self.name, f"connection broke ({type(exc).__name__})", maybe_sent=True) from None

    def _interpret(self, status: int, content: bytes) -> Sent:
        payload = _json_object(content)
        if 200 <= status < 300:
            sid, state = payload.get("sid"), payload.get("status")
            if not isinstance(sid, str) or not sid:
                # Accepted but unreadable: it was created, we just cannot name it.
                raise ProviderUnavailable(self.name, f"HTTP {status} without a sid", status=status, maybe_sent=True)
            return Sent(provider=self.name, sid=sid, status=state if isinstance(state, str) else "queued")
        if status >= 500:
            raise ProviderUnavailable(self.name, f"HTTP {status}", status=status)
        code = payload.get("code")
        if not isinstance(code, int) or isinstance(code, bool):
            code = 20429 if status == 429 else None
        raise ProviderRejected(self.name, code, status)


def _json_object(content: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(content) if content else {}
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
