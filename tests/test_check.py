"""`helpdesk check` pings every dependency with the configured settings."""

import pytest

from helpdesk.check import run_check
from helpdesk.sandbox_stack import SandboxStack


async def test_check_passes_against_the_sandbox(nats_url: str, prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    """With good settings every dependency answers: NATS, Slack (auth.test), Okta, the SMS provider."""
    async with SandboxStack(nats_url=nats_url, prefix=prefix, services=[]) as stack:
        assert stack.settings is not None
        assert await run_check(stack.settings) == 0
    out = capsys.readouterr().out
    for name in ("nats", "slack", "okta", "telephony"):
        assert f"✓ {name}" in out


async def test_check_names_what_is_wrong(nats_url: str, prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Wrong credentials fail the check with a reason per dependency, and never print the secret."""
    async with SandboxStack(nats_url=nats_url, prefix=prefix, services=[]) as stack:
        assert stack.settings is not None
        bad = stack.settings.model_copy(
            update={
                "slack_bot_token": stack.settings.slack_bot_token.__class__("xoxb-wrong-0000000000"),
                "okta_api_token": stack.settings.okta_api_token.__class__("00wrong-okta-token-000000"),
                "telephony_auth_token": stack.settings.telephony_auth_token.__class__("0" * 32),
            }
        )
        assert await run_check(bad) == 1
    out = capsys.readouterr().out
    assert "✓ nats" in out and "✗ slack" in out and "✗ okta" in out and "✗ telephony" in out
    assert "invalid_auth" in out
    for secret in ("xoxb-wrong-0000000000", "00wrong-okta-token-000000", "0" * 32):
        assert secret not in out
