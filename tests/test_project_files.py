"""The files an operator deploys from are valid against their published schemas."""

import json
from pathlib import Path

import jsonschema
import yaml

from helpdesk.cli import main
from helpdesk.manifest import build_manifest

ROOT = Path(__file__).resolve().parents[1]


def test_compose_file_matches_compose_spec(specs_dir: Path) -> None:
    """compose.yaml validates against the Compose Specification schema."""
    schema = json.loads((specs_dir / "compose-spec.schema.json").read_text())
    doc = yaml.safe_load((ROOT / "compose.yaml").read_text())
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
    assert errors == []
    assert doc["services"]["okta-worker"]["deploy"]["replicas"] == 2
    for name in ("gateway", "okta-worker", "slack-responder", "telephony-hook"):
        assert doc["services"][name]["depends_on"]["nats"]["condition"] == "service_healthy"
        assert "container_name" not in doc["services"][name]


def test_manifest_matches_slack_schema(specs_dir: Path) -> None:
    """The generated Slack app manifest validates, with routes under the base URL, in both modes."""
    schema = json.loads((specs_dir / "slack-manifest.schema.json").read_text())
    for manifest in (build_manifest("https://helpdesk.example.com/"), build_manifest(None, socket_mode=True)):
        errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(manifest)]
        assert errors == []
    http = build_manifest("https://helpdesk.example.com/")
    assert http["features"]["slash_commands"][0]["url"] == "https://helpdesk.example.com/slack/commands"
    assert http["settings"]["interactivity"]["message_menu_options_url"] == "https://helpdesk.example.com/slack/options"
    assert http["features"]["shortcuts"][0]["callback_id"] == "request_access"
    assert "users:read.email" in http["oauth_config"]["scopes"]["bot"]


def test_manifest_command_prints_json(capsys) -> None:
    """`helpdesk manifest` prints the manifest; without a URL or Socket Mode it says what is missing."""
    assert main(["manifest", "--base-url", "https://h.example.com"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["settings"]["event_subscriptions"]["request_url"] == "https://h.example.com/slack/events"
    assert main(["manifest"]) == 2
    assert "--base-url" in capsys.readouterr().err
