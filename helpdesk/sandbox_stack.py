"""Everything at once against the sandbox: NATS, the fakes of Slack, Okta and Twilio, all four services.

Used by ``helpdesk demo``, the end-to-end tests and the benchmarks — the same wiring as production,
only the base URLs point at local fakes.

    async with SandboxStack() as stack:
        agent = stack.agent()                 # plays Slack's side of the wire, signed like Slack
        await agent.slash_command("alice")
        view = await stack.next_view(...)
"""

from __future__ import annotations

import secrets
from types import TracebackType
from typing import Any

from helpdesk.runner import ALL, ServiceGroup
from sandbox.jira import FakeJira
from sandbox.okta import FakeOkta
from sandbox.servicenow import FakeServiceNow
from sandbox.slack import APPROVALS_CHANNEL_ID, AUDIT_CHANNEL_ID, SECURITY_CHANNEL_ID, FakeSlack
from sandbox.telephony import FakeTwilio
from shared.natsserver import EmbeddedNats, free_port
from shared.observability import OpsEndpoint
from shared.settings import Settings

# Slack's published example secret: the demo signs its requests like Slack with it.
DEMO_SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
DEMO_HOOK_AUTH = "Basic ZGVtbzpzYW5kYm94LWhvb2stc2VjcmV0"
DEMO_FROM = "+15005550006"


class SandboxStack:
    """Start order: NATS, fakes, services; stop in reverse. ``nats_url`` reuses a running server."""

    def __init__(
        self,
        nats_url: str | None = None,
        prefix: str = "",
        services: list[str] | None = None,
        **overrides: Any,
    ) -> None:
        self._nats_url = nats_url
        self._prefix = prefix
        self._names = [*ALL, "audit-sink"] if services is None else services
        self._overrides = overrides
        self.nats: EmbeddedNats | None = None
        self.okta = FakeOkta.with_demo_data()
        self.slack = FakeSlack()
        self.twilio = FakeTwilio()
        self.fallback = FakeTwilio()
        # Tickets the demo's cases name: a ServiceNow incident and a Jira issue, for the audit sink's notes.
        self.servicenow = FakeServiceNow()
        self.servicenow.add_record("INC0012345", "Caller locked out of their laptop")
        self.jira = FakeJira(issues=("HELP-42",))
        self.group: ServiceGroup | None = None
        self.ops: OpsEndpoint | None = None
        self.settings: Settings | None = None

    @property
    def gateway_url(self) -> str:
        assert self.settings is not None
        return f"http://{self.settings.host}:{self.settings.gateway_port}"

    @property
    def hook_url(self) -> str:
        assert self.settings is not None
        return f"http://{self.settings.host}:{self.settings.telephony_hook_port}"

    async def start(self) -> None:
        if self._nats_url is None:
            self.nats = EmbeddedNats()
            self._nats_url = await self.nats.start()
        okta_url = await self.okta.start()
        slack_url = await self.slack.start()
        twilio_url = await self.twilio.start()
        fallback_url = await self.fallback.start()
        servicenow_url = await self.servicenow.start()
        jira_url = await self.jira.start()
        values: dict[str, Any] = {
            "nats_url": self._nats_url,
            "nats_prefix": self._prefix,
            "slack_signing_secret": DEMO_SIGNING_SECRET,
            "slack_bot_token": self.slack.bot_token,
            "slack_api_url": f"{slack_url}/api/",
            "slack_audit_channel": AUDIT_CHANNEL_ID,
            "slack_approvals_channel": APPROVALS_CHANNEL_ID,
            "slack_security_channel": SECURITY_CHANNEL_ID,
            "okta_org_url": okta_url,
            "okta_api_token": self.okta.api_token,
            "okta_protected_groups": ["Admins"],
            "okta_verify_attributes": ["employeeNumber"],
            "case_token_secret": secrets.token_urlsafe(32),
            "telephony_hook_auth": DEMO_HOOK_AUTH,
            "telephony_provider_url": twilio_url,
            "telephony_account_sid": self.twilio.account_sid,
            "telephony_auth_token": self.twilio.auth_token,
            "telephony_from": DEMO_FROM,
            "telephony_fallback_url": fallback_url,
            "telephony_fallback_account_sid": self.fallback.account_sid,
            "telephony_fallback_auth_token": self.fallback.auth_token,
            "telephony_fallback_from": DEMO_FROM,
            "host": "127.0.0.1",
            "gateway_port": free_port(),
            "telephony_hook_port": free_port(),
            "push_poll_interval": 0.5,
            "servicenow_url": servicenow_url,
            "servicenow_user": self.servicenow.user,
            "servicenow_password": self.servicenow.password,
            "jira_url": jira_url,
            "jira_email": self.jira.email,
            "jira_api_token": self.jira.api_token,
        }
        values.update(self._overrides)
        self.settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
        # METRICS_PORT is served by an OpsEndpoint beside the group, as `helpdesk <service>` does.
        self.group = ServiceGroup(self.settings.model_copy(update={"metrics_port": None}), self._names)
        if self.settings.metrics_port is not None:
            self.ops = OpsEndpoint(self.group, self.settings.host, self.settings.metrics_port)
            await self.ops.start()
        await self.group.start()

    async def stop(self) -> None:
        if self.group is not None:
            await self.group.stop()
            self.group = None
        if self.ops is not None:
            await self.ops.stop()
            self.ops = None
        for fake in (self.jira, self.servicenow, self.fallback, self.twilio, self.slack, self.okta):
            await fake.stop()
        if self.nats is not None:
            await self.nats.stop()
            self.nats.cleanup()
            self.nats = None

    def agent(self, user_id: str | None = None) -> Any:
        from sandbox.slack import AGENT_USER_ID
        from sandbox.slack_agent import SlackAgent

        return SlackAgent(self.gateway_url, DEMO_SIGNING_SECRET, self.slack, user_id=user_id or AGENT_USER_ID)

    async def __aenter__(self) -> SandboxStack:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
