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


def test_rotation_accepts_the_previous_secret_and_issues_with_the_new() -> None:
    """While CASE_TOKEN_SECRET_PREVIOUS is set, a token signed with it still verifies; new tokens are
    signed with the current secret only; a third secret is still refused."""
    from shared.settings import Settings

    old, new = "o" * 40, "n" * 40
    issued_before = CaseTokens(old).issue("c_1", "U1")
    rotating = CaseTokens.from_settings(
        Settings(_env_file=None, case_token_secret=new, case_token_secret_previous=old)  # type: ignore[call-arg]
    )
    assert rotating.verify(issued_before, agent_id="U1").case_id == "c_1"
    issued_now = rotating.issue("c_2", "U1")
    assert CaseTokens(new).verify(issued_now).case_id == "c_2"
    with pytest.raises(CaseTokenInvalid):
        CaseTokens(old).verify(issued_now)
    with pytest.raises(CaseTokenInvalid):
        rotating.verify(CaseTokens("x" * 40).issue("c_3", "U1"))
    with pytest.raises(CaseTokenExpired):
        rotating.verify(CaseTokens(old, ttl=-60, leeway=0).issue("c_4", "U1"))
    after = CaseTokens.from_settings(Settings(_env_file=None, case_token_secret=new))  # type: ignore[call-arg]
    with pytest.raises(CaseTokenInvalid):
        after.verify(issued_before)


def test_the_services_accept_a_token_signed_with_the_previous_secret() -> None:
    """Rotation is wired where tokens are checked: the gateway's rules and the worker's tokens."""
    from services.gateway.handlers import Rules
    from shared.settings import Settings

    old, new = "o" * 40, "n" * 40
    issued = CaseTokens(old).issue("c1", "U1")
    settings = Settings(_env_file=None, case_token_secret=new, case_token_secret_previous=old)  # type: ignore[call-arg]
    assert Rules.from_settings(settings).tokens.verify(issued, agent_id="U1").case_id == "c1"
    assert CaseTokens.from_settings(settings).verify(issued).case_id == "c1"
