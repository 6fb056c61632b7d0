"""Who may call the hook, and whether a status callback really comes from the provider.

    auth = HookAuth.from_settings(settings, http)
    failure = await auth.check(request.headers)     # None when authenticated, else a reason
    valid_twilio_signature(url, form, token, request.headers["X-Twilio-Signature"])

Okta authenticates to the hook in one of two ways, configured on the inline hook:

* **header**: Okta sends a fixed header (``TELEPHONY_HOOK_AUTH_HEADER``, default ``Authorization``)
  whose value must equal ``TELEPHONY_HOOK_AUTH`` (or, while a secret is being rotated,
  ``TELEPHONY_HOOK_AUTH_PREVIOUS``); compared in constant time.
* **OAuth 2.0**: Okta sends ``Authorization: Bearer <JWT>`` from the org's authorization server
  ``TELEPHONY_HOOK_ISSUER``; the signature is checked with the issuer's JWKS (``{issuer}/v1/keys``,
  cached, fetched again when a token names an unknown ``kid``), then ``iss``, ``aud``
  (``TELEPHONY_HOOK_AUDIENCE``), ``exp`` and the scope ``TELEPHONY_HOOK_SCOPE``.

When both are configured either one is accepted. Reasons returned are short labels
(``missing``, ``mismatch``, ``bad_token`` …); neither the header nor the token ever appears in them.

Everything here is hostile until checked: header values may hold bytes that are not UTF-8 (aiohttp
hands them over as surrogate escapes), a token's header may name an algorithm its key cannot verify
(``ES256`` with an RSA ``kid``, ``none``, ``HS256`` with an RSA public key). Each is a refusal with a
reason, never an exception.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import jwt
from jwt import PyJWK

from shared.logging import get_logger
from shared.settings import MissingSetting, Settings

log = get_logger(__name__)

ALLOWED_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256"]
# The key each algorithm needs: JWK ``kty`` and, for EC, the curve.
KEY_FOR_ALGORITHM: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
}
MAX_TOKEN_LENGTH = 8192


class TokenInvalid(Exception):
    """Raised by :meth:`JwtVerifier.verify` with a short reason label (never the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JwksCache:
    """The issuer's keys by ``kid``, fetched again when a token names an unknown ``kid``.

    Refetches are rate-limited (``max_refreshes`` per ``per`` seconds, the start-up fetch included), so
    tokens with made-up ``kid`` values cannot turn the hook into a load generator for the issuer.
    """

    def __init__(
        self, url: str, http: httpx.AsyncClient, max_refreshes: int = 3, per: float = 60.0, timeout: float = 1.0
    ) -> None:
        self.url = url
        self._http = http
        self._keys: dict[str, PyJWK] = {}
        self._algorithms: dict[str, frozenset[str]] = {}  # kid → the algorithms its key can verify
        self._recent: deque[float] = deque()
        self._max_refreshes = max_refreshes
        self._per = per
        self._timeout = timeout
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def key(self, kid: str) -> PyJWK:
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:  # one fetch at a time; the others reuse its result
            if kid not in self._keys and self._may_refresh():
                await self.refresh()
        if kid not in self._keys:
            raise TokenInvalid("unknown_kid")
        return self._keys[kid]

    def algorithms(self, kid: str) -> frozenset[str]:
        """The algorithms the key ``kid`` verifies: the JWK's ``alg`` if it names one, else by key type."""
        return self._algorithms.get(kid, frozenset())

    def _may_refresh(self) -> bool:
        now = time.monotonic()
        while self._recent and now - self._recent[0] > self._per:
            self._recent.popleft()
        return len(self._recent) < self._max_refreshes

    async def refresh(self) -> None:
        """Fetch the JWKS now; ``TokenInvalid("jwks_unavailable")`` if it cannot be read."""
        self._recent.append(time.monotonic())
        self.fetches += 1
        try:
            response = await self._http.get(self.url, timeout=self._timeout)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("telephony.jwks.fetch_failed", error=type(exc).__name__)
            raise TokenInvalid("jwks_unavailable") from None
        keys: dict[str, PyJWK] = {}
        algorithms: dict[str, frozenset[str]] = {}
        for entry in document.get("keys", []) if isinstance(document, dict) else []:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or "kid" not in entry:
                continue
            try:
                key = PyJWK(entry)
            except (jwt.PyJWTError, ValueError, TypeError):
                continue
            kid = str(entry["kid"])
            keys[kid] = key
            algorithms[kid] = frozenset(
                alg
                for alg, (kty, curve) in KEY_FOR_ALGORITHM.items()
                if entry.get("kty") == kty
                and (curve is None or entry.get("crv") == curve)
                and entry.get("alg", alg) == alg
            )
        self._keys, self._algorithms = keys, algorithms


class JwtVerifier:
    """Validates Okta's OAuth 2.0 access tokens (signature, ``iss``, ``aud``, ``exp``, scope)."""

    def __init__(self, issuer: str, audience: str, scope: str | None, jwks: JwksCache, leeway: float = 30.0) -> None:
        self.issuer = issuer
        self.audience = audience
        self.scope = scope
        self.jwks = jwks
        self.leeway = leeway

    async def verify(self, token: str) -> dict[str, Any]:
        if not token.isascii() or len(token) > MAX_TOKEN_LENGTH:
            raise TokenInvalid("bad_token")
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError):
            raise TokenInvalid("bad_token") from None
        kid, alg = header.get("kid"), header.get("alg")
        if not isinstance(kid, str) or not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise TokenInvalid("bad_token")
        key = await self.jwks.key(kid)
        if alg not in self.jwks.algorithms(kid):
            raise TokenInvalid("wrong_algorithm")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[header["alg"]],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenInvalid("expired") from None
        except jwt.InvalidAudienceError:
            raise TokenInvalid("wrong_audience") from None
        except jwt.InvalidIssuerError:
            raise TokenInvalid("wrong_issuer") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise TokenInvalid("bad_signature") from None
        if self.scope and self.scope not in _scopes(claims):
            raise TokenInvalid("missing_scope")
        return claims


def _scopes(claims: Mapping[str, Any]) -> set[str]:
    # Okta puts scopes in "scp" (a list); RFC 9068 uses "scope" (space-separated).
    raw = claims.get("scp", claims.get("scope", []))
    if isinstance(raw, str):
        return set(raw.split())
    return {str(s) for s in raw} if isinstance(raw, list) else set()


@dataclass
class HookAuth:
    """The hook's authentication: a shared header value, an OAuth verifier, or both."""

    header_name: str
    header_value: bytes | None
    verifier: JwtVerifier | None
    previous_value: bytes | None = None  # TELEPHONY_HOOK_AUTH_PREVIOUS, accepted while a secret is rotated

    @classmethod
    def from_settings(cls, settings: Settings, http: httpx.AsyncClient) -> HookAuth:
        """Build from ``TELEPHONY_HOOK_*``; ``MissingSetting`` when no method is configured."""
        value = settings.telephony_hook_auth.get_secret_value() if settings.telephony_hook_auth else ""
        verifier = None
        if settings.telephony_hook_issuer:
            settings.require("TELEPHONY_HOOK_AUDIENCE")
            issuer = settings.telephony_hook_issuer.rstrip("/")
            jwks = JwksCache(f"{issuer}/v1/keys", http)
            verifier = JwtVerifier(issuer, str(settings.telephony_hook_audience), settings.telephony_hook_scope, jwks)
        if not value and verifier is None:
            raise MissingSetting("TELEPHONY_HOOK_AUTH", "TELEPHONY_HOOK_ISSUER")
        previous = settings.telephony_hook_auth_previous
        previous_value = previous.get_secret_value().encode() if previous and previous.get_secret_value() else None
        return cls(
            settings.telephony_hook_auth_header,
            value.encode() if value else None,
            verifier,
            previous_value if value else None,
        )

    async def check(self, headers: Mapping[str, str]) -> str | None:
        """``None`` if the request is authenticated, else the reason it is not."""
        reason = "missing"
        if self.header_value is not None:
            presented = headers.get(self.header_name)
            if presented is not None:
                # The bytes as received: a value that is not UTF-8 compares (and fails) like any other.
                raw = presented.encode("utf-8", "surrogateescape")
                current = hmac.compare_digest(raw, self.header_value)
                previous = self.previous_value is not None and hmac.compare_digest(raw, self.previous_value)
                if current or previous:
                    return None
                reason = "mismatch"
        if self.verifier is not None:
            scheme, _, token = headers.get("Authorization", "").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                try:
                    await self.verifier.verify(token.strip())
                except TokenInvalid as exc:
                    return exc.reason
                return None
        return reason


def twilio_signature(url: str, params: Iterable[tuple[str, str]], token: str) -> str:
    """Twilio's ``X-Twilio-Signature``: base64(HMAC-SHA1(token, url + each name+value, sorted by name))."""
    payload = url + "".join(f"{k}{v}" for k, v in sorted(params, key=lambda kv: (kv[0], kv[1])))
    # surrogatepass: a URL or value built from undecodable bytes hashes (and fails) instead of raising
    digest = hmac.new(token.encode(), payload.encode("utf-8", "surrogatepass"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def valid_twilio_signature(url: str, params: Iterable[tuple[str, str]], token: str, signature: str) -> bool:
    """Constant-time check of ``signature``; the URL is tried with and without its default port."""
    if not signature.isascii():
        return False  # a base64 signature is ASCII; anything else (even undecodable bytes) is wrong
    pairs = list(params)
    expected = signature.encode()
    return any(
        hmac.compare_digest(twilio_signature(candidate, pairs, token).encode(), expected)
        for candidate in _url_forms(url)
    )


def _url_forms(url: str) -> list[str]:
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    if default is None or not host:
        return [url]
    if parts.port is None:
        other = parts._replace(netloc=f"{host}:{default}")
    elif parts.port == default:
        other = parts._replace(netloc=host)
    else:
        return [url]
    return [url, urlunsplit(other)]
