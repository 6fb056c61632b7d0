"""What each verified Slack payload means: one typed command to publish, or a direct answer.

Plain functions, no I/O: a payload (already signature-checked) goes in, a :class:`Decision` comes out.
The dispatcher publishes a :class:`Publish` with its ``msg_id`` (derived from Slack's ids, so a
duplicate delivery is a no-op on JetStream) and answers Slack with ``reply``, or with
``unavailable`` if the bus cannot take it; an :class:`Answer` is sent back as is.

    decision = on_slash_command(form, rules)
    match decision:
        case Publish(command, msg_id, reply, unavailable): ...
        case Answer(reply, outcome, reason): ...

Every case-scoped payload (anything inside a case modal) carries the signed case token in the
view's ``private_metadata``; it is verified here, against the acting Slack user, before anything is
published. Buttons on messages to other people (Approve / Deny on an approval request, "This wasn't
me" on the target's notice) carry their own signed token as the value instead: it is verified here
for its signature and kind; who may use it is the worker's decision. A refusal never reaches the bus.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import SecretStr

from services.gateway import views
from services.gateway.slack_request import MalformedRequest
from shared.logging import get_logger
from shared.messages import (
    ActionKind,
    Actor,
    BackToSearch,
    CancelChallenge,
    ChallengeFactor,
    CloseCase,
    Command,
    DecideApproval,
    Encoded,
    HomeOpened,
    MessageRef,
    OpenCase,
    RefreshCase,
    RefusedClick,
    ReportNotMe,
    RequestApproval,
    ResendChallenge,
    RunAction,
    SearchUsers,
    SelectUser,
    SetTicket,
    StartFromMessage,
    StepUp,
    SubmitCode,
    ViewRef,
    WorkflowStep,
)
from shared.settings import Settings
from shared.tokens import (
    CaseClaims,
    CaseTokenError,
    CaseTokenExpired,
    CaseTokens,
    CaseTokenWrongAgent,
)
from shared.ui import (
    ACTION_APPROVE,
    ACTION_BACK_TO_SEARCH,
    ACTION_CANCEL,
    ACTION_CHALLENGE,
    ACTION_CLOSE,
    ACTION_CODE,
    ACTION_DENY,
    ACTION_NOT_ME,
    ACTION_OPEN_ADMIN,
    ACTION_PICK_USER,
    ACTION_REFRESH,
    ACTION_REQUEST_APPROVAL,
    ACTION_RESEND,
    ACTION_RUN,
    ACTION_SELECT_USER,
    ACTION_START,
    ACTION_START_FOR,
    ACTION_STEP_UP,
    ACTION_TICKET,
    ATTRIBUTE_PREFIX,
    BLOCK_CODE,
    BLOCK_TICKET,
    CALLBACK_ANSWER,
    CALLBACK_CODE,
    CALLBACK_TICKET,
    CALLBACK_TOKEN_CODE,
    CALLBACK_YUBIKEY,
    CALLBACKS,
    CODE_CALLBACKS,
    MODHEX,
    RESET_FACTOR_PREFIX,
    SHORTCUT_CALLBACK,
    TICKET_PATTERN,
    TOKEN_CODE_MAX_LENGTH,
    TOKEN_CODE_MIN_LENGTH,
    WORKFLOW_STEP_CALLBACK,
    YUBIKEY_OTP_LENGTH,
    parse_start_value,
)

log = get_logger(__name__)

MAX_QUERY = 100
OKTA_ID = re.compile(r"^[0-9A-Za-z]{1,40}$")  # Okta's ids: 20 letters and digits (00u…, opf…)
ATTRIBUTE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_ANSWER = 200
APPROVAL_AGENT_PREFIX = "approval:"  # the agent claim of an approval token (shared/tokens.py)
NOTICE_AGENT_PREFIX = "target:"  # the agent claim of a notice token


@dataclass(frozen=True)
class Rules:
    """What the handlers need to decide: the case-token verifier, the command name, code lengths."""

    tokens: CaseTokens
    command: str = "/helpdesk"
    code_min_length: int = 6
    code_max_length: int = 8

    @classmethod
    def from_settings(cls, settings: Settings) -> Rules:
        return cls(
            tokens=CaseTokens.from_settings(settings),
            command=settings.slack_command,
            code_min_length=settings.code_min_length,
            code_max_length=settings.code_max_length,
        )


@dataclass(frozen=True)
class Reply:
    """What Slack gets back: an HTTP status and a JSON body (``None``: an empty body)."""

    status: int = 200
    body: dict[str, Any] | None = None


EMPTY = Reply()


@dataclass(frozen=True)
class Publish:
    """Publish ``command`` (deduplicated by ``msg_id``), then answer ``reply``; ``unavailable`` if the bus is down."""

    command: Command | Encoded
    msg_id: str
    reply: Reply = EMPTY
    unavailable: Reply = EMPTY
    case_id: str | None = None  # from the verified case token, for log correlation


@dataclass(frozen=True)
class Answer:
    """Answer Slack directly; nothing is published. ``outcome``/``reason`` are for metrics and logs."""

    reply: Reply
    outcome: str  # answered | ignored | refused | invalid
    reason: str = ""


Decision = Publish | Answer


class CaseRefused(Exception):
    """Raised when a case-scoped payload's token is missing, tampered, expired or another agent's."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind  # missing | invalid | expired | wrong_agent


# ---------------------------------------------------------------------------------------------
# small readers


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _actor(payload: dict[str, Any]) -> Actor:
    user = _dict(payload.get("user"))
    user_id = _str(user.get("id"))
    if not user_id:
        raise MalformedRequest("no_user")
    team_id = _str(_dict(payload.get("team")).get("id")) or _str(user.get("team_id")) or None
    name = _str(user.get("username")) or _str(user.get("name")) or None
    return Actor(user_id=user_id, team_id=team_id, user_name=name)


def case_token_of(private_metadata: str) -> str | None:
    """The case token in a view's ``private_metadata``: the token itself, or ``{"case_token": …}``."""
    metadata = private_metadata.strip()
    if metadata.startswith("{"):
        try:
            obj = orjson.loads(metadata)
        except orjson.JSONDecodeError:
            return None
        token = obj.get("case_token") or obj.get("token") if isinstance(obj, dict) else None
        return token if isinstance(token, str) and token else None
    return metadata or None


def check_case(view: dict[str, Any], agent_id: str, rules: Rules) -> tuple[str, CaseClaims]:
    """The view's case token and its claims, verified for ``agent_id`` (``CaseRefused`` otherwise)."""
    token = case_token_of(_str(view.get("private_metadata")))
    if token is None:
        raise CaseRefused("missing")
    try:
        return token, rules.tokens.verify(token, agent_id=agent_id)
    except CaseTokenExpired:
        raise CaseRefused("expired") from None
    except CaseTokenWrongAgent:
        raise CaseRefused("wrong_agent") from None
    except CaseTokenError:
        raise CaseRefused("invalid") from None


def _view_ref(view: dict[str, Any], with_hash: bool = True) -> ViewRef | None:
    view_id = _str(view.get("id"))
    if not view_id:
        return None
    return ViewRef(view_id=view_id, hash=(_str(view.get("hash")) or None) if with_hash else None)


def _ignored(reason: str) -> Answer:
    return Answer(EMPTY, "ignored", reason)


def _refused(kind: str, what: str = "case") -> Answer:
    return Answer(EMPTY, "refused", f"{what}_token_{kind}")


def _refused_click(
    kind: str, agent: Actor, view: dict[str, Any], action_id: str, action: dict[str, Any], payload: dict[str, Any]
) -> Decision:
    """A click in a modal whose case token does not hold: never silent. The worker audits it (a security
    event unless it merely expired) and the modal is replaced by one that says so; a tampered or foreign
    token is logged as a warning here too."""
    view_ref = _view_ref(view)
    if kind != "expired":
        log.warning("gateway.case_token_refused", reason=kind, action_id=action_id[:64], agent=agent.user_id)
    if view_ref is None:
        return _refused(kind)
    stamp = _str(action.get("action_ts")) or _str(payload.get("trigger_id"))
    command = RefusedClick(agent=agent, view=view_ref, kind=kind, action_id=action_id[:64])  # type: ignore[arg-type]
    return Publish(command, f"refused:{view_ref.view_id}:{stamp}")


def _query(text: str) -> str:
    return " ".join(text.split())[:MAX_QUERY]


# ---------------------------------------------------------------------------------------------
# slash commands


# The fields of a slash command that on_slash_command reads: the dispatcher unquotes only these.
SLASH_COMMAND_FIELDS = frozenset({"command", "text", "user_id", "trigger_id", "team_id", "user_name", "channel_id"})
# Built once: the same answer for every command while the bus is unreachable.
COMMAND_UNAVAILABLE = Reply(body=views.unavailable_message())


def on_slash_command(form: dict[str, str], rules: Rules) -> Decision:
    """``/helpdesk [login or name]`` → :class:`OpenCase`; anything else → the ephemeral help.

    Reads only :data:`SLASH_COMMAND_FIELDS` of ``form``.
    """
    command = form.get("command", "")
    text = form.get("text", "")
    if command != rules.command or text.strip().lower() in {"help", "?"}:
        return Answer(Reply(body=views.help_message(rules.command)), "answered", "help")
    user_id, trigger_id = form.get("user_id", ""), form.get("trigger_id", "")
    if not user_id or not trigger_id:
        raise MalformedRequest("incomplete_command")
    # The one command of the gateway's busiest path, in its wire form: building the models was the
    # largest cost left on a slash command (OpenCase.wire, shared/messages.py).
    command_msg = OpenCase.wire(
        user_id=user_id,
        team_id=form.get("team_id") or None,
        user_name=form.get("user_name") or None,
        trigger_id=trigger_id,
        query=_query(text),
        source="command",
        channel_id=form.get("channel_id") or None,
    )
    return Publish(command_msg, f"open:{trigger_id}", unavailable=COMMAND_UNAVAILABLE)


# ---------------------------------------------------------------------------------------------
# interactivity


def on_interaction(payload: dict[str, Any], rules: Rules) -> Decision:
    """A ``payload`` from /slack/interactions: shortcut, block_actions, view_submission, view_closed."""
    kind = payload.get("type")
    if kind == "shortcut":
        return _on_shortcut(payload)
    if kind == "block_actions":
        return _on_block_actions(payload, rules)
    if kind == "view_submission":
        return _on_view_submission(payload, rules)
    if kind == "view_closed":
        return _on_view_closed(payload, rules)
    return _ignored(f"type:{kind}" if isinstance(kind, str) else "type:unknown")


def _open_case(
    payload: dict[str, Any], source: Literal["command", "shortcut", "home", "retry"], query: str = ""
) -> Decision:
    trigger_id = _str(payload.get("trigger_id"))
    if not trigger_id:
        raise MalformedRequest("no_trigger_id")
    channel = _str(_dict(payload.get("channel")).get("id")) or None
    command = OpenCase(
        agent=_actor(payload), trigger_id=trigger_id, query=_query(query), source=source, channel_id=channel
    )
    return Publish(command, f"open:{trigger_id}")


def _start_for(payload: dict[str, Any], value: str) -> Decision:
    """ "Verify <name>" on an answer to a message or a workflow step: the modal opens with that user."""
    okta_user_id, ticket, execution = parse_start_value(value)
    trigger_id = _str(payload.get("trigger_id"))
    if not trigger_id:
        raise MalformedRequest("no_trigger_id")
    if ticket is not None and not re.match(TICKET_PATTERN, ticket):
        ticket = None
    if execution is not None and not OKTA_ID.match(execution.removeprefix("Fx")):
        raise MalformedRequest("bad_function_execution_id")
    command = OpenCase(
        agent=_actor(payload),
        trigger_id=trigger_id,
        source="workflow" if execution else "message",
        okta_user_id=okta_id(okta_user_id),
        ticket=ticket,
        function_execution_id=execution,
    )
    return Publish(command, f"open:{trigger_id}")


def _on_shortcut(payload: dict[str, Any]) -> Decision:
    if payload.get("callback_id") != SHORTCUT_CALLBACK:
        return _ignored("unknown_shortcut")
    return _open_case(payload, "shortcut")


def _on_block_actions(payload: dict[str, Any], rules: Rules) -> Decision:
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise MalformedRequest("no_actions")
    action = actions[0]
    action_id = _str(action.get("action_id"))
    view = _dict(payload.get("view"))
    if action_id == ACTION_START:
        from_home = view.get("type") == "home"
        query = "" if from_home else _str(action.get("value"))
        return _open_case(payload, "home" if from_home else "retry", query)
    if action_id == ACTION_OPEN_ADMIN:
        return _ignored("url_button")
    if action_id == ACTION_START_FOR:
        return _start_for(payload, _str(action.get("value")))
    if action_id in MESSAGE_BUTTONS:
        return _on_message_button(payload, action_id, action, rules)
    agent = _actor(payload)
    try:
        token, claims = check_case(view, agent.user_id, rules)
    except CaseRefused as refused:
        return _refused_click(refused.kind, agent, view, action_id, action, payload)
    command = _case_command(action_id, action, agent, token, _view_ref(view))
    if command is None:
        return _ignored(f"action:{action_id or 'none'}")
    stamp = _str(action.get("action_ts")) or _str(payload.get("trigger_id"))
    if not stamp:
        raise MalformedRequest("no_action_ts")
    return Publish(command, f"{claims.case_id}:{action_id}:{stamp}", case_id=claims.case_id)


# Buttons on messages (not views) whose value is a signed token: the token's kind (its agent claim's
# prefix), the reason prefix for refusals, and the msg id's verb.
MESSAGE_BUTTONS: dict[str, tuple[str, str, str]] = {
    ACTION_APPROVE: (APPROVAL_AGENT_PREFIX, "approval", "decide"),
    ACTION_DENY: (APPROVAL_AGENT_PREFIX, "approval", "decide"),
    ACTION_NOT_ME: (NOTICE_AGENT_PREFIX, "notice", "not_me"),
}


def check_signed_value(token: str, prefix: str, rules: Rules) -> CaseClaims:
    """The claims of a button's signed token whose agent claim starts with ``prefix`` (``CaseRefused`` otherwise).

    Anyone may click such a button (an approver, the target user): the signature and the kind are
    checked here; whether this person may decide is the worker's to check.
    """
    if not token:
        raise CaseRefused("missing")
    try:
        claims = rules.tokens.verify(token)
    except CaseTokenExpired:
        raise CaseRefused("expired") from None
    except CaseTokenError:
        raise CaseRefused("invalid") from None
    if not claims.agent_id.startswith(prefix) or claims.agent_id == prefix:
        raise CaseRefused("invalid")
    return claims


def _message_ref(payload: dict[str, Any]) -> MessageRef | None:
    """The clicked message, to update it later; None if Slack left out its channel or ts."""
    container = _dict(payload.get("container"))
    channel = _str(container.get("channel_id")) or _str(_dict(payload.get("channel")).get("id"))
    ts = _str(container.get("message_ts"))
    return MessageRef(channel=channel, ts=ts) if channel and ts else None


def _on_message_button(payload: dict[str, Any], action_id: str, action: dict[str, Any], rules: Rules) -> Decision:
    """Approve / Deny on an approval request, "This wasn't me" on the target's notice."""
    if _dict(payload.get("container")).get("type") != "message" or payload.get("view"):
        return _ignored(f"action:{action_id}:not_on_message")
    prefix, token_kind, verb = MESSAGE_BUTTONS[action_id]
    agent = _actor(payload)
    token = _str(action.get("value"))
    try:
        claims = check_signed_value(token, prefix, rules)
    except CaseRefused as refused:
        return _refused(refused.kind, token_kind)
    message = _message_ref(payload)
    command: Command
    if action_id == ACTION_NOT_ME:
        command = ReportNotMe(agent=agent, notice_token=token, message=message)
    else:
        approve = action_id == ACTION_APPROVE
        command = DecideApproval(agent=agent, approval_token=token, approve=approve, message=message)
    stamp = _str(action.get("action_ts")) or _str(payload.get("trigger_id"))
    if not stamp:
        raise MalformedRequest("no_action_ts")
    return Publish(command, f"{claims.case_id}:{verb}:{stamp}", case_id=claims.case_id)


def _action_of(value: str) -> tuple[ActionKind, str | None] | None:
    """A run/approval button's value: an ``ActionKind`` value, or ``reset_factor:<factor id>``."""
    if value.startswith(RESET_FACTOR_PREFIX):
        factor_id = value.removeprefix(RESET_FACTOR_PREFIX)
        return (ActionKind.RESET_FACTOR, factor_id) if factor_id else None
    try:
        return ActionKind(value), None
    except ValueError:
        return None


def okta_id(value: str) -> str:
    """An Okta id from a payload, checked before any use: letters and digits only, bounded — never a path,
    a query string or a 3,000-character key (``MalformedRequest`` otherwise)."""
    if not OKTA_ID.match(value):
        raise MalformedRequest("bad_okta_id")
    return value


def factor_ref(value: str) -> str:
    """A factor id, or ``attr:<profile attribute>`` for a profile check (same rule)."""
    name = value.removeprefix(ATTRIBUTE_PREFIX)
    if name != value and ATTRIBUTE_NAME.match(name):
        return value
    return okta_id(value)


def _case_command(
    action_id: str, action: dict[str, Any], agent: Actor, token: str, view: ViewRef | None
) -> Command | None:
    value = _str(action.get("value"))
    common: dict[str, Any] = {"agent": agent, "case_token": token, "view": view}
    if action_id == ACTION_SELECT_USER:
        selected = _str(_dict(action.get("selected_option")).get("value"))
        if not selected or selected.startswith(views.SENTINEL_PREFIX):
            return None
        return SelectUser(okta_user_id=okta_id(selected), **common)
    if action_id == ACTION_PICK_USER:
        return SelectUser(okta_user_id=okta_id(value), **common)
    if action_id == ACTION_CHALLENGE:
        return ChallengeFactor(factor_id=factor_ref(value), **common) if value else None
    if action_id in (ACTION_RUN, ACTION_REQUEST_APPROVAL):
        parsed = _action_of(value)
        if parsed is None:
            return None
        kind, factor_id = parsed
        if factor_id is not None:
            factor_id = okta_id(factor_id)
        if action_id == ACTION_RUN:
            return RunAction(action=kind, factor_id=factor_id, **common)
        return RequestApproval(action=kind, factor_id=factor_id, **common)
    simple: dict[str, type[Command]] = {
        ACTION_STEP_UP: StepUp,
        ACTION_RESEND: ResendChallenge,
        ACTION_CANCEL: CancelChallenge,
        ACTION_BACK_TO_SEARCH: BackToSearch,
        ACTION_REFRESH: RefreshCase,
        ACTION_CLOSE: CloseCase,
    }
    command_type = simple.get(action_id)
    return command_type(**common) if command_type is not None else None


def _submitted_input(view: dict[str, Any]) -> tuple[str, str | None]:
    """The block id and text of the submitted code/answer: ``BLOCK_CODE``/``ACTION_CODE``, else the one input."""
    values = _dict(_dict(view.get("state")).get("values"))
    if BLOCK_CODE in values:
        entry = _dict(_dict(values[BLOCK_CODE]).get(ACTION_CODE))
        return BLOCK_CODE, entry.get("value") if isinstance(entry.get("value"), str) else None
    for block_id, actions in values.items():
        for entry in _dict(actions).values():
            if _dict(entry).get("type") == "plain_text_input":
                text = _dict(entry).get("value")
                return str(block_id), text if isinstance(text, str) else None
    return BLOCK_CODE, None


def _errors(block_id: str, message: str) -> Reply:
    return Reply(body={"response_action": "errors", "errors": {block_id: message}})


def check_code(raw: str | None, min_length: int, max_length: int, noun: str = "code") -> tuple[str | None, str | None]:
    """``(code, None)`` for a well-formed code (spaces between digit groups removed), else ``(None, why)``."""
    code = "".join((raw or "").split())
    if not code:
        return None, f"Enter the {noun} the caller reads out."
    if not (code.isascii() and code.isdigit()):
        return None, f"The {noun} has digits only."
    if not min_length <= len(code) <= max_length:
        expected = f"{min_length}" if min_length == max_length else f"{min_length} to {max_length}"
        return None, f"The {noun} has {expected} digits."
    return code, None


def check_yubikey_otp(raw: str | None) -> tuple[str | None, str | None]:
    """``(otp, None)`` for 44 ModHex characters (any case, spaces removed; lower-cased), else ``(None, why)``."""
    otp = "".join((raw or "").split()).lower()
    if not otp:
        return None, f"Enter the {YUBIKEY_OTP_LENGTH} characters the YubiKey types."
    if not set(otp) <= MODHEX:
        letters = " ".join(sorted(MODHEX))
        return None, f"A YubiKey OTP has only the letters {letters}: no digits or other characters."
    if len(otp) != YUBIKEY_OTP_LENGTH:
        return None, f"A YubiKey OTP has exactly {YUBIKEY_OTP_LENGTH} characters; this has {len(otp)}."
    return otp, None


def check_answer(raw: str | None) -> tuple[str | None, str | None]:
    answer = (raw or "").strip()
    if not answer:
        return None, "Enter the caller's answer."
    if len(answer) > MAX_ANSWER:
        return None, f"The answer is at most {MAX_ANSWER} characters."
    return answer, None


def _on_ticket_submission(payload: dict[str, Any], view: dict[str, Any], rules: Rules) -> Decision:
    """The search view's "Attach ticket": a well-formed ticket → :class:`SetTicket`; else an error on it."""
    agent = _actor(payload)
    values = _dict(_dict(view.get("state")).get("values"))
    raw = _dict(_dict(values.get(BLOCK_TICKET)).get(ACTION_TICKET)).get("value")
    ticket = "".join(raw.split()).upper() if isinstance(raw, str) else ""
    try:
        token, claims = check_case(view, agent.user_id, rules)
    except CaseRefused as refused:
        return Answer(_errors(BLOCK_TICKET, views.REFUSAL_TEXT[refused.kind]), "refused", f"case_token_{refused.kind}")
    if not re.match(TICKET_PATTERN, ticket):
        problem = "A ServiceNow INC…, REQ… or RITM… number, or a Jira key such as HELP-123."
        return Answer(_errors(BLOCK_TICKET, problem), "invalid", "bad_ticket")
    view_ref = _view_ref(view, with_hash=False)
    command = SetTicket(agent=agent, case_token=token, view=view_ref, ticket=ticket)
    update = Reply(body={"response_action": "update", "view": views.checking_view(view, "Attaching the ticket…")})
    msg_id = f"{claims.case_id}:ticket:{view_ref.view_id if view_ref else ''}:{_str(view.get('hash'))}"
    return Publish(command, msg_id, reply=update, unavailable=_errors(BLOCK_TICKET, views.UNAVAILABLE_TEXT))


def _on_view_submission(payload: dict[str, Any], rules: Rules) -> Decision:
    view = _dict(payload.get("view"))
    callback = view.get("callback_id")
    if callback == CALLBACK_TICKET:
        return _on_ticket_submission(payload, view, rules)
    if callback not in CODE_CALLBACKS and callback != CALLBACK_ANSWER:
        # Case views have no submit button; an empty answer closes whatever this is.
        return _ignored("submission:other")
    agent = _actor(payload)
    block_id, raw = _submitted_input(view)
    try:
        token, claims = check_case(view, agent.user_id, rules)
    except CaseRefused as refused:
        return Answer(_errors(block_id, views.REFUSAL_TEXT[refused.kind]), "refused", f"case_token_{refused.kind}")
    checking = views.CHECKING_CODE
    if callback == CALLBACK_CODE:
        value, problem = check_code(raw, rules.code_min_length, rules.code_max_length)
    elif callback == CALLBACK_TOKEN_CODE:
        value, problem = check_code(raw, TOKEN_CODE_MIN_LENGTH, TOKEN_CODE_MAX_LENGTH, noun="passcode")
    elif callback == CALLBACK_YUBIKEY:
        value, problem = check_yubikey_otp(raw)
    else:
        value, problem = check_answer(raw)
        checking = views.CHECKING_ANSWER
    if value is None:
        return Answer(_errors(block_id, problem or "Check this value."), "invalid", "bad_code")
    view_ref = _view_ref(view, with_hash=False)
    if view_ref is None:
        raise MalformedRequest("no_view_id")
    # After a response_action update the view's hash is unknown to us: the worker updates without one.
    command = SubmitCode(agent=agent, case_token=token, view=view_ref, code=SecretStr(value))
    update = Reply(body={"response_action": "update", "view": views.checking_view(view, checking)})
    unavailable = _errors(block_id, views.UNAVAILABLE_TEXT)
    msg_id = f"{claims.case_id}:submit:{view_ref.view_id}:{_str(view.get('hash'))}"
    return Publish(command, msg_id, reply=update, unavailable=unavailable, case_id=claims.case_id)


def _on_view_closed(payload: dict[str, Any], rules: Rules) -> Decision:
    view = _dict(payload.get("view"))
    if view.get("callback_id") not in CALLBACKS:
        return _ignored("closed:other")
    agent = _actor(payload)
    try:
        token, claims = check_case(view, agent.user_id, rules)
    except CaseRefused as refused:
        return _refused(refused.kind)
    view_ref = _view_ref(view)
    command = CloseCase(agent=agent, case_token=token, view=view_ref)
    msg_id = f"{claims.case_id}:closed:{view_ref.view_id if view_ref else ''}"
    return Publish(command, msg_id, case_id=claims.case_id)


# ---------------------------------------------------------------------------------------------
# options (block_suggestion)


def on_block_suggestion(payload: dict[str, Any], rules: Rules) -> SearchUsers | Answer:
    """The user search as the agent types: a :class:`SearchUsers` to ask, or a menu to show at once."""
    if payload.get("type") != "block_suggestion" or payload.get("action_id") != ACTION_SELECT_USER:
        return Answer(Reply(body=views.no_options()), "ignored", "unknown_menu")
    agent = _actor(payload)
    try:
        check_case(_dict(payload.get("view")), agent.user_id, rules)
    except CaseRefused as refused:
        menu = views.single_option(views.CASE_EXPIRED_OPTION, views.EXPIRED_OPTION_VALUE)
        return Answer(Reply(body=menu), "refused", f"case_token_{refused.kind}")
    query = _query(_str(payload.get("value")))
    if not query:
        return Answer(Reply(body=views.no_options()), "answered", "empty_query")
    return SearchUsers(query=query, agent=agent)


# ---------------------------------------------------------------------------------------------
# events


def on_event(body: dict[str, Any]) -> Decision:
    """``url_verification`` → its challenge; ``app_home_opened`` (Home tab) → :class:`HomeOpened`; a DM or an
    @mention → :class:`StartFromMessage`; our Workflow Builder step → :class:`WorkflowStep`."""
    kind = body.get("type")
    if kind == "url_verification":
        return Answer(Reply(body={"challenge": _str(body.get("challenge"))}), "answered", "url_verification")
    if kind != "event_callback":
        return _ignored(f"event:{kind}" if isinstance(kind, str) else "event:unknown")
    event = _dict(body.get("event"))
    kind = event.get("type")
    if kind in ("app_mention", "message"):
        return _on_message_event(body, event)
    if kind == "function_executed":
        return _on_function_executed(body, event)
    if kind != "app_home_opened":
        return _ignored("event:other")
    if event.get("tab", "home") != "home":
        return _ignored("event:messages_tab")
    user_id, event_id = _str(event.get("user")), _str(body.get("event_id"))
    if not user_id or not event_id:
        raise MalformedRequest("incomplete_event")
    agent = Actor(user_id=user_id, team_id=_str(body.get("team_id")) or None)
    return Publish(HomeOpened(agent=agent), f"event:{event_id}")


def _on_message_event(body: dict[str, Any], event: dict[str, Any]) -> Decision:
    """A DM to the app or an @mention → :class:`StartFromMessage`. Bot messages (ours included), edits and
    thread replies are ignored; a DM must be a DM (``channel_type: im``)."""
    if event.get("subtype") or event.get("bot_id") or not event.get("user"):
        return _ignored("event:not_a_person")
    in_dm = event.get("type") == "message"
    if in_dm and event.get("channel_type") != "im":
        return _ignored("event:not_a_dm")
    thread_ts = _str(event.get("thread_ts")) or None
    if in_dm and thread_ts and thread_ts != _str(event.get("ts")):
        return _ignored("event:thread_reply")
    channel, event_id = _str(event.get("channel")), _str(body.get("event_id"))
    if not channel or not event_id:
        raise MalformedRequest("incomplete_event")
    agent = Actor(user_id=_str(event.get("user")), team_id=_str(body.get("team_id")) or None)
    command = StartFromMessage(
        agent=agent, text=_str(event.get("text"))[:500], channel_id=channel, in_dm=in_dm, thread_ts=thread_ts
    )
    return Publish(command, f"event:{event_id}")


def _on_function_executed(body: dict[str, Any], event: dict[str, Any]) -> Decision:
    """Workflow Builder ran our "Verify caller" step → :class:`WorkflowStep` for the person running it."""
    function = _dict(event.get("function"))
    if function.get("callback_id") != WORKFLOW_STEP_CALLBACK:
        return _ignored("event:other_function")
    inputs = _dict(event.get("inputs"))
    execution, event_id = _str(event.get("function_execution_id")), _str(body.get("event_id"))
    agent_id, caller = _str(inputs.get("agent")), _str(inputs.get("caller")).strip()
    if not execution or not event_id or not agent_id or not caller:
        raise MalformedRequest("incomplete_function")
    ticket = _str(inputs.get("ticket")).strip().upper() or None
    command = WorkflowStep(
        agent=Actor(user_id=agent_id, team_id=_str(body.get("team_id")) or None),
        function_execution_id=execution[:64],
        caller=caller[:200],
        ticket=ticket[:40] if ticket else None,
    )
    return Publish(command, f"event:{event_id}")
