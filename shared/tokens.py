"""The signed case token kept in a view's ``private_metadata``: case id + agent, HS256, expiring.

Slack sends ``private_metadata`` back verbatim, so anything in it is attacker-controlled unless
signed. The gateway checks the token before anything reaches the worker; the worker checks it again.

    tokens = CaseTokens.from_settings(settings)   # CASE_TOKEN_SECRET (+ CASE_TOKEN_SECRET_PREVIOUS)
    token = tokens.issue(case_id="c_1", agent_id="U123")
    claims = tokens.verify(token, agent_id="U123")   # CaseTokenError subclasses on failure

Rotating the secret without downtime: set the new one as ``CASE_TOKEN_SECRET`` and the old one as
``CASE_TOKEN_SECRET_PREVIOUS`` on every gateway and worker; tokens are issued with the new secret and
either verifies. Remove the previous one after ``CASE_TOKEN_TTL``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt

if TYPE_CHECKING:
    from shared.settings import Settings

AUDIENCE = "helpdesk-verify:case"
ISSUER = "helpdesk-verify"


class CaseTokenError(Exception):
    """Base: the token cannot be trusted. Messages never include the token itself."""


class CaseTokenInvalid(CaseTokenError):
    """Raised for a tampered, garbled or foreign token (bad signature, wrong audience, missing claims)."""


class CaseTokenExpired(CaseTokenError):
    """Raised when the token's ``exp`` has passed."""


class CaseTokenWrongAgent(CaseTokenError):
    """Raised when the Slack user acting is not the case's agent."""


@dataclass(frozen=True)
class CaseClaims:
    case_id: str
    agent_id: str
    expires_at: int


class CaseTokens:
    def __init__(self, secret: str, ttl: int = 3600, leeway: int = 5, previous: str | None = None) -> None:
        if len(secret) < 32:
            raise ValueError("CASE_TOKEN_SECRET must be at least 32 characters")
        if previous is not None and len(previous) < 32:
            raise ValueError("CASE_TOKEN_SECRET_PREVIOUS must be at least 32 characters")
        self._secret = secret
        # Verified with the current secret first, then the previous one (a rotation under way).
        self._secrets = (secret,) if not previous else (secret, previous)
        self.ttl = ttl
        self.leeway = leeway

    @classmethod
    def from_settings(cls, settings: Settings) -> CaseTokens:
        """``CASE_TOKEN_SECRET`` (required), ``CASE_TOKEN_SECRET_PREVIOUS`` (optional), ``CASE_TOKEN_TTL``."""
        previous = settings.case_token_secret_previous
        return cls(
            settings.secret("CASE_TOKEN_SECRET"),
            ttl=settings.case_token_ttl,
            previous=previous.get_secret_value() if previous is not None and previous.get_secret_value() else None,
        )

    def __repr__(self) -> str:
        return f"CaseTokens(ttl={self.ttl})"

    def issue(self, case_id: str, agent_id: str, now: float | None = None, ttl: int | None = None) -> str:
        """A token for ``case_id`` and ``agent_id`` (a Slack user id, or ``approval:<id>`` / ``target:<Okta id>``
        for the buttons of an approval request and of the target's notice)."""
        now = time.time() if now is None else now
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": case_id,
            "agt": agent_id,
            "iat": int(now),
            "exp": int(now + (self.ttl if ttl is None else ttl)),
        }
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def verify(self, token: str, agent_id: str | None = None) -> CaseClaims:
        claims = self._decode(token)
        case_id, agent = claims.get("sub"), claims.get("agt")
        if not isinstance(case_id, str) or not isinstance(agent, str):
            raise CaseTokenInvalid("case token rejected: missing case or agent")
        if agent_id is not None and agent != agent_id:
            raise CaseTokenWrongAgent("this case belongs to another agent")
        return CaseClaims(case_id=case_id, agent_id=agent, expires_at=int(claims["exp"]))

    def _decode(self, token: str) -> dict[str, Any]:
        """The claims, checked with the current secret, else with the previous one."""
        for n, secret in enumerate(self._secrets):
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    secret,
                    algorithms=["HS256"],
                    audience=AUDIENCE,
                    issuer=ISSUER,
                    leeway=self.leeway,
                    options={"require": ["exp", "sub", "aud", "iss"]},
                )
            except jwt.InvalidSignatureError:
                if n + 1 < len(self._secrets):
                    continue  # signed before the rotation, perhaps
                raise CaseTokenInvalid("case token rejected: InvalidSignatureError") from None
            except jwt.ExpiredSignatureError:
                raise CaseTokenExpired("case token expired") from None
            except jwt.PyJWTError as exc:
                raise CaseTokenInvalid(f"case token rejected: {type(exc).__name__}") from None
            return claims
        raise AssertionError("unreachable")
