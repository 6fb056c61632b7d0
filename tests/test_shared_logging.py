import io
import logging

import orjson
import structlog

from shared.logging import bind_correlation, configure_logging, get_logger, new_unit_of_work

BOT_TOKEN = "xoxb-1234567890-abcdefghijkl"
OTP = "918273"
TEMP_PASSWORD = "Tmp-Pa55-word!"
AUTH = "SSWS 00aBcDeFgHiJkLmNoPqRsTuVwXyZ"


def _lines(stream: io.StringIO) -> list[dict]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_secrets_never_reach_output() -> None:
    """A bot token, an OTP, a temporary password and an Authorization header are masked everywhere."""
    out = io.StringIO()
    configure_logging("DEBUG", "json", out)
    log = get_logger("test")
    log.info("call", token=BOT_TOKEN, otp=OTP, temp_password=TEMP_PASSWORD, headers={"Authorization": AUTH})
    log.info("free text", detail=f"sent with {AUTH} and {BOT_TOKEN}")
    try:
        raise RuntimeError(f"upstream said {BOT_TOKEN}")
    except RuntimeError:
        log.exception("failed")
    logging.getLogger("aiohttp.client").warning("header %s", AUTH)
    text = out.getvalue()
    for secret in (BOT_TOKEN, OTP, TEMP_PASSWORD, AUTH, AUTH.split()[1]):
        assert secret not in text
    assert len(_lines(out)) == 4


def test_correlation_id_bound_per_unit_of_work() -> None:
    """Each unit of work starts clean and binds its own case id."""
    out = io.StringIO()
    configure_logging("DEBUG", "json", out)
    log = get_logger("test")
    new_unit_of_work(case_id="c_1")
    log.info("one")
    new_unit_of_work(case_id="c_2")
    bind_correlation(event_id="e_9")
    log.info("two")
    structlog.contextvars.clear_contextvars()
    first, second = _lines(out)
    assert first["case_id"] == "c_1" and "event_id" not in first
    assert second["case_id"] == "c_2" and second["event_id"] == "e_9"
