"""Pure pieces of the okta worker: hints, normalization, the Admin Console link, search expressions, push pacing."""

from __future__ import annotations

import itertools
import random

import pytest

from services.okta_worker.case import admin_console_url
from services.okta_worker.factors import attribute_matches, describe, mask_email, mask_phone
from services.okta_worker.okta_client import OktaClient
from services.okta_worker.pacer import PollPacer
from services.okta_worker.search import search_expression
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


# ------------------------------------------------------------------------------------- push pacing


def _pacer(interval: float = 3.0) -> PollPacer:
    settings = Settings(_env_file=None, okta_org_url="https://acme.okta.com", okta_api_token="t")  # type: ignore[call-arg]
    return PollPacer(interval, None, OktaClient.from_settings(settings))


def test_a_late_poll_catches_up_to_its_grid_by_at_most_a_tenth() -> None:
    """A poll 50 ms late aims the next one at the grid; 1 s late closes only 0.3 s, so Okta is not crowded."""
    pacer = _pacer()
    assert pacer.lead == pytest.approx(0.2)
    assert pacer.delay(since_first=6.05) == pytest.approx(3.0 - 0.05 - 0.2)
    assert pacer.delay(since_first=7.0) == pytest.approx(3.0 - 0.3 - 0.2)
    # Without a grid (a job from before first_poll_at existed): one interval from the poll's start.
    assert pacer.delay(spent=0.04) == pytest.approx(2.96)


def test_a_job_back_early_waits_for_its_tick_and_a_late_one_polls_at_once() -> None:
    pacer = _pacer()
    assert pacer.until_tick(5.85) == pytest.approx(0.15)
    assert pacer.until_tick(6.05) == 0.0
    assert pacer.until_tick(4.0) == 0.0  # two seconds ahead is not "early": a slowed-down poll


def test_polls_of_one_push_stay_one_interval_apart_whatever_the_redelivery_lag() -> None:
    """Simulated: redelivery lag up to 150 ms and handling up to 60 ms; then one redelivery 0.9 s late.

    The gaps Okta sees stay within 5 ms of the interval; after the late one, no gap is longer than
    the interval, none shorter than interval − a tenth − the lead, and the push gets back on its grid.
    """
    pacer = _pacer()
    rng = random.Random(7)
    polls: list[float] = []
    now = 0.0  # the first poll, the grid's origin
    for n in range(40):
        now += pacer.until_tick(now)
        polls.append(now)
        now += rng.uniform(0.005, 0.06)  # the poll and the case read
        lag = 0.9 if n == 20 else rng.uniform(0.0, 0.15)
        now += pacer.delay(since_first=now) + lag
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    assert all(abs(g - 3.0) < 0.005 for g in gaps[:20])
    assert gaps[20] == pytest.approx(3.0 + 0.9 - pacer.lead, abs=0.06)
    assert all(3.0 - 0.3 - pacer.lead <= g <= 3.0 + 0.005 for g in gaps[21:])
    assert abs(gaps[-1] - 3.0) < 0.005  # back on the grid
