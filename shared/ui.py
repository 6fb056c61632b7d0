"""Slack ids shared by the responder (which renders them) and the gateway (which parses them back).

A contract, like ``messages.py``: renaming one breaks clicks in views already open in Slack.

Modal ``callback_id`` says what a ``view_submission`` carries:
``CALLBACK_CODE`` (digits, checked at the gateway), ``CALLBACK_ANSWER`` (free text: security
question or profile attribute); every other state uses ``CALLBACK_CASE`` and has no submit button.
Button values: ``ACTION_CHALLENGE`` → factor id (``attr:<name>`` for a profile-attribute check);
``ACTION_RUN`` and ``ACTION_REQUEST_APPROVAL`` → an ``ActionKind`` value, or ``reset_factor:<factor id>``;
``ACTION_APPROVE`` / ``ACTION_DENY`` → a signed approval token; ``ACTION_NOT_ME`` → a signed notice token.
Signed tokens are :class:`shared.tokens.CaseTokens` whose agent is ``approval:<id>`` or ``target:<Okta id>``.
"""

from __future__ import annotations

SHORTCUT_CALLBACK = "request_access"  # the global shortcut of the original Workflows app: keep it
WORKFLOW_STEP_CALLBACK = "verify_caller"  # the Workflow Builder custom step (manifest `functions`)

CALLBACK_CASE = "helpdesk_case"
CALLBACK_CODE = "helpdesk_code"  # a one-time code of digits (SMS, voice, email, TOTP): CODE_MIN..MAX_LENGTH
CALLBACK_TOKEN_CODE = "helpdesk_token_code"  # RSA SecurID / Symantec VIP passcode: TOKEN_CODE digits
CALLBACK_YUBIKEY = "helpdesk_yubikey"  # a YubiKey OTP: 44 ModHex characters
CALLBACK_ANSWER = "helpdesk_answer"
CALLBACK_TICKET = "helpdesk_ticket"  # the search view: its submit attaches the ticket (BLOCK_TICKET)
CODE_CALLBACKS = frozenset({CALLBACK_CODE, CALLBACK_TOKEN_CODE, CALLBACK_YUBIKEY})
CALLBACKS = frozenset({CALLBACK_CASE, CALLBACK_ANSWER, CALLBACK_TICKET, *CODE_CALLBACKS})

TOKEN_CODE_MIN_LENGTH = 6  # Symantec VIP: 6 digits; RSA SecurID: PIN (4-8) + tokencode (6-8), Okta's example 10
TOKEN_CODE_MAX_LENGTH = 16
YUBIKEY_OTP_LENGTH = 44
MODHEX = frozenset("cbdefghijklnrtuv")


def code_callback(factor_type: str, provider: str = "") -> str:
    """The code view's callback id for a factor: it tells the gateway which shape of code to accept."""
    if factor_type == "token:hardware":
        return CALLBACK_YUBIKEY
    if factor_type == "token":
        return CALLBACK_TOKEN_CODE
    return CALLBACK_CODE


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
ACTION_STEP_UP = "step_up"  # "Verify another factor" in the verified view → StepUp
ACTION_REQUEST_APPROVAL = "request_approval"  # value: an ActionKind value, or reset_factor:<factor id>
# On an approval message (not a view): value = the signed approval token → DecideApproval.
ACTION_APPROVE = "approval_approve"
ACTION_DENY = "approval_deny"
# On the DM to the target user: value = the signed notice token → ReportNotMe.
ACTION_NOT_ME = "report_not_me"
# On an answer to a message, a mention or a workflow step: "Verify <name>", value = a START_VALUE.
ACTION_START_FOR = "start_for_user"
ACTION_PICK_USER = "pick_user"  # in the modal, one of the users `/helpdesk alice` matched: value = Okta id
BLOCK_TICKET = "ticket"
ACTION_TICKET = "ticket_entered"  # the ticket input (BLOCK_TICKET) of the search view
TICKET_PATTERN = r"^(?:(?:INC|REQ|RITM)\d{7,12}|[A-Z][A-Z0-9]{1,9}-\d{1,9})$"  # ServiceNow number or Jira key


def start_value(okta_user_id: str, ticket: str | None = None, function_execution_id: str | None = None) -> str:
    """The value of a "Verify <name>" button: the user, and the ticket / workflow step it is for."""
    return "|".join((okta_user_id, ticket or "", function_execution_id or ""))


def parse_start_value(value: str) -> tuple[str, str | None, str | None]:
    user, _, rest = value.partition("|")
    ticket, _, execution = rest.partition("|")
    return user, ticket or None, execution or None


RESET_FACTOR_PREFIX = "reset_factor:"
ATTRIBUTE_PREFIX = "attr:"
