"""The assurance policy: how strong a proof each action needs, read from one TOML file with safe defaults.

    policy = load_policy(settings.helpdesk_policy)        # PolicyError names the problem in the file
    gate = policy.gate(ActionKind.RESET_ALL_FACTORS, proofs, now, risk=case.risk, approval=case.approval)
    gate.allowed, gate.needs, gate.has, gate.missing      # what the view shows and the worker enforces

Pure: no I/O but reading the file. Each verified factor is a :class:`~shared.messages.Proof` with a level:

- **strong**: Okta Verify push with number matching, TOTP (Okta Verify, Google Authenticator), hardware
  tokens (YubiKey, RSA SecurID, Symantec VIP);
- **possession**: a code sent by SMS, voice call or email. SMS and voice reach the same phone number, so
  they are one channel ("phone"): a SIM swap takes both;
- **weak**: the security question, a profile attribute. Never enough alone: the file cannot say otherwise.

An action needs one of its ``proof`` alternatives, each a ``+``-joined list of levels met by distinct,
still valid proofs on different channels (a strong proof also meets "possession"); then an approval
when the action says ``approval = true``, or when the target's risk is high and ``[risk]`` says so.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from shared.messages import (
    ActionGate,
    ActionKind,
    ApprovalInfo,
    ApprovalStatus,
    AssuranceLevel,
    Proof,
    RiskSummary,
)

LEVEL_WORDS = {
    AssuranceLevel.STRONG: "a strong factor",
    AssuranceLevel.POSSESSION: "a possession factor",
    AssuranceLevel.WEAK: "a weak check",
}
COUNT_WORDS = {2: "two", 3: "three"}
ACTION_NAMES: dict[ActionKind, str] = {
    ActionKind.UNLOCK: "Unlock account",
    ActionKind.RESET_LINK: "Email reset link",
    ActionKind.REVOKE_SESSIONS: "Sign out everywhere",
    ActionKind.TEMP_PASSWORD: "Set temporary password",
    ActionKind.TEMP_ACCESS_CODE: "Issue temporary access code",
    ActionKind.RESET_FACTOR: "Reset one factor",
    ActionKind.RESET_ALL_FACTORS: "Reset all factors",
}

DEFAULT_POLICY = """\
# Helpdesk Verify assurance policy: which proof each action needs.
#
# Levels: strong = Okta Verify push with number matching, TOTP, hardware token;
#         possession = SMS, voice or email code (SMS and voice are one channel: the phone);
#         weak = security question, profile attribute (never enough alone).
# proof: alternatives, any one suffices; "possession+possession" = two possession factors on
#        different channels; a strong factor also counts as a possession factor.
# approval = true: a second person approves each time (four eyes).

[approvals]
approver = "agent"          # "agent": another member of the help-desk group; "manager": the target's manager
valid_minutes = 10          # a request not decided by then expires; an approval is used once

[risk]
high_needs_approval = true  # any action on a high-risk target also needs an approval
unknown_is_high = false     # the System Log could not be read: treat the risk as high?

[actions.unlock]
proof = ["possession"]

[actions.reset_link]
proof = ["possession"]

[actions.revoke_sessions]
proof = ["possession"]

[actions.temp_password]
proof = ["strong", "possession+possession"]

[actions.temp_access_code]
proof = ["strong", "possession+possession"]

[actions.reset_factor]
proof = ["strong", "possession+possession"]

[actions.reset_all_factors]
proof = ["strong"]
approval = true
"""

LEVEL_OF_FACTOR: dict[str, AssuranceLevel] = {
    "push": AssuranceLevel.STRONG,  # with number matching; without, see level_of()
    "token:software:totp": AssuranceLevel.STRONG,
    "token:hardware": AssuranceLevel.STRONG,
    "token:hotp": AssuranceLevel.STRONG,
    "token": AssuranceLevel.STRONG,
    "sms": AssuranceLevel.POSSESSION,
    "call": AssuranceLevel.POSSESSION,
    "email": AssuranceLevel.POSSESSION,
    "question": AssuranceLevel.WEAK,
    "attribute": AssuranceLevel.WEAK,
}
CHANNEL_OF_FACTOR = {"sms": "phone", "call": "phone"}


class PolicyError(ValueError):
    """The policy file cannot be used; the message says where and why."""


def level_of(factor_type: str, number_matching: bool = True) -> AssuranceLevel | None:
    """The level verifying this factor type proves (a push without number matching is possession only)."""
    level = LEVEL_OF_FACTOR.get(factor_type)
    if factor_type == "push" and not number_matching:
        return AssuranceLevel.POSSESSION
    return level


def channel_of(factor_type: str) -> str:
    return CHANNEL_OF_FACTOR.get(factor_type, factor_type)


def meets(proof: Proof, level: AssuranceLevel) -> bool:
    order = [AssuranceLevel.WEAK, AssuranceLevel.POSSESSION, AssuranceLevel.STRONG]
    return order.index(proof.level) >= order.index(level)


def describe_proofs(proofs: Sequence[Proof], now: datetime) -> str:
    """What a case has verified, for people: "Okta Verify push (strong), SMS (possession, expired)"."""
    if not proofs:
        return "nothing yet"
    parts = []
    for p in proofs:
        notes = [] if p.level.value in p.label else [p.level.value]
        if p.expires_at <= now:
            notes.append("expired")
        parts.append(p.label + (f" ({', '.join(notes)})" if notes else ""))
    return ", ".join(parts)


def assurance_reached(proofs: Sequence[Proof], now: datetime) -> str:
    """The highest level still valid, and how: "strong (Okta Verify push)"; "none" when nothing counts."""
    valid = [p for p in proofs if p.expires_at > now]
    for level in (AssuranceLevel.STRONG, AssuranceLevel.POSSESSION, AssuranceLevel.WEAK):
        found = [p for p in valid if p.level == level]
        if found:
            channels = {p.channel for p in valid if meets(p, AssuranceLevel.POSSESSION)}
            how = ", ".join(p.label for p in valid)
            if level == AssuranceLevel.POSSESSION and len(channels) >= 2:
                return f"two possession factors ({how})"
            return f"{level.value} ({how})"
    return "none"


@dataclass(frozen=True)
class Requirement:
    """One action's rule: any one of ``alternatives`` (each a list of levels), then maybe an approval."""

    alternatives: tuple[tuple[AssuranceLevel, ...], ...]
    approval: bool = False

    def describe(self) -> str:
        words = [_describe_alternative(alt) for alt in self.alternatives]
        return ", or ".join(words)

    def satisfied_by(self, proofs: Sequence[Proof]) -> bool:
        return any(_alternative_met(alt, proofs) for alt in self.alternatives)


def _describe_alternative(alt: tuple[AssuranceLevel, ...]) -> str:
    counts: dict[AssuranceLevel, int] = {}
    for level in alt:
        counts[level] = counts.get(level, 0) + 1
    parts = []
    for level, n in counts.items():
        if n == 1:
            parts.append(LEVEL_WORDS[level])
        else:
            parts.append(f"{COUNT_WORDS.get(n, str(n))} {level.value} factors")
    text = " and ".join(parts)
    return text + (" on different channels" if len(alt) > 1 else "")


def _alternative_met(alt: tuple[AssuranceLevel, ...], proofs: Sequence[Proof]) -> bool:
    """Distinct proofs on distinct channels, one per required level (a handful: brute force is fine)."""
    if len(proofs) < len(alt):
        return False
    for chosen in itertools.permutations(proofs, len(alt)):
        if len({p.channel for p in chosen}) != len(chosen):
            continue
        if all(meets(p, level) for p, level in zip(chosen, alt, strict=True)):
            return True
    return False


@dataclass(frozen=True)
class Policy:
    """The effective policy (the file, or the defaults); :meth:`gate` is the one question it answers."""

    actions: dict[ActionKind, Requirement]
    verified_minutes: float = 10
    approver: Literal["agent", "manager"] = "agent"
    approval_minutes: float = 10
    high_risk_needs_approval: bool = True
    unknown_risk_is_high: bool = False
    source: str = "built-in defaults"
    text: str = field(default=DEFAULT_POLICY, repr=False)

    def requirement(self, action: ActionKind) -> Requirement:
        return self.actions[action]

    def high_risk(self, risk: RiskSummary | None) -> bool:
        if risk is None or risk.level == "unknown":
            return self.unknown_risk_is_high
        return risk.level == "high"

    def needs_approval(self, action: ActionKind, risk: RiskSummary | None) -> bool:
        return self.actions[action].approval or (self.high_risk_needs_approval and self.high_risk(risk))

    def gate(
        self,
        action: ActionKind,
        proofs: Sequence[Proof],
        now: datetime,
        *,
        risk: RiskSummary | None = None,
        approval: ApprovalInfo | None = None,
        factor_id: str | None = None,
    ) -> ActionGate:
        """May ``action`` run now on a case with these proofs, this risk and this approval?"""
        rule = self.actions[action]
        valid = [p for p in proofs if p.expires_at > now]
        approval_needed = self.needs_approval(action, risk)
        needs = rule.describe()
        if approval_needed:
            needs += " + an approval" + (" (high risk)" if not rule.approval else "")
        has = describe_proofs(proofs, now)
        mine = approval if approval is not None and approval.action == action else None
        if not rule.satisfied_by(valid):
            return ActionGate(
                action=action, allowed=False, needs=needs, has=has, missing=rule.describe(), approval=mine
            )
        if approval_needed and not approval_valid(mine, action, now, factor_id):
            return ActionGate(
                action=action,
                allowed=False,
                needs=needs,
                has=has,
                missing="an approval",
                approval_needed=True,
                approval=mine,
            )
        return ActionGate(action=action, allowed=True, needs=needs, has=has, approval=mine)

    def describe(self) -> str:
        """The effective policy for people (``helpdesk policy``)."""
        lines = [f"Assurance policy ({self.source})", ""]
        width = max(len(n) for n in ACTION_NAMES.values())
        for action, rule in self.actions.items():
            extra = " + an approval" if rule.approval else ""
            lines.append(f"  {ACTION_NAMES[action]:<{width}}  needs {rule.describe()}{extra}")
        lines += [
            "",
            f"  each verified factor counts for {self.verified_minutes:g} min (CASE_VERIFIED_TTL)",
            f"  approvals: by {'another help-desk agent' if self.approver == 'agent' else 'the target’s manager'}"
            f" (never the requester nor the target), valid {self.approval_minutes:g} min, used once",
            f"  high risk: {'+ an approval for every action' if self.high_risk_needs_approval else 'no extra rule'}",
            f"  risk unknown (System Log unreadable): treated as {'high' if self.unknown_risk_is_high else 'not high'}",
            "  weak checks (security question, profile attribute) are never enough alone",
        ]
        return "\n".join(lines)


def approval_valid(approval: ApprovalInfo | None, action: ActionKind, now: datetime, factor_id: str | None) -> bool:
    """An approval that lets ``action`` run now: approved, for that action (and factor), unused, in time."""
    if approval is None or approval.status != ApprovalStatus.APPROVED or approval.action != action:
        return False
    if action == ActionKind.RESET_FACTOR and factor_id is not None and approval.factor_id != factor_id:
        return False
    return now < approval.expires_at


# ------------------------------------------------------------------------------------------- parsing


def load_policy(path: Path | None, verified_ttl: int | None = None) -> Policy:
    """The policy in ``path`` (TOML), or the defaults when ``path`` is None. ``PolicyError`` if unusable.

    ``verified_ttl`` is CASE_VERIFIED_TTL (seconds): how long each verified factor counts.
    """
    if path is None:
        text, source = DEFAULT_POLICY, "built-in defaults"
    else:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise PolicyError(f"HELPDESK_POLICY: cannot read {path}: {exc.strerror}") from None
        source = str(path)
    policy = parse_policy(text, source)
    if verified_ttl is not None:
        policy = Policy(**{**policy.__dict__, "verified_minutes": verified_ttl / 60})
    return policy


def parse_policy(text: str, source: str = "policy") -> Policy:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from None
    defaults = tomllib.loads(DEFAULT_POLICY)
    unknown = set(raw) - set(defaults)
    if unknown:
        raise PolicyError(f"{source}: unknown section(s) {', '.join(sorted(unknown))}")
    actions_raw = {**defaults["actions"], **_table(raw, "actions", source)}
    actions: dict[ActionKind, Requirement] = {}
    for name, rule in actions_raw.items():
        try:
            kind = ActionKind(name)
        except ValueError:
            known = ", ".join(a.value for a in ActionKind)
            raise PolicyError(f"{source}: [actions.{name}] is not an action (known: {known})") from None
        actions[kind] = _requirement(rule, f"{source}: [actions.{name}]")
    approvals = {**defaults["approvals"], **_table(raw, "approvals", source)}
    risk = {**defaults["risk"], **_table(raw, "risk", source)}
    approver = approvals.get("approver")
    if approver not in ("agent", "manager"):
        raise PolicyError(f'{source}: [approvals] approver must be "agent" or "manager"')
    return Policy(
        actions={kind: actions[kind] for kind in ACTION_NAMES if kind in actions},
        approver=approver,
        approval_minutes=_minutes(approvals, "valid_minutes", f"{source}: [approvals]"),
        high_risk_needs_approval=_bool(risk, "high_needs_approval", f"{source}: [risk]"),
        unknown_risk_is_high=_bool(risk, "unknown_is_high", f"{source}: [risk]"),
        source=source,
        text=text,
    )


def _table(raw: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise PolicyError(f"{source}: [{name}] must be a table")
    return value


def _requirement(rule: Any, where: str) -> Requirement:
    if not isinstance(rule, dict):
        raise PolicyError(f"{where} must be a table with proof = [...]")
    extra = set(rule) - {"proof", "approval"}
    if extra:
        raise PolicyError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
    proof = rule.get("proof")
    if not isinstance(proof, list) or not proof or not all(isinstance(p, str) for p in proof):
        raise PolicyError(f'{where}: proof must be a non-empty list such as ["strong", "possession+possession"]')
    alternatives = []
    for alt in proof:
        try:
            levels = tuple(AssuranceLevel(part.strip()) for part in alt.split("+"))
        except ValueError:
            raise PolicyError(f"{where}: {alt!r}: levels are strong, possession, weak joined by +") from None
        if all(level == AssuranceLevel.WEAK for level in levels):
            raise PolicyError(f"{where}: {alt!r}: weak checks are never enough alone")
        alternatives.append(levels)
    approval = rule.get("approval", False)
    if not isinstance(approval, bool):
        raise PolicyError(f"{where}: approval must be true or false")
    return Requirement(alternatives=tuple(alternatives), approval=approval)


def _minutes(table: dict[str, Any], key: str, where: str) -> float:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 24 * 60:
        raise PolicyError(f"{where}: {key} must be a number of minutes between 0 and 1440")
    return float(value)


def _bool(table: dict[str, Any], key: str, where: str) -> bool:
    value = table.get(key)
    if not isinstance(value, bool):
        raise PolicyError(f"{where}: {key} must be true or false")
    return value
