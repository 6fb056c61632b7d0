import pytest

from shared.settings import MissingSetting, Settings


def make(**env: str) -> Settings:
    return Settings(_env_file=None, **env)  # type: ignore[arg-type]


def test_secrets_never_print() -> None:
    """A settings object in a log line or traceback shows no secret value."""
    s = make(slack_bot_token="xoxb-super-secret", okta_api_token="00okta-secret", case_token_secret="c" * 20)
    text = repr(s) + str(s)
    assert "xoxb-super-secret" not in text
    assert "00okta-secret" not in text
    assert s.secret("SLACK_BOT_TOKEN") == "xoxb-super-secret"


def test_missing_setting_names_every_variable() -> None:
    """A missing required setting is one clear error naming the variables."""
    with pytest.raises(MissingSetting) as info:
        make().require("SLACK_SIGNING_SECRET", "OKTA_ORG_URL")
    assert "SLACK_SIGNING_SECRET" in str(info.value)
    assert "OKTA_ORG_URL" in str(info.value)


def test_environment_lists_and_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Comma lists and base URLs are read from the environment in the documented form."""
    monkeypatch.setenv("OKTA_PROTECTED_GROUPS", "Admins, Executives")
    monkeypatch.setenv("TELEPHONY_ALLOWED_COUNTRIES", "us,ca")
    monkeypatch.setenv("SLACK_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.setenv("OKTA_ORG_URL", "https://example.okta.com/")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.okta_protected_groups == ["Admins", "Executives"]
    assert s.telephony_allowed_countries == ["US", "CA"]
    assert s.slack_api_url == "http://127.0.0.1:9/api/"
    assert s.okta_org_url == "https://example.okta.com"


def test_okta_auth_mode() -> None:
    """An API token selects SSWS; client id + key selects OAuth; neither is a clear error."""
    assert make(okta_api_token="x").okta_auth_mode() == "ssws"
    assert make(okta_client_id="0oa1", okta_private_key="-----BEGIN x").okta_auth_mode() == "oauth"
    with pytest.raises(MissingSetting):
        make().okta_auth_mode()


def test_private_key_from_path(tmp_path) -> None:
    """OKTA_PRIVATE_KEY may hold the PEM itself or a path to it."""
    pem = "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n"
    path = tmp_path / "key.pem"
    path.write_text(pem)
    assert make(okta_private_key=str(path)).okta_private_key_pem() == pem
    assert make(okta_private_key=pem).okta_private_key_pem() == pem.strip()
