"""Answers to a DM, an @mention or a Workflow Builder step, and the step's completion.

    await offers.post(StartOffer(...))          # "Verify <name>" buttons: in the DM, or ephemeral in the channel
    await offers.complete(WorkflowResult(...))  # functions.completeSuccess / completeError

A message carries no ``trigger_id``: the answer holds a button whose click does, and opens the modal with
the user already picked (``ui.ACTION_START_FOR``, value ``ui.start_value``).
"""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import ActionsBlock, Block, ContextBlock, SectionBlock

from services.slack_responder.slack_client import SlackClient, SlackError, SlackRateLimited, SlackRejected
from services.slack_responder.views import _button, clip, esc, md
from shared import ui
from shared.bus import RetryLater
from shared.logging import get_logger
from shared.messages import StartOffer, WorkflowResult

log = get_logger(__name__)

MAX_BUTTONS = 5


def offer_blocks(offer: StartOffer) -> tuple[str, list[dict[str, Any]]]:
    """The text and blocks of an answer: what was understood, and one "Verify <name>" button per match."""
    verb = "Start verification" if offer.function_execution_id else "Verify"
    blocks: list[Block] = [SectionBlock(text=md(esc(clip(offer.text, 2900))))]
    for n, match in enumerate(offer.matches[:MAX_BUTTONS]):
        value = ui.start_value(match.id, offer.ticket, offer.function_execution_id)
        name = match.label.split(" — ")[0]
        blocks.append(
            SectionBlock(
                text=md(esc(clip(match.label, 300))),
                accessory=_button(f"{verb}: {clip(name, 40)}", ui.ACTION_START_FOR, value=value, style="primary"),
                block_id=f"start_{n}",
            )
        )
    if offer.ticket:
        blocks.append(ContextBlock(elements=[md(f":ticket: Ticket *{esc(offer.ticket)}*")]))
    if not offer.matches:
        blocks.append(ActionsBlock(elements=[_button("Open Helpdesk Verify", ui.ACTION_START)]))
    return clip(offer.text, 300), [b.to_dict() for b in blocks]


class Offers:
    def __init__(self, slack: SlackClient) -> None:
        self.slack = slack

    async def post(self, offer: StartOffer) -> None:
        """In the DM it came from (or a DM to the workflow's runner), else ephemeral in the channel."""
        text, blocks = offer_blocks(offer)
        try:
            if offer.in_dm or offer.channel_id is None:
                channel = offer.channel_id or await self.slack.open_dm(offer.agent.user_id)
                await self.slack.post_message(channel, text, blocks, thread_ts=offer.thread_ts)
            else:
                await self.slack.post_ephemeral(offer.channel_id, offer.agent.user_id, text, blocks)
        except SlackRateLimited as exc:
            raise RetryLater(max(1.0, exc.retry_after), "slack rate limited") from None
        except SlackRejected as exc:
            log.warning("offer.rejected", error=exc.error)
        except SlackError as exc:
            raise RetryLater(2.0, type(exc).__name__) from None

    async def complete(self, result: WorkflowResult) -> None:
        """Finish the Workflow Builder step: the outputs the manifest declares, or an error."""
        try:
            if result.verified:
                outputs = {
                    "verified": True,
                    "method": result.method or "",
                    "assurance": result.assurance or "",
                    "verified_at": int(result.verified_at.timestamp()) if result.verified_at else 0,
                    "case_id": result.case_id or "",
                }
                await self.slack.complete_function(result.function_execution_id, outputs)
            else:
                await self.slack.complete_function(result.function_execution_id, error=result.error or "not verified")
        except SlackRateLimited as exc:
            raise RetryLater(max(1.0, exc.retry_after), "slack rate limited") from None
        except SlackRejected as exc:  # e.g. execution_not_in_running_state: the workflow moved on
            log.warning("workflow.complete_rejected", error=exc.error)
        except SlackError as exc:
            raise RetryLater(2.0, type(exc).__name__) from None
