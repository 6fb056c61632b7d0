"""What a process shows operations, on ``METRICS_PORT``, apart from its public routes.

``GET /healthz`` (the process is alive), ``GET /readyz`` (every service started, every NATS
connection up) and ``GET /metrics``: every service's counters from prometheus_client's default
registry, ``helpdesk_build_info{version}`` and the state of this process's NATS connections.
The gateway and the telephony hook never serve ``/metrics`` on their public port.

    ops = OpsEndpoint(group, settings.host, settings.metrics_port)   # group: .buses and .services
    await ops.start()
    ...
    await ops.stop()
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from shared.bus import Bus
from shared.http import HttpService, health_routes


def build_version() -> str:
    """The installed package's version (``0+unknown`` in a source tree that was never installed)."""
    try:
        return version("helpdesk-verify")
    except PackageNotFoundError:
        return "0+unknown"


BUILD_INFO = Info("helpdesk_build", "The running release of Helpdesk Verify (value 1; the version in a label).")
BUILD_INFO.info({"version": build_version()})


class Observed(Protocol):
    """What the endpoint reads from the running services (``helpdesk.runner.ServiceGroup``)."""

    buses: list[Bus]

    @property
    def services(self) -> Sequence[tuple[str, Any]]: ...


class NatsCollector(Collector):
    """NATS connection state, read at scrape time from each bus's client (no callback to hook).

    The label is ``client`` (the service's connection name), not ``service``: the Prometheus
    Operator puts the Kubernetes Service's name in ``service``."""

    def __init__(self, observed: Observed) -> None:
        self.observed = observed

    def collect(self) -> Iterable[Any]:
        connected = GaugeMetricFamily(
            "helpdesk_nats_connected",
            "1 while the service's NATS connection is up, 0 while it is not.",
            labels=["client"],
        )
        reconnects = CounterMetricFamily(
            "helpdesk_nats_reconnects", "Times the service's NATS connection was re-established.", labels=["client"]
        )
        for bus in list(self.observed.buses):
            connected.add_metric([bus.name], 1.0 if bus.is_connected else 0.0)
            reconnects.add_metric([bus.name], float(bus.nc.stats.get("reconnects", 0)))
        yield connected
        yield reconnects


def metrics_text(local: CollectorRegistry | None = None) -> bytes:
    """The default registry's metrics, then those of ``local`` (names never overlap)."""
    body = generate_latest(REGISTRY)
    return body + generate_latest(local) if local is not None else body


class OpsEndpoint:
    """``/healthz``, ``/readyz`` and ``/metrics`` of one process on ``host:port``."""

    def __init__(self, observed: Observed, host: str, port: int) -> None:
        self.observed = observed
        self.registry = CollectorRegistry()
        self.registry.register(NatsCollector(observed))
        app = web.Application()

        async def ready() -> tuple[bool, dict[str, Any]]:
            nats = {bus.name: bus.is_connected for bus in self.observed.buses}
            started = [name for name, _ in self.observed.services]
            return bool(started) and bool(nats) and all(nats.values()), {"nats": nats, "services": started}

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=metrics_text(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        health_routes(app, ready=ready)
        app.router.add_get("/metrics", metrics)
        self.http = HttpService("ops", app, host, port)

    @property
    def url(self) -> str:
        return self.http.url

    async def start(self) -> None:
        await self.http.start()

    async def stop(self) -> None:
        await self.http.stop()
