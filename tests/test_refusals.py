"""A refused click is never silent: audited (a security event when tampered), and the modal says so."""

from __future__ import annotations

from typing import Any

import pytest

from services.slack_responder.views import render_refusal
from shared.bus import Bus
from shared.messages import Actor, RefusalNotice, RefusedClick, SecurityNotice, ViewRef
from shared.settings import Settings
from tests.test_worker_flows import harness

VIEW = ViewRef(view_id="V0REFUSED1", hash="h")


@pytest.mark.parametrize(("kind", "security"), [("expired", False), ("invalid", True), ("wrong_agent", True)])
async def test_the_worker_audits_a_refused_click_and_has_the_modal_say_so(
    settings: Settings, bus: Bus, kind: str, security: bool
) -> None:
    seen: list[Any] = []
    async with harness(settings, bus, slack_security_channel="C0SECURITY") as h:

        async def on_notice(msg: Any) -> None:
            subject = bus.unprefixed(msg.subject)
            if subject == SecurityNotice.SUBJECT:
                seen.append(SecurityNotice.decode_bytes(msg.data))
            elif subject == RefusalNotice.SUBJECT:
                seen.append(RefusalNotice.decode_bytes(msg.data))
            h.changed.set()

        sub = await bus.nc.subscribe(bus.subject("helpdesk.>"), cb=on_notice)
        try:
            await h.send(RefusedClick(agent=Actor(user_id="U0AGENT01"), view=VIEW, kind=kind, action_id="run_action"))
            event = await h.audit("case_token.refused", category="security" if security else "case")
            assert event.details["reason"] == kind and event.actor == "U0AGENT01"
            assert event.severity == ("alert" if security else "info")
            shown = await h.wait(lambda: next((m for m in seen if isinstance(m, RefusalNotice)), None))
            assert shown.view == VIEW and shown.kind == kind
            alerts = [m for m in seen if isinstance(m, SecurityNotice)]
            if security:
                alert = await h.wait(lambda: next((m for m in seen if isinstance(m, SecurityNotice)), None))
                assert alert.kind == "tampered" and alert.channel_id == "C0SECURITY"
            else:
                assert alerts == []
        finally:
            await sub.unsubscribe()


@pytest.mark.parametrize("kind", ["expired", "invalid", "wrong_agent", "missing"])
def test_the_refusal_modal_says_what_happened(kind: str) -> None:
    view = render_refusal(kind)
    text = str(view["blocks"])
    assert ("expired" in text) == (kind == "expired")
    assert "Nothing was changed" in text
    assert not view.get("private_metadata")  # no case: a click in it reaches nothing


async def test_a_ticket_note_that_failed_is_a_warning_in_the_case(settings: Settings, bus: Bus) -> None:
    """The audit sink gave up on a note: the agent's modal says so; the case goes on."""
    from shared.messages import TicketNoteFailed

    async with harness(settings, bus) as h:
        snap = await h.open()
        warn = TicketNoteFailed(agent=snap.agent, case_id=snap.case_id, ticket="INC0099999", reason="not_found")
        await h.send(warn)
        shown = await h.notice(snap.case_id, snap.revision)
        assert shown.notice is not None and shown.notice.level == "warning"
        assert "INC0099999" in shown.notice.text and "no such ticket" in shown.notice.text
        assert shown.state == snap.state


async def test_every_refusal_shown_to_the_agent_is_also_recorded(settings: Settings, bus: Bus) -> None:
    """A refusal without an audit event of its own (here: a factor not of this user) is case.refused."""
    from sandbox.okta_data import ALICE
    from shared.messages import ChallengeFactor

    async with harness(settings, bus) as h:
        snap = await h.select(await h.open(), ALICE)
        await h.send(h.cmd(snap, ChallengeFactor, factor_id="opfnotalices00000001"))
        shown = await h.notice(snap.case_id, snap.revision)
        assert shown.notice is not None and "not one of this user's factors" in shown.notice.text
        event = await h.audit("case.refused", snap.case_id)
        assert event.outcome == "refused" and event.details["reason"] == "refused"
        assert event.details["revision"] == shown.revision
