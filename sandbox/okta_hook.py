"""Okta's side of the telephony inline hook: the request body Okta POSTs for an SMS or voice code.

Shapes from Okta's documentation (reference/telephony.md, ``TelephonyRequest`` in the management spec):

    body = telephony_request("SMS", "+14155550123", "123456")
    await client.post("/telephony/okta", json=body, headers={"Authorization": hook_auth})
"""

from __future__ import annotations

import uuid
from typing import Any

REQUEST_TYPES = (
    "com.okta.user.telephony.pre-enrollment",
    "com.okta.user.telephony.mfa-verification",
    "com.okta.user.telephony.account-unlock",
    "com.okta.user.telephony.password-reset",
)


def telephony_request(
    channel: str = "SMS",
    phone: str | int = "+14155550123",
    otp: str | int = "123456",
    *,
    event_id: str | None = None,
    template: str | None = None,
    locale: str = "EN-US",
    login: str = "test.user@example.com",
    user_id: str | None = None,
    request_type: str = "com.okta.user.telephony.mfa-verification",
    **message: Any,
) -> dict[str, Any]:
    """One hook request; ``message`` overrides or adds ``messageProfile`` fields (``None`` removes one)."""
    profile: dict[str, Any] = {
        "msgTemplate": template if template is not None else f"Your verification code is {otp}",
        "phoneNumber": phone,
        "otpExpires": "2026-11-23T10:05:00.000Z",
        "deliveryChannel": channel,
        "otpCode": otp,
        "locale": locale,
    }
    profile.update(message)
    return {
        "eventId": event_id or uuid.uuid4().hex[:22],
        "eventTime": "2026-11-23T10:00:00.000Z",
        "eventType": "com.okta.telephony.provider",
        "eventTypeVersion": "1.0",
        "contentType": "application/json",
        "cloudEventVersion": "0.1",
        "source": "https://example.okta.com/api/v1/inlineHooks/calz6lVQA77AwFeEe0g3",
        "requestType": request_type,
        "data": {
            "context": {
                "request": {
                    "id": "reqRgSk8IBBRhuo0YdlEDTmUw",
                    "method": "POST",
                    "url": {"value": "/"},
                    "ipAddress": "127.0.0.1",
                }
            },
            "userProfile": {
                "firstName": "Test",
                "lastName": "User",
                "login": login,
                "userId": user_id or "00u" + uuid.uuid4().hex[:17],
            },
            "messageProfile": {k: v for k, v in profile.items() if v is not None},
        },
    }
