"""The Slack app manifest for an install at ``base_url`` (or for Socket Mode)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from shared.ui import SHORTCUT_CALLBACK, WORKFLOW_STEP_CALLBACK

# commands: the slash command · chat:write: the audit thread, approvals, notices, answers · im:write:
# DMs to a target user and their manager · users:read, users:read.email: an agent's or target's Slack
# user from their Okta email · channels:read, groups:read: `helpdesk check` sees the bot is in the audit,
# approvals and security channels (public or private) · app_mentions:read, im:history: "@Helpdesk verify
# jdoe" in a channel and a message to the app in its Messages tab.
BOT_SCOPES = [
    "commands",
    "chat:write",
    "im:write",
    "users:read",
    "users:read.email",
    "channels:read",
    "groups:read",
    "app_mentions:read",
    "im:history",
]
BOT_EVENTS = ["app_home_opened", "app_mention", "message.im", "function_executed"]

# The Workflow Builder step "Verify caller" (a custom step: Slack calls it a function).
VERIFY_CALLER_STEP: dict[str, Any] = {
    "title": "Verify caller",
    "description": "Verify a caller against their enrolled Okta factors before the workflow goes on",
    "input_parameters": {
        "agent": {
            "type": "slack#/types/user_id",
            "title": "Help-desk agent",
            "description": "Who verifies the caller (usually the person running the workflow)",
            "is_required": True,
            "name": "agent",
        },
        "caller": {
            "type": "string",
            "title": "Caller",
            "description": "A Slack user id, or the caller's Okta login or email",
            "is_required": True,
            "name": "caller",
        },
        "ticket": {
            "type": "string",
            "title": "Ticket",
            "description": "A ServiceNow INC/REQ/RITM number or a Jira key (optional)",
            "is_required": False,
            "name": "ticket",
        },
    },
    "output_parameters": {
        "verified": {
            "type": "boolean",
            "title": "Verified",
            "description": "The caller was verified",
            "is_required": True,
            "name": "verified",
        },
        "method": {
            "type": "string",
            "title": "Method",
            "description": "The factors verified",
            "is_required": False,
            "name": "method",
        },
        "assurance": {
            "type": "string",
            "title": "Assurance",
            "description": "The assurance reached",
            "is_required": False,
            "name": "assurance",
        },
        "verified_at": {
            "type": "slack#/types/timestamp",
            "title": "Verified at",
            "description": "When",
            "is_required": False,
            "name": "verified_at",
        },
        "case_id": {
            "type": "string",
            "title": "Case",
            "description": "The case in the audit trail",
            "is_required": False,
            "name": "case_id",
        },
    },
}


class ManifestError(ValueError):
    """Raised for a base URL Slack would refuse (not ``https://``) or a malformed command."""


def build_manifest(base_url: str | None, socket_mode: bool = False, command: str = "/helpdesk") -> dict[str, Any]:
    """A manifest Slack accepts as is: routes under ``base_url``, or none when Socket Mode is on.

    >>> build_manifest("https://helpdesk.example.com", command="/verify")["features"]["slash_commands"][0]["url"]
    'https://helpdesk.example.com/slack/commands'
    """
    if not socket_mode and not base_url:
        raise ManifestError("a base URL is required unless Socket Mode is used")
    if base_url and urlsplit(base_url).scheme != "https":
        raise ManifestError(f"Slack calls only https:// URLs: {base_url!r} is not one")
    if not command.startswith("/") or len(command) < 2 or " " in command:
        raise ManifestError(f"SLACK_COMMAND must look like /helpdesk, not {command!r}")
    root = (base_url or "").rstrip("/")
    slash: dict[str, Any] = {
        "command": command,
        "description": "Verify a caller against their Okta factors",
        "usage_hint": "[login or name]",
        "should_escape": False,
    }
    interactivity: dict[str, Any] = {"is_enabled": True}
    events: dict[str, Any] = {"bot_events": BOT_EVENTS}
    if not socket_mode:
        slash["url"] = f"{root}/slack/commands"
        interactivity["request_url"] = f"{root}/slack/interactions"
        interactivity["message_menu_options_url"] = f"{root}/slack/options"
        events["request_url"] = f"{root}/slack/events"
    return {
        "display_information": {
            "name": "Helpdesk Verify",
            "description": "Verify callers with Okta before resetting anything",
            "background_color": "#1f3a5f",
        },
        "features": {
            "app_home": {
                "home_tab_enabled": True,
                "messages_tab_enabled": True,
                "messages_tab_read_only_enabled": False,
            },
            "bot_user": {"display_name": "Helpdesk Verify", "always_online": True},
            "shortcuts": [
                {
                    "name": "Helpdesk Access",
                    "type": "global",
                    "callback_id": SHORTCUT_CALLBACK,
                    "description": "Verify a caller before touching their account",
                }
            ],
            "slash_commands": [slash],
        },
        "oauth_config": {"scopes": {"bot": BOT_SCOPES}},
        "functions": {WORKFLOW_STEP_CALLBACK: VERIFY_CALLER_STEP},
        "settings": {
            "event_subscriptions": events,
            "interactivity": interactivity,
            "org_deploy_enabled": True,  # Workflow Builder custom steps need it
            "function_runtime": "remote",
            "socket_mode_enabled": socket_mode,
            "token_rotation_enabled": False,
        },
    }
