"""Destination numbers: E.164 normalization and the toll-fraud guards that need no state.

    dest = normalize("4155552671", default_region="US", allowed_countries=["US", "CA"])
    dest.e164      # "+14155552671"
    dest.prefix    # "+1415"  (country code + area/mobile prefix: the per-prefix velocity key)
    dest.masked    # "***2671" (the only form a log line or an audit event may hold)

A number is refused (:class:`NumberRefused`, with a machine ``reason``) when it does not parse, is not a
valid number, is premium-rate, shared-cost, toll-free or otherwise not a person's line, or belongs to a
country outside ``TELEPHONY_ALLOWED_COUNTRIES`` (when that list is set).

Parsing and classifying a number costs ~0.3 ms of phonenumbers' regular expressions: the outcome for
each (number, region, allowed countries) is kept in a bounded cache, refusals included.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

# Number types that never belong to one person's phone, and are the usual SMS-pumping sinks.
REFUSED_TYPES: dict[int, str] = {
    PhoneNumberType.PREMIUM_RATE: "premium_rate",
    PhoneNumberType.SHARED_COST: "shared_cost",
    PhoneNumberType.TOLL_FREE: "toll_free",
    PhoneNumberType.UAN: "uan",
    PhoneNumberType.VOICEMAIL: "voicemail",
    PhoneNumberType.PAGER: "pager",
}
MAX_RAW_LENGTH = 32
CACHE_SIZE = 16_384  # numbers remembered (a few MB at most)


class NumberRefused(ValueError):
    """Raised by :func:`normalize` for a number the hook will not send to.

    ``reason`` is one of ``invalid_number``, ``premium_rate``, ``shared_cost``, ``toll_free``, ``uan``,
    ``voicemail``, ``pager``, ``country_not_allowed``; ``region`` is the ISO country when known. The
    message never holds the number.
    """

    def __init__(self, reason: str, summary: str, region: str | None = None) -> None:
        super().__init__(summary)
        self.reason = reason
        self.summary = summary
        self.region = region


@dataclass(frozen=True)
class Destination:
    """A valid, allowed number in E.164 with the facts the limits and the audit trail need."""

    e164: str
    region: str
    country_code: int
    prefix: str

    @property
    def masked(self) -> str:
        """The last four digits only, e.g. ``***2671``."""
        return mask(self.e164)

    def __repr__(self) -> str:
        # Keep full numbers out of tracebacks and debug output.
        return f"Destination({self.masked}, region={self.region})"


def mask(number: str) -> str:
    """``***`` and the last four digits of ``number`` (no digits at all if it is shorter than 8)."""
    digits = "".join(ch for ch in number if ch.isdigit())
    return "***" + digits[-4:] if len(digits) >= 8 else "***"


def normalize(raw: str, default_region: str = "US", allowed_countries: Collection[str] = ()) -> Destination:
    """Parse ``raw`` (with or without ``+``) to a :class:`Destination`, or raise :class:`NumberRefused`."""
    outcome = _normalize_cached(raw, default_region, frozenset(c.upper() for c in allowed_countries))
    if isinstance(outcome, NumberRefused):
        raise NumberRefused(outcome.reason, outcome.summary, outcome.region)
    return outcome


@lru_cache(maxsize=CACHE_SIZE)
def _normalize_cached(raw: str, default_region: str, allowed: frozenset[str]) -> Destination | NumberRefused:
    try:
        return _normalize(raw, default_region, allowed)
    except NumberRefused as refused:
        return NumberRefused(refused.reason, refused.summary, refused.region)  # never raised: no traceback kept


def _normalize(raw: str, default_region: str, allowed: frozenset[str]) -> Destination:
    text = raw.strip()
    if not text or len(text) > MAX_RAW_LENGTH:
        raise NumberRefused("invalid_number", "The phone number is empty or too long")
    try:
        number = phonenumbers.parse(text, default_region.upper())
    except NumberParseException:
        raise NumberRefused("invalid_number", "The phone number could not be parsed") from None
    region = phonenumbers.region_code_for_number(number)
    # is_valid_number() would look the region up again; it is the same check for the region found.
    if not region or not phonenumbers.is_valid_number_for_region(number, region):
        raise NumberRefused("invalid_number", "The phone number is not a valid number", region)
    number_type = phonenumbers.number_type(number)
    if number_type in REFUSED_TYPES:
        kind = REFUSED_TYPES[number_type]
        raise NumberRefused(kind, f"The phone number is a {kind.replace('_', '-')} number", region)
    if allowed and region not in allowed:
        raise NumberRefused("country_not_allowed", f"Sending to country {region} is not allowed", region)
    national = str(number.national_number)
    ndc_length = phonenumbers.length_of_national_destination_code(number) or min(3, len(national))
    return Destination(
        e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        region=region,
        country_code=int(number.country_code or 0),
        prefix=f"+{number.country_code}{national[:ndc_length]}",
    )
