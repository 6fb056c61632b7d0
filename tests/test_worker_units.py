"""Pure pieces of the okta worker: hints, normalization, the Admin Console link, search expressions."""

from __future__ import annotations

from services.okta_worker.case import admin_console_url
from services.okta_worker.factors import attribute_matches, describe, mask_email, mask_phone
from services.okta_worker.handlers import search_expression
from shared.settings import Settings


def test_masks_keep_only_what_the_agent_needs() -> None:
    """A phone shows its last four digits, an email its first letter and domain."""
    assert mask_phone("+1 (415) 555-1337") == "••• 1337"
    assert mask_email("alice@example.com") == "a•••@example.com"
    assert mask_phone(None) is None


def test_unknown_factor_type_is_listed_not_usable() -> None:
    """A factor type Okta adds later is shown as not usable here instead of breaking the list."""
    option = describe({"id": "xyz1", "factorType": "smart_card_idp", "provider": "CUSTOM", "status": "ACTIVE"})
    assert not option.usable and option.reason


def test_attribute_comparison_is_normalized_and_never_matches_empty() -> None:
    """Case, spaces and separators do not count; an empty stored value never matches."""
    assert attribute_matches("E-1002", " e 1002 ")
    assert not attribute_matches("E1002", "E1003")
    assert not attribute_matches("", "")


def test_admin_console_url_inserts_admin_into_the_org_host() -> None:
    """The Admin Console link uses OKTA_ADMIN_URL, else the org host with -admin inserted."""
    org = Settings(_env_file=None, okta_org_url="https://acme.okta.com")  # type: ignore[call-arg]
    assert admin_console_url(org, "00u1") == "https://acme-admin.okta.com/admin/user/profile/view/00u1"
    custom = Settings(_env_file=None, okta_org_url="https://id.acme.com", okta_admin_url="https://acme-admin.okta.com")  # type: ignore[call-arg]
    assert admin_console_url(custom, "00u1") == "https://acme-admin.okta.com/admin/user/profile/view/00u1"


def test_search_expression_escapes_quotes() -> None:
    """A quote typed by the agent cannot break out of the SCIM string literal."""
    expression = search_expression('o"brien')
    assert 'profile.login sw "o\\"brien"' in expression
