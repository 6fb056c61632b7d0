"""The demo org `FakeOkta.with_demo_data()` loads: a small, realistic Okta tenant.

Ids are fixed so tests, the demo and other fakes can name them directly:

    fake = FakeOkta.with_demo_data()
    fake.user(ALICE)                      # alice@example.com, six factors
    fake.set_passcode(ALICE, ALICE_TOTP, "654321")

| login                   | id                   | status        | groups (+ Everyone)    | factors
| ----------------------- | -------------------- | ------------- | ---------------------- | --------------------------
| agent@example.com       | 00uagent000000000001 | ACTIVE        | Helpdesk               | push, totp
| agent.admin@example.com | 00uagentadmin0000001 | ACTIVE        |                        | push
| agent2@example.com      | 00uagent200000000001 | ACTIVE        | Helpdesk               | push (the approver)
| admin@example.com       | 00uadmin000000000001 | ACTIVE        | Admins (protected)     | push
| manager@example.com     | 00umanager0000000001 | ACTIVE        | Engineering            | push
| alice@example.com       | 00ualice000000000001 | ACTIVE        | Engineering            | push sms email totp
|                         |                      |               |                        | question webauthn
| alicia@example.com      | 00ualicia00000000001 | ACTIVE        |                        | email
| bob@example.com         | 00ubob00000000000001 | LOCKED_OUT    | Engineering            | sms, call
| carol@example.com       | 00ucarol000000000001 | DEPROVISIONED |                        | sms
| dave@example.com        | 00udave0000000000001 | ACTIVE        | Engineering            | hardware, hotp, token(RSA)
| erin@example.com        | 00uerin0000000000001 | ACTIVE        |                        | none
| mallory@example.com     | 00umallory0000000001 | ACTIVE        | Helpdesk (APP_GROUP)   | push

Every token factor (totp, hotp, RSA) accepts `DEMO_PASSCODE` until it is used once, dave's YubiKey
`DEMO_YUBIKEY_OTP` (44 ModHex characters, Okta's own example);
alice's security question answer is `DEMO_ANSWER`.

Traps the demo org holds on purpose, as real orgs do:

- Two groups are named exactly "Helpdesk": the real one (`HELPDESK_GROUP`, an OKTA_GROUP) and one
  imported from Active Directory (`HELPDESK_APP_GROUP`, an APP_GROUP) whose member mallory is no
  help-desk agent. Match the agent group by id, or by name *and* type OKTA_GROUP, never by name.
- `agent.admin@example.com` is the agent's second account: its `email` is the agent's email
  (`AGENT_EMAIL`), so "is this the agent's own account?" must compare emails, not only logins.
- erin's `mobilePhone` is the agent's (`AGENT_MOBILE`): one shared identifier.
- alice's `managerId` is Mara Manager (`MANAGER`), an ACTIVE Okta user outside Helpdesk; alice also
  has a `secondEmail`, Mara a `primaryPhone` (desk) and no `mobilePhone`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sandbox.okta import FakeOkta

DEMO_PASSCODE = "123456"
DEMO_YUBIKEY_OTP = "cccccceukngdfgkukfctkcvfidnetljjiknckkcjulji"  # EnrollFactorYubikeyRequest's example
DEMO_ANSWER = "starry night"

# Users
AGENT = "00uagent000000000001"
AGENT2 = "00uagent200000000001"  # a second help-desk agent: approves what the first one asks
AGENT_ADMIN = "00uagentadmin0000001"  # the agent's second account: another login, the agent's email
ADMIN = "00uadmin000000000001"
ALICE = "00ualice000000000001"
ALICIA = "00ualicia00000000001"
BOB = "00ubob00000000000001"
CAROL = "00ucarol000000000001"
DAVE = "00udave0000000000001"
ERIN = "00uerin0000000000001"
MANAGER = "00umanager0000000001"  # Mara Manager, alice's manager
MALLORY = "00umallory0000000001"  # in the imported "Helpdesk" APP_GROUP, not in the real Helpdesk

# Profile values
AGENT_EMAIL = "agent@example.com"
AGENT_ADMIN_LOGIN = "agent.admin@example.com"
AGENT_MOBILE = "+14155550150"  # the agent's mobilePhone, also erin's
MANAGER_EMAIL = "manager@example.com"
MANAGER_PHONE = "+14155550160"  # Mara's primaryPhone (desk line)
MALLORY_EMAIL = "mallory@example.com"
ALICE_SECOND_EMAIL = "alice.anderson@example.net"

# Groups
EVERYONE_GROUP = "00geveryone000000001"
HELPDESK_GROUP = "00ghelpdesk000000001"
ADMINS_GROUP = "00gadmins00000000001"
ENGINEERING_GROUP = "00gengineering000001"
HELPDESK_APP_GROUP = "00ghelpdeskapp000001"  # APP_GROUP, also named "Helpdesk"

# Factors
AGENT_PUSH = "opfagent000000000001"
AGENT_TOTP = "ostagent000000000001"
ADMIN_PUSH = "opfadmin000000000001"
ALICE_PUSH = "opfalice000000000001"
ALICE_SMS = "mblalice000000000001"
ALICE_EMAIL = "emfalice000000000001"
ALICE_TOTP = "ostalice000000000001"
ALICE_QUESTION = "ufsalice000000000001"
ALICE_WEBAUTHN = "fwfalice000000000001"
ALICIA_EMAIL = "emfalicia00000000001"
BOB_SMS = "mblbob00000000000001"
BOB_CALL = "clfbob00000000000001"
CAROL_SMS = "mblcarol000000000001"
DAVE_HARDWARE = "ykfdave0000000000001"
DAVE_HOTP = "chfdave0000000000001"
DAVE_RSA = "rsadave0000000000001"
AGENT_ADMIN_PUSH = "opfagentadmin0000001"
MANAGER_PUSH = "opfmanager0000000001"
MALLORY_PUSH = "opfmallory0000000001"

# 2024-03-01T09:00:00Z: seed records look like an org that has existed for a while.
_CREATED = 1_709_283_600.0


def seed_demo(fake: FakeOkta) -> None:
    """Load the demo org into ``fake`` (see the module docstring for what it holds)."""
    fake.add_group(
        "Everyone",
        group_id=EVERYONE_GROUP,
        type="BUILT_IN",
        description="All users in your organization",
        created=_CREATED,
    )
    fake.add_group("Helpdesk", group_id=HELPDESK_GROUP, description="Help desk agents", created=_CREATED)
    fake.add_group("Admins", group_id=ADMINS_GROUP, description="Org administrators (protected)", created=_CREATED)
    fake.add_group("Engineering", group_id=ENGINEERING_GROUP, description="Engineering", created=_CREATED)
    fake.add_group(
        "Helpdesk",
        group_id=HELPDESK_APP_GROUP,
        type="APP_GROUP",
        description="Imported from Active Directory (example.com)",
        created=_CREATED,
    )

    fake.add_user(
        "agent@example.com",
        "Jordan",
        "Reyes",
        user_id=AGENT,
        groups=[HELPDESK_GROUP],
        mobile_phone=AGENT_MOBILE,
        created=_CREATED,
        employeeNumber="E1000",
        department="IT Support",
    )
    fake.add_factor(AGENT, "push", factor_id=AGENT_PUSH, created=_CREATED)
    fake.add_factor(AGENT, "token:software:totp", factor_id=AGENT_TOTP, passcode=DEMO_PASSCODE, created=_CREATED)

    fake.add_user(
        "agent2@example.com",
        "Sam",
        "Okafor",
        user_id=AGENT2,
        groups=[HELPDESK_GROUP],
        created=_CREATED,
        employeeNumber="E1001",
        department="IT Support",
    )

    fake.add_user(
        AGENT_ADMIN_LOGIN,
        "Jordan",
        "Reyes",
        email=AGENT_EMAIL,
        user_id=AGENT_ADMIN,
        created=_CREATED,
        employeeNumber="E1000",
        department="IT Support",
    )
    fake.add_factor(AGENT_ADMIN, "push", factor_id=AGENT_ADMIN_PUSH, created=_CREATED)

    fake.add_user(
        "admin@example.com",
        "Dana",
        "Whitfield",
        user_id=ADMIN,
        groups=[ADMINS_GROUP],
        created=_CREATED,
        employeeNumber="E1001",
        department="IT",
    )
    fake.add_factor(ADMIN, "push", factor_id=ADMIN_PUSH, created=_CREATED)

    fake.add_user(
        MANAGER_EMAIL,
        "Mara",
        "Manager",
        user_id=MANAGER,
        groups=[ENGINEERING_GROUP],
        primary_phone=MANAGER_PHONE,
        created=_CREATED,
        employeeNumber="E1008",
        department="Engineering",
        title="Engineering Manager",
    )
    fake.add_factor(MANAGER, "push", factor_id=MANAGER_PUSH, created=_CREATED)

    fake.add_user(
        "alice@example.com",
        "Alice",
        "Anderson",
        user_id=ALICE,
        groups=[ENGINEERING_GROUP],
        mobile_phone="+14155550101",
        second_email=ALICE_SECOND_EMAIL,
        manager=MANAGER,
        created=_CREATED,
        employeeNumber="E1002",
        department="Engineering",
    )
    fake.add_factor(ALICE, "push", factor_id=ALICE_PUSH, created=_CREATED)
    fake.add_factor(ALICE, "sms", factor_id=ALICE_SMS, created=_CREATED, profile={"phoneNumber": "+14155550101"})
    fake.add_factor(ALICE, "email", factor_id=ALICE_EMAIL, created=_CREATED, profile={"email": "alice@example.com"})
    fake.add_factor(ALICE, "token:software:totp", factor_id=ALICE_TOTP, passcode=DEMO_PASSCODE, created=_CREATED)
    fake.add_factor(
        ALICE,
        "question",
        factor_id=ALICE_QUESTION,
        answer=DEMO_ANSWER,
        created=_CREATED,
        profile={"question": "favorite_art_piece", "questionText": "What is your favorite piece of art?"},
    )
    fake.add_factor(
        ALICE,
        "webauthn",
        factor_id=ALICE_WEBAUTHN,
        created=_CREATED,
        profile={
            "credentialId": "l3Br0n-7H3g047NqESqJynFtIgf3Ix9OfaRoNwLoloso99Xl2zS_O7EXUkmPeAIzTVtEL4dY",
            "authenticatorName": "MacBook Touch ID",
        },
    )

    fake.add_user(
        "alicia@example.com",
        "Alicia",
        "Alvarez",
        user_id=ALICIA,
        created=_CREATED,
        employeeNumber="E1003",
        department="Sales",
    )
    fake.add_factor(ALICIA, "email", factor_id=ALICIA_EMAIL, created=_CREATED, profile={"email": "alicia@example.com"})

    fake.add_user(
        "bob@example.com",
        "Bob",
        "Baker",
        user_id=BOB,
        status="LOCKED_OUT",
        groups=[ENGINEERING_GROUP],
        mobile_phone="+14155550102",
        created=_CREATED,
        employeeNumber="E1004",
        department="Engineering",
    )
    fake.add_factor(BOB, "sms", factor_id=BOB_SMS, created=_CREATED, profile={"phoneNumber": "+14155550102"})
    fake.add_factor(BOB, "call", factor_id=BOB_CALL, created=_CREATED, profile={"phoneNumber": "+14155550102"})

    fake.add_user(
        "carol@example.com",
        "Carol",
        "Chen",
        user_id=CAROL,
        status="DEPROVISIONED",
        created=_CREATED,
        employeeNumber="E1005",
        department="Finance",
    )
    fake.add_factor(CAROL, "sms", factor_id=CAROL_SMS, created=_CREATED, profile={"phoneNumber": "+14155550103"})

    fake.add_user(
        "dave@example.com",
        "Dave",
        "Dunn",
        user_id=DAVE,
        groups=[ENGINEERING_GROUP],
        created=_CREATED,
        employeeNumber="E1006",
        department="Operations",
    )
    fake.add_factor(
        DAVE,
        "token:hardware",
        factor_id=DAVE_HARDWARE,
        passcode=DEMO_YUBIKEY_OTP,
        created=_CREATED,
        profile={"credentialId": "000009508427"},
    )
    fake.add_factor(
        DAVE,
        "token:hotp",
        factor_id=DAVE_HOTP,
        passcode=DEMO_PASSCODE,
        created=_CREATED,
        vendor_name="Entrust Datacard",
        profile={"credentialId": "dave@example.com"},
    )
    fake.add_factor(
        DAVE,
        "token",
        factor_id=DAVE_RSA,
        passcode=DEMO_PASSCODE,
        created=_CREATED,
        profile={"credentialId": "dave@example.com"},
    )

    fake.add_user(
        "erin@example.com",
        "Erin",
        "Evans",
        user_id=ERIN,
        mobile_phone=AGENT_MOBILE,
        created=_CREATED,
        employeeNumber="E1007",
        department="Marketing",
    )

    fake.add_user(
        MALLORY_EMAIL,
        "Mallory",
        "Mills",
        user_id=MALLORY,
        groups=[HELPDESK_APP_GROUP],
        created=_CREATED,
        employeeNumber="E1009",
        department="Sales",
    )
    fake.add_factor(MALLORY, "push", factor_id=MALLORY_PUSH, created=_CREATED)
