"""The signed case token kept in a view's ``private_metadata``: case id + agent, HS256, expiring.

Slack sends ``private_metadata`` back verbatim, so anything in it is attacker-controlled unless
signed. The gateway checks the token before anything reaches the worker; the worker checks it again.

    tokens = CaseTokens(settings.secret("CASE_TOKEN_SECRET"), ttl=3600)
    token = tokens.issue(case_id="c_1", agent_id="U123")
    claims = tokens.verify(token, agent_id="U123")   # CaseTokenError subclasses on failure
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

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
    def __init__(self, secret: str, ttl: int = 3600, leeway: int = 5) -> None:
        if len(secret) < 32:
            raise ValueError("CASE_TOKEN_SECRET must be at least 32 characters")
        self._secret = secret
        self.ttl = ttl
        self.leeway = leeway

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
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=self.leeway,
                options={"require": ["exp", "sub", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise CaseTokenExpired("case token expired") from None
        except jwt.PyJWTError as exc:
            raise CaseTokenInvalid(f"case token rejected: {type(exc).__name__}") from None
        case_id, agent = claims.get("sub"), claims.get("agt")
        if not isinstance(case_id, str) or not isinstance(agent, str):
            raise CaseTokenInvalid("case token rejected: missing case or agent")
        if agent_id is not None and agent != agent_id:
            raise CaseTokenWrongAgent("this case belongs to another agent")
        return CaseClaims(case_id=case_id, agent_id=agent, expires_at=int(claims["exp"]))
