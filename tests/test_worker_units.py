"""Pure pieces of the okta worker: hints, normalization, the Admin Console link, search expressions, push pacing."""

from __future__ import annotations

import itertools
import random

import pytest

from services.okta_worker.case import admin_console_url
from services.okta_worker.factors import attribute_matches, describe, mask_email, mask_phone
from services.okta_worker.okta_client import USERS_BUCKET, OktaClient, RateLimit
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
    assert pacer.delay(since_first=36.05) == pytest.approx(3.0 - 0.05 - 0.2)  # past the early seconds
    assert pacer.delay(since_first=37.0) == pytest.approx(3.0 - 0.3 - 0.2)
    # Without a grid (a job from before first_poll_at existed): one interval from the poll's start.
    assert pacer.delay(spent=0.04) == pytest.approx(2.96)


def test_a_job_back_early_waits_for_its_tick_and_a_late_one_polls_at_once() -> None:
    pacer = _pacer()
    assert pacer.until_tick(35.85) == pytest.approx(0.15)
    assert pacer.until_tick(36.05) == 0.0
    assert pacer.until_tick(34.0) == 0.0  # two seconds ahead is not "early": a slowed-down poll
    assert pacer.until_tick(5.3) == 0.0 and pacer.until_tick(5.9) == pytest.approx(0.1)  # early: 0.75 s ticks


def test_polls_of_one_push_stay_one_interval_apart_whatever_the_redelivery_lag() -> None:
    """Simulated: redelivery lag up to 150 ms and handling up to 60 ms; then one redelivery 0.9 s late.

    The gaps Okta sees stay within 5 ms of the interval; after the late one, no gap is longer than
    the interval, none shorter than interval − a tenth − the lead, and the push gets back on its grid.
    """
    pacer = _pacer()
    rng = random.Random(7)
    polls: list[float] = []
    now = 30.0  # 30 s after the first poll (the grid's origin): past the early seconds
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


NOW = 1_800_000_010.0  # ten seconds into a rate-limit window (windows end on whole minutes)
RESET = 1_800_000_060.0


def _with_budget(remaining: int, limit: int = 600, interval: float = 3.0) -> PollPacer:
    pacer = _pacer(interval)
    pacer.okta.rates[USERS_BUCKET] = RateLimit(limit=limit, remaining=remaining, reset=RESET, seen_at=NOW)
    return pacer


def test_a_young_push_is_polled_every_three_quarters_of_a_second_then_every_interval() -> None:
    """In its first 20 s a push's grid step is 0.75 s (a divisor of the interval), after that the interval."""
    pacer = _with_budget(600)
    assert pacer.step == pytest.approx(0.75)
    assert pacer.delay(now=NOW, since_first=0.02) == pytest.approx(0.75 - 0.02 - 0.2)
    assert pacer.delay(now=NOW, since_first=14.25) == pytest.approx(0.75 - 0.2)
    assert pacer.delay(now=NOW, since_first=21.0) == pytest.approx(3.0 - 0.2)
    assert _pacer(0.5).step == 0.5  # an interval already short has no early step
    assert _pacer(10.0).step == pytest.approx(10 / 13)


def test_the_early_step_needs_budget_to_spare() -> None:
    """When this replica polls faster than the budget left above the reserve allows, young pushes wait an interval."""
    pacer = _with_budget(600)
    pacer.poll_rate = 5.0  # the budget allows (600 − 120) / 50 s = 9.6 polls/s
    assert pacer.early_allowed(pacer.budget(NOW), NOW)
    pacer.poll_rate = 12.0
    assert not pacer.early_allowed(pacer.budget(NOW), NOW)
    pacer = _with_budget(600)
    for _ in range(12):  # twelve polls in the second before
        pacer.delay(now=NOW - 1, since_first=30.0)
    assert pacer.delay(now=NOW, since_first=6.0) == pytest.approx(3.0 - 0.2)
    assert pacer.poll_rate == 12
    pacer.poll_rate = 150.0  # past EARLY_MAX_RATE: no early step, whatever Okta's budget
    assert not pacer.early_allowed(None, NOW)


def test_polls_leave_the_reserve_to_agents() -> None:
    """With 130 of 600 left, polls take the 10 above the reserve (120) spread to the reset, the rest wait for it."""
    pacer = _with_budget(130)
    due = [NOW + pacer.delay(now=NOW, since_first=30.0) for _ in range(25)]
    this_window = [t for t in due if t < RESET]
    assert len(this_window) == 10
    assert this_window == sorted(this_window) and this_window[-1] - this_window[0] > 40  # spread, not a burst
    assert all(t >= RESET for t in due[10:])


def test_at_the_reserve_polls_wait_for_the_next_window() -> None:
    """Remaining at the reserve: every poll goes after the reset, paced at the new window's share."""
    pacer = _with_budget(120)
    due = [NOW + pacer.delay(now=NOW, since_first=30.0) for _ in range(48)]
    assert min(due) >= RESET
    assert max(due) - min(due) == pytest.approx(47 * 60 / 480, abs=0.6)  # 480 polls a minute at most


def test_many_pending_pushes_share_the_budget_and_back_off_near_the_limit() -> None:
    """200 pushes at once: within the window polls never exceed what is left above the reserve; the less is
    left, the longer each push waits."""

    def waits(remaining: int) -> list[float]:
        pacer = _with_budget(remaining)
        return [pacer.delay(now=NOW, since_first=30.0) for _ in range(200)]

    plenty, short = waits(600), waits(300)
    assert sum(NOW + w < RESET for w in plenty) == 200  # 480 above the reserve: all in this window
    assert sum(NOW + w < RESET for w in short) == 180  # 180 above it
    assert max(plenty) < max(short)
    assert plenty[-1] == pytest.approx(200 * 50 / 480, abs=0.5)  # evenly: one every 50 s / 480


def test_headers_of_an_ended_window_stand_for_a_fresh_one() -> None:
    """After the reset the budget is the full limit again, until one minute later."""
    pacer = _with_budget(0)
    fresh = pacer.budget(RESET + 5)
    assert fresh is not None and (fresh.remaining, fresh.reset) == (600, RESET + 60)
    assert pacer.budget(NOW) == RateLimit(600, 0, RESET, NOW)


def test_polls_sent_since_the_headers_count_until_okta_counts_them() -> None:
    """200 first polls going out after the last headers: the quota left for booked polls drops by 200."""
    pacer = _pacer()
    pacer.okta.rates[USERS_BUCKET] = RateLimit(limit=600, remaining=600, reset=RESET, seen_at=NOW - 1)
    rate = pacer.budget(NOW)
    assert rate is not None and pacer.quota(rate, NOW) == 480
    for _ in range(200):
        assert pacer.until_tick(0.0, now=NOW) == 0.0
    assert pacer.quota(rate, NOW) == 280
    seen = RateLimit(limit=600, remaining=400, reset=RESET, seen_at=NOW + 1)  # headers that count them
    assert pacer.quota(seen, NOW + 1) == 280
