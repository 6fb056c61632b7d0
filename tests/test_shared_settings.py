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


SECRET_VARIABLES = [
    "NATS_PASSWORD",
    "NATS_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_SIGNING_SECRET_PREVIOUS",
    "SLACK_BOT_TOKEN",
    "SLACK_APP_TOKEN",
    "OKTA_API_TOKEN",
    "OKTA_PRIVATE_KEY",
    "CASE_TOKEN_SECRET",
    "CASE_TOKEN_SECRET_PREVIOUS",
    "TELEPHONY_HOOK_AUTH",
    "TELEPHONY_HOOK_AUTH_PREVIOUS",
    "TELEPHONY_AUTH_TOKEN",
    "TELEPHONY_FALLBACK_AUTH_TOKEN",
]


@pytest.mark.parametrize("variable", SECRET_VARIABLES)
def test_every_secret_reads_from_a_file(variable: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """<NAME>_FILE names a file (a Docker or Kubernetes secret) whose content, without its trailing
    newline, is the secret."""
    path = tmp_path / variable.lower()
    path.write_text("s3cret-from-a-file-0123456789abcdef\n")
    monkeypatch.setenv(f"{variable}_FILE", str(path))
    assert make().secret(variable) == "s3cret-from-a-file-0123456789abcdef"


def test_secret_file_in_dotenv_and_clear_errors(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .env may name the file too; both NAME and NAME_FILE, or an unreadable file, is one clear error
    that names the variable and never the secret."""
    from pydantic_settings import SettingsError

    secret = tmp_path / "token"
    secret.write_text("xoxb-from-file\r\n")
    env_file = tmp_path / ".env"
    env_file.write_text(f"SLACK_BOT_TOKEN_FILE={secret}\n")
    assert Settings(_env_file=env_file).secret("SLACK_BOT_TOKEN") == "xoxb-from-file"  # type: ignore[call-arg]
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-direct")
    with pytest.raises(SettingsError, match="SLACK_BOT_TOKEN and SLACK_BOT_TOKEN_FILE are both set"):
        Settings(_env_file=env_file)  # type: ignore[call-arg]
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    monkeypatch.setenv("OKTA_API_TOKEN_FILE", str(tmp_path / "absent"))
    with pytest.raises(SettingsError, match="OKTA_API_TOKEN_FILE: cannot read"):
        make()


def test_nats_urls_credentials_and_tls(tmp_path) -> None:
    """A comma list of URLs is a cluster; user/password, token, nkey seed, creds and TLS files all reach
    nats-py's connect; each service gets its own inbox prefix."""
    from shared.bus import connect_options

    seed = tmp_path / "svc.nk"
    seed.write_text("SUAEXAMPLESEED\n")
    s = make(
        nats_url="tls://a:4222, tls://b:4222,tls://c:4222",
        nats_user="gateway",
        nats_password="pw-0123",
        nats_nkey_seed=str(seed),
        nats_creds=str(tmp_path / "svc.creds"),
    )
    assert s.nats_servers() == ["tls://a:4222", "tls://b:4222", "tls://c:4222"]
    options = connect_options(s, "okta-worker")
    assert options["servers"] == s.nats_servers()
    assert (options["user"], options["password"]) == ("gateway", "pw-0123")
    assert options["nkeys_seed_str"] == "SUAEXAMPLESEED"
    assert options["user_credentials"] == str(tmp_path / "svc.creds")
    assert options["inbox_prefix"] == "_INBOX.okta-worker"
    assert "tls" in options  # a tls:// URL: TLS with the system's CAs
    assert "pw-0123" not in repr(s)
    with pytest.raises(MissingSetting, match="NATS_PASSWORD"):
        connect_options(make(nats_url="nats://a:4222", nats_user="gateway"), "gateway")
    with pytest.raises(MissingSetting, match="NATS_TLS_KEY"):
        connect_options(make(nats_url="nats://a:4222", nats_tls_cert=str(seed)), "gateway")
    assert "tls" not in connect_options(make(nats_url="nats://a:4222", nats_token="tok"), "gateway")


def test_redact_url_drops_userinfo_everywhere() -> None:
    """URLs are shown without user and password, one or a comma list, also inside free text and logs."""
    from shared.logging import redact_secrets, redact_url

    assert redact_url("nats://svc:pw@n1:4222,tls://TOKEN@n2:4222") == (
        "nats://[redacted]@n1:4222,tls://[redacted]@n2:4222"
    )
    assert redact_url("nats://n1:4222") == "nats://n1:4222"
    event = redact_secrets(None, "info", {"event": "x", "error": "cannot reach nats://u:hunter2@host:4222 now"})
    assert "hunter2" not in event["error"]
