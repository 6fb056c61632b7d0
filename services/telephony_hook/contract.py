"""Okta's side of the telephony inline hook: the request we accept and the exact answers we give.

    request = parse_request(raw_bytes)            # HookRequest, or raises RequestInvalid
    request.message.channel                       # "sms" | "voice"
    success_answer("SUCCESSFUL", "TWILIO", "SM…", "duration=312ms; attempt=1")
    error_answer("Failed to deliver SMS OTP to a@b.c", [Cause("Provider refused the number", …)])

Okta sends ``phoneNumber`` and ``otpCode`` as strings, but its published examples show JSON numbers:
both are accepted. ``deliveryChannel`` is matched without regard to case: anything voice-like
(``voice call``, ``Voice``, ``CALL``) is a call. Error messages name fields, never their values, so
an error answer cannot carry the OTP.

The answers follow Okta's contract exactly: a success is one ``com.okta.telephony.action`` command
whose ``value`` is an *array*; an error is ``{"error": {"errorSummary", "errorCauses": [...]}}``
(an object — the published ``TelephonyFailureResponse`` example shows a list, which is a slip).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

ACTION_TYPE = "com.okta.telephony.action"
Status = Literal["SUCCESSFUL", "PENDING", "FAILED"]
Channel = Literal["sms", "voice"]


class RequestInvalid(ValueError):
    """Raised by :func:`parse_request` for a body that is not a usable telephony hook request.

    ``causes`` names each offending field (``location``) and what is wrong with it, never its value.
    """

    def __init__(self, summary: str, causes: list[Cause]) -> None:
        super().__init__(summary)
        self.summary = summary
        self.causes = causes


@dataclass(frozen=True)
class Cause:
    """One entry of ``errorCauses``."""

    summary: str
    reason: str
    location: str

    def as_json(self) -> dict[str, str]:
        return {"errorSummary": self.summary, "reason": self.reason, "location": self.location}


def _number_as_text(value: Any) -> Any:
    # Okta's examples send phoneNumber/otpCode as JSON numbers; a bool is never a number here.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value


NumberText = Annotated[str, BeforeValidator(_number_as_text)]


class MessageProfile(BaseModel):
    """``data.messageProfile``: what to send, to whom, how."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, str_strip_whitespace=True)

    msg_template: str | None = Field(default=None, alias="msgTemplate", max_length=4000)
    phone_number: NumberText = Field(alias="phoneNumber", min_length=1, max_length=32)
    delivery_channel: str = Field(alias="deliveryChannel", min_length=1, max_length=40)
    otp_code: NumberText = Field(alias="otpCode", pattern=r"^[0-9A-Za-z]{4,12}$", repr=False)
    otp_expires: str | None = Field(default=None, alias="otpExpires", max_length=64)
    locale: str | None = Field(default=None, max_length=35)

    @field_validator("delivery_channel")
    @classmethod
    def _known_channel(cls, value: str) -> str:
        if channel_of(value) is None:
            raise ValueError("deliveryChannel must be SMS or a voice call")
        return value

    @property
    def channel(self) -> Channel:
        return channel_of(self.delivery_channel) or "sms"


class UserProfile(BaseModel):
    """``data.userProfile``: whose code this is (used for the per-user limit and the audit trail)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    login: str | None = Field(default=None, max_length=256)
    user_id: str | None = Field(default=None, alias="userId", max_length=64)
    first_name: str | None = Field(default=None, alias="firstName", repr=False)
    last_name: str | None = Field(default=None, alias="lastName", repr=False)


class HookData(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    message: MessageProfile = Field(alias="messageProfile")
    user: UserProfile = Field(default_factory=UserProfile, alias="userProfile")


class HookRequest(BaseModel):
    """The parts of Okta's ``com.okta.telephony.provider`` request the hook uses."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    event_id: str = Field(alias="eventId", min_length=1, max_length=200)
    event_type: str | None = Field(default=None, alias="eventType")
    request_type: str | None = Field(default=None, alias="requestType")
    data: HookData

    @property
    def message(self) -> MessageProfile:
        return self.data.message

    @property
    def user(self) -> UserProfile:
        return self.data.user

    @property
    def user_label(self) -> str:
        """Who the code is for, as Okta's error summaries name them."""
        return self.user.login or self.user.user_id or "the user"


def channel_of(delivery_channel: str) -> Channel | None:
    """``"sms"`` or ``"voice"`` for any casing of Okta's channel names, ``None`` if neither."""
    value = delivery_channel.strip().lower()
    if value in {"sms", "text", "text message"}:
        return "sms"
    if any(word in value for word in ("voice", "call", "phone")):
        return "voice"
    return None


def parse_request(body: bytes) -> HookRequest:
    """Validate Okta's request body; :class:`RequestInvalid` says precisely what is wrong."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestInvalid(
            "Malformed request: the body is not JSON",
            [Cause("The body is not JSON", "malformed_json", "body")],
        ) from None
    if not isinstance(raw, dict):
        raise RequestInvalid(
            "Malformed request: the body is not a JSON object",
            [Cause("The body is not a JSON object", "malformed_json", "body")],
        )
    try:
        return HookRequest.model_validate(raw)
    except ValidationError as exc:
        causes = [
            Cause(
                summary=str(err["msg"]),
                reason=str(err["type"]),
                location=".".join(str(part) for part in err["loc"]) or "body",
            )
            for err in exc.errors(include_input=False, include_url=False)[:5]
        ]
        first = causes[0]
        raise RequestInvalid(f"Malformed request: {first.location}: {first.summary}", causes) from None


def success_answer(status: Status, provider: str, transaction_id: str, metadata: str) -> dict[str, Any]:
    """The command answer: one ``com.okta.telephony.action`` whose ``value`` is a one-item array."""
    return {
        "commands": [
            {
                "type": ACTION_TYPE,
                "value": [
                    {
                        "status": status,
                        "provider": provider,
                        "transactionId": transaction_id,
                        "transactionMetadata": metadata,
                    }
                ],
            }
        ]
    }


def error_answer(summary: str, causes: list[Cause]) -> dict[str, Any]:
    """The error object: Okta then delivers the code through its own providers."""
    return {"error": {"errorSummary": summary, "errorCauses": [c.as_json() for c in causes]}}
