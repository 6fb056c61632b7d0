"""The gateway's small pure parts: code checks, case-token reading, the options cache, menus and views."""

from __future__ import annotations

import pytest

from services.gateway import views
from services.gateway.dispatch import OptionsCache
from services.gateway.handlers import case_token_of, check_answer, check_code
from shared.messages import UserOption
from shared.ui import CALLBACK_CASE


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("raw", "code"),
    [("123456", "123456"), (" 123 456 ", "123456"), ("12345678", "12345678"), ("1234\t5678", "12345678")],
)
def test_well_formed_codes(raw: str, code: str) -> None:
    """Digits in the configured range pass, with the spaces a caller reads between groups removed."""
    assert check_code(raw, 6, 8) == (code, None)


@pytest.mark.parametrize("raw", [None, "", "   ", "12345", "123456789", "12345a", "１２３４５６", "12-3456", "+123456"])
def test_malformed_codes(raw: str | None) -> None:
    """Anything else is refused with a reason for the agent."""
    code, problem = check_code(raw, 6, 8)
    assert code is None and problem


def test_fixed_length_codes_say_the_length() -> None:
    """With min = max the error names the one length."""
    assert check_code("123", 6, 6) == (None, "The code has 6 digits.")


def test_answers_are_trimmed_and_bounded() -> None:
    """Free-text answers are 1..200 characters after trimming."""
    assert check_answer("  blue  ") == ("blue", None)
    assert check_answer("   ")[0] is None
    assert check_answer("x" * 201)[0] is None


def test_case_token_is_read_raw_or_from_json() -> None:
    """``private_metadata`` is the token itself, or a JSON object holding ``case_token``."""
    assert case_token_of("eyJabc.def.ghi") == "eyJabc.def.ghi"
    assert case_token_of('{"case_token": "eyJabc.def.ghi", "x": 1}') == "eyJabc.def.ghi"
    assert case_token_of('{"other": 1}') is None
    assert case_token_of("{broken") is None
    assert case_token_of("") is None


def test_options_cache_expires_entries() -> None:
    """A cached menu is served until its TTL passes, keyed by agent and case-insensitive query."""
    clock = Clock()
    cache = OptionsCache(ttl=10, clock=clock)
    cache.put("U1", "Alice", {"options": []})
    assert cache.get("U1", "alice") == {"options": []}
    assert cache.get("U2", "alice") is None
    clock.now += 10.5
    assert cache.get("U1", "alice") is None
    assert len(cache) == 0


def test_options_cache_is_bounded_least_recently_used_first() -> None:
    """Past ``max_entries`` the least recently used menu is dropped."""
    cache = OptionsCache(ttl=60, max_entries=2, clock=Clock())
    cache.put("U1", "a", {"options": ["a"]})
    cache.put("U1", "b", {"options": ["b"]})
    assert cache.get("U1", "a") is not None  # "a" is now the most recent
    cache.put("U1", "c", {"options": ["c"]})
    assert len(cache) == 2
    assert cache.get("U1", "b") is None
    assert cache.get("U1", "a") is not None and cache.get("U1", "c") is not None


def test_options_payload_respects_slacks_limits() -> None:
    """≤ 100 options, texts ≤ 75 characters (ellipsis), values over 150 characters or empty dropped."""
    options = [UserOption(id="x" * 151, label="too long a value"), UserOption(id="", label="no value")]
    options += [UserOption(id=f"00u{i}", label="L" * 80) for i in range(150)]
    menu = views.options_payload(options)["options"]
    assert len(menu) == 100
    assert menu[0]["value"] == "00u0"
    assert menu[0]["text"]["text"] == "L" * 74 + "…"


def test_checking_view_keeps_the_case() -> None:
    """The checking view keeps private_metadata, title and notify_on_close, and has no submit button."""
    submitted = {
        "private_metadata": "tok",
        "title": {"type": "plain_text", "text": "Verify caller"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "notify_on_close": True,
        "submit": {"type": "plain_text", "text": "Verify"},
    }
    view = views.checking_view(submitted)
    assert view["callback_id"] == CALLBACK_CASE
    assert view["private_metadata"] == "tok"
    assert view["notify_on_close"] is True
    assert view["title"]["text"] == "Verify caller" and view["close"]["text"] == "Cancel"
    assert "submit" not in view


def test_help_text_names_the_configured_command() -> None:
    """The help answer is ephemeral and names the command this install uses."""
    message = views.help_message("/verify")
    assert message["response_type"] == "ephemeral"
    assert "/verify" in message["text"]
