"""The NATS permissions of each service: one user per service, allowed only the subjects it needs.

Read from the code (streams, durables, buckets, request/reply subjects), so the shipped
``deploy/nats/nats-server.conf`` and ``deploy/nats/helm-values.yaml`` can be checked against it
(tests/test_nats_security.py), and an install with a ``NATS_PREFIX`` can render its own::

    python -m helpdesk.natsauth                 # nats-server.conf for NATS_PREFIX unset
    python -m helpdesk.natsauth --prefix acme   # the same for NATS_PREFIX=acme

Who declares what (deploy/nats/README.md): a service creates and updates the streams it publishes
into (``helpdesk.runner.OWNED_STREAMS``), the KV buckets it uses and the durable consumers it reads
from — nothing else. Each service's replies and pulled messages arrive under ``_INBOX.<service>.``
(``shared.bus.connect_options``), so no user can read another's inbox.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field

from helpdesk.runner import OWNED_STREAMS
from services.audit_sink.app import TICKETS_DURABLE, WEBHOOK_DURABLE
from services.audit_sink.handlers import BUCKET as SINK_BUCKET
from services.okta_worker.app import CMD_DURABLE, POLL_DURABLE
from services.okta_worker.handlers import LIMITS_BUCKET as CHALLENGE_LIMITS
from services.okta_worker.pacer import RATE_BUCKET
from services.okta_worker.risk import RISK_BUCKET
from services.okta_worker.store import AGENTS_BUCKET, CASES_BUCKET
from services.slack_responder.app import AUDIT_DURABLE, CASE_DURABLE, NOTIFY_DURABLE
from services.slack_responder.audit import THREADS_BUCKET
from services.slack_responder.notices import NOTICES_BUCKET
from services.slack_responder.store import VIEWS_BUCKET
from services.telephony_hook.app import EVENTS_BUCKET
from services.telephony_hook.app import LIMITS_BUCKET as TELEPHONY_LIMITS
from shared.bus import AUDIT_STREAM, CASE_STREAM, CMD_STREAM, INBOX_ROOT, JOB_STREAM, JS_API, NOTIFY_STREAM, StreamSpec
from shared.messages import LookupSlackUser, SearchUsers, ShowTempPassword, TicketNoteFailed

OPS_USER = "ops"
_NAME_OK = re.compile(r"[^A-Za-z0-9_-]")


@dataclass
class Permissions:
    """What one NATS user may publish and subscribe to; ``responses``: may answer requests it receives."""

    publish: list[str] = field(default_factory=list)
    subscribe: list[str] = field(default_factory=list)
    responses: bool = False


class Names:
    """Subjects, streams and buckets as the bus names them under ``prefix`` (shared/bus.py)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix.strip(".")

    def subject(self, subject: str) -> str:
        return f"{self.prefix}.{subject}" if self.prefix else subject

    def stream(self, spec: StreamSpec | str) -> str:
        name = spec if isinstance(spec, str) else spec.name
        return _NAME_OK.sub("_", f"{self.prefix}_{name}") if self.prefix else name

    def bucket(self, name: str) -> str:
        return self.stream(name)

    def inbox(self, service: str) -> list[str]:
        return [f"{INBOX_ROOT}.{_NAME_OK.sub('_', service)}.>"]

    def owns_stream(self, spec: StreamSpec) -> list[str]:
        """Create, update and look up a stream the service publishes into."""
        return [f"{JS_API}.STREAM.{op}.{self.stream(spec)}" for op in ("INFO", "CREATE", "UPDATE")]

    def consumes(self, spec: StreamSpec, durable: str) -> list[str]:
        """Declare its durable consumer, pull from it, ack/nak/term what it got."""
        stream = self.stream(spec)
        return [
            f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
            f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
            f"$JS.ACK.{stream}.{durable}.>",
        ]

    def bucket_rw(self, name: str) -> list[str]:
        """Create (and switch to direct reads), read directly, write, compare-and-swap, delete."""
        stream = f"KV_{self.bucket(name)}"
        return [
            *(f"{JS_API}.STREAM.{op}.{stream}" for op in ("INFO", "CREATE", "UPDATE")),
            f"{JS_API}.DIRECT.GET.{stream}.>",
            f"$KV.{self.bucket(name)}.>",
        ]

    def bucket_watch(self, name: str) -> list[str]:
        """A watch on a key: an ordered push consumer, its flow control."""
        stream = f"KV_{self.bucket(name)}"
        return [
            f"{JS_API}.CONSUMER.CREATE.{stream}",
            f"{JS_API}.CONSUMER.CREATE.{stream}.>",
            f"{JS_API}.CONSUMER.INFO.{stream}.*",
            f"{JS_API}.CONSUMER.DELETE.{stream}.*",
            f"$JS.FC.{stream}.>",
        ]


def permissions(prefix: str = "") -> dict[str, Permissions]:
    """The NATS user of each service (and of ops), for ``NATS_PREFIX`` = ``prefix``."""
    n = Names(prefix)

    def owned(service: str) -> list[str]:
        return [s for spec in OWNED_STREAMS[service] for s in n.owns_stream(spec)]

    gateway = Permissions(
        publish=[
            n.subject(CMD_STREAM.subjects[0]),  # the commands
            n.subject(SearchUsers.SUBJECT),  # the options menu's user search (request)
            *owned("gateway"),
        ],
        subscribe=n.inbox("gateway"),
    )
    worker = Permissions(
        publish=[
            n.subject(JOB_STREAM.subjects[0]),
            n.subject(CASE_STREAM.subjects[0]),
            n.subject(NOTIFY_STREAM.subjects[0]),
            n.subject("audit.case.>"),
            n.subject("audit.security.>"),
            n.subject(LookupSlackUser.SUBJECT),  # requests to the responder
            n.subject(ShowTempPassword.SUBJECT),
            *owned("okta-worker"),
            *n.consumes(CMD_STREAM, CMD_DURABLE),
            *n.consumes(JOB_STREAM, POLL_DURABLE),
            *(
                s
                for b in (CASES_BUCKET, AGENTS_BUCKET, RATE_BUCKET, RISK_BUCKET, CHALLENGE_LIMITS)
                for s in n.bucket_rw(b)
            ),
        ],
        subscribe=[n.subject(SearchUsers.SUBJECT), *n.inbox("okta-worker")],
        responses=True,
    )
    responder = Permissions(
        publish=[
            *n.consumes(CASE_STREAM, CASE_DURABLE),
            *n.consumes(NOTIFY_STREAM, NOTIFY_DURABLE),
            *n.consumes(AUDIT_STREAM, AUDIT_DURABLE),
            *(s for b in (VIEWS_BUCKET, NOTICES_BUCKET, THREADS_BUCKET) for s in n.bucket_rw(b)),
        ],
        subscribe=[
            n.subject(LookupSlackUser.SUBJECT),
            n.subject(ShowTempPassword.SUBJECT),
            *n.inbox("slack-responder"),
        ],
        responses=True,
    )
    hook = Permissions(
        publish=[
            n.subject("audit.telephony.>"),
            *owned("telephony-hook"),
            *n.bucket_rw(EVENTS_BUCKET),
            *n.bucket_watch(EVENTS_BUCKET),
            *n.bucket_rw(TELEPHONY_LIMITS),
        ],
        subscribe=n.inbox("telephony-hook"),
    )
    sink = Permissions(
        publish=[
            n.subject("audit.case.>"),  # ticket.note_failed
            n.subject(TicketNoteFailed.SUBJECT),  # … and the agent's modal says so
            *owned("audit-sink"),
            *n.consumes(AUDIT_STREAM, TICKETS_DURABLE),
            *n.consumes(AUDIT_STREAM, WEBHOOK_DURABLE),
            *n.bucket_rw(SINK_BUCKET),
        ],
        subscribe=n.inbox("audit-sink"),
    )
    # `helpdesk check` and an operator's `nats` CLI: the JetStream API (streams, consumers, buckets),
    # never a service's subjects.
    ops = Permissions(publish=[f"{JS_API}.>"], subscribe=[f"{INBOX_ROOT}.>"])
    return {
        "gateway": gateway,
        "okta-worker": worker,
        "slack-responder": responder,
        "telephony-hook": hook,
        "audit-sink": sink,
        "ops": ops,
    }


def password_variable(user: str) -> str:
    """The environment variable that holds ``user``'s password on the nats-server."""
    return "NATS_" + _NAME_OK.sub("_", user).replace("-", "_").upper() + "_PASSWORD"


def _list(items: list[str], indent: str) -> str:
    return "[\n" + "".join(f'{indent}  "{item}"\n' for item in items) + f"{indent}]"


CONF_HEADER = """\
# Helpdesk Verify: nats-server configuration, one NATS user per service (least privilege).
#
# Generated by `python -m helpdesk.natsauth{args}` from the subjects, streams, durables and buckets
# in the code; tests/test_nats_security.py starts a nats-server with this very file and checks it.
# NATS_PREFIX: {prefix_note}
# Passwords come from the server's environment ($NATS_<USER>_PASSWORD, letters and digits), or
# replace them with bcrypt hashes in quotes (`nats server passwd`). See deploy/nats/README.md.

port: 4222
http_port: 8222  # /healthz, /jsz (KEDA), /varz: keep it off the public network

jetstream {{
  store_dir: "/data/jetstream"
  max_memory_store: 1GB  # the command and snapshot streams and the responder's views live in memory
  max_file_store: 10GB
}}

# TLS for every client, with a client certificate (mutual TLS): NATS_TLS_CA, NATS_TLS_CERT and
# NATS_TLS_KEY on each service. Drop `verify` to accept clients without a certificate.
tls {{
  ca_file: "/etc/nats/tls/ca.crt"
  cert_file: "/etc/nats/tls/tls.crt"
  key_file: "/etc/nats/tls/tls.key"
  verify: true
  timeout: 2
}}

authorization {{
  users: [
"""


def render_conf(prefix: str = "") -> str:
    """deploy/nats/nats-server.conf for ``prefix``."""
    args = f" --prefix {prefix}" if prefix else ""
    note = f'"{prefix}" (subjects "{prefix}.…", streams and buckets "{prefix}_…")' if prefix else "unset (empty)"
    out = [CONF_HEADER.format(args=args, prefix_note=note)]
    for user, perms in permissions(prefix).items():
        out.append(f'    {{\n      user: "{user}"\n      password: ${password_variable(user)}\n      permissions: {{\n')
        out.append(f"        publish: {{ allow: {_list(perms.publish, '        ')} }}\n")
        out.append(f"        subscribe: {{ allow: {_list(perms.subscribe, '        ')} }}\n")
        if perms.responses:
            out.append("        allow_responses: true\n")
        out.append("      }\n    }\n")
    out.append("  ]\n}\n")
    return "".join(out)


def helm_users(prefix: str = "") -> list[dict[str, object]]:
    """``config.merge.authorization.users`` of the NATS Helm chart values (passwords from the env)."""
    users: list[dict[str, object]] = []
    for user, perms in permissions(prefix).items():
        allowed: dict[str, object] = {
            "publish": {"allow": perms.publish},
            "subscribe": {"allow": perms.subscribe},
        }
        if perms.responses:
            allowed["allow_responses"] = True
        users.append({"user": user, "password": f"<< ${password_variable(user)} >>", "permissions": allowed})
    return users


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpdesk.natsauth", description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", default="", help="the NATS_PREFIX of the install (default: none)")
    args = parser.parse_args(argv)
    print(render_conf(args.prefix), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
