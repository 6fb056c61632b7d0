"""The telephony hook's pure parts: numbers, Okta's contract, what is said and sent, signatures."""

from __future__ import annotations

from xml.etree import ElementTree

import orjson
import pytest
from twilio.request_validator import RequestValidator

from services.telephony_hook.auth import twilio_signature, valid_twilio_signature
from services.telephony_hook.content import say_locale, sms_body, twiml
from services.telephony_hook.contract import (
    RequestInvalid,
    channel_of,
    error_answer,
    parse_request,
    success_answer,
)
from services.telephony_hook.numbers import NumberRefused, mask, normalize
from services.telephony_hook.provider import ProviderRejected, ProviderTimeout, ProviderUnavailable


def okta_request(**message: object) -> bytes:
    profile = {
        "msgTemplate": "(HOOK)Your code is 123456",
        "phoneNumber": "4155552671",
        "otpExpires": "2022-01-28T21:48:34.321Z",
        "deliveryChannel": "SMS",
        "otpCode": "123456",
        "locale": "EN-US",
    }
    profile.update(message)
    body = {
        "eventId": "uS5871kJThSsU8qlA1LTcg",
        "eventType": "com.okta.telephony.provider",
        "requestType": "com.okta.user.telephony.mfa-verification",
        "data": {
            "userProfile": {"login": "test.user@example.com", "userId": "00uyxxSknGtK8022w0g3"},
            "messageProfile": {k: v for k, v in profile.items() if v is not None},
        },
    }
    return orjson.dumps(body)


# -- numbers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "e164", "prefix"),
    [
        ("4155552671", "+14155552671", "+1415"),
        ("14155552671", "+14155552671", "+1415"),
        ("+1 (415) 555-2671", "+14155552671", "+1415"),
        ("+447400123456", "+447400123456", "+447400"),
    ],
)
def test_normalize_to_e164(raw: str, e164: str, prefix: str) -> None:
    """Numbers with or without ``+`` become E.164 (default region US) with their prefix."""
    dest = normalize(raw, "US")
    assert (dest.e164, dest.prefix) == (e164, prefix)
    assert dest.masked == "***" + e164[-4:]
    assert e164 not in repr(dest)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("9876543210", "invalid_number"),
        ("hello", "invalid_number"),
        ("", "invalid_number"),
        ("1" * 40, "invalid_number"),
        ("+19005551234", "premium_rate"),
        ("+18005551234", "toll_free"),
        ("+448712345678", "premium_rate"),
    ],
)
def test_refused_numbers(raw: str, reason: str) -> None:
    """Invalid, premium-rate and toll-free numbers are refused with a reason, never echoing the number."""
    with pytest.raises(NumberRefused) as refused:
        normalize(raw, "US")
    assert refused.value.reason == reason
    if raw:
        assert raw not in str(refused.value)


def test_allowed_countries() -> None:
    """With an allowlist, a valid number of another country is refused; NANP islands are not the US."""
    assert normalize("+16135550123", "US", ["US", "CA"]).region == "CA"
    for raw, region in [("+37120123456", "LV"), ("+18765551234", "JM")]:
        with pytest.raises(NumberRefused) as refused:
            normalize(raw, "US", ["US", "CA"])
        assert (refused.value.reason, refused.value.region) == ("country_not_allowed", region)


def test_default_region_applies_to_national_numbers() -> None:
    """A national number is read in TELEPHONY_DEFAULT_REGION."""
    assert normalize("020 7183 8750", "GB").e164 == "+442071838750"


def test_mask_keeps_last_four() -> None:
    """A masked number shows only its last four digits."""
    assert mask("+14155552671") == "***2671"
    assert mask("123") == "***"


# -- Okta's request --------------------------------------------------------------------------------


def test_parse_okta_example() -> None:
    """Okta's documented request parses; numbers sent as JSON numbers are accepted as text."""
    hook = parse_request(okta_request(phoneNumber=9876543210, otpCode=11111))
    assert hook.message.phone_number == "9876543210"
    assert hook.message.otp_code == "11111"
    assert hook.message.channel == "sms"
    assert hook.user_label == "test.user@example.com"
    assert "11111" not in repr(hook)


@pytest.mark.parametrize(
    ("value", "channel"),
    [
        ("SMS", "sms"),
        ("sms", "sms"),
        ("voice call", "voice"),
        ("Voice call", "voice"),
        ("Voice", "voice"),
        ("CALL", "voice"),
        ("fax", None),
    ],
)
def test_channels(value: str, channel: str | None) -> None:
    """Delivery channels match case-insensitively; anything voice-like is a call."""
    assert channel_of(value) == channel


@pytest.mark.parametrize(
    ("body", "location"),
    [
        (b"not json", "body"),
        (b"[1, 2]", "body"),
        (b"{}", "eventId"),
        (okta_request(phoneNumber=None), "data.messageProfile.phoneNumber"),
        (okta_request(otpCode="12 34"), "data.messageProfile.otpCode"),
        (okta_request(otpCode=True), "data.messageProfile.otpCode"),
        (okta_request(deliveryChannel="fax"), "data.messageProfile.deliveryChannel"),
    ],
)
def test_invalid_requests_name_the_field(body: bytes, location: str) -> None:
    """A malformed request names the offending field and never its value."""
    with pytest.raises(RequestInvalid) as invalid:
        parse_request(body)
    assert invalid.value.causes[0].location == location
    assert location in invalid.value.summary
    assert "12 34" not in invalid.value.summary


# -- answers ---------------------------------------------------------------------------------------


def test_success_answer_shape() -> None:
    """The command answer is exactly Okta's documented success form."""
    assert success_answer("SUCCESSFUL", "TWILIO", "SM1", "Duration=300ms") == {
        "commands": [
            {
                "type": "com.okta.telephony.action",
                "value": [
                    {
                        "status": "SUCCESSFUL",
                        "provider": "TWILIO",
                        "transactionId": "SM1",
                        "transactionMetadata": "Duration=300ms",
                    }
                ],
            }
        ]
    }


def test_error_answer_is_an_object() -> None:
    """The error answer is an object with errorSummary and errorCauses (not the spec example's list)."""
    from services.telephony_hook.contract import Cause

    answer = error_answer("Failed to deliver SMS OTP to a@b.c", [Cause("Provider could not deliver", "r", "US")])
    assert answer == {
        "error": {
            "errorSummary": "Failed to deliver SMS OTP to a@b.c",
            "errorCauses": [{"errorSummary": "Provider could not deliver", "reason": "r", "location": "US"}],
        }
    }


# -- content -------------------------------------------------------------------------------------


def test_sms_body_uses_template_with_code() -> None:
    """Okta's rendered template is sent when it holds the code; otherwise a default text with the code."""
    assert sms_body("(HOOK)Your code is 123456", "123456") == "(HOOK)Your code is 123456"
    assert sms_body("Hello", "123456") == "Your verification code is 123456"
    assert sms_body(None, "123456") == "Your verification code is 123456"
    assert sms_body("123456" + "x" * 1600, "123456") == "Your verification code is 123456"


@pytest.mark.parametrize(
    ("locale", "language"),
    [
        ("EN-US", "en-US"),
        ("en_GB", "en-GB"),
        ("fr-CA", "fr-CA"),
        ("FR", "fr-FR"),
        ("de-AT", "de-DE"),
        ("ja-JP", "en-US"),
        (None, "en-US"),
    ],
)
def test_say_locale(locale: str | None, language: str) -> None:
    """The <Say> language follows the locale where supported, else US English."""
    assert say_locale(locale) == language


def test_twiml_says_digits_twice() -> None:
    """The TwiML is well-formed, says each digit separately, twice, in the user's language."""
    document = ElementTree.fromstring(twiml("123456", "fr-FR"))
    says = document.findall("Say")
    assert [s.get("language") for s in says] == ["fr-FR", "fr-FR"]
    assert all(s.text and s.text.endswith("1, 2, 3, 4, 5, 6.") for s in says)
    assert document.find("Pause") is not None
    assert len(twiml("123456")) <= 4000


def test_twiml_escapes() -> None:
    """Whatever the code holds, the TwiML stays well-formed XML."""
    ElementTree.fromstring(twiml("<&>'\"", "en-US"))


# -- signatures and errors -----------------------------------------------------------------------


def test_signature_matches_twilio_validator() -> None:
    """Our X-Twilio-Signature equals the official validator's, with and without the default port."""
    token = "12345678901234567890123456789012"
    url = "https://hook.example.com/telephony/status"
    params = {"MessageSid": "SM" + "a" * 32, "MessageStatus": "delivered", "AccountSid": "AC" + "b" * 32}
    official = RequestValidator(token).compute_signature(url, params)
    assert twilio_signature(url, params.items(), token) == official
    assert valid_twilio_signature(url, params.items(), token, official)
    ported = RequestValidator(token).compute_signature("https://hook.example.com:443/telephony/status", params)
    assert valid_twilio_signature(url, params.items(), token, ported)
    assert not valid_twilio_signature(url, params.items(), "x" * 32, official)
    assert not valid_twilio_signature(url, {**params, "MessageStatus": "failed"}.items(), token, official)


def test_provider_errors_say_what_is_safe() -> None:
    """Each provider error states whether a retry or a failover is safe."""
    assert ProviderRejected("T", 20429, 429).retryable
    assert not ProviderRejected("T", 21211, 400).retryable
    assert ProviderUnavailable("T", "x", connect_failed=True).retryable
    assert not ProviderUnavailable("T", "x", status=503).maybe_sent
    assert ProviderTimeout("T", maybe_sent=True).maybe_sent
    assert not ProviderTimeout("T", maybe_sent=True).retryable
    assert ProviderTimeout("T", maybe_sent=False).retryable
