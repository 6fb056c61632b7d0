"""Slack ids shared by the responder (which renders them) and the gateway (which parses them back).

A contract, like ``messages.py``: renaming one breaks clicks in views already open in Slack.

Modal ``callback_id`` says what a ``view_submission`` carries:
``CALLBACK_CODE`` (digits, checked at the gateway), ``CALLBACK_ANSWER`` (free text: security
question or profile attribute); every other state uses ``CALLBACK_CASE`` and has no submit button.
Button values: ``ACTION_CHALLENGE`` → factor id (``attr:<name>`` for a profile-attribute check);
``ACTION_RUN`` → an ``ActionKind`` value, or ``reset_factor:<factor id>``.
"""

from __future__ import annotations

SHORTCUT_CALLBACK = "request_access"  # the global shortcut of the original Workflows app: keep it

CALLBACK_CASE = "helpdesk_case"
CALLBACK_CODE = "helpdesk_code"
CALLBACK_ANSWER = "helpdesk_answer"
CALLBACKS = frozenset({CALLBACK_CASE, CALLBACK_CODE, CALLBACK_ANSWER})

BLOCK_USER_SEARCH = "user_search"
ACTION_SELECT_USER = "select_user"  # external_select; selected_option.value = Okta user id
BLOCK_CODE = "code_entry"
ACTION_CODE = "code"  # plain_text_input inside BLOCK_CODE

ACTION_CHALLENGE = "challenge_factor"
ACTION_RESEND = "resend_challenge"
ACTION_CANCEL = "cancel_challenge"  # back to the factor list
ACTION_BACK_TO_SEARCH = "back_to_search"
ACTION_RUN = "run_action"
ACTION_REFRESH = "refresh_case"  # e.g. "Done" under a temporary password: show the case again
ACTION_CLOSE = "close_case"
ACTION_START = "start_verification"  # App Home button and the "open again" button of an ephemeral
ACTION_OPEN_ADMIN = "open_admin_console"  # a URL button; Slack still sends block_actions: ignore it

RESET_FACTOR_PREFIX = "reset_factor:"
ATTRIBUTE_PREFIX = "attr:"
