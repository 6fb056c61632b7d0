"""One ``Settings`` for every service, read from the environment and ``.env``.

Secrets are ``SecretStr``: their ``repr``/``str`` print ``**********``, so a settings object can be
logged or appear in a traceback without leaking anything. Each service states which settings it
needs with :meth:`Settings.require`; a missing one is a :class:`MissingSetting` naming the variable.

    settings = Settings()                      # environment + .env
    settings.require("SLACK_SIGNING_SECRET")   # raises MissingSetting if unset
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Comma-separated in the environment ("a,b"), not JSON.
CommaList = Annotated[list[str], NoDecode]

SLACK_API_URL = "https://slack.com/api/"
TWILIO_API_URL = "https://api.twilio.com"


class MissingSetting(RuntimeError):
    """Raised when a service starts without a setting it cannot work without."""

    def __init__(self, *names: str) -> None:
        self.names = names
        listed = ", ".join(names)
        super().__init__(f"missing required setting: {listed} (set it in the environment or .env)")


class Settings(BaseSettings):
    """Every setting of Helpdesk Verify; field names are the environment variables, upper-cased."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # NATS
    nats_url: str | None = None
    nats_prefix: str = ""  # namespaces every subject, stream and bucket (several installs on one NATS)
    nats_store_dir: Path | None = None  # embedded nats-server's JetStream dir (default: a temp dir)

    # Slack
    slack_signing_secret: SecretStr | None = None
    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = SLACK_API_URL
    slack_audit_channel: str | None = None
    slack_approvals_channel: str | None = None  # four-eyes requests and escalations of protected users
    slack_security_channel: str | None = None  # security alerts (default: the audit channel)
    slack_command: str = "/helpdesk"

    # Okta
    okta_org_url: str | None = None
    okta_api_token: SecretStr | None = None
    okta_client_id: str | None = None
    okta_private_key: SecretStr | None = None  # PEM text or a path to a PEM file
    okta_key_id: str | None = None
    okta_dpop: bool = False
    okta_helpdesk_group: str = "Helpdesk"  # a group id (00g…) or the exact name of one group of OKTA_GROUP_TYPE
    okta_protected_groups: CommaList = Field(default_factory=list)
    okta_group_type: str = "OKTA_GROUP"  # names resolve among groups of this type only (APP_GROUPs carry any name)
    okta_logs_per_minute: int = 10  # System Log reads for risk, shared by every worker replica
    okta_verify_attributes: CommaList = Field(default_factory=list)
    okta_admin_url: str | None = None  # Admin Console origin for deep links (default: derived from org)

    # Case
    case_token_secret: SecretStr | None = None
    case_token_ttl: int = 3600
    case_verified_ttl: int = 600
    challenge_limit: int = 5
    code_attempts: int = 3
    code_min_length: int = 6
    code_max_length: int = 8
    push_poll_interval: float = 3.0
    push_max_wait: int = 300
    helpdesk_mode: Literal["full", "verify-only"] = "full"
    helpdesk_policy: Path | None = None  # the assurance policy (TOML); unset → the built-in defaults
    risk_lookback_days: int = 7  # how far back the System Log is read when a user is picked
    risk_cache_seconds: int = 300  # a user's risk is read at most this often, across replicas
    notify_target_user: bool = True  # DM the user after a change to their account ("This wasn't me")

    # Telephony inline hook
    telephony_hook_auth: SecretStr | None = None
    telephony_hook_auth_header: str = "Authorization"
    telephony_hook_issuer: str | None = None
    telephony_hook_audience: str | None = None
    telephony_hook_scope: str | None = None
    telephony_provider_url: str = TWILIO_API_URL
    telephony_account_sid: str | None = None
    telephony_auth_token: SecretStr | None = None
    telephony_from: str | None = None
    telephony_provider_name: str = "TWILIO"
    telephony_fallback_url: str | None = None
    telephony_fallback_account_sid: str | None = None
    telephony_fallback_auth_token: SecretStr | None = None
    telephony_fallback_from: str | None = None
    telephony_fallback_name: str = "FALLBACK"
    telephony_allowed_countries: CommaList = Field(default_factory=list)
    telephony_default_region: str = "US"
    telephony_deadline_ms: int = 2500
    telephony_status_callback_url: str | None = None
    telephony_limit_per_number: int = 3
    telephony_limit_per_prefix: int = 30
    telephony_limit_per_user: int = 5
    telephony_limit_window: int = 600

    # HTTP
    host: str = "127.0.0.1"
    gateway_port: int = 8080
    telephony_hook_port: int = 8081
    metrics_port: int | None = None  # /healthz /readyz /metrics for a process without an HTTP service

    # Logging
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator(
        "okta_protected_groups",
        "okta_verify_attributes",
        "telephony_allowed_countries",
        mode="before",
    )
    @classmethod
    def _comma_list(cls, value: object) -> object:
        # Environment values are "a,b,c"; JSON arrays are accepted too.
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("telephony_allowed_countries", mode="after")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        return [v.upper() for v in value]

    @field_validator("okta_org_url", "telephony_provider_url", "telephony_fallback_url", mode="after")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @field_validator("slack_api_url", mode="after")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        # slack_sdk joins base_url + method name: it must end with "/".
        return value if value.endswith("/") else value + "/"

    def require(self, *names: str) -> None:
        """Raise :class:`MissingSetting` naming every listed variable that is unset or empty."""
        missing = [n for n in names if not _has_value(getattr(self, n.lower()))]
        if missing:
            raise MissingSetting(*missing)

    def secret(self, name: str) -> str:
        """The plain value of a secret setting (``MissingSetting`` if unset)."""
        self.require(name)
        value = getattr(self, name.lower())
        return value.get_secret_value() if isinstance(value, SecretStr) else str(value)

    def okta_auth_mode(self) -> Literal["ssws", "oauth"]:
        if self.okta_api_token is not None and self.okta_api_token.get_secret_value():
            return "ssws"
        if self.okta_client_id and self.okta_private_key is not None:
            return "oauth"
        raise MissingSetting("OKTA_API_TOKEN", "OKTA_CLIENT_ID + OKTA_PRIVATE_KEY + OKTA_KEY_ID")

    def okta_private_key_pem(self) -> str:
        """``OKTA_PRIVATE_KEY`` as PEM text, whether it holds the PEM itself or a path to it."""
        raw = self.secret("OKTA_PRIVATE_KEY").strip()
        if raw.startswith("-----BEGIN"):
            return raw
        return Path(raw).expanduser().read_text()


def _has_value(value: object) -> bool:
    if value is None:
        return False
    if isinstance(value, SecretStr):
        return bool(value.get_secret_value())
    return value != "" and value != []
