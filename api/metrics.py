"""The API's Prometheus metrics: requests by route and status, their latency, and the
depth of each queue, served at ``GET /metrics`` (``api/routes/metrics.py``).

Requests are labelled by their route's template (``/v1/jobs/{job_id}``), never by the
raw path, so the number of series stays bounded; a request that matched no route is
labelled ``<unmatched>``. The queue depths are read from the broker at each scrape; when
the broker does not answer, ``tumorseg_broker_up`` is 0 and the depths are left out
instead of failing the scrape.

Each API process counts its own requests (``tumorseg api`` runs one uvicorn process): a
deployment with several API replicas has Prometheus scrape each of them.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Iterator, Sequence

import fastapi.routing
import redis
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.dispatch import Dispatcher

logger = logging.getLogger(__name__)

#: Route label of a request that matched no route.
UNMATCHED = "<unmatched>"
#: Latency buckets, seconds: the JSON routes take milliseconds, uploads and /predict
#: (which waits for the worker, up to ``predict_timeout``) up to a minute.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class QueueDepthCollector(Collector):
    """``tumorseg_queue_depth{queue}``: the chunk tasks waiting in each queue, read at each
    scrape, and ``tumorseg_broker_up``: whether the broker answered.

    Args:
        dispatcher: Its broker client reads the depths (``Dispatcher.queue_depth``, the
            figure the back-pressure check uses).
        queues: The Celery queues to report.
    """

    def __init__(self, dispatcher: Dispatcher, queues: Sequence[str]) -> None:
        self.dispatcher = dispatcher
        self.queues = list(queues)

    def describe(self) -> Iterable[Metric]:
        """The metric families without samples (so registering reads no broker)."""
        return [self._depth_family(), self._up_family()]

    def collect(self) -> Iterator[Metric]:
        """Read every queue's depth now; a broker error leaves the depths out."""
        depth, up = self._depth_family(), self._up_family()
        try:
            for queue in self.queues:
                depth.add_metric([queue], self.dispatcher.queue_depth(queue))
        except redis.RedisError as exc:
            logger.warning("metrics: queue depths unavailable: %s: %s", type(exc).__name__, exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield depth
        yield up

    @staticmethod
    def _depth_family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "tumorseg_queue_depth", "Chunk tasks waiting in the queue.", labels=["queue"]
        )

    @staticmethod
    def _up_family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "tumorseg_broker_up", "1 when the broker answered the queue-depth read, else 0."
        )


class ApiMetrics:
    """The metrics of one API app, in a registry of its own (so two apps in one process,
    as in the tests, never share or clash)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tumorseg_api_requests_total",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tumorseg_api_request_duration_seconds",
            "Seconds from a request's arrival to the end of its response, by method and "
            "route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self._queues: QueueDepthCollector | None = None

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def watch_queues(self, dispatcher: Dispatcher, queues: Sequence[str]) -> None:
        """Report the depth of ``queues`` through ``dispatcher``'s broker from now on."""
        self.unwatch_queues()
        self._queues = QueueDepthCollector(dispatcher, queues)
        self.registry.register(self._queues)

    def unwatch_queues(self) -> None:
        """Stop reporting queue depths (the dispatcher is closing)."""
        if self._queues is not None:
            self.registry.unregister(self._queues)
            self._queues = None

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class RouteTemplates:
    """The whole path template of each route of an app, prefixes included.

    The router writes the route that matched into the request's scope, but FastAPI keeps
    an included router's prefix apart from its routes (``/jobs/{job_id}`` under ``/v1``);
    ``fastapi.routing.iter_route_contexts`` gives each route with its whole path, as the
    OpenAPI document has it. Built at the first request, when every route is in place.
    """

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self._by_route: dict[int, list[tuple[str, re.Pattern[str] | None]]] = {}
        contexts = getattr(fastapi.routing, "iter_route_contexts", None)
        if contexts is None:  # older FastAPI copied included routes with the prefix
            pairs = [(route, route) for route in routes]
        else:
            pairs = [(c.original_route, c) for c in contexts(routes)]
        for original, effective in pairs:
            path = getattr(effective, "path", None)
            if isinstance(path, str) and path:
                regex = getattr(effective, "path_regex", None)
                self._by_route.setdefault(id(original), []).append((path, regex))
                if isinstance(original, Mount):  # its scope names the mounted app only
                    self._by_route.setdefault(id(original.app), []).append((path, regex))

    def label(self, scope: Scope) -> str:
        """The template of the route that answered (``<unmatched>`` when none did)."""
        route = scope.get("route") or scope.get("endpoint")
        candidates = self._by_route.get(id(route), []) if route is not None else []
        if len(candidates) > 1:  # a router included twice: the prefix that matches
            path, root = scope["path"], scope.get("root_path", "")
            path = path.removeprefix(root) if root else path
            candidates = [c for c in candidates if c[1] is None or c[1].match(path)] or candidates
        return candidates[0][0] if candidates else UNMATCHED


class RequestMetricsMiddleware:
    """ASGI middleware that counts every HTTP request and times it (see the module's notes).

    A request whose handler raised before answering counts as a 500, the status the
    server then sends.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._templates: RouteTemplates | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            seconds = time.perf_counter() - started
            # the router wrote the matched route into the scope on its way down
            if self._templates is None:
                self._templates = RouteTemplates(getattr(scope.get("app"), "routes", []))
            self.metrics.observe(scope["method"], self._templates.label(scope), status, seconds)
