"""Prometheus metrics of the API (requests, latencies, events, rollbacks) and an ASGI middleware
that also refuses bodies over the limit with 413 before anything reads them."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import HTTPException
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

STORE_SECONDS = 10.0  # database figures in /metrics are this fresh
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "xpstream_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "xpstream_http_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
            registry=self.registry,
        )
        self.events_accepted = Counter(
            "xpstream_api_events_accepted",
            "Events accepted by POST /v1/events",
            registry=self.registry,
        )
        self.events_rejected = Counter(
            "xpstream_api_events_rejected",
            "Events rejected by POST /v1/events, by reason",
            ["reason"],
            registry=self.registry,
        )

    def add_store_collector(
        self, collect: Callable[[], Iterable[Any]], seconds: float = STORE_SECONDS
    ) -> None:
        """Figures read from the database (rollbacks, dead letters), at most once per
        ``seconds`` however often a scraper asks."""

        class _Store(Collector):
            def __init__(self) -> None:
                self.read_at, self.families = -seconds, list[Any]()

            def collect(self) -> Iterable[Any]:
                if time.monotonic() - self.read_at >= seconds:
                    self.families, self.read_at = list(collect()), time.monotonic()
                return self.families

        self.registry.register(_Store())


def store_families(
    rolled_back: int, dead_lettered: dict[str, float], alerts: int, search_backlog: int
) -> list[GaugeMetricFamily | CounterMetricFamily]:
    flags = GaugeMetricFamily("xpstream_flags_rolled_back", "Flags rolled back now")
    flags.add_metric([], rolled_back)
    alerts_family = CounterMetricFamily("xpstream_alerts", "Guardrail and SRM alerts raised")
    alerts_family.add_metric([], alerts)
    dead = CounterMetricFamily(
        "xpstream_pipeline_dead_lettered", "Events dead-lettered by the pipeline", labels=["reason"]
    )
    for reason, count in sorted(dead_lettered.items()):
        dead.add_metric([reason], count)
    waiting = GaugeMetricFamily(
        "xpstream_opensearch_backlog", "Documents waiting in the outbox for OpenSearch"
    )
    waiting.add_metric([], search_backlog)
    return [flags, alerts_family, dead, waiting]


class MetricsAndLimits:
    """Pure ASGI (no per-request task): counts, times, and caps request bodies."""

    def __init__(self, app: Asgi, metrics: ApiMetrics, max_body: int) -> None:
        self.app, self.metrics, self.max_body = app, metrics, max_body
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # labels() is slow

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await _too_large(send, self.max_body)
            return
        started = time.perf_counter()
        status = 500
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:  # a chunked body declares no length: count it
                raise BodyTooLargeError(self.max_body)
            return message

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = _with_security_headers(message.get("headers") or [])
            await send(message)

        try:
            await self.app(scope, limited_receive, send_status)
        except BodyTooLargeError:
            status = 413
            await _too_large(send, self.max_body)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            key = (scope["method"], path, status)
            children = self._children.get(key)
            if children is None:
                children = self._children[key] = (
                    self.metrics.requests.labels(scope["method"], path, str(status)),
                    self.metrics.latency.labels(path),
                )
            children[0].inc()
            children[1].observe(time.perf_counter() - started)


class BodyTooLargeError(HTTPException):
    """Raised while the body is read: FastAPI passes HTTP exceptions through its body parsing
    (anything else there becomes a 400), so the client gets 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")


SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


def _with_security_headers(headers: Any) -> list[tuple[bytes, bytes]]:
    present = {name.lower() for name, _ in headers}
    return [*headers, *((n, v) for n, v in SECURITY_HEADERS if n not in present)]


async def _too_large(send: Send, limit: int) -> None:
    body = f'{{"detail":"request body over {limit} bytes"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
