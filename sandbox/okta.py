"""`FakeOkta`: a local fake of the Okta Management API and the org authorization server.

Same routes, status codes, headers and JSON shapes as a real Okta org (see
`reference/okta.md` and Okta's OpenAPI spec), including its failure modes: 401 E0000011, 403
E0000006 for a missing scope, 403 E0000068 for a wrong passcode, 429 E0000047 with rate-limit
headers, pushes that are rejected or time out, resend throttles, outages.

    from sandbox.okta import FakeOkta, PushOutcome
    from sandbox.okta_data import ALICE, ALICE_PUSH

    fake = FakeOkta.with_demo_data(api_token="t0k")
    url = await fake.start()                      # OKTA_ORG_URL
    fake.push_outcome[ALICE] = PushOutcome("REJECTED", after_polls=2)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": "SSWS t0k"}) as http:
        r = await http.post(f"/api/v1/users/{ALICE}/factors/{ALICE_PUSH}/verify",
                            json={"useNumberMatchingChallenge": True})
        poll = r.json()["_links"]["poll"]["href"]  # WAITING, WAITING, then REJECTED
    assert fake.push_count(ALICE) == 1
    await fake.stop()

Auth: `Authorization: SSWS <api_token>`, or `Bearer <token>` issued by `POST /oauth2/v1/token`
(client credentials + private_key_jwt against keys from `register_client`), or `DPoP <token>`
plus a `DPoP` proof when the token is DPoP-bound (`require_dpop = True`). Bearer/DPoP tokens
are held to their scopes: reads need `okta.users.read` (or `okta.users.manage`), every write
`okta.users.manage`, group reads `okta.groups.read`, the System Log `okta.logs.read`, user risk
`okta.userRisk.read`, the authenticator list `okta.authenticators.read`.

Assurance signals: `GET /api/v1/logs` (System Log: since/until/filter/q/limit/sortOrder, its own
rate-limit bucket of `logs_rate_limit` a minute) holds the fake's own mutations as Okta logs them
(factor deactivate / reset_all, reset_password, session end, a denied push) plus what
`add_log_event` seeds; `GET /users/{id}/risk` answers `set_user_risk` (or 403/404 with `itp=False`);
`POST /users/{id}/authenticator-enrollments/tac` issues Temporary Access Codes (`issued_tacs`);
`DELETE /users/{id}/sessions` records its `oauthTokens` flag in `revoked_sessions`.

Rate limits as Okta enforces them: one one-minute window per endpoint family (`rate_bucket`:
`/api/v1/users` with everything under a user, `GET /api/v1/users/{id}`, `/api/v1/groups`,
`/api/v1/logs`, `/api/v1`, `/oauth2/v1/token`…), each answer carrying its own bucket's
`X-Rate-Limit-Limit/Remaining/Reset`, 429 E0000047 when it is spent, and at most
`concurrency_limit` requests in flight. `FakeOkta(limits=OKTA_RATE_LIMITS)` has Okta's published
figures; `FakeOkta(limits={"/api/v1/users": 600})` one bucket at its real limit.

Scenario switches: `push_outcome` / `default_push_outcome` / `resolve_push`, `set_passcode`,
`rate_limit_next`, `fail_next`, `hang_next` (`path_prefix="/api/v1/logs"` for a slow System Log),
`require_dpop`, `expire_access_tokens`, `itp` / `no_itp_status`, `tac` / `tac_status` /
`tac_config`, `api_token_owner`, an injectable `clock` (`ManualClock`) for throttles and expiry
without sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import re
import secrets
import string
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
import orjson
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from sandbox.base import FakeService, json_response

__all__ = [
    "DEFAULT_API_TOKEN",
    "KNOWN_SCOPES",
    "OKTA_RATE_LIMITS",
    "RATE_BUCKETS",
    "TAC_AUTHENTICATOR_ID",
    "USERS_BUCKET",
    "FakeOkta",
    "IssuedTac",
    "LogEvent",
    "ManualClock",
    "OktaFactor",
    "OktaGroup",
    "OktaUser",
    "PushOutcome",
    "PushTransaction",
    "SentCode",
    "rate_bucket",
]

DEFAULT_API_TOKEN = "00sandbox-okta-api-token"
KNOWN_SCOPES: tuple[str, ...] = (
    "okta.users.read",
    "okta.users.manage",
    "okta.groups.read",
    "okta.logs.read",
    "okta.userRisk.read",
    "okta.authenticators.read",
)
TOKEN_PATH = "/oauth2/v1/token"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")
DPOP_ALGS = (*ASSERTION_ALGS, "PS256", "PS384", "PS512", "EdDSA")
USER_STATUSES = frozenset(
    {
        "ACTIVE",
        "DEPROVISIONED",
        "LOCKED_OUT",
        "PASSWORD_EXPIRED",
        "PROVISIONED",
        "RECOVERY",
        "STAGED",
        "SUSPENDED",
    }
)
FINAL_PUSH_RESULTS = frozenset({"SUCCESS", "REJECTED", "TIMEOUT"})
GROUP_TYPES = frozenset({"OKTA_GROUP", "APP_GROUP", "BUILT_IN"})
RISK_LEVELS = frozenset({"HIGH", "MEDIUM", "LOW", "NONE"})
LOG_OUTCOMES = frozenset(
    {
        "SUCCESS",
        "FAILURE",
        "SKIPPED",
        "ALLOW",
        "DENY",
        "CHALLENGE",
        "UNKNOWN",
        "RATE_LIMIT",
        "DEFERRED",
        "SCHEDULED",
        "ABANDONED",
        "UNANSWERED",
    }
)
LOG_SEVERITIES = frozenset({"DEBUG", "INFO", "WARN", "ERROR"})
LOG_RETENTION = 90 * 86400.0  # the System Log keeps 90 days
LOG_DEFAULT_WINDOW = 7 * 86400.0  # `since` defaults to `until` minus 7 days
# displayMessage Okta shows for the event types the fake writes or tests commonly seed.
LOG_DISPLAY_MESSAGES: dict[str, str] = {
    "user.mfa.factor.deactivate": "Reset factor for user",
    "user.mfa.factor.reset_all": "Reset all factors for user",
    "user.mfa.factor.activate": "Activate factor for user",
    "user.mfa.okta_verify.deny_push": "User rejected Okta push verify",
    "user.account.reset_password": "Reset password for user",
    "user.account.update_password": "User update password for Okta",
    "user.account.update_profile": "Update user profile for Okta",
    "user.session.end": "User logout from Okta",
    "user.session.start": "User login to Okta",
    "user.authentication.auth_via_mfa": "Authentication of user via MFA",
    "user.risk.detect": "User risk detected",
    "user.risk.change": "User risk changed",
}
# How the System Log names each factor type's enrollment when it is an event target.
FACTOR_DISPLAY_NAMES: dict[str, str] = {
    "push": "Okta Verify",
    "signed_nonce": "Okta Verify",
    "sms": "Phone",
    "call": "Phone",
    "email": "Email",
    "token:software:totp": "Google Authenticator",
    "token:hardware": "YubiKey",
    "token:hotp": "Custom HOTP",
    "token": "RSA SecurID",
    "question": "Security Question",
    "webauthn": "Security Key or Biometric",
    "u2f": "Security Key or Biometric",
    "web": "Duo Security",
}
DEFAULT_LOG_IP = "198.51.100.23"
DEFAULT_LOG_COUNTRY = "United States"
TAC_AUTHENTICATOR_ID = "autsandboxtac0000001"
_TAC_SPECIALS = "!@#$%^&*"
OTP_FACTORS = frozenset({"sms", "call", "email"})
TOKEN_FACTORS = frozenset({"token:software:totp", "token:hardware", "token:hotp", "token"})
# How long after a challenge the next one for the same factor is refused, and with which code.
RESEND_THROTTLE: dict[str, tuple[float, str, str]] = {
    "sms": (
        30.0,
        "E0000109",
        "An SMS message was recently sent. Please wait 30 seconds before trying again.",
    ),
    "call": (30.0, "E0000133", "A phone call was recently made. Please wait 30 seconds before trying again."),
    "email": (5.0, "E0000118", "An email was recently sent. Please wait 5 seconds before trying again."),
}
# (provider, vendorName, id prefix) Okta uses by default for each factor type.
FACTOR_DEFAULTS: dict[str, tuple[str, str, str]] = {
    "push": ("OKTA", "OKTA", "opf"),
    "sms": ("OKTA", "OKTA", "mbl"),
    "call": ("OKTA", "OKTA", "clf"),
    "email": ("OKTA", "OKTA", "emf"),
    "token:software:totp": ("OKTA", "OKTA", "ost"),
    "token:hardware": ("YUBICO", "YUBICO", "ykf"),
    "token:hotp": ("CUSTOM", "CUSTOM", "chf"),
    "token": ("RSA", "RSA", "rsa"),
    "question": ("OKTA", "OKTA", "ufs"),
    "webauthn": ("FIDO", "FIDO", "fwf"),
    "u2f": ("FIDO", "FIDO", "uff"),
    "signed_nonce": ("OKTA", "OKTA", "snf"),
    "web": ("DUO", "DUO", "dsf"),
}
_ID_ALPHABET = string.ascii_letters + string.digits
_ORG_CREATED = 1_709_283_600.0  # 2024-03-01T09:00:00Z, when the org's authenticators were set up
_API_TOKEN_ID = "00Tsandboxapitoken01"

# Okta's per-minute rate-limit buckets: each endpoint family has its own one-minute window and its
# own X-Rate-Limit-* headers (developer.okta.com/docs/reference/rl-global-mgmt/). The figures are
# Okta's published Workforce Identity ones, for `FakeOkta(limits=OKTA_RATE_LIMITS)`; by default every
# bucket holds `rate_limit` (and the System Log `logs_rate_limit`), which is plenty for tests.
USERS_BUCKET = "/api/v1/users"  # GET/POST /api/v1/users, and everything under a user: factors, verify,
# push polls, lifecycle, groups, sessions (one bucket shared by searches, challenges and polls)
USER_BUCKET = "/api/v1/users/{id}"  # GET of one user by id or login
USER_WRITE_BUCKET = "/api/v1/users/{id} POST/PUT/DELETE"
GROUPS_BUCKET = "/api/v1/groups"  # and everything under a group but the group itself
GROUP_BUCKET = "/api/v1/groups/{id}"
LOGS_BUCKET = "/api/v1/logs"
API_BUCKET = "/api/v1"  # most other API actions
TOKEN_BUCKET = "/oauth2/v1/token"  # the org authorization server
OKTA_RATE_LIMITS: Mapping[str, int] = {
    USERS_BUCKET: 600,
    USER_BUCKET: 2000,
    USER_WRITE_BUCKET: 600,
    GROUPS_BUCKET: 500,
    GROUP_BUCKET: 1000,
    LOGS_BUCKET: 120,
    API_BUCKET: 1200,
    TOKEN_BUCKET: 600,
}
RATE_BUCKETS = tuple(OKTA_RATE_LIMITS)


def rate_bucket(method: str, path: str) -> str:
    """The bucket a request counts against: `rate_bucket("GET", "/api/v1/users/00u1/factors")` → `/api/v1/users`."""
    if path.startswith("/oauth2/"):
        return TOKEN_BUCKET
    parts = path.rstrip("/").split("/")  # "", "api", "v1", family, id, ...
    family = parts[3] if len(parts) > 3 and parts[1:3] == ["api", "v1"] else ""
    if family == "users":
        if len(parts) == 5 and parts[4] != "me":
            return USER_BUCKET if method in ("GET", "HEAD") else USER_WRITE_BUCKET
        return USERS_BUCKET
    if family == "groups":
        return GROUP_BUCKET if len(parts) == 5 else GROUPS_BUCKET
    if family == "logs":
        return LOGS_BUCKET
    return API_BUCKET


_AD_APP_ID = "0oasandboxadapp00001"  # the Active Directory app APP_GROUPs are imported from


def _new_id(prefix: str) -> str:
    """An Okta-style 20-character id: a 3-character type prefix and 17 random characters."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(17))


def _iso(epoch: float | None) -> str | None:
    """Okta's timestamp format: `2024-03-01T09:00:00.000Z`."""
    if epoch is None:
        return None
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint of a public JWK (what a DPoP-bound token's `cnf.jkt` holds)."""
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}
    members = required.get(str(jwk.get("kty")))
    if members is None or any(m not in jwk for m in members):
        raise ValueError("unsupported or incomplete JWK")
    canonical = orjson.dumps({m: jwk[m] for m in members}, option=orjson.OPT_SORT_KEYS)
    return _b64url(hashlib.sha256(canonical).digest())


class ManualClock:
    """A clock tests move by hand: `FakeOkta(clock=clock)`, then `clock.advance(31)`."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --------------------------------------------------------------------------------------------- data


@dataclass
class OktaFactor:
    """One enrolled factor; `passcode`/`answer` are what verify accepts for token/question factors."""

    id: str
    user_id: str
    factor_type: str
    provider: str
    vendor_name: str
    status: str = "ACTIVE"
    profile: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    last_updated: float = 0.0
    passcode: str | None = None
    passcode_used: bool = False
    answer: str | None = None
    # sms / call / email: the code last sent and when
    code: str | None = None
    code_sent_at: float | None = None
    code_expires_at: float | None = None


@dataclass
class OktaUser:
    """A user; `profile` holds every profile attribute (login, email, names, custom ones)."""

    id: str
    profile: dict[str, Any]
    status: str = "ACTIVE"
    created: float = 0.0
    activated: float | None = None
    status_changed: float | None = None
    last_login: float | None = None
    last_updated: float = 0.0
    password_changed: float | None = None
    factors: dict[str, OktaFactor] = field(default_factory=dict)
    active_sessions: int = 1
    failed_factor_attempts: int = 0
    factor_locked: bool = False
    risk_level: str = "NONE"  # what GET /users/{id}/risk answers (see `set_user_risk`)
    risk_reason: str | None = None
    tac: IssuedTac | None = None  # the one valid Temporary Access Code, if any

    @property
    def login(self) -> str:
        return str(self.profile["login"])

    @property
    def display_name(self) -> str:
        names = (self.profile.get("firstName"), self.profile.get("lastName"))
        return " ".join(str(n) for n in names if n) or self.login


@dataclass
class OktaGroup:
    """A group; `group_type` is Okta's `type` (OKTA_GROUP, APP_GROUP imported from a directory, BUILT_IN)."""

    id: str
    name: str
    description: str = ""
    group_type: str = "OKTA_GROUP"
    members: list[str] = field(default_factory=list)
    created: float = 0.0
    last_updated: float = 0.0
    last_membership_updated: float = 0.0
    profile_extra: dict[str, Any] = field(default_factory=dict)  # e.g. an AD group's dn, samAccountName


@dataclass
class LogEvent:
    """One System Log event; `actor` and `target` hold the JSON objects Okta shows (id, type, alternateId...)."""

    uuid: str
    published: float
    event_type: str
    display_message: str
    actor: dict[str, Any]
    target: list[dict[str, Any]]
    outcome: str = "SUCCESS"
    reason: str | None = None
    severity: str = "INFO"
    ip_address: str = DEFAULT_LOG_IP
    country: str | None = DEFAULT_LOG_COUNTRY
    user_agent: str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 Chrome/127.0.0.0"
    is_proxy: bool | None = False
    risk: dict[str, Any] | None = None
    user_behaviors: list[dict[str, Any]] | None = None
    debug_data: dict[str, Any] = field(default_factory=dict)
    transaction_id: str = ""
    transaction_detail: dict[str, Any] = field(default_factory=dict)
    seq: int = 0  # order among events published in the same millisecond


@dataclass(frozen=True)
class IssuedTac:
    """A Temporary Access Code the fake issued (`FakeOkta.issued_tacs`), so tests can check it."""

    user_id: str
    enrollment_id: str
    code: str
    ttl_minutes: int
    multi_use: bool
    created: float
    expires_at: float


@dataclass(frozen=True)
class PushOutcome:
    """How a push resolves: the first `after_polls` polls answer WAITING, later ones `result`.

    `result` is SUCCESS, REJECTED or TIMEOUT; `None` means the user never answers, so the
    push stays WAITING until `resolve_push` or until it expires (then TIMEOUT).
    """

    result: str | None = "SUCCESS"
    after_polls: int = 1

    def __post_init__(self) -> None:
        if self.result is not None and self.result not in FINAL_PUSH_RESULTS:
            raise ValueError(f"push result must be one of {sorted(FINAL_PUSH_RESULTS)} or None")
        if self.after_polls < 0:
            raise ValueError("after_polls must be >= 0")


@dataclass
class PushTransaction:
    id: str
    user_id: str
    factor_id: str
    created: float
    expires_at: float
    correct_answer: int | None
    outcome: PushOutcome
    polls: int = 0
    result: str | None = None  # set once final (or by resolve_push)
    cancelled: bool = False
    user_agent: str = ""
    logged: bool = False  # a denial is written to the System Log once


@dataclass(frozen=True)
class SentCode:
    """A one-time code the fake 'delivered' by sms, voice call or email."""

    user_id: str
    factor_id: str
    factor_type: str
    destination: str
    code: str
    sent_at: float


@dataclass
class OAuthClient:
    client_id: str
    keys: list[tuple[str | None, Any]]
    scopes: tuple[str, ...]


@dataclass
class AccessToken:
    token: str
    client_id: str
    scopes: tuple[str, ...]
    expires_at: float
    token_type: str = "Bearer"
    jkt: str | None = None


class OktaError(Exception):
    """Raised inside a handler; answered as Okta's error JSON with this status and code."""

    def __init__(
        self,
        status: int,
        code: str,
        summary: str,
        causes: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code}: {summary}")
        self.status = status
        self.code = code
        self.summary = summary
        self.causes = list(causes)
        self.headers = dict(headers or {})


class OAuthError(Exception):
    """Raised by the token endpoint; answered as `{"error":…, "error_description":…}`."""

    def __init__(self, status: int, error: str, description: str, headers: Mapping[str, str] | None = None):
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description
        self.headers = dict(headers or {})


def _not_found(what: str, kind: str) -> OktaError:
    return OktaError(404, "E0000007", f"Not found: Resource not found: {what} ({kind})")


def _invalid_passcode(cause: str = "Your passcode doesn't match our records. Please try again.") -> OktaError:
    return OktaError(403, "E0000068", "Invalid Passcode/Answer", [cause])


def _status_not_allowed() -> OktaError:
    return OktaError(403, "E0000038", "This operation is not allowed in the user's current status.")


# ------------------------------------------------------------------------------------ SCIM search


class _SearchError(Exception):
    pass


_SCIM_TOKEN = re.compile(r'\s*(?:(?P<lp>\()|(?P<rp>\))|(?P<str>"(?:[^"\\]|\\.)*")|(?P<word>[^\s()"]+))')
_SCIM_OPS = frozenset({"eq", "sw", "co", "pr", "gt", "ge", "lt", "le"})
_CO_ATTRIBUTES = frozenset({"profile.firstName", "profile.lastName", "profile.email", "profile.login"})
Predicate = Callable[[Mapping[str, Any]], bool]


def _scim_tokens(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _SCIM_TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise _SearchError(text[pos:])
        pos = m.end()
        if m.group("lp"):
            tokens.append(("(", None))
        elif m.group("rp"):
            tokens.append((")", None))
        elif m.group("str") is not None:
            tokens.append(("value", orjson.loads(m.group("str"))))
        else:
            tokens.append(("word", m.group("word")))
    return tokens


def _attr(doc: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path; through an array (a log event's `target`) it is the list of values."""
    node: Any = doc
    for part in path.split("."):
        if isinstance(node, list):
            values = [item[part] for item in node if isinstance(item, Mapping) and item.get(part) is not None]
            node = values or None
            continue
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _compare(op: str, actual: Any, expected: Any) -> bool:
    if op == "ne":
        return not _compare("eq", actual, expected)
    if actual is None:
        return False
    if isinstance(actual, list):
        return any(_compare(op, item, expected) for item in actual)
    if isinstance(expected, bool) or isinstance(actual, bool):
        return op == "eq" and actual == expected
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        left, right = float(actual), float(expected)
        return {
            "eq": left == right,
            "gt": left > right,
            "ge": left >= right,
            "lt": left < right,
            "le": left <= right,
        }.get(op, False)
    # Operators and string values are case-insensitive in Okta search.
    left_s, right_s = str(actual).casefold(), str(expected).casefold()
    if op == "eq":
        return left_s == right_s
    if op == "sw":
        return left_s.startswith(right_s)
    if op == "co":
        return right_s in left_s
    if op == "ew":
        return left_s.endswith(right_s)
    return {"gt": left_s > right_s, "ge": left_s >= right_s, "lt": left_s < right_s, "le": left_s <= right_s}[op]


def parse_search(text: str) -> Predicate:
    """Compile an Okta `search=` expression (SCIM filter subset) into a predicate over user JSON.

    Supports `eq sw co pr gt ge lt le`, `and` (binds tighter) / `or`, parentheses, quoted strings
    with escapes, `true`/`false`/`null`/numbers. Raises `_SearchError` for anything else.
    """

    def check(attribute: str, op: str) -> None:
        if op == "co" and attribute not in _CO_ATTRIBUTES:
            raise _SearchError("co is only supported on firstName, lastName, email and login")

    return _parse_scim(text, _SCIM_OPS, check)


_LOG_FILTER_OPS = frozenset({*_SCIM_OPS, "ne", "ew"})
_LOG_NO_CO = frozenset({"debugContext.debugData.url", "debugContext.debugData.requestUri"})


def parse_log_filter(text: str) -> Predicate:
    """Compile a System Log `filter=` expression into a predicate over LogEvent JSON.

    Okta accepts every SCIM operator except `[ ]` here (`eq ne co sw ew pr gt ge lt le`, `and`,
    `or`, parentheses); `published` can't be filtered (use since/until), nor can `co` be used on
    `debugContext.debugData.url` / `requestUri`. Array attributes such as `target.id` match when
    any element matches. Raises `_SearchError` for anything else.
    """

    def check(attribute: str, op: str) -> None:
        if "[" in attribute or "]" in attribute:
            raise _SearchError("complex attribute filters ([ ]) are not supported")
        if attribute == "published":
            raise _SearchError("published can't be filtered: use since and until")
        if op == "co" and attribute in _LOG_NO_CO:
            raise _SearchError(f"co is not supported on {attribute}")

    return _parse_scim(text, _LOG_FILTER_OPS, check)


def _parse_scim(text: str, operators: frozenset[str], check: Callable[[str, str], None]) -> Predicate:
    """The shared SCIM filter parser; `check(attribute, op)` raises for what one API refuses."""
    tokens = _scim_tokens(text)
    pos = 0

    def peek_word() -> str | None:
        if pos < len(tokens) and tokens[pos][0] == "word":
            return str(tokens[pos][1]).lower()
        return None

    def parse_or() -> Predicate:
        nonlocal pos
        terms = [parse_and()]
        while peek_word() == "or":
            pos += 1
            terms.append(parse_and())
        return terms[0] if len(terms) == 1 else (lambda d: any(t(d) for t in terms))

    def parse_and() -> Predicate:
        nonlocal pos
        terms = [parse_primary()]
        while peek_word() == "and":
            pos += 1
            terms.append(parse_primary())
        return terms[0] if len(terms) == 1 else (lambda d: all(t(d) for t in terms))

    def parse_primary() -> Predicate:
        nonlocal pos
        if pos >= len(tokens):
            raise _SearchError("unexpected end")
        kind, value = tokens[pos]
        if kind == "(":
            pos += 1
            inner = parse_or()
            if pos >= len(tokens) or tokens[pos][0] != ")":
                raise _SearchError("missing )")
            pos += 1
            return inner
        if kind != "word":
            raise _SearchError(f"expected attribute, got {value!r}")
        attribute = str(value)
        pos += 1
        op = peek_word()
        if op is None or op not in operators:
            raise _SearchError(f"unsupported operator {op!r}")
        pos += 1
        check(attribute, op)
        if op == "pr":
            return lambda d: _attr(d, attribute) not in (None, "", [])
        if pos >= len(tokens):
            raise _SearchError("missing value")
        vkind, raw = tokens[pos]
        pos += 1
        if vkind == "value":
            expected: Any = raw
        elif vkind == "word":
            literal = str(raw).lower()
            if literal in ("true", "false"):
                expected = literal == "true"
            elif literal == "null":
                if op == "ne":
                    return lambda d: _attr(d, attribute) is not None
                return lambda d: _attr(d, attribute) is None if op == "eq" else False
            else:
                try:
                    expected = float(raw) if "." in str(raw) else int(raw)
                except ValueError as exc:
                    raise _SearchError(f"bad value {raw!r}") from exc
        else:
            raise _SearchError("missing value")
        return lambda d: _compare(op, _attr(d, attribute), expected)

    predicate = parse_or()
    if pos != len(tokens):
        raise _SearchError("trailing tokens")
    return predicate


# ------------------------------------------------------------------------------------------ fake


@dataclass
class _Scripted:
    """One queued scenario answer (forced 429, failure, hang) for requests under `prefix`."""

    prefix: str
    value: float


@dataclass
class _Principal:
    kind: str  # "ssws", "bearer" or "dpop"
    scopes: tuple[str, ...] | None  # None: an API token, which carries its admin's full rights
    client_id: str | None = None  # the service app of a Bearer/DPoP token


PRINCIPAL = web.RequestKey("okta_principal", _Principal)
REQUEST_ID = web.RequestKey("okta_request_id", str)  # also the X-Okta-Request-Id and the log's transaction id


class FakeOkta(FakeService):
    """Fake Okta org. See the module docstring for usage and the scenario switches.

    Args:
        api_token: the SSWS token accepted on `/api/v1/*` (`None`: SSWS refused, OAuth only).
        clock: seconds since the epoch; inject a `ManualClock` to drive throttles and expiry.
        rate_limit: the per-minute limit of every bucket not named in `limits` (see `RATE_BUCKETS`:
            each endpoint family has its own one-minute window, its own `X-Rate-Limit-*` headers
            and answers 429 E0000047 alone when spent).
        logs_rate_limit: the per-minute limit of `/api/v1/logs` (default 20, the lowest tier: a
            free developer org).
        limits: per-minute limits by bucket name, e.g. `OKTA_RATE_LIMITS` (Okta's published
            Workforce Identity figures) or `{"/api/v1/users": 600}`; they win over the two above.
        concurrency_limit: requests in flight at once across the org (Okta's default 75); one more
            answers 429 E0000047 with `X-Rate-Limit-Limit` and `-Remaining` 0, as Okta reports it.
        itp: the org has Identity Threat Protection, so `GET /users/{id}/risk` answers. Without it
            the route answers `no_itp_status` (403 E0000006 by default, or 404 E0000007): what a
            real org answers there is undocumented, so clients must treat both as "unknown".
        tac: the org has an ACTIVE Temporary Access Code authenticator (`TAC_AUTHENTICATOR_ID`).
    """

    def __init__(
        self,
        api_token: str | None = DEFAULT_API_TOKEN,
        *,
        clock: Callable[[], float] = time.time,
        rate_limit: int = 600,
        logs_rate_limit: int = 20,
        limits: Mapping[str, int] | None = None,
        concurrency_limit: int = 75,
        itp: bool = True,
        tac: bool = True,
    ) -> None:
        super().__init__()
        self.api_token = api_token
        self.clock = clock
        self.rate_limit = rate_limit
        self.logs_rate_limit = logs_rate_limit
        unknown = set(limits or ()) - set(RATE_BUCKETS)
        if unknown:
            raise ValueError(f"unknown rate-limit buckets {sorted(unknown)}; known: {list(RATE_BUCKETS)}")
        self.limits: dict[str, int] = dict(limits or {})
        self.concurrency_limit = concurrency_limit
        self.in_flight = 0
        self.itp = itp
        self.no_itp_status = 403
        self.tac = tac
        self.tac_status = "ACTIVE"
        self.tac_config: dict[str, Any] = {
            "minTtl": 10,
            "maxTtl": 14400,
            "defaultTtl": 120,
            "length": 16,
            "complexity": {"numbers": True, "letters": True, "specialCharacters": True},
            "multiUseAllowed": False,
        }
        # Okta attributes an API token's calls to the admin who created it (a user id or login).
        self.api_token_owner: str | None = None
        self.users: dict[str, OktaUser] = {}
        self.groups: dict[str, OktaGroup] = {}
        self.clients: dict[str, OAuthClient] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        # scenario switches
        self.require_dpop = False
        self.push_outcome: dict[str, PushOutcome] = {}
        self.default_push_outcome = PushOutcome("SUCCESS", after_polls=1)
        self.push_lifetime = 300.0
        self.push_retention = 600.0
        self.max_factor_attempts = 5
        # what happened
        self.pushes: list[PushTransaction] = []
        self.sent_codes: list[SentCode] = []
        self.issued_tokens: list[AccessToken] = []
        self.issued_temp_passwords: list[str] = []  # so tests can prove none reaches a log
        self.issued_tacs: list[IssuedTac] = []  # every TAC issued, replaced ones included
        self.revoked_sessions: list[tuple[str, bool]] = []  # (user id, oauthTokens) per DELETE /sessions
        self.log_events: list[LogEvent] = []
        self._transactions: dict[str, PushTransaction] = {}
        self._used_assertion_jti: dict[str, float] = {}
        self._used_proof_jti: dict[str, float] = {}
        self._dpop_nonce = secrets.token_urlsafe(24)
        self._signing_key = secrets.token_bytes(32)
        self._forced_429: list[_Scripted] = []
        self._failures: list[_Scripted] = []
        self._hangs: list[_Scripted] = []
        self._hang_release = asyncio.Event()
        self._windows: dict[str, tuple[int, int]] = {}
        self.rate_limited: dict[str, int] = {}  # 429 E0000047 answered, by bucket ("concurrency": in flight)
        self.app.middlewares.append(self._okta_middleware)
        self._add_routes()

    @classmethod
    def with_demo_data(cls, api_token: str | None = DEFAULT_API_TOKEN, **kwargs: Any) -> FakeOkta:
        """A fake holding the demo org of `sandbox.okta_data` (users, groups, factors)."""
        fake = cls(api_token, **kwargs)
        fake.seed_demo()
        return fake

    def seed_demo(self) -> None:
        from sandbox.okta_data import seed_demo

        seed_demo(self)

    async def stop(self) -> None:
        self._hang_release.set()  # hung requests answer now instead of holding up the shutdown
        await super().stop()

    # ------------------------------------------------------------------------------- data API

    def add_group(
        self,
        name: str,
        *,
        group_id: str | None = None,
        description: str = "",
        type: str = "OKTA_GROUP",  # Okta's own name for it
        group_type: str | None = None,
        members: Iterable[str] = (),
        created: float | None = None,
    ) -> OktaGroup:
        """Add a group of `type` OKTA_GROUP, APP_GROUP or BUILT_IN (`group_type` is an older alias).

        A BUILT_IN group named `Everyone` gets every user, as in a real org. An APP_GROUP is shown
        as imported from Active Directory (objectClass `okta:windows_security_principal`, dn,
        samAccountName...): any name can arrive that way, "Helpdesk" included.
        """
        kind = group_type or type
        if kind not in GROUP_TYPES:
            raise ValueError(f"group type must be one of {sorted(GROUP_TYPES)}")
        now = self.clock() if created is None else created
        group = OktaGroup(group_id or _new_id("00g"), name, description, kind, [], now, now, now)
        if kind == "APP_GROUP":
            group.profile_extra = {
                "dn": f"CN={name},OU=Groups,DC=example,DC=com",
                "externalId": base64.b64encode(secrets.token_bytes(16)).decode(),
                "samAccountName": name,
                "windowsDomainQualifiedName": f"EXAMPLE\\{name}",
            }
        self.groups[group.id] = group
        if group_type == "BUILT_IN" and name == "Everyone":
            group.members.extend(self.users)
        for member in members:
            self.add_member(group.id, member)
        return group

    def add_member(self, group: str, user: str) -> None:
        """Put a user (id or login) into a group (id or name)."""
        g = self.group(group)
        u = self.user(user)
        if g is None or u is None:
            raise KeyError(f"unknown group {group!r} or user {user!r}")
        if u.id not in g.members:
            g.members.append(u.id)
            g.last_membership_updated = self.clock()

    def remove_member(self, group: str, user: str) -> None:
        """Take a user (id or login) out of a group (id or name), as an admin in the console would."""
        g = self.group(group)
        u = self.user(user)
        if g is None or u is None:
            raise KeyError(f"unknown group {group!r} or user {user!r}")
        if u.id in g.members:
            g.members.remove(u.id)
            g.last_membership_updated = self.clock()

    def add_user(
        self,
        login: str,
        first_name: str,
        last_name: str,
        *,
        email: str | None = None,
        user_id: str | None = None,
        status: str = "ACTIVE",
        mobile_phone: str | None = None,
        primary_phone: str | None = None,
        second_email: str | None = None,
        manager: str | None = None,
        groups: Iterable[str] = (),
        created: float | None = None,
        **profile: Any,
    ) -> OktaUser:
        """Add a user (login is usually the email); extra keyword arguments become profile attributes.

        `manager` (an existing user's id or login) sets `profile.managerId` and `profile.manager`
        (the display name), as an HR-fed profile carries them; pass `managerId=` directly for an id
        that is not an Okta user.
        """
        if status not in USER_STATUSES:
            raise ValueError(f"unknown user status {status!r}")
        now = self.clock() if created is None else created
        if primary_phone is not None:
            profile.setdefault("primaryPhone", primary_phone)
        if manager is not None:
            boss = self.user(manager)
            if boss is None:
                raise KeyError(f"unknown manager {manager!r}")
            profile.setdefault("managerId", boss.id)
            profile.setdefault("manager", boss.display_name)
        user = OktaUser(
            id=user_id or _new_id("00u"),
            profile={
                "firstName": first_name,
                "lastName": last_name,
                "mobilePhone": mobile_phone,
                "secondEmail": second_email,
                "login": login,
                "email": email or login,
                **profile,
            },
            status=status,
            created=now,
            activated=None if status in ("STAGED", "PROVISIONED") else now,
            status_changed=now,
            last_login=None if status in ("STAGED", "PROVISIONED") else now,
            last_updated=now,
            password_changed=now,
        )
        self.users[user.id] = user
        for group in self.groups.values():
            if group.group_type == "BUILT_IN" and group.name == "Everyone":
                group.members.append(user.id)
        for group_ref in groups:
            self.add_member(group_ref, user.id)
        return user

    def add_factor(
        self,
        user: str,
        factor_type: str,
        *,
        factor_id: str | None = None,
        provider: str | None = None,
        vendor_name: str | None = None,
        status: str = "ACTIVE",
        profile: Mapping[str, Any] | None = None,
        passcode: str | None = None,
        answer: str | None = None,
        created: float | None = None,
    ) -> OktaFactor:
        """Enroll a factor for a user (id or login); the profile defaults to what Okta shows for its type."""
        u = self.user(user)
        if u is None:
            raise KeyError(f"unknown user {user!r}")
        default_provider, default_vendor, prefix = FACTOR_DEFAULTS.get(factor_type, ("OKTA", "OKTA", "fct"))
        now = self.clock() if created is None else created
        factor = OktaFactor(
            id=factor_id or _new_id(prefix),
            user_id=u.id,
            factor_type=factor_type,
            provider=provider or default_provider,
            vendor_name=vendor_name or provider or default_vendor,
            status=status,
            profile=dict(profile) if profile is not None else self._default_factor_profile(u, factor_type),
            created=now,
            last_updated=now,
            passcode=passcode,
            answer=answer,
        )
        u.factors[factor.id] = factor
        return factor

    @staticmethod
    def _default_factor_profile(user: OktaUser, factor_type: str) -> dict[str, Any]:
        phone = user.profile.get("mobilePhone") or "+14155550100"
        if factor_type in ("sms", "call"):
            return {"phoneNumber": phone}
        if factor_type == "email":
            return {"email": user.profile["email"]}
        if factor_type == "push":
            first = user.profile.get("firstName") or "User"
            return {
                "credentialId": user.login,
                "deviceType": "SmartPhone_IPhone",
                "keys": [
                    {
                        "kty": "EC",
                        "use": "sig",
                        "kid": "default",
                        "crv": "P-256",
                        "x": "3Y53lDoQYwzzVbjsbsPnqOnVaotIrVByQh5Sa-RwOHQ",
                        "y": "0zHY_y9rVh-bq_-lR-MrmzdtmtWsbx6LwRyEPJMlbz0",
                    }
                ],
                "name": f"{first}'s iPhone",
                "platform": "IOS",
                "version": "17.4",
            }
        if factor_type == "question":
            return {
                "question": "disliked_food",
                "questionText": "What is the food you least liked as a child?",
            }
        if factor_type in ("webauthn", "u2f"):
            return {"credentialId": _b64url(secrets.token_bytes(32)), "authenticatorName": "Security Key"}
        return {"credentialId": user.login}

    def user(self, ref: str) -> OktaUser | None:
        """A user by id or login (case-insensitive, as Okta matches logins)."""
        if ref in self.users:
            return self.users[ref]
        wanted = ref.casefold()
        return next((u for u in self.users.values() if u.login.casefold() == wanted), None)

    def group(self, ref: str) -> OktaGroup | None:
        """A group by id or name."""
        if ref in self.groups:
            return self.groups[ref]
        return next((g for g in self.groups.values() if g.name == ref), None)

    def factor(self, user: str, factor_id: str) -> OktaFactor | None:
        u = self.user(user)
        return u.factors.get(factor_id) if u else None

    def _factor_or_raise(self, user: str, factor_id: str) -> OktaFactor:
        f = self.factor(user, factor_id)
        if f is None:
            raise KeyError(f"unknown factor {factor_id!r} of {user!r}")
        return f

    # --------------------------------------------------------------------------- scenario API

    def set_passcode(self, user: str, factor_id: str, code: str) -> None:
        """The code a token factor (totp, hardware, hotp, RSA) accepts next; clears its 'used' mark."""
        f = self._factor_or_raise(user, factor_id)
        f.passcode, f.passcode_used = code, False

    def last_code(self, user: str, factor_id: str) -> str | None:
        """The code last sent for an sms / call / email factor (None if none is outstanding)."""
        f = self.factor(user, factor_id)
        return f.code if f else None

    def resolve_push(self, transaction_id: str, result: str) -> None:
        """Make a push transaction answer `result` (SUCCESS, REJECTED, TIMEOUT) from its next poll."""
        if result not in FINAL_PUSH_RESULTS:
            raise ValueError(f"result must be one of {sorted(FINAL_PUSH_RESULTS)}")
        tx = self._transactions[transaction_id]
        tx.result = result
        self._log_push_denial(tx)

    def push_count(self, user: str | None = None) -> int:
        """How many pushes were sent (to one user, id or login, if given)."""
        if user is None:
            return len(self.pushes)
        u = self.user(user)
        return sum(1 for p in self.pushes if u is not None and p.user_id == u.id)

    def last_push(self, user: str | None = None) -> PushTransaction | None:
        u = self.user(user) if user else None
        candidates = [p for p in self.pushes if u is None or p.user_id == u.id]
        return candidates[-1] if candidates else None

    def add_log_event(
        self,
        event_type: str,
        user: str | None,
        *,
        actor: str | Mapping[str, Any] | None = None,
        published: float | datetime | None = None,
        outcome: str = "SUCCESS",
        reason: str | None = None,
        display_message: str | None = None,
        severity: str = "INFO",
        debug_data: Mapping[str, Any] | None = None,
        ip_address: str = DEFAULT_LOG_IP,
        country: str | None = DEFAULT_LOG_COUNTRY,
        is_proxy: bool | None = False,
        risk: Mapping[str, Any] | None = None,
        user_behaviors: Mapping[str, str] | None = None,
        extra_targets: Sequence[Mapping[str, Any]] = (),
    ) -> LogEvent:
        """Seed one System Log event about `user` (id or login; the `User` target), e.g. history.

        `actor` is a user (id or login) or a raw actor object such as
        `{"id": "0oa…", "type": "PublicClientApp"}`; by default the user acted on their own account
        (a push denial, a profile update). `published` is epoch seconds or a datetime (default: now).
        `risk` becomes `securityContext.risk` (`{"level": "HIGH", "reasons": […]}`),
        `user_behaviors` `securityContext.userBehaviors` (`{"New Device": "POSITIVE"}`), and
        `extra_targets` are listed before the User target (Okta's target order varies).

            fake.add_log_event("user.mfa.factor.reset_all", ALICE, actor=ADMIN, published=now - 3600)
        """
        if outcome not in LOG_OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(LOG_OUTCOMES)}")
        if severity not in LOG_SEVERITIES:
            raise ValueError(f"severity must be one of {sorted(LOG_SEVERITIES)}")
        targets = [dict(t) for t in extra_targets]
        subject: OktaUser | None = None
        if user is not None:
            subject = self.user(user)
            if subject is None:
                raise KeyError(f"unknown user {user!r}")
            targets.append(self._user_ref(subject))
        if actor is None:
            if subject is None:
                raise ValueError("an event without a user needs an actor")
            actor_json = self._user_ref(subject)
        elif isinstance(actor, Mapping):
            actor_json = {"alternateId": "unknown", "displayName": "unknown", **actor}
        else:
            who = self.user(actor)
            if who is None:
                raise KeyError(f"unknown actor {actor!r}")
            actor_json = self._user_ref(who)
        if isinstance(published, datetime):
            moment = published.timestamp()
        else:
            moment = self.clock() if published is None else float(published)
        behaviors = None
        if user_behaviors is not None:
            behaviors = [
                {"id": _new_id("abh"), "name": name, "result": result} for name, result in user_behaviors.items()
            ]
        return self._append_log(
            LogEvent(
                uuid=str(uuid.uuid4()),
                published=moment,
                event_type=event_type,
                display_message=display_message or LOG_DISPLAY_MESSAGES.get(event_type, event_type),
                actor=actor_json,
                target=targets,
                outcome=outcome,
                reason=reason,
                severity=severity,
                ip_address=ip_address,
                country=country,
                is_proxy=is_proxy,
                risk=dict(risk) if risk is not None else None,
                user_behaviors=behaviors,
                debug_data=dict(debug_data or {}),
                transaction_id=secrets.token_urlsafe(20)[:27],
            )
        )

    def logs_for(self, user: str, event_type_prefix: str = "") -> list[LogEvent]:
        """The logged events whose User target is `user` (id or login), oldest first."""
        u = self.user(user)
        return [
            e
            for e in sorted(self.log_events, key=lambda e: (e.published, e.seq))
            if u is not None
            and any(t.get("type") == "User" and t.get("id") == u.id for t in e.target)
            and e.event_type.startswith(event_type_prefix)
        ]

    def set_user_risk(self, user: str, level: str, reason: str | None = None) -> None:
        """What `GET /users/{id}/risk` answers for `user`: HIGH, MEDIUM, LOW or NONE.

        A level other than NONE carries `reason` (default `override.by.admin`, as when an admin sets
        it); NONE carries none.
        """
        if level not in RISK_LEVELS:
            raise ValueError(f"risk level must be one of {sorted(RISK_LEVELS)}")
        u = self.user(user)
        if u is None:
            raise KeyError(f"unknown user {user!r}")
        u.risk_level = level
        u.risk_reason = None if level == "NONE" else (reason or "override.by.admin")

    def active_tac(self, user: str) -> IssuedTac | None:
        """The user's valid Temporary Access Code (the latest, unexpired), if any."""
        u = self.user(user)
        if u is None or u.tac is None or u.tac.expires_at <= self.clock():
            return None
        return u.tac

    def rate_limit_next(self, n: int = 1, reset_in: float = 60.0, path_prefix: str = "/api/v1/") -> None:
        """The next `n` requests under `path_prefix` answer 429 E0000047, Remaining 0, Reset now+reset_in."""
        self._forced_429.extend(_Scripted(path_prefix, reset_in) for _ in range(n))

    def fail_next(self, status: int = 503, n: int = 1, path_prefix: str = "/") -> None:
        """The next `n` requests under `path_prefix` fail with `status` (500: Okta's E0000009 JSON)."""
        self._failures.extend(_Scripted(path_prefix, status) for _ in range(n))

    @property
    def hangs_pending(self) -> int:
        """Scripted hangs not yet taken by a request (0: the hung request has arrived)."""
        return len(self._hangs)

    def hang_next(self, seconds: float, n: int = 1, path_prefix: str = "/") -> None:
        """The next `n` requests under `path_prefix` wait `seconds` (or until `stop()`) before answering.

        `path_prefix="/api/v1/logs"` makes the System Log slow (Okta gives a query 30 s).
        """
        self._hang_release.clear()
        self._hangs.extend(_Scripted(path_prefix, seconds) for _ in range(n))

    def reset_rate_limits(self) -> None:
        """Every bucket starts a fresh window now (a bench sets up its scene without spending the budget)."""
        self._windows.clear()
        self.rate_limited.clear()

    def release_hangs(self) -> None:
        """Hung requests answer now."""
        self._hang_release.set()

    def register_client(
        self,
        client_id: str,
        public_key: Any,
        kid: str | None = None,
        *,
        scopes: Iterable[str] = KNOWN_SCOPES,
    ) -> None:
        """Register a service app for private_key_jwt: a PEM (str/bytes), a JWK dict or a key object.

        Calling it again for the same client adds a key (key rotation); `scopes` are the granted
        ones, requesting any other answers `invalid_scope`.
        """
        key = self._load_public_key(public_key)
        granted = tuple(scopes)
        client = self.clients.get(client_id)
        if client is None:
            self.clients[client_id] = OAuthClient(client_id, [(kid, key)], granted)
        else:
            client.keys.append((kid, key))
            client.scopes = granted

    def issue_access_token(
        self,
        scopes: Iterable[str] = KNOWN_SCOPES,
        *,
        client_id: str = "0oasandboxclient0001",
        ttl: float = 3600.0,
        dpop_jkt: str | None = None,
    ) -> str:
        """Mint an access token directly (tests that need a Bearer/DPoP token without the JWT dance)."""
        return self._mint(client_id, tuple(scopes), ttl, dpop_jkt, issuer=self.url or "http://okta.local").token

    def expire_access_tokens(self) -> None:
        """Every issued access token expires now (the next API call with one answers 401)."""
        now = self.clock()
        for token in self.access_tokens.values():
            token.expires_at = min(token.expires_at, now - 1)

    def rotate_dpop_nonce(self) -> str:
        self._dpop_nonce = secrets.token_urlsafe(24)
        return self._dpop_nonce

    @staticmethod
    def _load_public_key(material: Any) -> Any:
        if isinstance(material, Mapping):
            jwk = {k: v for k, v in material.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
            return jwt.PyJWK(jwk).key
        if isinstance(material, str | bytes):
            data = material.encode() if isinstance(material, str) else material
            if b"PRIVATE KEY" in data:
                return serialization.load_pem_private_key(data, password=None).public_key()
            return serialization.load_pem_public_key(data)
        if isinstance(material, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            return material.public_key()
        return material

    # ----------------------------------------------------------------------------- middleware

    @staticmethod
    def _take(queue: list[_Scripted], path: str) -> _Scripted | None:
        for i, item in enumerate(queue):
            if path.startswith(item.prefix):
                return queue.pop(i)
        return None

    @staticmethod
    def _bucket(method: str, path: str) -> str:
        """The rate-limit bucket of one request (a key of `RATE_BUCKETS`)."""
        return rate_bucket(method, path)

    def _bucket_limit(self, bucket: str) -> int:
        if bucket in self.limits:
            return self.limits[bucket]
        return self.logs_rate_limit if bucket == LOGS_BUCKET else self.rate_limit

    def bucket_remaining(self, bucket: str) -> int:
        """What `X-Rate-Limit-Remaining` of `bucket` would say now (benches and tests read it)."""
        window = int(self.clock() // 60)
        start, count = self._windows.get(bucket, (window, 0))
        return max(0, self._bucket_limit(bucket) - (count if start == window else 0))

    def _rate_headers(self, bucket: str, *, remaining: int | None = None, reset: float | None = None) -> dict:
        now = self.clock()
        window = int(now // 60)
        _, count = self._windows.get(bucket, (window, 0))
        limit = self._bucket_limit(bucket)
        left = max(0, limit - count) if remaining is None else remaining
        return {
            "X-Rate-Limit-Limit": str(limit),
            "X-Rate-Limit-Remaining": str(left),
            "X-Rate-Limit-Reset": str(int(reset if reset is not None else (window + 1) * 60)),
        }

    def _count(self, bucket: str) -> int:
        window = int(self.clock() // 60)
        start, count = self._windows.get(bucket, (window, 0))
        count = count + 1 if start == window else 1
        self._windows[bucket] = (window, count)
        return count

    def _error_body(self, code: str, summary: str, causes: Sequence[str] = ()) -> dict[str, Any]:
        return {
            "errorCode": code,
            "errorSummary": summary,
            "errorLink": code,
            "errorId": "oae" + secrets.token_urlsafe(16).replace("-", "A").replace("_", "b")[:22],
            "errorCauses": [{"errorSummary": c} for c in causes],
        }

    def _okta_error_response(self, exc: OktaError) -> web.Response:
        return json_response(self._error_body(exc.code, exc.summary, exc.causes), exc.status, exc.headers)

    @web.middleware
    async def _okta_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        request_id = secrets.token_urlsafe(20)[:27]
        request[REQUEST_ID] = request_id
        if self.in_flight >= self.concurrency_limit:
            # Okta reports a concurrency violation in the same headers: Limit and Remaining 0, and a
            # Reset that is only an estimate.
            self.rate_limited["concurrency"] = self.rate_limited.get("concurrency", 0) + 1
            response = json_response(
                self._error_body("E0000047", "API call exceeded rate limit due to too many requests."), 429
            )
            response.headers.update(
                {
                    "X-Rate-Limit-Limit": "0",
                    "X-Rate-Limit-Remaining": "0",
                    "X-Rate-Limit-Reset": str(int(self.clock()) + 1),
                    "X-Okta-Request-Id": request_id,
                }
            )
            return response
        self.in_flight += 1
        try:
            return await self._answer(request, handler, request_id)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request, handler: Any, request_id: str) -> web.StreamResponse:
        path = request.path
        bucket = self._bucket(request.method, path)
        hang = self._take(self._hangs, path)
        if hang is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hang_release.wait(), hang.value)
        count = self._count(bucket)
        response: web.StreamResponse
        failure = self._take(self._failures, path)
        forced = self._take(self._forced_429, path) if failure is None else None
        if failure is not None:
            status = int(failure.value)
            if status == 500:
                response = json_response(self._error_body("E0000009", "Internal Server Error"), 500)
            else:
                response = web.Response(status=status, text=f"{status} {_reason(status)}", content_type="text/html")
        elif forced is not None or count > self._bucket_limit(bucket):
            reset = self.clock() + forced.value if forced is not None else None
            if forced is None:
                self.rate_limited[bucket] = self.rate_limited.get(bucket, 0) + 1
            response = json_response(
                self._error_body("E0000047", "API call exceeded rate limit due to too many requests."), 429
            )
            response.headers.update(self._rate_headers(bucket, remaining=0, reset=reset))
        else:
            try:
                if path.startswith("/api/v1/"):
                    principal = self._authenticate(request)
                    self._authorize(request, principal)
                    request[PRINCIPAL] = principal
                response = await handler(request)
            except OktaError as exc:
                response = self._okta_error_response(exc)
            except web.HTTPMethodNotAllowed:
                response = json_response(
                    self._error_body("E0000022", "The endpoint does not support the provided HTTP method"),
                    405,
                )
            except web.HTTPNotFound:
                response = json_response(self._error_body("E0000007", f"Not found: Resource not found: {path}"), 404)
        for name, value in self._rate_headers(bucket).items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("X-Okta-Request-Id", request_id)
        return response

    # ------------------------------------------------------------------------------ API auth

    def _authenticate(self, request: web.Request) -> _Principal:
        header = request.headers.get("Authorization", "")
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.upper() == "SSWS":
            if self.api_token and credential and hmac.compare_digest(credential, self.api_token):
                return _Principal("ssws", None)
            raise self._invalid_token()
        if scheme.lower() in ("bearer", "dpop"):
            token = self.access_tokens.get(credential)
            if token is None:
                raise self._invalid_token(scheme, "The token is not valid.")
            if token.expires_at <= self.clock():
                raise self._invalid_token(scheme, "The token has expired.")
            if scheme.lower() == "bearer":
                if token.jkt is not None:
                    raise self._invalid_token("DPoP", "The DPoP-bound access token must be sent with the DPoP scheme.")
                return _Principal("bearer", token.scopes, token.client_id)
            if token.jkt is None:
                raise self._invalid_token("Bearer", "The access token is not DPoP-bound.")
            proof = request.headers.get("DPoP")
            if not proof:
                raise self._invalid_token("DPoP", "The DPoP proof JWT header is missing.", "invalid_dpop_proof")
            try:
                jkt = self._check_dpop_proof(proof, request, access_token=credential)
            except ValueError as exc:
                raise self._invalid_token("DPoP", str(exc), "invalid_dpop_proof") from exc
            if jkt != token.jkt:
                raise self._invalid_token(
                    "DPoP", "The DPoP proof key does not match the token binding.", "invalid_dpop_proof"
                )
            return _Principal("dpop", token.scopes, token.client_id)
        raise self._invalid_token()

    def _invalid_token(self, scheme: str = "", description: str = "", error: str = "invalid_token") -> OktaError:
        headers: dict[str, str] = {}
        if scheme:
            headers["WWW-Authenticate"] = (
                f'{"DPoP" if scheme.lower() == "dpop" else "Bearer"} realm="IdpMyAccountAPI", '
                f'error="{error}", error_description="{description}"'
            )
        return OktaError(401, "E0000011", "Invalid token provided", headers=headers)

    @staticmethod
    def _required_scope(method: str, path: str) -> tuple[str, ...]:
        if path.startswith("/api/v1/groups"):
            return ("okta.groups.read",)
        if path.startswith("/api/v1/logs"):
            return ("okta.logs.read",)
        if path.startswith("/api/v1/authenticators") and method in ("GET", "HEAD"):
            return ("okta.authenticators.read",)
        if path.startswith("/api/v1/users/") and path.endswith("/risk") and method in ("GET", "HEAD"):
            return ("okta.userRisk.read",)
        if method in ("GET", "HEAD"):
            return ("okta.users.read", "okta.users.manage")
        return ("okta.users.manage",)

    def _authorize(self, request: web.Request, principal: _Principal) -> None:
        if principal.scopes is None:
            return
        needed = self._required_scope(request.method, request.path)
        if not set(needed) & set(principal.scopes):
            raise OktaError(
                403,
                "E0000006",
                "You do not have permission to perform the requested action",
                headers={
                    "WWW-Authenticate": (
                        f'Bearer realm="IdpMyAccountAPI", error="insufficient_scope", '
                        'error_description="The access token provided does not contain the required '
                        'scopes.", '
                        f'scope="{needed[0]}"'
                    )
                },
            )

    def _check_dpop_proof(self, proof: str, request: web.Request, *, access_token: str | None) -> str:
        """Validate a DPoP proof for this request; returns the JWK thumbprint. Raises ValueError."""
        try:
            header = jwt.get_unverified_header(proof)
        except jwt.PyJWTError as exc:
            raise ValueError("The DPoP proof JWT is malformed.") from exc
        if header.get("typ") != "dpop+jwt":
            raise ValueError("The DPoP proof JWT must have typ 'dpop+jwt'.")
        alg = header.get("alg")
        jwk = header.get("jwk")
        if alg not in DPOP_ALGS or not isinstance(jwk, dict):
            raise ValueError("The DPoP proof JWT must use an asymmetric alg and carry a public 'jwk'.")
        if any(k in jwk for k in ("d", "p", "q", "dp", "dq", "qi")):
            raise ValueError("The DPoP proof 'jwk' must not contain a private key.")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg).key
            claims = jwt.decode(
                proof,
                key=key,
                algorithms=[alg],
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "verify_aud": False,
                    "require": ["htm", "htu", "iat", "jti"],
                },
            )
        except (jwt.PyJWTError, ValueError) as exc:
            raise ValueError(f"The DPoP proof JWT is invalid: {exc}") from exc
        if claims["htm"] != request.method:
            raise ValueError("The DPoP proof 'htm' does not match the request method.")
        invoked = str(request.url.with_query(None).with_fragment(None))
        if str(claims["htu"]).split("?")[0].split("#")[0] not in (invoked, f"{self.url}{request.path}"):
            raise ValueError("The DPoP proof 'htu' does not match the request URL.")
        now = self.clock()
        if abs(now - float(claims["iat"])) > 300:
            raise ValueError("The DPoP proof 'iat' is outside the accepted window.")
        self._expire_jti(self._used_proof_jti, now)
        if claims["jti"] in self._used_proof_jti:
            raise ValueError("The DPoP proof 'jti' has already been used.")
        if access_token is not None:
            expected = _b64url(hashlib.sha256(access_token.encode()).digest())
            if claims.get("ath") != expected:
                raise ValueError("The DPoP proof 'ath' does not match the access token.")
        elif claims.get("nonce") != self._dpop_nonce:
            raise OAuthError(
                400,
                "use_dpop_nonce",
                "Authorization server requires nonce in DPoP proof.",
                {"DPoP-Nonce": self._dpop_nonce},
            )
        self._used_proof_jti[str(claims["jti"])] = now + 600
        return jwk_thumbprint(jwk)

    @staticmethod
    def _expire_jti(seen: dict[str, float], now: float) -> None:
        for jti in [j for j, until in seen.items() if until < now]:
            del seen[jti]

    # -------------------------------------------------------------------------------- OAuth

    def _mint(self, client_id: str, scopes: tuple[str, ...], ttl: float, jkt: str | None, issuer: str) -> AccessToken:
        now = self.clock()
        claims: dict[str, Any] = {
            "ver": 1,
            "jti": "AT." + secrets.token_urlsafe(32),
            "iss": issuer,
            "aud": issuer,
            "iat": int(now),
            "exp": int(now + ttl),
            "cid": client_id,
            "sub": client_id,
            "scp": list(scopes),
        }
        if jkt:
            claims["cnf"] = {"jkt": jkt}
        value = jwt.encode(claims, self._signing_key, algorithm="HS256", headers={"kid": "sandbox"})
        token = AccessToken(value, client_id, scopes, now + ttl, "DPoP" if jkt else "Bearer", jkt)
        self.access_tokens[value] = token
        self.issued_tokens.append(token)
        return token

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        fields = {k: str(v) for k, v in form.items()}
        try:
            token = self._issue(request, fields)
        except OAuthError as exc:
            return json_response(
                {"error": exc.error, "error_description": exc.description},
                exc.status,
                {"Cache-Control": "no-store", "Pragma": "no-cache", **exc.headers},
            )
        body = {
            "token_type": token.token_type,
            "expires_in": int(token.expires_at - self.clock()),
            "access_token": token.token,
            "scope": " ".join(token.scopes),
        }
        return json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _issue(self, request: web.Request, form: Mapping[str, str]) -> AccessToken:
        grant = form.get("grant_type")
        if not grant:
            raise OAuthError(
                400,
                "invalid_request",
                "The token request must specify a 'grant_type'. Valid values: [client_credentials]",
            )
        if grant != "client_credentials":
            raise OAuthError(
                400,
                "unsupported_grant_type",
                "The authorization grant type is not supported by "
                "the authorization server. Configured grant types: [client_credentials].",
            )
        assertion = form.get("client_assertion")
        if form.get("client_assertion_type") != JWT_BEARER or not assertion:
            raise OAuthError(
                401,
                "invalid_client",
                "Client authentication failed. Either the client or the client credentials are invalid.",
            )
        client, claims = self._check_assertion(request, assertion, form.get("client_id"))
        scopes = self._check_scopes(client, form.get("scope", ""))
        jkt: str | None = None
        proof = request.headers.get("DPoP")
        if proof or self.require_dpop:
            if not proof:
                raise OAuthError(400, "invalid_dpop_proof", "The DPoP proof JWT header is missing.")
            try:
                jkt = self._check_dpop_proof(proof, request, access_token=None)
            except ValueError as exc:
                raise OAuthError(400, "invalid_dpop_proof", str(exc)) from exc
        # The assertion's jti is spent only by a request that gets a token, so the retry after
        # use_dpop_nonce may carry the same assertion.
        self._used_assertion_jti[str(claims["jti"])] = float(claims["exp"])
        issuer = f"{request.scheme}://{request.host}"
        return self._mint(client.client_id, scopes, 3600.0, jkt, issuer)

    def _check_assertion(
        self, request: web.Request, assertion: str, form_client_id: str | None
    ) -> tuple[OAuthClient, dict[str, Any]]:
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise OAuthError(400, "invalid_client", "The client_assertion token is malformed.") from exc
        client_id = str(unverified.get("iss") or form_client_id or "")
        client = self.clients.get(client_id)
        if client is None or (form_client_id and form_client_id != client_id):
            raise OAuthError(401, "invalid_client", "Invalid value for 'client_id' parameter.")
        alg = header.get("alg")
        if alg not in ASSERTION_ALGS:
            raise OAuthError(400, "invalid_client", "The client_assertion token has an unsupported signing algorithm.")
        kid = header.get("kid")
        keys = [key for key_id, key in client.keys if kid is None or key_id is None or key_id == kid]
        if not keys:
            raise OAuthError(
                400,
                "invalid_client",
                "The client_assertion token has a kid which does not identify any key registered for the client.",
            )
        claims: dict[str, Any] | None = None
        for key in keys:
            try:
                claims = jwt.decode(
                    assertion,
                    key=key,
                    algorithms=[alg],
                    options={
                        "verify_exp": False,
                        "verify_iat": False,
                        "verify_nbf": False,
                        "verify_aud": False,
                    },
                )
                break
            except jwt.PyJWTError:
                continue
        if claims is None:
            raise OAuthError(400, "invalid_client", "The client_assertion signature is invalid.")
        if claims.get("sub") != client_id:
            raise OAuthError(
                400,
                "invalid_client",
                "The client_assertion token 'sub' claim must match the 'iss' claim (the client_id).",
            )
        audiences = claims.get("aud")
        audiences = audiences if isinstance(audiences, list) else [audiences]
        invoked = str(request.url.with_query(None))
        if not {invoked, f"{self.url}{TOKEN_PATH}"} & set(audiences):
            raise OAuthError(
                400,
                "invalid_client",
                "The audience claim for client_assertion must be the endpoint invoked for the request.",
            )
        now = self.clock()
        exp = claims.get("exp")
        if not isinstance(exp, int | float):
            raise OAuthError(400, "invalid_client", "The client_assertion token must contain an 'exp' claim.")
        if exp <= now:
            raise OAuthError(400, "invalid_client", "The client_assertion token is expired.")
        if exp - now > 3600:
            raise OAuthError(
                400, "invalid_client", "The client_assertion token has an expiration too far into the future."
            )
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and nbf > now + 60:
            raise OAuthError(400, "invalid_client", "The client_assertion token is not valid yet.")
        jti = claims.get("jti")
        if not jti:
            raise OAuthError(400, "invalid_client", "The client_assertion token must contain a 'jti' claim.")
        self._expire_jti(self._used_assertion_jti, now)
        if str(jti) in self._used_assertion_jti:
            raise OAuthError(
                400,
                "invalid_client",
                "The client_assertion token has already been used. A new token with a unique 'jti' is required.",
            )
        return client, claims

    @staticmethod
    def _check_scopes(client: OAuthClient, raw: str) -> tuple[str, ...]:
        requested = tuple(dict.fromkeys(raw.split()))
        if not requested:
            raise OAuthError(
                400,
                "invalid_scope",
                "The authorization server resource does not have any "
                "configured default scopes, 'scope' must be provided.",
            )
        if any(s not in KNOWN_SCOPES for s in requested):
            raise OAuthError(
                400,
                "invalid_scope",
                "One or more scopes are not configured for the authorization server resource.",
            )
        if any(s not in client.scopes for s in requested):
            raise OAuthError(400, "invalid_scope", "The requested scope is invalid, unknown, or malformed.")
        return requested

    # ------------------------------------------------------------------------------- routes

    def _add_routes(self) -> None:
        r = self.app.router
        r.add_post(TOKEN_PATH, self._token)
        r.add_get("/api/v1/users", self._list_users)
        r.add_get("/api/v1/users/{id}", self._get_user)
        r.add_get("/api/v1/users/{id}/groups", self._user_groups)
        r.add_get("/api/v1/users/{id}/factors", self._list_factors)
        r.add_get("/api/v1/users/{id}/factors/{fid}", self._get_factor)
        r.add_delete("/api/v1/users/{id}/factors/{fid}", self._delete_factor)
        r.add_post("/api/v1/users/{id}/factors/{fid}/verify", self._verify)
        r.add_get("/api/v1/users/{id}/factors/{fid}/transactions/{tx}", self._poll)
        r.add_delete("/api/v1/users/{id}/factors/{fid}/transactions/{tx}", self._cancel_push)
        r.add_post("/api/v1/users/{id}/lifecycle/{action}", self._lifecycle)
        r.add_delete("/api/v1/users/{id}/sessions", self._clear_sessions)
        r.add_get("/api/v1/users/{id}/risk", self._user_risk)
        r.add_post("/api/v1/users/{id}/authenticator-enrollments/tac", self._create_tac)
        r.add_get("/api/v1/authenticators", self._list_authenticators)
        r.add_get("/api/v1/logs", self._list_logs)
        r.add_get("/api/v1/groups", self._list_groups)
        r.add_get("/api/v1/groups/{gid}", self._get_group)
        r.add_get("/api/v1/groups/{gid}/users", self._group_users)

    @staticmethod
    def _origin(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    def _user_or_404(self, ref: str) -> OktaUser:
        user = self.user(ref)
        if user is None:
            raise _not_found(ref, "User")
        return user

    def _factor_or_404(self, user: OktaUser, factor_id: str) -> OktaFactor:
        factor = user.factors.get(factor_id)
        if factor is None:
            raise _not_found(factor_id, "UserFactor")
        return factor

    @staticmethod
    def _limit(request: web.Request, default: int) -> int:
        raw = request.query.get("limit")
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError as exc:
            raise OktaError(400, "E0000001", "Api validation failed: limit", ["limit: must be an integer"]) from exc
        return max(1, min(value, 200))

    @staticmethod
    def _paginate(
        request: web.Request, items: Sequence[Any], ids: Sequence[str], limit: int
    ) -> tuple[list[Any], list[str]]:
        """One page after the `after` cursor, plus the `Link` header values (self, then next if any)."""
        after = request.query.get("after")
        start = ids.index(after) + 1 if after in ids else 0
        page = list(items[start : start + limit])
        links = [f'<{request.url}>; rel="self"']
        if start + limit < len(items):
            next_url = request.url.update_query(after=ids[start + limit - 1], limit=str(limit))
            links.append(f'<{next_url}>; rel="next"')
        return page, links

    @staticmethod
    def _list_response(payload: list[Any], links: Sequence[str]) -> web.Response:
        response = json_response(payload)
        for link in links:
            response.headers.add("Link", link)
        return response

    # users

    async def _list_users(self, request: web.Request) -> web.Response:
        origin = self._origin(request)
        query = request.query
        users = list(self.users.values())
        if "search" in query and "filter" in query:
            raise OktaError(400, "E0000033", "Cannot specify search query and filter in the same request.")
        expression = query.get("search") or query.get("filter")
        if "q" in query:
            needle = query["q"].casefold()
            hits = [
                u
                for u in users
                if u.status != "DEPROVISIONED"
                and any(
                    str(u.profile.get(k) or "").casefold().startswith(needle)
                    for k in ("firstName", "lastName", "email")
                )
            ]
            limit = self._limit(request, 10)
            return self._list_response(
                [self._user_json(u, origin) for u in hits[:limit]], [f'<{request.url}>; rel="self"']
            )
        if expression is not None:
            try:
                predicate = parse_search(expression)
            except _SearchError as exc:
                raise OktaError(400, "E0000031", "Invalid search criteria.", [str(exc)]) from exc
            docs = [(u, self._user_json(u, origin)) for u in users]
            hits = [u for u, doc in docs if predicate(doc)]
            sort_by = query.get("sortBy")
            if sort_by:
                hits.sort(
                    key=lambda u: (str(_attr(self._user_json(u, origin), sort_by) or "").casefold(), u.id),
                    reverse=query.get("sortOrder", "asc").lower() == "desc",
                )
        else:
            hits = [u for u in users if u.status != "DEPROVISIONED"]
        page, links = self._paginate(request, hits, [u.id for u in hits], self._limit(request, 200))
        return self._list_response([self._user_json(u, origin) for u in page], links)

    async def _get_user(self, request: web.Request) -> web.Response:
        user = self._user_or_404(request.match_info["id"])
        return json_response(self._user_json(user, self._origin(request), full=True))

    async def _user_groups(self, request: web.Request) -> web.Response:
        user = self._user_or_404(request.match_info["id"])
        origin = self._origin(request)
        return json_response([self._group_json(g, origin) for g in self.groups.values() if user.id in g.members])

    # groups

    async def _list_groups(self, request: web.Request) -> web.Response:
        origin = self._origin(request)
        groups = list(self.groups.values())
        if "q" in request.query:
            needle = request.query["q"].casefold()
            groups = [g for g in groups if g.name.casefold().startswith(needle)]
        if "search" in request.query:
            try:
                predicate = parse_search(request.query["search"])
            except _SearchError as exc:
                raise OktaError(400, "E0000031", "Invalid search criteria.", [str(exc)]) from exc
            groups = [g for g in groups if predicate(self._group_json(g, origin))]
        page, links = self._paginate(request, groups, [g.id for g in groups], self._limit(request, 200))
        return self._list_response([self._group_json(g, origin) for g in page], links)

    async def _get_group(self, request: web.Request) -> web.Response:
        group = self.groups.get(request.match_info["gid"])
        if group is None:
            raise _not_found(request.match_info["gid"], "UserGroup")
        return json_response(self._group_json(group, self._origin(request)))

    async def _group_users(self, request: web.Request) -> web.Response:
        group = self.groups.get(request.match_info["gid"])
        if group is None:
            raise _not_found(request.match_info["gid"], "UserGroup")
        origin = self._origin(request)
        members = [self.users[uid] for uid in group.members if uid in self.users]
        page, links = self._paginate(request, members, [u.id for u in members], self._limit(request, 1000))
        return self._list_response([self._user_json(u, origin) for u in page], links)

    # factors

    async def _list_factors(self, request: web.Request) -> web.Response:
        user = self._user_or_404(request.match_info["id"])
        origin = self._origin(request)
        return json_response([self._factor_json(f, user, origin) for f in user.factors.values()])

    async def _get_factor(self, request: web.Request) -> web.Response:
        user = self._user_or_404(request.match_info["id"])
        factor = self._factor_or_404(user, request.match_info["fid"])
        return json_response(self._factor_json(factor, user, self._origin(request)))

    async def _delete_factor(self, request: web.Request) -> web.Response:
        user = self._user_or_404(request.match_info["id"])
        factor = self._factor_or_404(user, request.match_info["fid"])
        if user.status == "DEPROVISIONED":
            raise _status_not_allowed()
        del user.factors[factor.id]
        user.last_updated = self.clock()
        self._log_request(request, "user.mfa.factor.deactivate", [self._user_ref(user), self._factor_ref(factor)])
        return web.Response(status=204)

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise OktaError(400, "E0000003", "The request body was not well-formed.") from exc
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise OktaError(400, "E0000003", "The request body was not well-formed.")
        return body

    async def _verify(self, request: web.Request) -> web.Response:
        user = self._user_or_404(request.match_info["id"])
        factor = self._factor_or_404(user, request.match_info["fid"])
        body = await self._json_body(request)
        lifetime = 300
        if "tokenLifetimeSeconds" in request.query:
            try:
                lifetime = int(request.query["tokenLifetimeSeconds"])
            except ValueError:
                lifetime = 0
            if not 1 <= lifetime <= 86400:
                raise OktaError(
                    400,
                    "E0000001",
                    "Api validation failed: tokenLifetimeSeconds",
                    ["tokenLifetimeSeconds: must be between 1 and 86400"],
                )
        if user.status in ("DEPROVISIONED", "SUSPENDED", "STAGED"):
            raise _status_not_allowed()
        if user.factor_locked:
            raise OktaError(403, "E0000069", "User Locked", ["User Locked"])
        if factor.status != "ACTIVE":
            raise OktaError(400, "E0000154", "Invalid factor id, it is not currently active")
        origin = self._origin(request)
        kind = factor.factor_type
        if kind == "push":
            return self._challenge_push(request, user, factor, body, lifetime, origin)
        if kind in OTP_FACTORS:
            return self._verify_otp(user, factor, body, lifetime, origin)
        if kind in TOKEN_FACTORS:
            return self._verify_token_factor(user, factor, body)
        if kind == "question":
            answer = body.get("answer")
            if not isinstance(answer, str) or not answer:
                raise OktaError(400, "E0000001", "Api validation failed: answer", ["answer: The answer is required."])
            if factor.answer is None or answer.strip().casefold() != factor.answer.strip().casefold():
                self._failed_attempt(user)
                raise _invalid_passcode("Your answer doesn't match our records. Please try again.")
            return self._verified(user)
        if kind in ("webauthn", "u2f"):
            if "signatureData" in body or "clientData" in body:
                self._failed_attempt(user)
                raise _invalid_passcode("The assertion could not be verified.")
            challenge = {"challenge": _b64url(secrets.token_bytes(16)), "extensions": {}}
            return json_response(
                {
                    "factorResult": "CHALLENGE",
                    "profile": factor.profile,
                    "_links": self._verify_links(origin, user.id, factor.id),
                    "_embedded": {"challenge": challenge},
                }
            )
        raise OktaError(
            400,
            "E0000001",
            "Api validation failed: factorType",
            [f"factorType: {kind} factors cannot be verified with this API."],
        )

    def _verified(self, user: OktaUser) -> web.Response:
        user.failed_factor_attempts = 0
        return json_response({"factorResult": "SUCCESS"})

    def _failed_attempt(self, user: OktaUser) -> None:
        user.failed_factor_attempts += 1
        if user.failed_factor_attempts >= self.max_factor_attempts:
            user.factor_locked = True
            self._set_status(user, "LOCKED_OUT")

    def _challenge_push(
        self,
        request: web.Request,
        user: OktaUser,
        factor: OktaFactor,
        body: Mapping[str, Any],
        lifetime: int,
        origin: str,
    ) -> web.Response:
        agent = request.headers.get("User-Agent", "").strip()
        if not agent:
            raise OktaError(
                400,
                "E0000001",
                "Api validation failed: User-Agent",
                ["User-Agent: The User-Agent header is required to verify a push factor."],
            )
        now = self.clock()
        number_matching = body.get("useNumberMatchingChallenge") is True
        outcome = (
            self.push_outcome.get(factor.id)
            or self.push_outcome.get(user.id)
            or self.push_outcome.get(user.login)
            or self.default_push_outcome
        )
        tx = PushTransaction(
            id="v2mst." + _b64url(secrets.token_bytes(16)),
            user_id=user.id,
            factor_id=factor.id,
            created=now,
            expires_at=now + min(lifetime, self.push_lifetime),
            correct_answer=secrets.choice(range(10, 100)) if number_matching else None,
            outcome=outcome,
            user_agent=agent,
        )
        self._transactions[tx.id] = tx
        self.pushes.append(tx)
        return json_response(self._waiting_json(tx, user, factor, origin), 201)

    def _waiting_json(self, tx: PushTransaction, user: OktaUser, factor: OktaFactor, origin: str) -> dict[str, Any]:
        href = f"{origin}/api/v1/users/{user.id}/factors/{factor.id}/transactions/{tx.id}"
        body: dict[str, Any] = {
            "expiresAt": _iso(tx.expires_at),
            "factorResult": "WAITING",
            "profile": {"credentialId": factor.profile.get("credentialId", user.login)},
            "_links": {
                "poll": {"href": href, "hints": {"allow": ["GET"]}},
                "cancel": {"href": href, "hints": {"allow": ["DELETE"]}},
            },
        }
        if tx.correct_answer is not None:
            body["_embedded"] = {"challenge": {"correctAnswer": tx.correct_answer}}
        return body

    def _transaction_or_404(self, request: web.Request) -> tuple[OktaUser, OktaFactor, PushTransaction]:
        user = self._user_or_404(request.match_info["id"])
        factor = self._factor_or_404(user, request.match_info["fid"])
        tx = self._transactions.get(request.match_info["tx"])
        if tx is None or tx.user_id != user.id or tx.factor_id != factor.id or tx.cancelled:
            raise _not_found(request.match_info["tx"], "FactorTransaction")
        if self.clock() > tx.expires_at + self.push_retention:
            raise OktaError(404, "E0000191", "Verification timed out")
        return user, factor, tx

    async def _poll(self, request: web.Request) -> web.Response:
        user, factor, tx = self._transaction_or_404(request)
        origin = self._origin(request)
        tx.polls += 1
        if tx.result is None:
            if self.clock() >= tx.expires_at:
                tx.result = "TIMEOUT"
            elif tx.outcome.result is not None and tx.polls > tx.outcome.after_polls:
                tx.result = tx.outcome.result
        self._log_push_denial(tx)
        if tx.result is None:
            return json_response(self._waiting_json(tx, user, factor, origin))
        if tx.result == "SUCCESS":
            user.failed_factor_attempts = 0
            return json_response({"factorResult": "SUCCESS"})
        return json_response(
            {
                "factorResult": tx.result,
                "profile": {"credentialId": factor.profile.get("credentialId", user.login)},
                "_links": self._verify_links(origin, user.id, factor.id),
            }
        )

    async def _cancel_push(self, request: web.Request) -> web.Response:
        _, _, tx = self._transaction_or_404(request)
        tx.cancelled = True
        return web.Response(status=204)

    def _verify_otp(
        self, user: OktaUser, factor: OktaFactor, body: Mapping[str, Any], lifetime: int, origin: str
    ) -> web.Response:
        now = self.clock()
        code = body.get("passCode")
        if code is None or code == "":
            window, error_code, message = RESEND_THROTTLE[factor.factor_type]
            if factor.code_sent_at is not None and now - factor.code_sent_at < window:
                raise OktaError(429, error_code, message)
            factor.code = f"{secrets.randbelow(1_000_000):06d}"
            factor.code_sent_at = now
            factor.code_expires_at = now + lifetime
            destination = str(factor.profile.get("phoneNumber") or factor.profile.get("email") or "")
            self.sent_codes.append(SentCode(user.id, factor.id, factor.factor_type, destination, factor.code, now))
            payload: dict[str, Any] = {
                "factorResult": "CHALLENGE",
                "profile": factor.profile,
                "_links": self._verify_links(origin, user.id, factor.id),
            }
            return json_response(payload)
        valid = (
            factor.code is not None
            and factor.code_expires_at is not None
            and now <= factor.code_expires_at
            and hmac.compare_digest(str(code), factor.code)
        )
        if not valid:
            self._failed_attempt(user)
            raise _invalid_passcode()
        factor.code = None
        return self._verified(user)

    def _verify_token_factor(self, user: OktaUser, factor: OktaFactor, body: Mapping[str, Any]) -> web.Response:
        code = body.get("passCode")
        if code is None or code == "":
            raise OktaError(400, "E0000001", "Api validation failed: passCode", ["passCode: The passcode is required."])
        if factor.passcode is not None and hmac.compare_digest(str(code), factor.passcode):
            if factor.passcode_used:
                raise OktaError(
                    403,
                    "E0000082",
                    "Each code can only be used once. Please wait for a new code and try again.",
                )
            factor.passcode_used = True
            return self._verified(user)
        self._failed_attempt(user)
        raise _invalid_passcode()

    # lifecycle

    def _set_status(self, user: OktaUser, status: str) -> None:
        now = self.clock()
        if user.status != status:
            user.status = status
            user.status_changed = now
        user.last_updated = now

    @staticmethod
    def _bool_param(request: web.Request, name: str, *, required: bool = False) -> bool:
        raw = request.query.get(name)
        if raw is None:
            if required:
                raise OktaError(
                    400,
                    "E0000028",
                    "The request is missing a required parameter.",
                    [f"{name}: The '{name}' query parameter is required."],
                )
            return False
        if raw.lower() not in ("true", "false"):
            raise OktaError(400, "E0000001", f"Api validation failed: {name}", [f"{name}: must be true or false"])
        return raw.lower() == "true"

    async def _lifecycle(self, request: web.Request) -> web.Response:
        user = self._user_or_404(request.match_info["id"])
        action = request.match_info["action"]
        origin = self._origin(request)
        now = self.clock()
        if action == "reset_password":
            send_email = self._bool_param(request, "sendEmail", required=True)
            if user.status in ("DEPROVISIONED", "STAGED", "SUSPENDED"):
                raise _status_not_allowed()
            if self._bool_param(request, "revokeSessions"):
                user.active_sessions = 0
            user.factor_locked, user.failed_factor_attempts = False, 0
            self._set_status(user, "RECOVERY")
            self._log_request(request, "user.account.reset_password", [self._user_ref(user)])
            if send_email:
                return json_response({})
            return json_response({"resetPasswordUrl": f"{origin}/signin/reset-password/{secrets.token_urlsafe(15)}"})
        if action in ("expire_password", "expire_password_with_temp_password"):
            if user.status in ("DEPROVISIONED", "STAGED", "SUSPENDED"):
                raise _status_not_allowed()
            with_temp = action == "expire_password_with_temp_password" or self._bool_param(request, "tempPassword")
            if self._bool_param(request, "revokeSessions"):
                user.active_sessions = 0
            user.factor_locked, user.failed_factor_attempts = False, 0
            self._set_status(user, "PASSWORD_EXPIRED")
            user.password_changed = now
            self._log_request(request, "user.account.reset_password", [self._user_ref(user)])
            if with_temp:
                temp = _temp_password()
                self.issued_temp_passwords.append(temp)
                return json_response({"tempPassword": temp})
            return json_response(self._user_json(user, origin, full=True))
        if action == "reset_factors":
            if user.status == "DEPROVISIONED":
                raise _status_not_allowed()
            # Identity Engine logs one deactivate per factor, Classic one reset_all: the fake logs both.
            for factor in user.factors.values():
                self._log_request(
                    request, "user.mfa.factor.deactivate", [self._user_ref(user), self._factor_ref(factor)]
                )
            self._log_request(request, "user.mfa.factor.reset_all", [self._user_ref(user)])
            user.factors.clear()
            user.last_updated = now
            return json_response({})
        if action == "unlock":
            if user.status != "LOCKED_OUT" and not user.factor_locked:
                raise OktaError(403, "E0000032", "Unlock is not allowed for this user.")
            user.factor_locked, user.failed_factor_attempts = False, 0
            self._set_status(user, "ACTIVE")
            return json_response({})
        raise OktaError(404, "E0000007", f"Not found: Resource not found: {action} (Lifecycle)")

    async def _clear_sessions(self, request: web.Request) -> web.Response:
        user = self._user_or_404(request.match_info["id"])
        oauth_tokens = self._bool_param(request, "oauthTokens")
        if "forgetDevices" in request.query:
            self._bool_param(request, "forgetDevices")  # validated; remembered factors aren't modelled
        user.active_sessions = 0
        self.revoked_sessions.append((user.id, oauth_tokens))
        self._log_request(request, "user.session.end", [self._user_ref(user)])
        return web.Response(status=204)

    # user risk (Identity Threat Protection)

    async def _user_risk(self, request: web.Request) -> web.Response:
        if not self.itp:
            # Undocumented in a real org without ITP: either answer is possible (reference/assurance.md).
            if self.no_itp_status == 404:
                raise OktaError(404, "E0000007", f"Not found: Resource not found: {request.path} (UserRisk)")
            raise OktaError(403, "E0000006", "You do not have permission to perform the requested action")
        user = self._user_or_404(request.match_info["id"])
        base = f"{self._origin(request)}/api/v1/users/{user.id}"
        body: dict[str, Any] = {"riskLevel": user.risk_level}
        if user.risk_level != "NONE" and user.risk_reason:
            body["reason"] = user.risk_reason
        body["_links"] = {
            "self": {"href": f"{base}/risk", "hints": {"allow": ["GET", "PUT"]}},
            "user": {"href": base, "hints": {"allow": ["GET"]}},
        }
        return json_response(body)

    # authenticators and Temporary Access Codes

    async def _list_authenticators(self, request: web.Request) -> web.Response:
        return json_response(self._authenticators_json(self._origin(request)))

    def _authenticators_json(self, origin: str) -> list[dict[str, Any]]:
        created = _iso(_ORG_CREATED)

        def entry(auth_id: str, key: str, kind: str, name: str, status: str = "ACTIVE", **extra: Any) -> dict:
            base = f"{origin}/api/v1/authenticators/{auth_id}"
            toggle = "deactivate" if status == "ACTIVE" else "activate"
            return {
                "type": kind,
                "id": auth_id,
                "key": key,
                "status": status,
                "name": name,
                "created": created,
                "lastUpdated": created,
                **extra,
                "_links": {
                    "self": {"href": base, "hints": {"allow": ["GET", "PUT"]}},
                    "methods": {"href": f"{base}/methods", "hints": {"allow": ["GET"]}},
                    toggle: {"href": f"{base}/lifecycle/{toggle}", "hints": {"allow": ["POST"]}},
                },
            }

        found = [
            entry(
                "autsandboxemail00001",
                "okta_email",
                "email",
                "Email",
                settings={"allowedFor": "any", "tokenLifetimeInMinutes": 5},
            ),
            entry("autsandboxpasswd0001", "okta_password", "password", "Password"),
            entry("autsandboxverify0001", "okta_verify", "app", "Okta Verify"),
            entry("autsandboxphone00001", "phone_number", "phone", "Phone", settings={"allowedFor": "any"}),
            entry(
                "autsandboxquestion01",
                "security_question",
                "security_question",
                "Security Question",
                settings={"allowedFor": "recovery"},
            ),
            entry("autsandboxwebauthn01", "webauthn", "security_key", "Security Key or Biometric"),
        ]
        if self.tac:
            found.append(
                entry(
                    TAC_AUTHENTICATOR_ID,
                    "tac",
                    "tac",
                    "Temporary Access Code",
                    self.tac_status,
                    provider={"type": "tac", "configuration": dict(self.tac_config)},
                )
            )
        return found

    async def _create_tac(self, request: web.Request) -> web.Response:
        user = self._user_or_404(request.match_info["id"])
        body = await self._json_body(request)
        authenticator_id = body.get("authenticatorId")
        if not isinstance(authenticator_id, str) or not authenticator_id:
            raise OktaError(
                400,
                "E0000001",
                "Api validation failed: authenticatorId",
                ["authenticatorId: The field cannot be left blank."],
            )
        if not self.tac or self.tac_status != "ACTIVE" or authenticator_id != TAC_AUTHENTICATOR_ID:
            raise OktaError(
                400,
                "E0000001",
                "Api validation failed: authenticatorId",
                ["authenticatorId: Not an active Temporary Access Code authenticator of this org."],
            )
        profile = body.get("profile") or {}
        if not isinstance(profile, dict):
            raise OktaError(400, "E0000003", "The request body was not well-formed.")
        config = self.tac_config
        ttl = self._tac_ttl(profile.get("ttl"), config)
        multi_use = profile.get("multiUse", False)
        if not isinstance(multi_use, bool):
            raise OktaError(400, "E0000001", "Api validation failed: multiUse", ["multiUse: must be true or false"])
        if multi_use and not config.get("multiUseAllowed"):
            raise OktaError(
                400,
                "E0000001",
                "Api validation failed: multiUse",
                ["multiUse: The authenticator's configuration does not allow multi-use codes."],
            )
        if user.status in ("DEPROVISIONED", "SUSPENDED", "STAGED"):
            raise _status_not_allowed()
        now = self.clock()
        issued = IssuedTac(
            user_id=user.id,
            enrollment_id=_new_id("tac"),
            code=_tac_code(int(config["length"]), config.get("complexity") or {}),
            ttl_minutes=ttl,
            multi_use=multi_use,
            created=now,
            expires_at=now + ttl * 60,
        )
        user.tac = issued  # a new TAC invalidates the previous one
        user.last_updated = now
        self.issued_tacs.append(issued)
        return json_response(self._tac_json(issued, self._origin(request)))

    @staticmethod
    def _tac_ttl(raw: Any, config: Mapping[str, Any]) -> int:
        """`profile.ttl`: minutes, a string in the schema (Okta's own example sends a number)."""
        low, high = int(config["minTtl"]), int(config["maxTtl"])
        if raw is None:
            return int(config["defaultTtl"])
        if isinstance(raw, bool) or not isinstance(raw, str | int) or not str(raw).isdigit():
            raise OktaError(400, "E0000001", "Api validation failed: ttl", ["ttl: must be a number of minutes"])
        ttl = int(raw)
        if not low <= ttl <= high:
            raise OktaError(
                400, "E0000001", "Api validation failed: ttl", [f"ttl: must be between {low} and {high} minutes"]
            )
        return ttl

    @staticmethod
    def _tac_json(issued: IssuedTac, origin: str) -> dict[str, Any]:
        user_href = f"{origin}/api/v1/users/{issued.user_id}"
        # Okta's example shows expiresAt as UTC without a zone designator: "2025-05-28T19:21:14".
        expires = datetime.fromtimestamp(issued.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return {
            "type": "tac",
            "id": issued.enrollment_id,
            "key": "tac",
            "status": "ACTIVE",
            "name": "Temporary Access Code",
            "created": _iso(issued.created),
            "lastUpdated": _iso(issued.created),
            "profile": {"tac": issued.code, "multiUse": issued.multi_use, "expiresAt": expires},
            "_links": {
                "self": {
                    "href": f"{user_href}/authenticator-enrollments/{issued.enrollment_id}",
                    "hints": {"allow": ["GET", "DELETE"]},
                },
                "user": {"href": user_href, "hints": {"allow": ["GET"]}},
                "authenticator": {"href": f"{origin}/api/v1/authenticators/{TAC_AUTHENTICATOR_ID}"},
            },
        }

    # system log

    def _log_time(self, request: web.Request, name: str) -> float | None:
        raw = request.query.get(name)
        if not raw:
            return None
        try:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError as exc:
            raise OktaError(
                400, "E0000001", f"Api validation failed: {name}", [f"{name}: must be an ISO 8601 timestamp"]
            ) from exc
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()

    async def _list_logs(self, request: web.Request) -> web.Response:
        query = request.query
        now = self.clock()
        until = self._log_time(request, "until")
        until = now if until is None else until
        since = self._log_time(request, "since")
        since = until - LOG_DEFAULT_WINDOW if since is None else since
        order = query.get("sortOrder", "ASCENDING")
        if order not in ("ASCENDING", "DESCENDING"):
            raise OktaError(
                400,
                "E0000001",
                "Api validation failed: sortOrder",
                ["sortOrder: must be ASCENDING or DESCENDING"],
            )
        limit = 100
        if "limit" in query:
            try:
                limit = int(query["limit"])
            except ValueError:
                limit = -1
            if limit < 0:
                raise OktaError(400, "E0000001", "Api validation failed: limit", ["limit: must be between 0 and 1000"])
            limit = min(limit, 1000)
        predicate: Predicate | None = None
        if query.get("filter"):
            try:
                predicate = parse_log_filter(query["filter"])
            except _SearchError as exc:
                # Okta's E0000053 lists the operators; the exact wording is unverified.
                raise OktaError(
                    400,
                    "E0000053",
                    "Invalid filter",
                    [f"Invalid filter expression ({exc}). Operators must be one of: eq co sw pr gt ge lt le"],
                ) from exc
        keywords = query.get("q", "").split()
        if len(keywords) > 10 or any(len(k) > 40 for k in keywords):
            raise OktaError(
                400, "E0000001", "Api validation failed: q", ["q: at most 10 keywords of at most 40 characters"]
            )
        floor = max(since, now - LOG_RETENTION)
        window = [e for e in self.log_events if floor <= e.published <= until]
        window.sort(key=lambda e: (e.published, e.seq), reverse=order == "DESCENDING")
        docs: list[dict[str, Any]] = []
        for event in window:
            doc = self._log_json(event)
            if predicate is not None and not predicate(doc):
                continue
            if keywords:
                text = orjson.dumps(doc).decode().casefold()
                if not all(k.casefold() in text for k in keywords):
                    continue
            docs.append(doc)
        after = query.get("after")
        start = next((i + 1 for i, d in enumerate(docs) if d["uuid"] == after), 0) if after else 0
        page = docs[start : start + limit]
        links = [f'<{request.url}>; rel="self"']
        if page and start + limit < len(docs):
            links.append(f'<{request.url.update_query(after=page[-1]["uuid"])}>; rel="next"')
        return self._list_response(page, links)

    @staticmethod
    def _user_ref(user: OktaUser) -> dict[str, Any]:
        """A user as a log event's actor or target."""
        return {"id": user.id, "type": "User", "alternateId": user.login, "displayName": user.display_name}

    @staticmethod
    def _factor_ref(factor: OktaFactor) -> dict[str, Any]:
        """A factor enrollment as a log event's target."""
        return {
            "id": factor.id,
            "type": "AuthenticatorEnrollment",
            "alternateId": "unknown",
            "displayName": FACTOR_DISPLAY_NAMES.get(factor.factor_type, factor.factor_type),
        }

    def _append_log(self, event: LogEvent) -> LogEvent:
        event.published = int(event.published * 1000) / 1000  # the System Log keeps milliseconds
        event.seq = len(self.log_events)
        self.log_events.append(event)
        return event

    def _request_actor(self, request: web.Request) -> tuple[dict[str, Any], dict[str, Any]]:
        """Who Okta names as the actor of an API call: the service app, or the API token's admin."""
        principal = request.get(PRINCIPAL)
        if principal is not None and principal.client_id:
            app = principal.client_id
            return {"id": app, "type": "PublicClientApp", "alternateId": app, "displayName": app}, {}
        owner = self.user(self.api_token_owner) if self.api_token_owner else None
        actor = (
            self._user_ref(owner)
            if owner is not None
            else {"id": "unknown", "type": "User", "alternateId": "unknown", "displayName": "API token"}
        )
        return actor, {"requestApiTokenId": _API_TOKEN_ID}

    def _log_request(self, request: web.Request, event_type: str, target: list[dict[str, Any]]) -> LogEvent:
        """Log a mutation made through the API, the way Okta logs an admin's API call."""
        actor, detail = self._request_actor(request)
        request_id = request.get(REQUEST_ID) or secrets.token_urlsafe(20)[:27]
        return self._append_log(
            LogEvent(
                uuid=str(uuid.uuid4()),
                published=self.clock(),
                event_type=event_type,
                display_message=LOG_DISPLAY_MESSAGES.get(event_type, event_type),
                actor=actor,
                target=target,
                ip_address=request.remote or "127.0.0.1",
                user_agent=request.headers.get("User-Agent", "") or "UNKNOWN",
                debug_data={"requestId": request_id, "requestUri": request.path, "url": request.path_qs},
                transaction_id=request_id,
                transaction_detail=detail,
            )
        )

    def _log_push_denial(self, tx: PushTransaction) -> None:
        """A push the user rejected: `user.mfa.okta_verify.deny_push`, with the user as the actor."""
        if tx.result != "REJECTED" or tx.logged:
            return
        user = self.users.get(tx.user_id)
        if user is None:
            return
        tx.logged = True
        factor = user.factors.get(tx.factor_id)
        target = ([self._factor_ref(factor)] if factor is not None else []) + [self._user_ref(user)]
        self._append_log(
            LogEvent(
                uuid=str(uuid.uuid4()),
                published=self.clock(),
                event_type="user.mfa.okta_verify.deny_push",
                display_message=LOG_DISPLAY_MESSAGES["user.mfa.okta_verify.deny_push"],
                actor=self._user_ref(user),
                target=target,
                user_agent="Okta Verify",
                debug_data={"factor": "OKTA_VERIFY_PUSH", "pushTransactionId": tx.id},
                transaction_id=secrets.token_urlsafe(20)[:27],
            )
        )

    # ---------------------------------------------------------------------------- JSON shapes

    def _user_json(self, user: OktaUser, origin: str, *, full: bool = False) -> dict[str, Any]:
        base = f"{origin}/api/v1/users/{user.id}"
        links: dict[str, Any] = {"self": {"href": base}}
        if full:

            def post(path: str) -> dict[str, str]:
                return {"href": f"{base}/{path}", "method": "POST"}

            links.update(
                {
                    "schema": {"href": f"{origin}/api/v1/meta/schemas/user/oscsandboxschema0001"},
                    "type": {"href": f"{origin}/api/v1/meta/types/user/otysandboxtype00001"},
                }
            )
            if user.status == "DEPROVISIONED":
                links["activate"] = post("lifecycle/activate")
            else:
                links.update(
                    {
                        "resetPassword": post("lifecycle/reset_password"),
                        "expirePassword": post("lifecycle/expire_password"),
                        "forgotPassword": post("credentials/forgot_password"),
                        "changeRecoveryQuestion": post("credentials/change_recovery_question"),
                        "changePassword": post("credentials/change_password"),
                        "deactivate": post("lifecycle/deactivate"),
                    }
                )
                if user.factors:
                    links["resetFactors"] = post("lifecycle/reset_factors")
                if user.status == "ACTIVE":
                    links["suspend"] = post("lifecycle/suspend")
                if user.status == "SUSPENDED":
                    links["unsuspend"] = post("lifecycle/unsuspend")
                if user.status == "LOCKED_OUT" or user.factor_locked:
                    links["unlock"] = post("lifecycle/unlock")
        body: dict[str, Any] = {
            "id": user.id,
            "status": user.status,
            "created": _iso(user.created),
            "activated": _iso(user.activated),
            "statusChanged": _iso(user.status_changed),
            "lastLogin": _iso(user.last_login),
            "lastUpdated": _iso(user.last_updated),
            "passwordChanged": _iso(user.password_changed),
            "type": {"id": "otysandboxtype00001"},
            "profile": dict(user.profile),
            "credentials": {
                "password": {},
                "emails": [{"value": user.profile.get("email"), "status": "VERIFIED", "type": "PRIMARY"}],
                "provider": {"type": "OKTA", "name": "OKTA"},
            },
            "_links": links,
        }
        return body

    def _log_json(self, event: LogEvent) -> dict[str, Any]:
        client: dict[str, Any] = {
            "userAgent": {"rawUserAgent": event.user_agent, "os": "Unknown", "browser": "UNKNOWN"},
            "zone": "null",
            "device": "Unknown",
            "ipAddress": event.ip_address,
        }
        if event.country:
            client["geographicalContext"] = {"country": event.country}
        security: dict[str, Any] = {
            "asNumber": None,
            "asOrg": None,
            "isp": None,
            "domain": None,
            "isProxy": event.is_proxy,
        }
        if event.risk is not None:
            security["risk"] = dict(event.risk)
        if event.user_behaviors is not None:
            security["userBehaviors"] = [dict(b) for b in event.user_behaviors]
        outcome: dict[str, Any] = {"result": event.outcome}
        if event.reason:
            outcome["reason"] = event.reason
        return {
            "uuid": event.uuid,
            "published": _iso(event.published),
            "eventType": event.event_type,
            "version": "0",
            "severity": event.severity,
            "displayMessage": event.display_message,
            "actor": dict(event.actor),
            "client": client,
            "authenticationContext": {"authenticationStep": 0, "externalSessionId": "unknown"},
            "outcome": outcome,
            "securityContext": security,
            "debugContext": {"debugData": dict(event.debug_data)},
            "transaction": {"type": "WEB", "id": event.transaction_id, "detail": dict(event.transaction_detail)},
            "target": [dict(t) for t in event.target],
        }

    def _group_json(self, group: OktaGroup, origin: str) -> dict[str, Any]:
        base = f"{origin}/api/v1/groups/{group.id}"
        imported = group.group_type == "APP_GROUP"
        links: dict[str, Any] = {"source": {"href": f"{origin}/api/v1/apps/{_AD_APP_ID}"}} if imported else {}
        return {
            "id": group.id,
            "created": _iso(group.created),
            "lastUpdated": _iso(group.last_updated),
            "lastMembershipUpdated": _iso(group.last_membership_updated),
            "objectClass": ["okta:windows_security_principal" if imported else "okta:user_group"],
            "type": group.group_type,
            "profile": {"name": group.name, "description": group.description, **group.profile_extra},
            "_links": {
                **links,
                "logo": [
                    {
                        "name": "medium",
                        "href": f"{origin}/assets/img/logos/groups/okta-medium.png",
                        "type": "image/png",
                    },
                    {
                        "name": "large",
                        "href": f"{origin}/assets/img/logos/groups/okta-large.png",
                        "type": "image/png",
                    },
                ],
                "users": {"href": f"{base}/users"},
                "apps": {"href": f"{base}/apps"},
            },
        }

    @staticmethod
    def _verify_links(origin: str, user_id: str, factor_id: str) -> dict[str, Any]:
        base = f"{origin}/api/v1/users/{user_id}/factors/{factor_id}"
        return {
            "verify": {"href": f"{base}/verify", "hints": {"allow": ["POST"]}},
            "factor": {"href": base, "hints": {"allow": ["GET", "DELETE"]}},
        }

    def _factor_json(self, factor: OktaFactor, user: OktaUser, origin: str) -> dict[str, Any]:
        base = f"{origin}/api/v1/users/{user.id}/factors/{factor.id}"
        links: dict[str, Any] = {
            "self": {"href": base, "hints": {"allow": ["GET", "DELETE"]}},
            "verify": {"href": f"{base}/verify", "hints": {"allow": ["POST"]}},
            "user": {"href": f"{origin}/api/v1/users/{user.id}", "hints": {"allow": ["GET"]}},
        }
        if factor.factor_type == "question":
            links["questions"] = {
                "href": f"{origin}/api/v1/users/{user.id}/factors/questions",
                "hints": {"allow": ["GET"]},
            }
        return {
            "id": factor.id,
            "factorType": factor.factor_type,
            "provider": factor.provider,
            "vendorName": factor.vendor_name,
            "status": factor.status,
            "created": _iso(factor.created),
            "lastUpdated": _iso(factor.last_updated),
            "profile": dict(factor.profile),
            "_links": links,
        }


def _tac_code(length: int, complexity: Mapping[str, Any]) -> str:
    """A Temporary Access Code of `length` characters: digits always, letters / specials as configured."""
    alphabet = string.digits
    if complexity.get("letters", True):
        alphabet += string.ascii_letters
    if complexity.get("specialCharacters"):
        alphabet += _TAC_SPECIALS
    while True:
        code = "".join(secrets.choice(alphabet) for _ in range(length))
        if any(c.isdigit() for c in code):
            return code


def _temp_password() -> str:
    """An Okta-like temporary password: 8 letters and digits, at least one of each kind."""
    while True:
        candidate = "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))
        if (
            any(c.isdigit() for c in candidate)
            and any(c.isupper() for c in candidate)
            and any(c.islower() for c in candidate)
        ):
            return candidate


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
