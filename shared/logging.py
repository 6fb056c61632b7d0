"""structlog, configured once per process: JSON in production, console on a TTY.

Every HTTP request and NATS message starts with ``clear_contextvars()`` and binds its correlation id
(``bind_correlation(case_id=...)``), so each log line of that unit of work carries it.
``redact_secrets`` runs before rendering, for structlog and stdlib records alike.

    configure_logging(settings)
    log = get_logger(__name__)
    bind_correlation(case_id="c_123")
    log.info("case.opened", agent="U123")
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import orjson
import structlog
from structlog.contextvars import bind_contextvars, clear_contextvars, merge_contextvars

# Keys whose values never reach the output, whatever they hold.
SECRET_KEYS = frozenset(
    {
        "authorization",
        "token",
        "access_token",
        "bot_token",
        "api_token",
        "app_token",
        "auth_token",
        "signing_secret",
        "secret",
        "password",
        "temp_password",
        "temppassword",
        "passcode",
        "pass_code",
        "otp",
        "otp_code",
        "otpcode",
        "code",
        "answer",
        "client_assertion",
        "private_key",
        "cookie",
        "x-slack-signature",
        "x-twilio-signature",
        "dpop",
    }
)
REDACTED = "[redacted]"

# Token shapes that must not survive even inside free text (an exception message, a URL).
_SECRET_PATTERNS = [
    re.compile(r"xox[abposr]-[0-9A-Za-z-]+"),
    re.compile(r"xapp-[0-9A-Za-z-]+"),
    re.compile(r"(?i)(SSWS|Bearer|DPoP|Basic)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
]
# The userinfo of a URL (``nats://user:password@host``, ``nats://TOKEN@host``).
_USERINFO = re.compile(r"(?<=://)[^/\s@]+@")


def redact_url(url: str) -> str:
    """``url`` (or a comma list of URLs) without userinfo: what a log line, an error or ``check`` may show.

    >>> redact_url("nats://svc:s3cret@nats-1:4222,tls://tok@nats-2:4222")
    'nats://[redacted]@nats-1:4222,tls://[redacted]@nats-2:4222'
    """
    return _USERINFO.sub(f"{REDACTED}@", url)


def _scrub_text(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(REDACTED, text)
    text = redact_url(text)
    return text if text.isascii() else _writable(text)


def _writable(text: str) -> str:
    """``text`` with what UTF-8 cannot hold (undecodable header bytes arrive as lone surrogates) escaped,
    so that the JSON renderer can always write the line (instead of stdlib's "--- Logging error ---")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _scrub(value: Any, depth: int = 0) -> Any:
    if depth > 4:
        return value
    if isinstance(value, str):
        return _scrub_text(value)
    if isinstance(value, Mapping):
        return {k: (REDACTED if str(k).lower() in SECRET_KEYS else _scrub(v, depth + 1)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v, depth + 1) for v in value]
    return value


def redact_secrets(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask secret keys (at any nesting level) and token-shaped substrings in every value."""
    for key in list(event_dict.keys()):
        if key.lower() in SECRET_KEYS:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def bind_correlation(**ids: Any) -> None:
    """Bind correlation ids (``case_id``, ``event_id`` …) for the current unit of work."""
    bind_contextvars(**{k: v for k, v in ids.items() if v is not None})


def new_unit_of_work(**ids: Any) -> None:
    """Start a new request/message: forget the previous context, bind the new ids."""
    clear_contextvars()
    bind_correlation(**ids)


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure_logging(level: str = "INFO", fmt: str = "auto", stream: Any = None) -> None:
    """Configure structlog and the stdlib root logger (aiohttp, nats) to render through one pipeline."""
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared_processors: list[Any] = [
        merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        # filter_by_level first: a call below the level is dropped before any processor runs (the
        # stdlib logger would drop it anyway, after the timestamp and the context were built).
        processors=[
            structlog.stdlib.filter_by_level,
            *shared_processors[:-2],
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared_processors,
        processors=[
            structlog.processors.format_exc_info,
            redact_secrets,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_helpdesk", False):
            root.removeHandler(old)
    handler._helpdesk = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Third-party chatter stays at WARNING unless asked for.
    for noisy in ("aiohttp.access", "nats", "httpx", "httpcore", "slack_sdk"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str | None = None) -> Any:
    return structlog.stdlib.get_logger(name)
