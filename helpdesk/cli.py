"""``helpdesk`` — run Helpdesk Verify, one service of it, the sandbox demo, or a setup helper.

helpdesk run                 # all four services in one process (embedded NATS if NATS_URL is unset)
helpdesk gateway             # one service, for containers (also okta-worker, slack-responder, telephony-hook)
helpdesk demo                # everything against the sandbox fakes, no credentials, prints a transcript
helpdesk manifest --base-url https://helpdesk.example.com
helpdesk check               # pings NATS, Slack, Okta and the SMS provider with the configured settings
helpdesk policy              # the effective assurance policy (HELPDESK_POLICY, or the defaults)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from shared.logging import configure_logging, get_logger
from shared.settings import MissingSetting, Settings

log = get_logger(__name__)
T = TypeVar("T")

SERVICE_COMMANDS = {
    "run": "all four services in one process",
    "gateway": "Slack ingress (HTTP)",
    "okta-worker": "the verification case engine and every Okta call",
    "slack-responder": "every Slack Web API call",
    "telephony-hook": "Okta's telephony inline hook (HTTP)",
}


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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in SERVICE_COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text)
    demo = sub.add_parser("demo", help="the whole product against the sandbox: no credentials needed")
    demo.add_argument("--verbose", action="store_true", help="also print the services' log lines")
    manifest = sub.add_parser("manifest", help="print the Slack app manifest")
    manifest.add_argument("--base-url", help="public HTTPS origin of the gateway, e.g. https://helpdesk.example.com")
    manifest.add_argument("--socket-mode", action="store_true", help="no public URL: Socket Mode with SLACK_APP_TOKEN")
    sub.add_parser("check", help="ping every configured dependency")
    policy = sub.add_parser(
        "policy", help="print the effective assurance policy: which proof each action needs (HELPDESK_POLICY)"
    )
    policy.add_argument(
        "--file", action="store_true", help="print the policy file itself (the defaults: a file to start from)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "manifest":
        from helpdesk.manifest import build_manifest

        if not args.base_url and not args.socket_mode:
            print("helpdesk manifest: give --base-url URL or --socket-mode", file=sys.stderr)
            return 2
        print(json.dumps(build_manifest(args.base_url, args.socket_mode), indent=2))
        return 0
    try:
        settings = Settings()
    except Exception as exc:  # pydantic's ValidationError names the variable and the problem
        print(f"helpdesk: invalid settings: {exc}", file=sys.stderr)
        return 2
    if args.command == "policy":
        from services.okta_worker.policy import PolicyError, load_policy

        try:
            policy = load_policy(settings.helpdesk_policy, settings.case_verified_ttl)
        except PolicyError as exc:
            print(f"helpdesk: {exc}", file=sys.stderr)
            return 2
        print(policy.text if args.file else policy.describe())
        return 0
    if args.command == "demo":
        from helpdesk.demo import run_demo

        return run_async(run_demo(verbose=args.verbose))
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "check":
        from helpdesk.check import run_check

        return run_async(run_check(settings))
    from helpdesk.runner import ServiceGroup, service_names
    from services.okta_worker.authz import GroupConfigError
    from services.okta_worker.policy import PolicyError

    try:
        run_async(ServiceGroup(settings, service_names(args.command)).run_until_signal())
    except (MissingSetting, PolicyError, GroupConfigError) as exc:
        print(f"helpdesk: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
