"""What an enrolled Okta factor looks like to the agent: label, masked hint, usable here or why not.

    options = factor_options(raw_factors, user_profile, ["employeeNumber"])
    options[0].label   # "Okta Verify push (Alice's iPhone)"
    options[0].hint    # None;  an SMS factor: "••• 0101";  email: "a•••@example.com"

Raw factor JSON is parsed defensively: an unknown factor type is listed as not usable, never an error.
A profile attribute (``OKTA_VERIFY_ATTRIBUTES``) becomes an ``attr:<name>`` option — weak, an extra
check only — and its stored value is never part of the option.
"""

from __future__ import annotations

import hmac
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from shared.messages import FactorOption
from shared.ui import ATTRIBUTE_PREFIX

MASK = "•••"

PUSH = "push"
SENT_CODE_TYPES = frozenset({"sms", "call", "email"})
TOKEN_TYPES = frozenset({"token:software:totp", "token:hardware", "token:hotp", "token"})
QUESTION = "question"
ATTRIBUTE = "attribute"

ChallengeKind = Literal["push", "code", "answer", "attribute"]

_UNUSABLE: dict[str, str] = {
    "webauthn": "Security keys and biometrics can only be checked in the user's own browser.",
    "u2f": "U2F security keys can only be checked in the user's own browser.",
    "signed_nonce": "Okta FastPass can only be checked on the user's own device.",
    "web": "This factor is checked in its vendor's own prompt, not over the phone.",
}

_PROVIDER_NAMES = {
    "GOOGLE": "Google Authenticator",
    "OKTA": "Okta Verify",
    "RSA": "RSA SecurID",
    "SYMANTEC": "Symantec VIP",
    "YUBICO": "YubiKey",
    "DUO": "Duo",
    "FIDO": "Security key",
}

# Offer the strongest first; the security question last (Okta: "offer it last, label it so").
_ORDER = {
    "push": 0,
    "token:software:totp": 1,
    "token:hardware": 2,
    "token:hotp": 3,
    "token": 4,
    "sms": 5,
    "call": 6,
    "email": 7,
    "question": 8,
    ATTRIBUTE: 9,
}


def mask_phone(phone: str | None) -> str | None:
    digits = re.sub(r"\D", "", phone or "")
    return f"{MASK} {digits[-4:]}" if len(digits) >= 4 else (MASK if digits else None)


def mask_email(email: str | None) -> str | None:
    if not email or "@" not in email:
        return MASK if email else None
    local, _, domain = email.partition("@")
    return f"{local[:1]}{MASK}@{domain}"


def challenge_kind(factor_type: str) -> ChallengeKind | None:
    """How a factor is challenged here, or None when it cannot be."""
    if factor_type == PUSH:
        return "push"
    if factor_type in SENT_CODE_TYPES or factor_type in TOKEN_TYPES:
        return "code"
    if factor_type == QUESTION:
        return "answer"
    if factor_type == ATTRIBUTE:
        return "attribute"
    return None


def describe(raw: Mapping[str, Any]) -> FactorOption:
    """One raw factor (Okta's JSON) as a :class:`FactorOption`."""
    factor_id = str(raw.get("id") or "")
    kind = str(raw.get("factorType") or "unknown")
    provider = str(raw.get("provider") or "OKTA")
    vendor = str(raw.get("vendorName") or "")
    status = str(raw.get("status") or "ACTIVE")
    profile = raw.get("profile") if isinstance(raw.get("profile"), Mapping) else {}
    assert isinstance(profile, Mapping)
    hint: str | None = None
    weak = False
    if kind == "push":
        device = profile.get("name")
        label = f"Okta Verify push ({device})" if device else "Okta Verify push"
    elif kind == "sms":
        label, hint = "SMS code", mask_phone(profile.get("phoneNumber"))
    elif kind == "call":
        label, hint = "Voice call code", mask_phone(profile.get("phoneNumber"))
    elif kind == "email":
        label, hint = "Email code", mask_email(profile.get("email"))
    elif kind == "token:software:totp":
        label = f"{_PROVIDER_NAMES.get(provider, provider.title())} code"
    elif kind == "token:hardware":
        label = f"{_PROVIDER_NAMES.get(provider, provider.title())} hardware token"
    elif kind == "token:hotp":
        label = f"HOTP token ({vendor})" if vendor and vendor != provider else "HOTP token"
    elif kind == "token":
        label = f"{_PROVIDER_NAMES.get(provider, provider.title())} token"
    elif kind == "question":
        label, weak = "Security question (weak)", True
        text = profile.get("questionText")
        hint = str(text) if text else None  # the agent has to ask it; the answer is never shown
    elif kind in ("webauthn", "u2f"):
        name = profile.get("authenticatorName")
        label = f"Security key or biometric ({name})" if name else "Security key or biometric"
    elif kind == "signed_nonce":
        label = "Okta FastPass"
    else:
        label = f"{kind} ({provider.title()})"
    usable, reason = True, None
    if challenge_kind(kind) is None:
        usable = False
        reason = _UNUSABLE.get(kind, f"Factors of type {kind} cannot be checked here.")
    elif status != "ACTIVE":
        usable, reason = False, f"This factor is not active in Okta ({status})."
    return FactorOption(
        id=factor_id,
        factor_type=kind,
        provider=provider,
        label=label[:75],
        hint=hint,
        usable=usable,
        reason=reason,
        weak=weak,
    )


def attribute_option(name: str) -> FactorOption:
    return FactorOption(
        id=f"{ATTRIBUTE_PREFIX}{name}",
        factor_type=ATTRIBUTE,
        provider="OKTA",
        label=f"Profile check: {name} (weak, extra check only)"[:75],
        hint=None,
        usable=True,
        reason=None,
        weak=True,
    )


def factor_options(
    raw_factors: Iterable[Mapping[str, Any]], profile: Mapping[str, Any], attributes: Iterable[str]
) -> list[FactorOption]:
    """Every factor (usable ones first, strongest first), then the configured profile checks."""
    options = [describe(raw) for raw in raw_factors if raw.get("id")]
    options += [attribute_option(name) for name in attributes if _has_value(profile.get(name))]
    return sorted(options, key=lambda o: (not o.usable, _ORDER.get(o.factor_type, 50), o.label))


def _has_value(value: Any) -> bool:
    return value is not None and str(value).strip() != ""


def normalize_answer(value: str) -> str:
    """What the caller said vs. what the profile holds: case, spaces and separators do not count."""
    text = unicodedata.normalize("NFKC", value).casefold()
    return re.sub(r"[\s\-_.]", "", text)


def attribute_matches(stored: Any, spoken: str) -> bool:
    """Compare normalized, in constant time; an empty value never matches."""
    if not _has_value(stored) or not spoken.strip():
        return False
    return hmac.compare_digest(normalize_answer(str(stored)).encode(), normalize_answer(spoken).encode())
