"""`helpdesk demo` is the front door: it must keep running every flow, end to end, with no secret logged."""

import io
import re

from helpdesk.demo import run_demo


async def test_demo_runs_every_scene_without_leaking_a_secret() -> None:
    """The demo completes all scenes against the sandbox and finds no secret in the services' logs."""
    out = io.StringIO()
    code = await run_demo(out=out)
    transcript = out.getvalue()
    assert code == 0, transcript[-3000:]
    scenes = (
        "1. Okta Verify push",
        "2. SMS code",
        "3. Guards",
        "4. Assurance",
        "5. Slack wherever the agent is",
        "6. Okta's telephony",
        "7. The audit",
    )
    for scene in scenes:
        assert scene in transcript
    # the assurance scene: refused server-side, approved by another agent, used once, disowned by the user
    assert "refused before any Okta call" in transcript and "needs a strong factor" in transcript
    assert "Approved and used by <@U0AGENT02>" in transcript
    assert "DELETE /api/v1/users/00ualice000000000001/sessions?oauthTokens=true" in transcript
    assert "A user reported: this wasn't me" in transcript
    # Slack reach: `/helpdesk ali` offers both users, a DM opens a case on bob, a workflow step completes
    assert "several users match “ali”" in transcript
    assert "bob already picked" in transcript
    assert "functions.completeSuccess, outputs: {'verified': True" in transcript
    # the tickets get their notes from the audit sink, and `helpdesk audit` lists the cases
    assert "Jira comment on HELP-42" in transcript and "ServiceNow work note on INC0012345" in transcript
    assert "helpdesk audit --action case.action" in transcript and "case.action  success" in transcript
    assert "straight on the user search" in transcript  # the second case: the agent was authorized a moment ago
    assert "CALLER VERIFIED" in transcript
    assert "TEMPORARY PASSWORD" in transcript
    assert "response_action=update" in transcript
    assert re.search(r"SUCCESSFUL via TWILIO, transactionId SM[0-9a-f]{32}", transcript)
    assert "secrets found in them: none" in transcript
