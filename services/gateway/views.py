"""The few things the gateway shows by itself, built with slack_sdk's models (which check Slack's limits).

Everything else the agent sees is rendered by the responder from case snapshots; the gateway only
answers what Slack insists be answered synchronously:

    checking_view(submitted_view, "Checking the code…")   # response_action: update after a code
    help_message("/helpdesk")                             # ephemeral answer to an unknown command
    unavailable_message()                                 # ephemeral answer while NATS is down
    options_payload(reply.options)                        # the user-search menu
"""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import ContextBlock, MarkdownTextObject, Option, SectionBlock
from slack_sdk.models.views import View

from shared.messages import UserOption
from shared.ui import CALLBACK_CASE

MAX_OPTIONS = 100
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150
MAX_MODAL_TEXT = 24
DEFAULT_TITLE = "Verify caller"

UNAVAILABLE_TEXT = "Helpdesk is temporarily unavailable, try again in a minute."
CHECKING_CODE = "Checking the code…"
CHECKING_ANSWER = "Checking the answer…"

# Values of the options the gateway makes up itself; a selection of one is never forwarded.
SENTINEL_PREFIX = "__"
UNAVAILABLE_OPTION_VALUE = "__unavailable__"
EXPIRED_OPTION_VALUE = "__expired__"
SEARCH_UNAVAILABLE = "search unavailable — try again"
CASE_EXPIRED_OPTION = "this verification has expired — start again"

# What the agent reads when a case-scoped request is refused (response_action: errors).
REFUSAL_TEXT = {
    "expired": "This verification has expired. Close it and start again.",
    "wrong_agent": "This verification belongs to another agent.",
    "invalid": "This view could not be verified. Close it and start again.",
    "missing": "This view could not be verified. Close it and start again.",
}


def _text_of(obj: Any) -> str:
    return str(obj.get("text", "")) if isinstance(obj, dict) else ""


def checking_view(submitted: dict[str, Any], text: str = CHECKING_CODE) -> dict[str, Any]:
    """The small view that replaces a submitted code form while the worker checks the code.

    It keeps the submitted view's ``private_metadata`` (the case token), title, close label and
    ``notify_on_close``, uses ``CALLBACK_CASE`` and has no submit button.
    """
    title = _text_of(submitted.get("title")) or DEFAULT_TITLE
    close = _text_of(submitted.get("close")) or "Close"
    view = View(
        type="modal",
        callback_id=CALLBACK_CASE,
        title=title[:MAX_MODAL_TEXT],
        close=close[:MAX_MODAL_TEXT],
        private_metadata=str(submitted.get("private_metadata") or ""),
        notify_on_close=bool(submitted.get("notify_on_close", False)),
        blocks=[
            SectionBlock(text=MarkdownTextObject(text=f":hourglass_flowing_sand: *{text}*")),
            ContextBlock(elements=[MarkdownTextObject(text="This view updates by itself in a moment.")]),
        ],
    )
    return view.to_dict()


def help_message(command: str) -> dict[str, Any]:
    """The ephemeral help text for an unknown command or ``{command} help``."""
    text = (
        f"*Helpdesk Verify* proves a caller is who they claim before you reset anything.\n"
        f"• `{command}` opens a verification\n"
        f"• `{command} alice` opens one with the user search pre-filled\n"
        f"• or use the *Helpdesk Access* shortcut, or *Start a verification* on the app's Home tab."
    )
    return {
        "response_type": "ephemeral",
        "text": text,
        "blocks": [SectionBlock(text=MarkdownTextObject(text=text)).to_dict()],
    }


def unavailable_message() -> dict[str, Any]:
    """The ephemeral answer to a command while the bus is unreachable."""
    return {"response_type": "ephemeral", "text": UNAVAILABLE_TEXT}


def _option(label: str, value: str) -> dict[str, Any]:
    if len(label) > MAX_OPTION_TEXT:
        label = label[: MAX_OPTION_TEXT - 1] + "…"
    return Option(text=label or value, value=value).to_dict()


def options_payload(options: list[UserOption]) -> dict[str, Any]:
    """At most 100 options, each text ≤ 75 chars; options whose value Slack would refuse are dropped."""
    built = [_option(o.label, o.id) for o in options if 0 < len(o.id) <= MAX_OPTION_VALUE]
    return {"options": built[:MAX_OPTIONS]}


def single_option(label: str, value: str) -> dict[str, Any]:
    """A menu with one option that explains itself (search unavailable, case expired)."""
    return {"options": [_option(label, value)]}


def no_options() -> dict[str, Any]:
    return {"options": []}
