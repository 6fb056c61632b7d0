"""A case waiting on a push, as the worker stores it after sending one: the benches seed KV with many.

verify_body, transaction_id = await send_push(http, user_id, factor_id)
case = pending_push_case(engine, "c_1", "U0BENCH01", user_id, login, factor_id, verify_body, now, expires)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from services.okta_worker.case import Case, CaseEngine
from services.okta_worker.factors import describe
from shared.messages import Actor, CaseState, UserCard

CHALLENGE_ID = "ch1"


async def send_push(http: httpx.AsyncClient, user_id: str, factor_id: str) -> tuple[dict[str, Any], str]:
    """``POST …/verify`` with number matching, as the worker sends a push: Okta's answer and the
    transaction id its poll link ends with."""
    resp = await http.post(
        f"/api/v1/users/{user_id}/factors/{factor_id}/verify",
        json={"useNumberMatchingChallenge": True},
        headers={"User-Agent": "bench"},
    )
    body: dict[str, Any] = resp.json()
    return body, body["_links"]["poll"]["href"].rsplit("/", 1)[1]


def pending_push_case(
    engine: CaseEngine,
    case_id: str,
    agent_id: str,
    user_id: str,
    login: str,
    factor_id: str,
    verify_body: dict[str, Any],
    now: datetime,
    expires_at: datetime,
) -> Case:
    """The case after ``POST …/verify`` answered ``verify_body`` (WAITING, with its poll and cancel links)."""
    option = describe({"id": factor_id, "factorType": "push", "provider": "OKTA", "status": "ACTIVE"})
    case = Case(
        case_id=case_id,
        agent=Actor(user_id=agent_id),
        case_token="-",
        state=CaseState.FACTORS,
        target=UserCard(id=user_id, login=login, status="ACTIVE"),
        factors=[option],
        created_at=now,
        updated_at=now,
    )
    links = verify_body["_links"]
    return engine.challenge_sent(
        case,
        option,
        CHALLENGE_ID,
        now,
        poll_url=links["poll"]["href"],
        cancel_url=links["cancel"]["href"],
        expires_at=expires_at,
        correct_answer=verify_body["_embedded"]["challenge"]["correctAnswer"],
    )
