"""The aiohttp side of the gateway: each ``POST /slack/<route>`` becomes a :class:`SlackRequest`.

add_slack_routes(app, gateway)    # /slack/commands, /slack/interactions, /slack/options, /slack/events
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from services.gateway import metrics
from services.gateway.dispatch import ROUTES, Gateway
from services.gateway.handlers import Reply
from services.gateway.slack_request import MAX_BODY, RequestTooLarge, SlackRequest
from shared.logging import get_logger

log = get_logger(__name__)

TOO_LARGE = Reply(413, {"ok": False, "error": "body_too_large"})


def to_response(reply: Reply) -> web.Response:
    if reply.body is None:
        return web.Response(status=reply.status)
    return web.Response(status=reply.status, body=orjson.dumps(reply.body), content_type="application/json")


def slack_route(
    gateway: Gateway, route: str, max_body: int = MAX_BODY
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            slack_request = await SlackRequest.read(request, route, max_body)
        except RequestTooLarge as exc:
            metrics.REJECTIONS.labels(exc.reason).inc()
            log.warning("gateway.too_large", route=route, declared=request.content_length)
            gateway.record(route, "too_large", started)
            return to_response(TOO_LARGE)
        return to_response(await gateway.handle(slack_request, started))

    return handler


def add_slack_routes(app: web.Application, gateway: Gateway) -> None:
    for route in ROUTES:
        app.router.add_post(f"/slack/{route}", slack_route(gateway, route))
