"""The command line: an embedded NATS only for `run` and `demo`; `run` starts what is configured."""

from __future__ import annotations

import pytest

from helpdesk.cli import build_parser, main
from helpdesk.runner import ServiceGroup
from helpdesk.sandbox_stack import SandboxStack

SERVICES = ["gateway", "okta-worker", "slack-responder", "telephony-hook"]


@pytest.mark.parametrize("command", SERVICES)
def test_a_single_service_without_nats_url_stops_at_once(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    """`helpdesk <service>` never starts its own nats-server: without NATS_URL it exits 2 with one line."""
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.delenv("NATS_URL", raising=False)
    assert main([command]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NATS_URL" in err[0] and "embedded" in err[0]


def test_help_says_where_the_embedded_nats_runs() -> None:
    """`run` and `demo` say they start an embedded nats-server; a single service says it needs NATS_URL."""
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    choices = sub.choices  # type: ignore[attr-defined]
    assert "embedded nats-server" in choices["run"].description
    assert "embedded nats-server" in choices["demo"].description
    assert "NATS_URL (required" in choices["gateway"].description


async def test_run_starts_the_configured_services_and_names_the_skipped(nats_url: str, prefix: str) -> None:
    """Without telephony settings `helpdesk run` starts the other three and says why the hook is not
    running; a single service missing a setting still refuses to start."""
    async with SandboxStack(nats_url=nats_url, prefix=prefix, services=[]) as stack:
        assert stack.settings is not None
        no_telephony = stack.settings.model_copy(
            update={"telephony_hook_auth": None, "telephony_account_sid": None, "telephony_auth_token": None}
        )
        group = ServiceGroup(no_telephony, SERVICES, embedded=False, optional=True)
        await group.start()
        try:
            assert sorted(n for n, _ in group.services) == ["gateway", "okta-worker", "slack-responder"]
            assert list(group.skipped) == ["telephony-hook"]
            assert "TELEPHONY" in str(group.skipped["telephony-hook"])
        finally:
            await group.stop()
        from shared.settings import MissingSetting

        with pytest.raises(MissingSetting):
            await ServiceGroup(no_telephony, ["telephony-hook"], embedded=False).start()
