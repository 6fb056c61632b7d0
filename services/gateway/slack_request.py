"""Slack's HTTP requests as plain objects, and the proof that they come from Slack.

The aiohttp handler turns a request into a :class:`SlackRequest` (raw bytes + headers); the
signature is checked on those raw bytes before anything is parsed; only then are the form, the
interactivity ``payload`` or the events JSON read.

    request = await SlackRequest.read(aiohttp_request, route="commands")   # RequestTooLarge → 413
    verifier = RequestVerifier(signing_secret)
    verifier.verify(request)                                                # SignatureRejected → 401
    form = parse_form(request.body)                                         # MalformedRequest → 400

Errors, each with a short machine-readable ``reason`` (logged and counted; never the body)::

    RequestRejected            the request is refused before any of it is used
     ├── RequestTooLarge       413: the body is over MAX_BODY
     ├── SignatureRejected     401: missing or garbled headers, a timestamp outside the window,
     │                         a signature that does not match
     └── MalformedRequest      400: signed, but not in a shape Slack sends
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import orjson
from aiohttp import web
from slack_sdk.signature import Clock, SignatureVerifier

MAX_BODY = 64 * 1024  # Slack's biggest payload (a view_submission with 100 blocks) is well below
REPLAY_WINDOW = 300  # seconds either side of now, as Slack recommends
MAX_FORM_FIELDS = 64

TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
SIGNATURE_HEADER = "X-Slack-Signature"
RETRY_NUM_HEADER = "X-Slack-Retry-Num"

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


class RequestRejected(Exception):
    """Base: the request is refused before any of it is used. ``reason`` is safe to log."""

    status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RequestTooLarge(RequestRejected):
    """Raised when the body (declared or read) is over :data:`MAX_BODY`."""

    status = 413


class SignatureRejected(RequestRejected):
    """Raised when the request is not provably Slack's: headers, replay window or signature."""

    status = 401


class MalformedRequest(RequestRejected):
    """Raised when a correctly signed body is not a form, payload or JSON object Slack would send."""

    status = 400


@dataclass(frozen=True)
class SlackRequest:
    """One request from Slack as bytes and headers, before anything is trusted."""

    route: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        if value is None:
            lowered = name.lower()
            value = next((v for k, v in self.headers.items() if k.lower() == lowered), None)
        return value

    @property
    def retry_num(self) -> str | None:
        return self.header(RETRY_NUM_HEADER)

    @classmethod
    async def read(cls, request: web.Request, route: str, max_body: int = MAX_BODY) -> SlackRequest:
        """Read the raw body of an aiohttp request (``RequestTooLarge`` past ``max_body``)."""
        declared = request.content_length
        if declared is not None and declared > max_body:
            raise RequestTooLarge("body_too_large")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise RequestTooLarge("body_too_large") from None
        if len(body) > max_body:
            raise RequestTooLarge("body_too_large")
        return cls(route=route, body=body, headers=request.headers)


class RequestVerifier:
    """Slack's v0 request signature, checked with slack_sdk's ``SignatureVerifier`` on the raw body.

    The headers are screened first so that each refusal has a precise reason and nothing odd
    (non-ASCII signatures, huge or non-numeric timestamps) reaches the library, which raises on them.
    """

    def __init__(
        self,
        signing_secret: str,
        clock: Clock | None = None,
        window: int = REPLAY_WINDOW,
        previous_secret: str | None = None,
    ) -> None:
        self.clock = clock or Clock()
        self.window = window
        # While a new signing secret rolls out (SLACK_SIGNING_SECRET_PREVIOUS), either one signs.
        self._verifiers = [SignatureVerifier(s, clock=self.clock) for s in (signing_secret, previous_secret) if s]

    def __repr__(self) -> str:
        return f"RequestVerifier(window={self.window})"

    def verify(self, request: SlackRequest) -> None:
        timestamp = request.header(TIMESTAMP_HEADER)
        signature = request.header(SIGNATURE_HEADER)
        if not timestamp or not signature:
            raise SignatureRejected("missing_headers")
        if not _TIMESTAMP.fullmatch(timestamp):
            raise SignatureRejected("bad_timestamp")
        if not _SIGNATURE.fullmatch(signature):
            raise SignatureRejected("malformed_signature")
        skew = self.clock.now() - int(timestamp)
        if skew > self.window:
            raise SignatureRejected("stale_timestamp")
        if skew < -self.window:
            raise SignatureRejected("future_timestamp")
        try:
            valid = any(v.is_valid(request.body, timestamp, signature) for v in self._verifiers)
        except (ValueError, TypeError):  # a body that is not UTF-8; timestamps are screened above
            raise SignatureRejected("undecodable_body") from None
        if not valid:
            raise SignatureRejected("bad_signature")


def parse_form(body: bytes, keep: Collection[str] | None = None) -> dict[str, str]:
    """A form-encoded body as a dict (the first value of each field, like ``parse_qs(...)[k][0]``).

    Only fields that hold ``%`` or ``+`` are unquoted: most of Slack's fields are plain ids, and
    ``urllib.parse.parse_qsl`` was the largest cost of a slash command. With ``keep``, only those
    fields are returned and the others' values are never unquoted (a slash command's
    ``response_url`` was half of the unquoting); every pair still counts towards the field limit.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequest("bad_form") from None
    fields: dict[str, str] = {}
    if not text:
        return fields
    pairs = text.split("&")
    if len(pairs) > MAX_FORM_FIELDS:
        raise MalformedRequest("bad_form")
    for pair in pairs:
        if not pair:
            continue
        key, _, value = pair.partition("=")
        if "%" in key or "+" in key:
            key = unquote_plus(key)
        if keep is not None and key not in keep:
            continue
        if "%" in value or "+" in value:
            value = unquote_plus(value)
        fields.setdefault(key, value)
    return fields


def is_ssl_check(body: bytes) -> bool:
    """Slack's certificate check on a slash command URL: a form with ``ssl_check=1``."""
    if b"ssl_check=" not in body:
        return False
    try:
        return parse_form(body).get("ssl_check") == "1"
    except MalformedRequest:
        return False


def parse_payload(body: bytes) -> dict[str, Any]:
    """The JSON object in the ``payload`` form field of an interactivity or options request."""
    raw = parse_form(body).get("payload")
    if raw is None:
        raise MalformedRequest("no_payload")
    return _json_object(raw)


def parse_json(body: bytes) -> dict[str, Any]:
    """An Events API body: one JSON object."""
    return _json_object(body)


def _json_object(raw: str | bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MalformedRequest("bad_json") from None
    if not isinstance(value, dict):
        raise MalformedRequest("bad_json")
    return value
