"""The files an operator deploys from are valid against their published schemas and say what they must."""

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from helpdesk.cli import main
from helpdesk.manifest import BOT_SCOPES, ManifestError, build_manifest
from helpdesk.sandbox_server import sandbox_environment
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "tests" / "schemas"
SERVICES = ("gateway", "okta-worker", "slack-responder", "telephony-hook")


def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_file_matches_compose_spec() -> None:
    """compose.yaml validates against the Compose Specification schema (a copy kept in tests/schemas)."""
    schema = json.loads((SCHEMAS / "compose-spec.schema.json").read_text())
    errors = [f"{e.json_path}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(compose())]
    assert errors == []


def test_compose_services_are_healthchecked_hardened_and_profiled() -> None:
    """Every service has a healthcheck; the app runs read-only without capabilities; the hook is optional."""
    services = compose()["services"]
    for name, service in services.items():
        assert "healthcheck" in service, name
        assert "container_name" not in service, name
    for name in (*SERVICES, *(f"sandbox-{s}" for s in SERVICES), "sandbox"):
        service = services[name]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert "/healthz" in " ".join(service["healthcheck"]["test"]), name
    assert services["telephony-hook"]["profiles"] == ["telephony"]
    assert services["okta-worker"]["deploy"]["replicas"] == 2
    for name in ("gateway", "okta-worker", "slack-responder", "telephony-hook"):
        assert services[name]["depends_on"]["nats"]["condition"] == "service_healthy"
        assert services[name]["environment"]["NATS_USER"] == name
    for name in SERVICES:
        assert services[f"sandbox-{name}"]["profiles"] == ["sandbox"]
        assert services[f"sandbox-{name}"]["depends_on"]["sandbox"]["condition"] == "service_healthy"


def test_compose_nats_runs_the_least_privilege_config_from_a_pinned_image() -> None:
    """NATS mounts deploy/nats/nats-server.conf, gets each user's password from a secret, and is pinned."""
    services = compose()["services"]
    nats = services["nats"]
    assert "./deploy/nats/nats-server.conf:/etc/nats/nats-server.conf:ro" in nats["volumes"]
    assert "nats-server -c /etc/nats/nats-server.conf" in nats["command"][0]
    assert (ROOT / "deploy" / "nats" / "nats-server.conf").is_file()
    for user in ("GATEWAY", "OKTA_WORKER", "SLACK_RESPONDER", "TELEPHONY_HOOK"):
        assert f"$NATS_{user}_PASSWORD" in (ROOT / "deploy" / "nats" / "nats-server.conf").read_text()
        assert {"source": f"nats_{user.lower()}_password", "target": f"NATS_{user}_PASSWORD"} in nats["secrets"]
    for name in ("nats", "nats-sandbox"):
        assert re.fullmatch(r"nats:\d+\.\d+\.\d+-alpine", services[name]["image"]), services[name]["image"]
    for service in services.values():
        assert not str(service.get("image", "")).endswith(":latest")


def test_compose_secrets_are_files_read_through_name_file() -> None:
    """Each <NAME>_FILE names a secret mounted in that service; no secret value sits in the environment."""
    doc = compose()
    secrets = set(doc["secrets"])
    secret_fields = {n.upper() for n, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)}
    for name in SERVICES:
        service = doc["services"][name]
        mounted = {s if isinstance(s, str) else s["target"] for s in service["secrets"]}
        assert mounted <= secrets
        for key, value in service["environment"].items():
            assert key not in secret_fields, f"{name}: {key} in plain text"
            if key.endswith("_FILE") or key.startswith("NATS_TLS_"):
                assert value.startswith("/run/secrets/") and value.removeprefix("/run/secrets/") in mounted, key
                if key.endswith("_FILE"):
                    assert key.removesuffix("_FILE") in secret_fields, key


def test_compose_sandbox_points_the_services_at_helpdesk_sandbox() -> None:
    """The sandbox profile's settings are exactly what `helpdesk sandbox` serves (host `sandbox`)."""
    services = compose()["services"]
    assert services["sandbox"]["command"] == ["sandbox"]
    expected = sandbox_environment("sandbox")
    for name in SERVICES:
        env = services[f"sandbox-{name}"]["environment"]
        assert {k: env[k] for k in expected} == expected
        assert env["NATS_URL"] == "nats://nats-sandbox:4222"


def test_env_example_documents_every_setting() -> None:
    """.env.example names every setting the services read, the NATS, rotation and assurance ones included."""
    text = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))
    missing = sorted(name.upper() for name in Settings.model_fields if name.upper() not in documented)
    assert missing == []
    for name in (
        "NATS_CREDS",
        "NATS_NKEY_SEED",
        "NATS_TLS_KEY",
        "CASE_TOKEN_SECRET_PREVIOUS",
        "SLACK_SIGNING_SECRET_PREVIOUS",
        "TELEPHONY_HOOK_AUTH_PREVIOUS",
        "HELPDESK_POLICY",
        "NOTIFY_TARGET_USER",
    ):
        assert name in documented
    assert "COMPOSE_PROFILES=production" in text


def test_manifest_matches_slack_schema() -> None:
    """The generated Slack app manifest validates, with routes under the base URL, in both modes."""
    schema = json.loads((SCHEMAS / "slack-manifest.schema.json").read_text())
    for manifest in (
        build_manifest("https://helpdesk.example.com/"),
        build_manifest(None, socket_mode=True),
        build_manifest("https://helpdesk.example.com", command="/verify"),
    ):
        errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(manifest)]
        assert errors == []
    http = build_manifest("https://helpdesk.example.com/")
    assert http["features"]["slash_commands"][0]["url"] == "https://helpdesk.example.com/slack/commands"
    assert http["settings"]["interactivity"]["message_menu_options_url"] == "https://helpdesk.example.com/slack/options"
    assert http["features"]["shortcuts"][0]["callback_id"] == "request_access"
    scopes = http["oauth_config"]["scopes"]["bot"]
    for scope in ("commands", "chat:write", "im:write", "users:read", "users:read.email"):
        assert scope in scopes
    assert scopes == BOT_SCOPES
    # A DM, an @mention and the Workflow Builder step: the schema takes any string, so the names are
    # checked here (reference/slack.md: a misspelt scope or event passes the schema).
    assert {"app_mentions:read", "im:history"} <= set(scopes)
    events = http["settings"]["event_subscriptions"]["bot_events"]
    assert events == ["app_home_opened", "app_mention", "message.im", "function_executed"]
    assert http["features"]["app_home"]["messages_tab_enabled"] is True
    step = http["functions"]["verify_caller"]
    assert set(step["input_parameters"]) == {"agent", "caller", "ticket"}
    assert set(step["output_parameters"]) == {"verified", "method", "assurance", "verified_at", "case_id"}
    assert http["settings"]["org_deploy_enabled"] is True


def test_manifest_refuses_what_slack_would() -> None:
    """A base URL that is not https:// (Slack calls nothing else) or a malformed command is refused."""
    for url in ("http://helpdesk.example.com", "helpdesk.example.com", "ftp://x"):
        with pytest.raises(ManifestError):
            build_manifest(url)
    with pytest.raises(ManifestError):
        build_manifest("https://h.example.com", command="helpdesk")


def test_manifest_command_prints_json(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`helpdesk manifest` prints the manifest with SLACK_COMMAND; a missing or http:// URL is an error."""
    monkeypatch.setenv("SLACK_COMMAND", "/verify-caller")
    assert main(["manifest", "--base-url", "https://h.example.com"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["settings"]["event_subscriptions"]["request_url"] == "https://h.example.com/slack/events"
    assert printed["features"]["slash_commands"][0]["command"] == "/verify-caller"
    assert main(["manifest"]) == 2
    assert "--base-url" in capsys.readouterr().err
    assert main(["manifest", "--base-url", "http://h.example.com"]) == 2
    assert "https://" in capsys.readouterr().err
