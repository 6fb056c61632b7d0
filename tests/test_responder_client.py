"""The responder's Slack client: retry handlers, and every failure mapped into its small error tree."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)

from sandbox.slack import AGENT_USER_ID, FakeSlack
from services.slack_responder.slack_client import (
    HashConflict,
    SlackClient,
    SlackError,
    SlackRateLimited,
    SlackRejected,
    SlackUnavailable,
    TriggerExpired,
    ViewGone,
)
from shared.natsserver import free_port
from shared.settings import Settings

BOT_TOKEN = "xoxb-test-token-0000"
VIEW = {
    "type": "modal",
    "title": {"type": "plain_text", "text": "Test"},
    "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}],
}


@pytest.fixture
async def client(settings: Settings, slack: FakeSlack) -> AsyncIterator[SlackClient]:
    c = SlackClient.from_settings(settings.model_copy(update={"slack_api_url": f"{slack.url}/api/"}))
    yield c
    await c.close()


async def test_rate_limit_retries_are_added_to_the_defaults(client: SlackClient) -> None:
    """The client keeps the connection-error retry handler and adds the async rate-limit one."""
    kinds = {type(h) for h in client.web.retry_handlers}
    assert {AsyncConnectionErrorRetryHandler, AsyncRateLimitErrorRetryHandler} <= kinds


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("hash_conflict", HashConflict),
        ("not_found", ViewGone),
        ("invalid_arguments", SlackRejected),
    ],
)
async def test_update_errors_are_typed(
    client: SlackClient, slack: FakeSlack, error: str, expected: type[SlackRejected]
) -> None:
    """Slack's error codes on views.update become the matching error class, carrying the code."""
    ref = await client.open_view(slack.issue_trigger(AGENT_USER_ID), VIEW)
    slack.fail_next("views.update", error=error)
    with pytest.raises(expected) as caught:
        await client.update_view(ref.view_id, VIEW, ref.hash)
    assert type(caught.value) is expected and caught.value.error == error
    assert client.status.ok is True  # Slack answered: it is up


async def test_expired_trigger_is_typed(client: SlackClient, slack: FakeSlack) -> None:
    """An expired trigger_id on views.open raises TriggerExpired."""
    trigger = slack.issue_trigger(AGENT_USER_ID)
    slack.advance(5)
    with pytest.raises(TriggerExpired) as caught:
        await client.open_view(trigger, VIEW)
    assert caught.value.error == "expired_trigger_id"


async def test_persistent_429_becomes_rate_limited(client: SlackClient, slack: FakeSlack) -> None:
    """When Slack keeps answering 429 past the built-in retries, SlackRateLimited carries Retry-After."""
    slack.rate_limit_next("users.info", retry_after=0, n=3)
    with pytest.raises(SlackRateLimited) as caught:
        await client.user_info(AGENT_USER_ID)
    assert caught.value.retry_after == 0
    assert len(slack.method_calls("users.info")) == 3
    assert client.status.ok is False and client.status.describe() == "trouble (ratelimited)"


async def test_unreachable_slack_is_unavailable_and_hides_the_token(settings: Settings) -> None:
    """A refused connection becomes SlackUnavailable; the error names the method, never the token."""
    dead = settings.model_copy(update={"slack_api_url": f"http://127.0.0.1:{free_port()}/api/"})
    client = SlackClient.from_settings(dead)
    try:
        with pytest.raises(SlackUnavailable) as caught:
            await client.user_info(AGENT_USER_ID)
    finally:
        await client.close()
    assert isinstance(caught.value, SlackError)
    assert "users.info" in str(caught.value) and BOT_TOKEN not in str(caught.value)
    assert client.status.ok is False
