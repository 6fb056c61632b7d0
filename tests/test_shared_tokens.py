import jwt
import pytest

from shared.tokens import AUDIENCE, CaseTokenExpired, CaseTokenInvalid, CaseTokens, CaseTokenWrongAgent

SECRET = "0123456789abcdef0123456789abcdef"


def test_round_trip() -> None:
    tokens = CaseTokens(SECRET)
    claims = tokens.verify(tokens.issue("c_1", "U1"), agent_id="U1")
    assert (claims.case_id, claims.agent_id) == ("c_1", "U1")


def test_tampered_token_rejected() -> None:
    """Changing one character of the payload breaks the signature."""
    token = CaseTokens(SECRET).issue("c_1", "U1")
    head, _body, sig = token.split(".")
    forged = jwt.encode(
        {"sub": "c_2", "agt": "U1", "aud": AUDIENCE, "iss": "helpdesk-verify", "exp": 9999999999}, "x" * 32
    )
    with pytest.raises(CaseTokenInvalid):
        CaseTokens(SECRET).verify(f"{head}.{forged.split('.')[1]}.{sig}")
    with pytest.raises(CaseTokenInvalid):
        CaseTokens(SECRET).verify(forged)
    with pytest.raises(CaseTokenInvalid):
        CaseTokens(SECRET).verify("garbage")


def test_expired_token_rejected() -> None:
    tokens = CaseTokens(SECRET, ttl=60, leeway=0)
    token = tokens.issue("c_1", "U1", now=1_000_000)
    with pytest.raises(CaseTokenExpired):
        tokens.verify(token)


def test_other_agent_refused() -> None:
    tokens = CaseTokens(SECRET)
    with pytest.raises(CaseTokenWrongAgent):
        tokens.verify(tokens.issue("c_1", "U1"), agent_id="U2")


def test_errors_never_contain_the_token() -> None:
    token = CaseTokens(SECRET).issue("c_1", "U1")
    with pytest.raises(CaseTokenInvalid) as info:
        CaseTokens("another-secret-0123456789abcdefghij").verify(token)
    assert token not in str(info.value)


def test_short_secret_refused() -> None:
    with pytest.raises(ValueError):
        CaseTokens("short")
