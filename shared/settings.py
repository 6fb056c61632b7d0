"""One ``Settings`` for every service, read from the environment and ``.env``.

Secrets are ``SecretStr``: their ``repr``/``str`` print ``**********``, so a settings object can be
logged or appear in a traceback without leaking anything. Each service states which settings it
needs with :meth:`Settings.require`; a missing one is a :class:`MissingSetting` naming the variable.

    settings = Settings()                      # environment + .env
    settings.require("SLACK_SIGNING_SECRET")   # raises MissingSetting if unset

Every secret setting may instead be read from a file named by ``<NAME>_FILE`` (Docker and Kubernetes
secrets mounted as files): ``SLACK_BOT_TOKEN_FILE=/run/secrets/slack_bot_token``. The file's content
is the value, its trailing newline stripped; setting both ``NAME`` and ``NAME_FILE`` is an error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

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


FILE_SUFFIX = "_FILE"


def is_secret(field: FieldInfo) -> bool:
    """A ``SecretStr`` setting: never printed, and readable from ``<NAME>_FILE``."""
    return field.annotation is SecretStr or SecretStr in get_args(field.annotation)


class SecretFilesSource(PydanticBaseSettingsSource):
    """``<NAME>_FILE`` for every secret setting, from the environment or ``.env``: the file's content
    (trailing newline stripped) is the value. Below the environment itself, which may not set both."""

    def __init__(self, settings_cls: type[BaseSettings], dotenv: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self._dotenv = dotenv

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything happens in __call__

    def __call__(self) -> dict[str, Any]:
        dotenv: Mapping[str, str | None] = (
            self._dotenv.env_vars if isinstance(self._dotenv, DotEnvSettingsSource) else {}
        )
        environ = {**{k.lower(): v for k, v in dotenv.items()}, **{k.lower(): v for k, v in os.environ.items()}}
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            if not is_secret(field):
                continue
            path = environ.get(name + FILE_SUFFIX.lower())
            if not path:
                continue
            variable = name.upper()
            if environ.get(name):
                raise SettingsError(f"{variable} and {variable}{FILE_SUFFIX} are both set: keep one")
            try:
                text = Path(path).expanduser().read_text()
            except OSError as exc:
                raise SettingsError(f"{variable}{FILE_SUFFIX}: cannot read {path} ({exc.strerror})") from None
            values[name] = text.rstrip("\r\n")
        return values


class Settings(BaseSettings):
    """Every setting of Helpdesk Verify; field names are the environment variables, upper-cased."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # NATS
    nats_url: str | None = None  # one URL, or a comma list of a cluster's URLs (nats:// or tls://)
    nats_creds: Path | None = None  # a .creds file (JWT + nkey seed) of a decentralised-auth NATS
    nats_nkey_seed: Path | None = None  # a file holding a user nkey seed (SU…)
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_token: SecretStr | None = None
    nats_tls_ca: Path | None = None  # CA bundle the server certificate is checked against
    nats_tls_cert: Path | None = None  # client certificate (mutual TLS), with NATS_TLS_KEY
    nats_tls_key: Path | None = None
    nats_prefix: str = ""  # namespaces every subject, stream and bucket (several installs on one NATS)
    nats_store_dir: Path | None = None  # embedded nats-server's JetStream dir (default: a temp dir)

    # Slack
    slack_signing_secret: SecretStr | None = None
    slack_signing_secret_previous: SecretStr | None = None  # still accepted while a new one rolls out
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
    case_token_secret_previous: SecretStr | None = None  # tokens it signed still verify while rotating
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
    telephony_hook_auth_previous: SecretStr | None = None  # still accepted while a new one rolls out
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

    # Ticket notes and the audit webhook (services/audit_sink): each part is off while its URL is unset
    servicenow_url: str | None = None  # https://<instance>.service-now.com
    servicenow_user: str | None = None
    servicenow_password: SecretStr | None = None
    servicenow_token: SecretStr | None = None  # an OAuth bearer token, instead of user + password
    jira_url: str | None = None  # https://<site>.atlassian.net
    jira_email: str | None = None
    jira_api_token: SecretStr | None = None
    audit_webhook_url: str | None = None
    audit_webhook_secret: SecretStr | None = None  # HMAC-SHA256 key of X-Helpdesk-Signature

    # HTTP
    host: str = "127.0.0.1"
    gateway_port: int = 8080
    telephony_hook_port: int = 8081
    metrics_port: int | None = None  # /healthz /readyz /metrics for a process without an HTTP service

    # Logging
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        files = SecretFilesSource(settings_cls, dotenv_settings)
        return init_settings, env_settings, dotenv_settings, files, file_secret_settings

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

    def nats_servers(self) -> list[str]:
        """``NATS_URL`` as a list of server URLs (a cluster's are given as a comma list)."""
        return [url.strip() for url in (self.nats_url or "").split(",") if url.strip()]

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
