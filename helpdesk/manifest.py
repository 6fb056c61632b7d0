"""The Slack app manifest for an install at ``base_url`` (or for Socket Mode)."""

from __future__ import annotations

from typing import Any

from shared.ui import SHORTCUT_CALLBACK

BOT_SCOPES = ["commands", "chat:write", "users:read", "users:read.email"]


def build_manifest(base_url: str | None, socket_mode: bool = False, command: str = "/helpdesk") -> dict[str, Any]:
    """A manifest Slack accepts as is: routes under ``base_url``, or none when Socket Mode is on."""
    if not socket_mode and not base_url:
        raise ValueError("a base URL is required unless Socket Mode is used")
    root = (base_url or "").rstrip("/")
    slash: dict[str, Any] = {
        "command": command,
        "description": "Verify a caller against their Okta factors",
        "usage_hint": "[login or name]",
        "should_escape": False,
    }
    interactivity: dict[str, Any] = {"is_enabled": True}
    events: dict[str, Any] = {"bot_events": ["app_home_opened"]}
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
                "messages_tab_enabled": False,
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
        "settings": {
            "event_subscriptions": events,
            "interactivity": interactivity,
            "org_deploy_enabled": False,
            "socket_mode_enabled": socket_mode,
            "token_rotation_enabled": False,
        },
    }
