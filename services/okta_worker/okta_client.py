"""`OktaClient`: every Okta Management API call of the worker, on one ``httpx.AsyncClient``.

    async with OktaClient.from_settings(settings) as okta:
        user = await okta.find_user_by_email("agent@example.com")
        started = await okta.verify_push(user.id, factor_id, user_agent=USER_AGENT)

Auth is an API token (``SSWS``), or an OAuth 2.0 service app with ``private_key_jwt`` (a fresh
signed assertion per token request, the access token cached until shortly before it expires), optionally
DPoP-bound (``OKTA_DPOP=true``: a proof per request, the ``use_dpop_nonce`` retry, ``ath``).

Optional org features answer "unknown" rather than fail: :meth:`OktaClient.user_risk` is None
where the org has no Identity Threat Protection (403 or 404), :meth:`OktaClient.tac_authenticator_id`
None where no Temporary Access Code authenticator is active or readable.

Every answer's ``X-Rate-Limit-*`` headers are recorded, per Okta bucket (:attr:`OktaClient.rates`,
:func:`rate_bucket`). A 429 is waited out
until ``Reset`` (plus jitter) when that is soon, else raised. Timeouts and 5xx are retried with capped,
jittered backoff **only** for idempotent calls (GET, DELETE): a verify POST may have sent an SMS.

Errors — httpx failures and Okta's error JSON become these in one place (:meth:`OktaClient._raise_for`);
no error text ever holds a token, a code or a password::

    OktaError                       base; .message is written for the agent
    ├── OktaUnavailable             timeout, connection failure, 5xx (.maybe_sent for a POST)
    ├── OktaRateLimited             429 E0000047 (.retry_after seconds)
    ├── OktaMisconfigured           401 / 403 of our credentials, token endpoint refusals
    └── OktaRejected                any other 4xx with Okta's error JSON (.status, .error_code)
        ├── OktaWrongCode           E0000068 wrong passcode / answer
        ├── OktaCodeReused          E0000082 passcode reused, E0000083 outside its time window
        ├── OktaUserLocked          E0000069 user locked out of factor verification
        ├── OktaResendTooSoon       E0000109 / E0000133 / E0000118 (.retry_after seconds)
        ├── OktaTransactionGone     E0000191, or a poll link that no longer exists
        └── OktaNotFound            E0000007 user or factor not found
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import random
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from httpx_aiohttp import HttpxAiohttpClient

from services.okta_worker import metrics
from shared.logging import get_logger
from shared.settings import Settings

log = get_logger(__name__)

USER_AGENT = "HelpdeskVerify/0.1 (okta-worker; +https://github.com/helpdesk-verify)"
# Every scope the service app must be granted: Okta refuses a token request naming an ungranted one.
SCOPES = "okta.users.read okta.users.manage okta.groups.read okta.logs.read okta.userRisk.read okta.authenticators.read"
RISK_LEVELS = frozenset({"HIGH", "MEDIUM", "LOW", "NONE"})
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
TOKEN_REFRESH_MARGIN = 300.0  # refresh a cached access token this long before it expires
RESEND_WINDOW = {"E0000109": 30.0, "E0000133": 30.0, "E0000118": 5.0}
MAX_GROUP_PAGES = 5  # an exact name matches a handful of groups: follow at most this many pages


# --------------------------------------------------------------------------------------------- errors


class OktaError(Exception):
    """Base of the client's errors. ``message`` is what the agent reads; it never holds a secret."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class OktaUnavailable(OktaError):
    """Raised for a timeout, a connection failure or a 5xx; ``maybe_sent`` when a POST may have landed."""

    def __init__(self, message: str, maybe_sent: bool = False) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent


class OktaRateLimited(OktaError):
    """Raised for 429 E0000047 (or a 429 without a body) that is not worth waiting for in place."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OktaMisconfigured(OktaError):
    """Raised when Okta refuses our own credentials or permissions (401, 403 E0000006, token endpoint)."""

    def __init__(self, message: str, status: int, error_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


class OktaRejected(OktaError):
    """Raised for a 4xx answer with Okta's error JSON that no subclass covers."""

    def __init__(self, message: str, status: int, error_code: str | None, summary: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.summary = summary


class OktaWrongCode(OktaRejected):
    """Raised for E0000068: the passcode or answer does not match."""


class OktaCodeReused(OktaRejected):
    """Raised for E0000082 (a passcode used before) and E0000083 (outside its time window)."""


class OktaUserLocked(OktaRejected):
    """Raised for E0000069: the user is locked out of factor verification."""


class OktaResendTooSoon(OktaRejected):
    """Raised for E0000109 / E0000133 / E0000118: the previous SMS, call or email was too recent."""

    def __init__(self, message: str, status: int, error_code: str | None, retry_after: float) -> None:
        super().__init__(message, status, error_code)
        self.retry_after = retry_after


class OktaTransactionGone(OktaRejected):
    """Raised for E0000191, or a push transaction Okta no longer knows."""


class OktaNotFound(OktaRejected):
    """Raised for E0000007: the user or factor does not exist (any more)."""


_AGENT_MESSAGES: dict[str, tuple[type[OktaRejected], str]] = {
    "E0000068": (OktaWrongCode, "That code or answer is not right."),
    "E0000082": (OktaCodeReused, "That code was already used. Ask the caller for the next code."),
    "E0000083": (OktaCodeReused, "That code is outside its time window. Ask the caller for the current code."),
    "E0000069": (OktaUserLocked, "Okta has locked this user out of factor verification."),
    "E0000191": (OktaTransactionGone, "Okta no longer knows this verification: it timed out."),
    "E0000007": (OktaNotFound, "Okta could not find that user or factor (it may have just been removed)."),
    "E0000038": (OktaRejected, "Okta does not allow this for the user's current status."),
    "E0000032": (OktaRejected, "Okta does not allow unlocking this user (the account is not locked)."),
    "E0000154": (OktaRejected, "That factor is not active in Okta."),
}


# ----------------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class RateLimit:
    """The last ``X-Rate-Limit-*`` headers seen: ``remaining`` calls until the epoch second ``reset``."""

    limit: int
    remaining: int
    reset: float
    seen_at: float

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], now: float) -> RateLimit | None:
        try:
            return cls(
                limit=int(headers["X-Rate-Limit-Limit"]),
                remaining=int(headers["X-Rate-Limit-Remaining"]),
                reset=float(headers["X-Rate-Limit-Reset"]),
                seen_at=now,
            )
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True)
class OktaUser:
    """The parts of an Okta user the worker uses; ``profile`` keeps every attribute (never rendered)."""

    id: str
    status: str
    login: str
    email: str | None
    first_name: str | None
    last_name: str | None
    last_login: str | None
    profile: dict[str, Any] = field(repr=False)
    created: str | None = None  # when the account was created (ISO 8601): a days-old account is a signal
    password_changed: str | None = None  # ISO 8601: the journal tells a temporary password set from one not

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> OktaUser:
        profile = dict(raw.get("profile") or {})
        return cls(
            id=str(raw["id"]),
            status=str(raw.get("status") or "UNKNOWN"),
            login=str(profile.get("login") or raw["id"]),
            email=profile.get("email"),
            first_name=profile.get("firstName"),
            last_name=profile.get("lastName"),
            last_login=raw.get("lastLogin"),
            profile=profile,
            created=raw.get("created"),
            password_changed=raw.get("passwordChanged"),
        )

    @property
    def display_name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p) or self.login

    def _profile_str(self, name: str) -> str | None:
        value = self.profile.get(name)
        return value if isinstance(value, str) and value else None

    @property
    def manager_id(self) -> str | None:
        """``profile.managerId``: often fed from HR or AD, so check it names an ACTIVE Okta user."""
        return self._profile_str("managerId")

    @property
    def second_email(self) -> str | None:
        """``profile.secondEmail``."""
        return self._profile_str("secondEmail")

    @property
    def mobile_phone(self) -> str | None:
        """``profile.mobilePhone``."""
        return self._profile_str("mobilePhone")

    @property
    def primary_phone(self) -> str | None:
        """``profile.primaryPhone``."""
        return self._profile_str("primaryPhone")


@dataclass(frozen=True)
class OktaGroup:
    """A group: ``type`` is OKTA_GROUP, APP_GROUP (imported: any name can arrive that way) or BUILT_IN."""

    id: str
    name: str
    type: str

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> OktaGroup:
        profile = raw.get("profile") or {}
        # A group without a type never matches a type check: fail closed.
        return cls(id=str(raw["id"]), name=str(profile.get("name") or ""), type=str(raw.get("type") or "UNKNOWN"))


@dataclass(frozen=True)
class TacIssued:
    """A Temporary Access Code Okta issued: ``code`` is for the user only, so the repr leaves it out.

    ``expires_at`` is Okta's ``profile.expiresAt`` as sent (UTC; Okta's example has no zone designator).
    """

    code: str = field(repr=False)
    expires_at: str | None


@dataclass(frozen=True)
class PushStarted:
    poll_url: str
    cancel_url: str | None
    expires_at: str | None
    correct_answer: int | None


@dataclass(frozen=True)
class PollResult:
    result: str  # WAITING, SUCCESS, REJECTED, TIMEOUT
    correct_answer: int | None = None


# ------------------------------------------------------------------------------------------- auth


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _public_jwk(key: Any) -> dict[str, Any]:
    public = key.public_key()
    numbers = public.public_numbers()
    if isinstance(public, rsa.RSAPublicKey):

        def b64int(n: int) -> str:
            return _b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))

        return {"kty": "RSA", "e": b64int(numbers.e), "n": b64int(numbers.n)}
    if isinstance(public, ec.EllipticCurvePublicKey):
        size = (public.curve.key_size + 7) // 8
        crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[public.curve.name]
        return {
            "kty": "EC",
            "crv": crv,
            "x": _b64url(numbers.x.to_bytes(size, "big")),
            "y": _b64url(numbers.y.to_bytes(size, "big")),
        }
    raise OktaMisconfigured("OKTA_PRIVATE_KEY must be an RSA or EC private key", status=0)


def _alg_for(key: Any) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {256: "ES256", 384: "ES384", 521: "ES512"}.get(key.curve.key_size, "ES256")
    raise OktaMisconfigured("OKTA_PRIVATE_KEY must be an RSA or EC private key", status=0)


class OktaAuth:
    """Base: the ``Authorization`` (and ``DPoP``) headers for one request."""

    scheme = ""

    async def headers(self, http: httpx.AsyncClient, method: str, url: str) -> dict[str, str]:
        raise NotImplementedError

    def invalidate(self) -> None:
        """Forget a cached credential (after a 401)."""

    def remember_nonce(self, nonce: str) -> None:
        """Keep a ``DPoP-Nonce`` the server sent."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SswsAuth(OktaAuth):
    scheme = "ssws"

    def __init__(self, token: str) -> None:
        self._token = token

    async def headers(self, http: httpx.AsyncClient, method: str, url: str) -> dict[str, str]:
        return {"Authorization": f"SSWS {self._token}"}


class PrivateKeyJwtAuth(OktaAuth):
    """OAuth 2.0 client credentials with ``private_key_jwt``, optionally DPoP-bound; token cached."""

    scheme = "oauth"

    def __init__(
        self,
        org_url: str,
        client_id: str,
        private_key_pem: str,
        key_id: str | None,
        dpop: bool = False,
        scopes: str = SCOPES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token_url = f"{org_url}/oauth2/v1/token"
        self.client_id = client_id
        self.key_id = key_id
        self.dpop = dpop
        self.scopes = scopes
        self.clock = clock
        try:
            self._key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
        except (ValueError, TypeError):
            raise OktaMisconfigured("OKTA_PRIVATE_KEY is not a readable PEM private key", status=0) from None
        self._alg = _alg_for(self._key)
        # The DPoP proof key: a separate EC key made per process (its thumbprint binds the token).
        self._dpop_key = ec.generate_private_key(ec.SECP256R1()) if dpop else None
        self._dpop_jwk = _public_jwk(self._dpop_key) if self._dpop_key is not None else None
        self._nonce: str | None = None
        self._token: str | None = None
        self._token_type = "Bearer"
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.token_requests = 0

    def assertion(self) -> str:
        """A client assertion for one token request: fresh ``jti``, ``aud`` = the token URL, 5 min life."""
        now = int(self.clock())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
        }
        headers = {"kid": self.key_id} if self.key_id else None
        return jwt.encode(claims, self._key, algorithm=self._alg, headers=headers)  # type: ignore[arg-type]

    def proof(self, method: str, url: str, access_token: str | None = None) -> str:
        """A DPoP proof for one request (``ath`` when it carries an access token)."""
        assert self._dpop_key is not None
        parts = urlsplit(url)
        claims: dict[str, Any] = {
            "htm": method,
            "htu": f"{parts.scheme}://{parts.netloc}{parts.path}",
            "iat": int(self.clock()),
            "jti": uuid.uuid4().hex,
        }
        if self._nonce:
            claims["nonce"] = self._nonce
        if access_token is not None:
            claims["ath"] = _b64url(hashlib.sha256(access_token.encode()).digest())
        return jwt.encode(
            claims,
            self._dpop_key,  # type: ignore[arg-type]
            algorithm="ES256",
            headers={"typ": "dpop+jwt", "jwk": self._dpop_jwk},
        )

    def invalidate(self) -> None:
        self._token = None
        self._expires_at = 0.0

    def remember_nonce(self, nonce: str) -> None:
        self._nonce = nonce

    async def headers(self, http: httpx.AsyncClient, method: str, url: str) -> dict[str, str]:
        token = await self._access_token(http)
        if self.dpop:
            return {"Authorization": f"DPoP {token}", "DPoP": self.proof(method, url, token)}
        return {"Authorization": f"Bearer {token}"}

    async def _access_token(self, http: httpx.AsyncClient) -> str:
        if self._token is not None and self.clock() < self._expires_at - TOKEN_REFRESH_MARGIN:
            return self._token
        async with self._lock:  # one token request at a time: the endpoint allows ~4/s per org
            if self._token is not None and self.clock() < self._expires_at - TOKEN_REFRESH_MARGIN:
                return self._token
            await self._fetch_token(http)
            assert self._token is not None
            return self._token

    async def _fetch_token(self, http: httpx.AsyncClient) -> None:
        assertion = self.assertion()
        for _attempt in range(2):
            form = {
                "grant_type": "client_credentials",
                "scope": self.scopes,
                "client_assertion_type": JWT_BEARER,
                "client_assertion": assertion,
            }
            headers = {"Accept": "application/json"}
            if self.dpop:
                headers["DPoP"] = self.proof("POST", self.token_url)
            self.token_requests += 1
            try:
                resp = await http.post(self.token_url, data=form, headers=headers)
            except httpx.TimeoutException:
                raise OktaUnavailable("Okta's token endpoint did not answer in time.") from None
            except httpx.HTTPError as exc:
                raise OktaUnavailable(f"Okta's token endpoint is unreachable ({type(exc).__name__}).") from None
            body = _json_or_empty(resp)
            if resp.status_code == 200 and isinstance(body.get("access_token"), str):
                self._token = body["access_token"]
                self._token_type = str(body.get("token_type") or "Bearer")
                self._expires_at = self.clock() + float(body.get("expires_in") or 3600)
                return
            error = str(body.get("error") or "")
            if error == "use_dpop_nonce" and resp.headers.get("DPoP-Nonce") and _attempt == 0:
                # The assertion is spent only by a request that gets a token: reuse it for the retry.
                self._nonce = resp.headers["DPoP-Nonce"]
                continue
            if resp.status_code == 429:
                raise OktaRateLimited("Okta's token endpoint is rate limited.", retry_after=_retry_after(resp, 1.0))
            if resp.status_code >= 500:
                raise OktaUnavailable(f"Okta's token endpoint failed (HTTP {resp.status_code}).")
            description = str(body.get("error_description") or "")[:200]
            raise OktaMisconfigured(
                f"Okta refused the service app's token request ({error or resp.status_code}): {description}",
                status=resp.status_code,
                error_code=error or None,
            )
        raise OktaMisconfigured("Okta kept asking for a new DPoP nonce.", status=400, error_code="use_dpop_nonce")


def auth_from_settings(settings: Settings, clock: Callable[[], float] = time.time) -> OktaAuth:
    """The auth mode the settings configure (``MissingSetting`` when none is complete)."""
    settings.require("OKTA_ORG_URL")
    assert settings.okta_org_url is not None
    if settings.okta_auth_mode() == "ssws":
        return SswsAuth(settings.secret("OKTA_API_TOKEN"))
    settings.require("OKTA_CLIENT_ID", "OKTA_PRIVATE_KEY")
    assert settings.okta_client_id is not None
    return PrivateKeyJwtAuth(
        settings.okta_org_url,
        settings.okta_client_id,
        settings.okta_private_key_pem(),
        settings.okta_key_id,
        dpop=settings.okta_dpop,
        clock=clock,
    )


# ----------------------------------------------------------------------------------------- client


def _json_or_empty(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = orjson.loads(resp.content) if resp.content else {}
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def _json_list(resp: httpx.Response) -> list[Any]:
    try:
        body = orjson.loads(resp.content) if resp.content else []
    except orjson.JSONDecodeError:
        raise OktaUnavailable("Okta answered something that is not JSON.") from None
    return body if isinstance(body, list) else []


def _next_link(resp: httpx.Response, org_url: str) -> str | None:
    """The ``Link: rel="next"`` URL, only when it points back at the org."""
    href = resp.links.get("next", {}).get("url")
    return href if isinstance(href, str) and href.startswith(org_url + "/") else None


def _retry_after(resp: httpx.Response, default: float, now: float | None = None) -> float:
    now = time.time() if now is None else now
    reset = resp.headers.get("X-Rate-Limit-Reset")
    if reset:
        with contextlib.suppress(ValueError):
            return max(0.0, float(reset) - now)
    after = resp.headers.get("Retry-After")
    if after:
        with contextlib.suppress(ValueError):
            return max(0.0, float(after))
    return default


USERS_BUCKET = "/api/v1/users"


def rate_bucket(method: str, path: str) -> str:
    """Okta's rate-limit bucket of one request: each family has its own per-minute window and headers.

    A user's sub-resources (factors, verify, push polls, lifecycle, groups) share ``/api/v1/users``
    with the search; a GET of one user, a group, the System Log and the token endpoint have their own.
    """
    if path.startswith("/oauth2/"):
        return "/oauth2/v1/token"
    parts = path.rstrip("/").split("/")
    family = parts[3] if len(parts) > 3 and parts[1:3] == ["api", "v1"] else ""
    if family == "users":
        if len(parts) == 5 and parts[4] != "me":
            return "/api/v1/users/{id}" if method in ("GET", "HEAD") else "/api/v1/users/{id} POST/PUT/DELETE"
        return USERS_BUCKET
    if family == "groups":
        return "/api/v1/groups/{id}" if len(parts) == 5 else "/api/v1/groups"
    if family == "logs":
        return "/api/v1/logs"
    return "/api/v1"


def _endpoint(method: str, path: str) -> str:
    """A low-cardinality name for metrics: ids replaced by placeholders."""
    parts = path.split("/")
    out = []
    for i, part in enumerate(parts):
        prev = parts[i - 1] if i else ""
        if prev in ("users", "factors", "transactions", "groups") and part and part not in ("me",):
            out.append("{id}")
        else:
            out.append(part)
    return f"{method} {'/'.join(out)}"


Idempotency = Literal["idempotent", "once"]


# Per replica. Okta's default concurrency limit is 75 requests in flight per org: two replicas stay
# under it.
OKTA_POOL_LIMITS = httpx.Limits(max_connections=30, max_keepalive_connections=30, keepalive_expiry=5.0)


def okta_http_client() -> httpx.AsyncClient:
    """The worker's HTTP client: httpx's API on aiohttp's connection pool and C parser.

    A push poll is one small GET, thousands a minute: with httpcore's pool (which checks every idle
    socket on each request) a poll cost about 2 ms of CPU, with aiohttp's about half (bench/okta_worker.py).
    ``HttpxAiohttpClient`` (not ``transport=``, which would make httpx ignore them) keeps honouring
    HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment.
    """
    return HttpxAiohttpClient(
        limits=OKTA_POOL_LIMITS,
        timeout=DEFAULT_TIMEOUT,
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
    )


class OktaClient:
    """The worker's Okta API client. One instance per process; safe for concurrent use."""

    def __init__(
        self,
        org_url: str,
        auth: OktaAuth,
        http: httpx.AsyncClient | None = None,
        *,
        rate_limit_wait: float = 5.0,
        retries: int = 2,
        backoff: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.org_url = org_url.rstrip("/")
        self.auth = auth
        self._own_http = http is None
        self.http = http or okta_http_client()
        self.rate_limit_wait = rate_limit_wait
        self.retries = retries
        self.backoff = backoff
        self.clock = clock
        self.rate: RateLimit | None = None  # the last answer's, whatever its bucket
        self.rates: dict[str, RateLimit] = {}  # the last seen per bucket (``rate_bucket``)
        self.status = "unknown"  # last seen: ok, unavailable, rate_limited, misconfigured
        self.status_at: float | None = None

    def __repr__(self) -> str:
        return f"OktaClient({self.org_url!r}, auth={self.auth!r})"

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> OktaClient:
        settings.require("OKTA_ORG_URL")
        assert settings.okta_org_url is not None
        return cls(settings.okta_org_url, auth_from_settings(settings), **kwargs)

    async def __aenter__(self) -> OktaClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    # -- the one request path ---------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        idempotency: Idempotency | None = None,
        rate_limit_wait: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        accept_status: Collection[int] = (),
    ) -> httpx.Response:
        """Send one API request with auth, rate-limit handling and (idempotent only) retries.

        An answer whose status is in ``accept_status`` (say 403 and 404 of an optional feature) is
        returned as it is, for the caller to read, instead of becoming an error.
        """
        url = path_or_url if path_or_url.startswith("http") else f"{self.org_url}{path_or_url}"
        if idempotency is None:
            idempotency = "idempotent" if method in ("GET", "HEAD", "DELETE") else "once"
        wait_budget = self.rate_limit_wait if rate_limit_wait is None else rate_limit_wait
        path = urlsplit(url).path
        endpoint = _endpoint(method, path)
        bucket = rate_bucket(method, path)
        attempt = 0
        reauthed = False
        nonce_retried = False
        while True:
            attempt += 1
            headers = dict(extra_headers or {})
            headers.update(await self.auth.headers(self.http, method, url))
            started = time.perf_counter()
            try:
                resp = await self.http.request(method, url, params=params, json=json, headers=headers)
            except httpx.HTTPError as exc:
                metrics.OKTA_REQUESTS.labels(endpoint, "error").inc()
                timeout = isinstance(exc, httpx.TimeoutException)
                if idempotency == "idempotent" and attempt <= self.retries:
                    await asyncio.sleep(self._backoff(attempt))
                    continue
                self._seen("unavailable")
                # A POST that timed out after connecting may have reached Okta (an SMS may be on its way).
                maybe_sent = idempotency == "once" and not isinstance(exc, httpx.ConnectError)
                what = "did not answer in time" if timeout else f"is unreachable ({type(exc).__name__})"
                raise OktaUnavailable(f"Okta {what}.", maybe_sent=maybe_sent) from None
            metrics.OKTA_LATENCY.labels(endpoint).observe(time.perf_counter() - started)
            metrics.OKTA_REQUESTS.labels(endpoint, str(resp.status_code)).inc()
            rate = RateLimit.from_headers(resp.headers, self.clock())
            if rate is not None:
                self.rate = rate
                if rate.limit > 0:  # Limit 0: a concurrency violation, not the bucket's window
                    self.rates[bucket] = rate
                metrics.RATE_REMAINING.set(rate.remaining)
            status = resp.status_code
            if status < 400 or status in accept_status:
                self._seen("ok")
                return resp
            body = _json_or_empty(resp)
            code = body.get("errorCode")
            if status == 401 and not nonce_retried and "use_dpop_nonce" in resp.headers.get("WWW-Authenticate", ""):
                nonce_retried = True
                if nonce := resp.headers.get("DPoP-Nonce"):
                    self.auth.remember_nonce(nonce)
                continue
            if status == 401 and not reauthed and self.auth.scheme == "oauth":
                # An expired or revoked access token: fetch a new one once. Okta did not run the call.
                reauthed = True
                self.auth.invalidate()
                continue
            if status == 429 and code in RESEND_WINDOW:
                raise self._raise_for(resp, body)
            if status == 429:
                delay = _retry_after(resp, 1.0, self.clock()) + random.uniform(0.05, 0.5)
                metrics.RATE_LIMITED.inc()
                # 429 means Okta did not process the call: waiting and re-sending is safe even for a POST.
                if delay <= wait_budget and attempt <= 3:
                    wait_budget -= delay
                    await asyncio.sleep(delay)
                    continue
                self._seen("rate_limited")
                raise OktaRateLimited("Okta's rate limit is reached; trying again shortly.", retry_after=delay)
            if status >= 500:
                if idempotency == "idempotent" and attempt <= self.retries:
                    await asyncio.sleep(self._backoff(attempt))
                    continue
                self._seen("unavailable")
                raise OktaUnavailable(f"Okta answered HTTP {status}.", maybe_sent=idempotency == "once")
            raise self._raise_for(resp, body)

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff * 2 ** (attempt - 1), 2.0) * random.uniform(0.5, 1.0)

    def _seen(self, status: str) -> None:
        self.status = status
        self.status_at = self.clock()

    def _raise_for(self, resp: httpx.Response, body: Mapping[str, Any]) -> OktaError:
        """Map one error answer to the error tree (returns it; the caller raises)."""
        status = resp.status_code
        code = body.get("errorCode")
        code = str(code) if code else None
        summary = str(body.get("errorSummary") or "")[:300]
        if status == 401:
            self._seen("misconfigured")
            return OktaMisconfigured(
                "Okta refused our credentials (401): check OKTA_API_TOKEN or the service app.", status, code
            )
        if status == 403 and code in (None, "E0000006", "E0000005"):
            self._seen("misconfigured")
            return OktaMisconfigured(
                "Okta says the helpdesk app lacks permission for this (403): check its scopes and admin role.",
                status,
                code,
            )
        self._seen("ok")
        if code in RESEND_WINDOW:
            wait = RESEND_WINDOW[code]
            return OktaResendTooSoon(
                f"Okta allows one new code every {wait:.0f} s; wait a moment before resending.", status, code, wait
            )
        if code in _AGENT_MESSAGES:
            kind, message = _AGENT_MESSAGES[code]
            return kind(message, status, code, summary)
        if status == 404:
            return OktaNotFound("Okta could not find that (404).", status, code, summary)
        return OktaRejected(f"Okta refused the request: {summary or f'HTTP {status}'}", status, code, summary)

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = await self.request(method, path, **kwargs)
        if not resp.content:
            return {}
        try:
            return orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            raise OktaUnavailable("Okta answered something that is not JSON.") from None

    # -- users ------------------------------------------------------------------------------------

    async def ping(self) -> None:
        """One cheap authenticated call (``helpdesk check``)."""
        await self.request("GET", "/api/v1/users", params={"limit": "1"})

    async def search_users(
        self, expression: str, limit: int = 20, rate_limit_wait: float | None = None
    ) -> list[OktaUser]:
        users = await self._json(
            "GET",
            "/api/v1/users",
            params={"search": expression, "limit": str(limit)},
            rate_limit_wait=rate_limit_wait,
        )
        return [OktaUser.from_json(u) for u in users if isinstance(u, dict)]

    async def find_user_by_email(self, email: str) -> OktaUser | None:
        """The user whose login (preferred) or email equals ``email``; None if there is none."""
        quoted = scim_quote(email)
        users = await self.search_users(f"profile.login eq {quoted} or profile.email eq {quoted}", limit=5)
        users = [u for u in users if u.status != "DEPROVISIONED"]
        by_login = [u for u in users if u.login.casefold() == email.casefold()]
        best = by_login or users
        return best[0] if best else None

    async def get_user(self, user_id: str) -> OktaUser:
        return OktaUser.from_json(await self._json("GET", f"/api/v1/users/{user_id}"))

    async def user_group_names(self, user_id: str) -> list[str]:
        """The names of the user's groups. Names are not unique (an APP_GROUP can carry any): prefer
        :meth:`user_groups` and compare ids or name and type."""
        return [g.name for g in await self.user_groups(user_id)]

    async def user_groups(self, user_id: str) -> list[OktaGroup]:
        """The user's groups (Everyone included), each with its id, name and type."""
        groups = await self._json("GET", f"/api/v1/users/{user_id}/groups")
        return [OktaGroup.from_json(g) for g in groups if isinstance(g, dict) and g.get("id")]

    async def find_groups(self, name: str, group_type: str | None) -> list[OktaGroup]:
        """The groups named exactly ``name`` (case included), of ``group_type`` when given.

        Uses ``search=profile.name eq "…" [and type eq "…"]`` (eventually consistent, paged) and
        keeps only exact-case matches, since Okta compares values case-insensitively.
        """
        expression = f"profile.name eq {scim_quote(name)}"
        if group_type is not None:
            expression += f" and type eq {scim_quote(group_type)}"
        url: str | None = "/api/v1/groups"
        params: dict[str, str] | None = {"search": expression, "limit": "200"}
        found: list[OktaGroup] = []
        for _ in range(MAX_GROUP_PAGES):
            if url is None:
                break
            resp = await self.request("GET", url, params=params)
            body = _json_list(resp)
            found += [OktaGroup.from_json(g) for g in body if isinstance(g, dict) and g.get("id")]
            url, params = _next_link(resp, self.org_url), None
        return [g for g in found if g.name == name and (group_type is None or g.type == group_type)]

    async def get_group(self, group_id: str) -> OktaGroup:
        """One group by id (``OktaNotFound`` when there is none)."""
        return OktaGroup.from_json(await self._json("GET", f"/api/v1/groups/{group_id}"))

    # -- assurance signals ------------------------------------------------------------------------

    async def list_logs(
        self,
        filter: str,
        since: datetime,
        until: datetime | None = None,
        limit: int = 100,
        rate_limit_wait: float | None = 0.0,
    ) -> list[dict[str, Any]]:
        """One page of System Log events matching the SCIM ``filter``, oldest first.

        The System Log has its own small rate-limit bucket (20 a minute on the smallest plans), so by
        default a 429 raises ``OktaRateLimited`` at once instead of waiting. Pick the User in an
        event's ``target`` by ``type``, not by position::

            events = await okta.list_logs(f'target.id eq "{uid}" and eventType sw "user.mfa."', since)
        """
        params = {"filter": filter, "since": okta_timestamp(since), "limit": str(max(0, min(limit, 1000)))}
        if until is not None:
            params["until"] = okta_timestamp(until)
        params["sortOrder"] = "ASCENDING"
        body = await self._json("GET", "/api/v1/logs", params=params, rate_limit_wait=rate_limit_wait)
        return [e for e in body if isinstance(e, dict)] if isinstance(body, list) else []

    async def user_risk(self, user_id: str) -> str | None:
        """The user's risk level, HIGH / MEDIUM / LOW / NONE, or None when the org can't tell.

        None when Okta answers 403 or 404 (no Identity Threat Protection, or the scope is not granted):
        "unknown" must never be read as NONE.
        """
        resp = await self.request("GET", f"/api/v1/users/{user_id}/risk", accept_status=(403, 404))
        if resp.status_code in (403, 404):
            log.info(
                "okta_user_risk_unknown", status=resp.status_code, error_code=_json_or_empty(resp).get("errorCode")
            )
            return None
        level = _json_or_empty(resp).get("riskLevel")
        return level if isinstance(level, str) and level in RISK_LEVELS else None

    async def tac_authenticator_id(self) -> str | None:
        """The id of the org's ACTIVE Temporary Access Code authenticator; None if none or not readable."""
        resp = await self.request("GET", "/api/v1/authenticators", accept_status=(403, 404))
        if resp.status_code in (403, 404):
            return None
        for authenticator in _json_list(resp):
            if (
                isinstance(authenticator, dict)
                and authenticator.get("key") == "tac"
                and authenticator.get("status") == "ACTIVE"
                and authenticator.get("id")
            ):
                return str(authenticator["id"])
        return None

    async def create_tac(self, user_id: str, authenticator_id: str, ttl_minutes: int = 60) -> TacIssued:
        """Issue a Temporary Access Code, single use, valid ``ttl_minutes``; it replaces any earlier one.

        Never retried on a timeout or a 5xx. The code is for the user only: never log it.
        """
        body = await self._json(
            "POST",
            f"/api/v1/users/{user_id}/authenticator-enrollments/tac",
            json={"authenticatorId": authenticator_id, "profile": {"ttl": str(ttl_minutes), "multiUse": False}},
        )
        profile = body.get("profile") if isinstance(body, dict) else None
        code = profile.get("tac") if isinstance(profile, dict) else None
        if not isinstance(code, str) or not code:
            raise OktaRejected("Okta did not return a temporary access code.", 200, None)
        expires = profile.get("expiresAt") if isinstance(profile, dict) else None
        return TacIssued(code=code, expires_at=str(expires) if expires else None)

    # -- factors ----------------------------------------------------------------------------------

    async def list_factors(self, user_id: str) -> list[dict[str, Any]]:
        factors = await self._json("GET", f"/api/v1/users/{user_id}/factors")
        return [f for f in factors if isinstance(f, dict)]

    async def verify_push(self, user_id: str, factor_id: str) -> PushStarted:
        """Send a push with number matching. Never retried: a second call is a second push."""
        body = await self._json(
            "POST",
            f"/api/v1/users/{user_id}/factors/{factor_id}/verify",
            json={"useNumberMatchingChallenge": True},
            extra_headers={"User-Agent": USER_AGENT},
        )
        links = body.get("_links") or {}
        poll = (links.get("poll") or {}).get("href")
        if not poll:
            raise OktaRejected("Okta did not start a push verification.", 200, None)
        challenge = (body.get("_embedded") or {}).get("challenge") or {}
        answer = challenge.get("correctAnswer")
        return PushStarted(
            poll_url=str(poll),
            cancel_url=(links.get("cancel") or {}).get("href"),
            expires_at=body.get("expiresAt"),
            correct_answer=int(answer) if isinstance(answer, int | str) and str(answer).isdigit() else None,
        )

    async def poll_push(self, poll_url: str) -> PollResult:
        """Poll a push once (``rate_limit_wait=0``: a poll job naks instead of sleeping)."""
        if not poll_url.startswith(self.org_url + "/"):
            raise OktaRejected("The push poll link does not belong to the Okta org.", 400, None)
        try:
            body = await self._json("GET", poll_url, rate_limit_wait=0.0)
        except OktaNotFound:
            raise OktaTransactionGone("Okta no longer knows this push.", 404, "E0000007") from None
        answer = ((body.get("_embedded") or {}).get("challenge") or {}).get("correctAnswer")
        return PollResult(result=str(body.get("factorResult") or "WAITING"), correct_answer=answer)

    async def cancel_push(self, cancel_url: str) -> None:
        if not cancel_url.startswith(self.org_url + "/"):
            return
        with contextlib.suppress(OktaRejected):
            await self.request("DELETE", cancel_url, rate_limit_wait=0.0)

    async def send_challenge(self, user_id: str, factor_id: str) -> None:
        """Send an SMS / call / email code (``POST {}``). Never retried on a timeout or a 5xx."""
        body = await self._json("POST", f"/api/v1/users/{user_id}/factors/{factor_id}/verify", json={})
        if body.get("factorResult") not in ("CHALLENGE", "WAITING", None):
            raise OktaRejected("Okta did not send a code.", 200, None)

    async def verify_code(self, user_id: str, factor_id: str, code: str) -> None:
        """Check a passcode; returns on SUCCESS, raises ``OktaWrongCode`` & co. otherwise."""
        body = await self._json("POST", f"/api/v1/users/{user_id}/factors/{factor_id}/verify", json={"passCode": code})
        if body.get("factorResult") != "SUCCESS":
            raise OktaWrongCode("That code or answer is not right.", 200, None)

    async def verify_answer(self, user_id: str, factor_id: str, answer: str) -> None:
        body = await self._json("POST", f"/api/v1/users/{user_id}/factors/{factor_id}/verify", json={"answer": answer})
        if body.get("factorResult") != "SUCCESS":
            raise OktaWrongCode("That answer is not right.", 200, None)

    # -- lifecycle --------------------------------------------------------------------------------

    async def temp_password(self, user_id: str) -> str:
        """Expire the password with a temporary one; older orgs only know ``expire_password?tempPassword``."""
        try:
            body = await self._json("POST", f"/api/v1/users/{user_id}/lifecycle/expire_password_with_temp_password")
        except OktaNotFound:
            body = await self._json(
                "POST", f"/api/v1/users/{user_id}/lifecycle/expire_password", params={"tempPassword": "true"}
            )
        value = body.get("tempPassword")
        if not isinstance(value, str) or not value:
            raise OktaRejected("Okta did not return a temporary password.", 200, None)
        return value

    async def reset_password_email(self, user_id: str) -> None:
        await self.request("POST", f"/api/v1/users/{user_id}/lifecycle/reset_password", params={"sendEmail": "true"})

    async def reset_factor(self, user_id: str, factor_id: str) -> None:
        await self.request("DELETE", f"/api/v1/users/{user_id}/factors/{factor_id}")

    async def reset_all_factors(self, user_id: str) -> None:
        await self.request("POST", f"/api/v1/users/{user_id}/lifecycle/reset_factors")

    async def unlock(self, user_id: str) -> None:
        await self.request("POST", f"/api/v1/users/{user_id}/lifecycle/unlock")

    async def revoke_sessions(self, user_id: str, oauth_tokens: bool = True) -> None:
        """End the user's Okta sessions and, by default, revoke their OAuth/OIDC tokens too.

        Okta's own default is ``oauthTokens=false``; apps' own sessions survive either way.
        """
        params = {"oauthTokens": "true" if oauth_tokens else "false"}
        await self.request("DELETE", f"/api/v1/users/{user_id}/sessions", params=params)


def okta_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z``, as Okta writes them (a naive datetime is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def scim_quote(value: str) -> str:
    """A SCIM string literal: quotes and backslashes escaped, control characters dropped."""
    cleaned = "".join(ch for ch in value if ch >= " ")
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'
