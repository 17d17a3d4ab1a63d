"""Prometheus metrics of one server, in a registry of its own (never the process-global one)."""

import time
from collections import deque

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
OVERLAP_BUCKETS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
# Change to searchable: seconds to an hour (the goal is a p50 under 30 s).
FRESHNESS_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
RECENT = 2048


class RecentLatencies:
    """The last few thousand latencies of one kind, for percentiles in /stats (Prometheus has buckets)."""

    def __init__(self):
        self._seconds: deque[float] = deque(maxlen=RECENT)

    def add(self, seconds: float) -> None:
        self._seconds.append(seconds)

    def summary(self) -> dict:
        if not self._seconds:
            return {"count": 0}
        p50, p99 = np.percentile(np.fromiter(self._seconds, float), [50, 99]) * 1000
        return {"count": len(self._seconds), "p50_ms": round(float(p50), 2), "p99_ms": round(float(p99), 2)}


class ServingMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "embedding_api_request_seconds",
            "Request latency by route and status",
            ["route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_items = Histogram(
            "embedding_api_batch_items",
            "Items per model call",
            ["model_version", "workload"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.model_calls = Counter(
            "embedding_api_model_calls", "Model calls (one per micro-batch)", ["model_version"], registry=self.registry
        )
        self.items_embedded = Counter(
            "embedding_api_items_embedded", "Texts the model embedded", ["model_version"], registry=self.registry
        )
        self.cache_lookups = Counter(
            "embedding_api_cache_lookups", "Vector cache lookups", ["result"], registry=self.registry
        )
        self.model_load_seconds = Gauge(
            "embedding_api_model_load_seconds",
            "How long a model took to load",
            ["model_version"],
            registry=self.registry,
        )
        self.models_loaded = Gauge("embedding_api_models_loaded", "Models ready to serve", registry=self.registry)
        self.rejections = Counter(
            "embedding_api_rejections", "Requests refused, by error code", ["code"], registry=self.registry
        )
        self.redis_errors = Counter(
            "embedding_api_redis_errors",
            "Redis operations that failed, each answered from the in-process tier instead",
            ["operation"],
            registry=self.registry,
        )
        self.redis_up = Gauge(
            "embedding_api_redis_up", "1 while Redis is in use, 0 while it is down", registry=self.registry
        )

        # Workload classes (online | bulk): what waits, how long, and how long requests take.
        self.queue_depth = Gauge(
            "embedding_api_queue_depth", "Texts waiting for a model call", ["workload"], registry=self.registry
        )
        self.queue_wait_seconds = Histogram(
            "embedding_api_queue_wait_seconds",
            "From a text's arrival to the start of its model call",
            ["workload"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.workload_seconds = Histogram(
            "embedding_api_workload_request_seconds",
            "Latency of admitted requests by workload class",
            ["workload", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "embedding_api_in_flight", "Requests being served by workload class", ["workload"], registry=self.registry
        )
        # Per model version (live or canary): latency, errors, empty results, and agreement with live.
        self.version_seconds = Histogram(
            "embedding_api_version_request_seconds",
            "Latency of requests by the version that served them",
            ["model_version", "role", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.version_errors = Counter(
            "embedding_api_version_errors",
            "Failed requests by version and code",
            ["model_version", "code"],
            registry=self.registry,
        )
        self.search_results = Counter(
            "embedding_api_search_results",
            "Searches by version, empty or not",
            ["model_version", "result"],
            registry=self.registry,
        )
        self.shadow_overlap = Histogram(
            "embedding_api_canary_top10_overlap",
            "Share of a canary search's top 10 also in the live version's top 10 (sampled shadow queries)",
            ["model_version"],
            buckets=OVERLAP_BUCKETS,
            registry=self.registry,
        )
        # Online writes, and how long the pipeline took to make changes searchable (see serving/documents_api.py).
        self.documents_written = Counter(
            "embedding_api_documents_written",
            "Document writes accepted into the inbox, by operation",
            ["operation"],
            registry=self.registry,
        )
        self.change_to_searchable = Histogram(
            "embedding_change_to_searchable_seconds",
            "From a write (origin=upsert) or a source edit (origin=edit) to searchable through the live pin",
            ["origin"],
            buckets=FRESHNESS_BUCKETS,
            registry=self.registry,
        )
        self.recent = {workload: RecentLatencies() for workload in ("online", "bulk")}
        self.recent_by_version: dict[str, RecentLatencies] = {}

    def record_batch(self, model_version: str, items: int, workload: str = "online") -> None:
        self.model_calls.labels(model_version).inc()
        self.batch_items.labels(model_version, workload).observe(items)
        self.items_embedded.labels(model_version).inc(items)

    def record_version(self, model_version: str, role: str, route: str, seconds: float) -> None:
        self.version_seconds.labels(model_version, role, route).observe(seconds)
        self.recent_by_version.setdefault(model_version, RecentLatencies()).add(seconds)


class LatencyMiddleware:
    """Times every HTTP request by route and status (plain ASGI: no per-request task, unlike BaseHTTPMiddleware)."""

    def __init__(self, app, metrics: ServingMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def send_and_note_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            route = scope.get("route")
            self.metrics.request_seconds.labels(route.path if route else "unmatched", str(status)).observe(
                time.perf_counter() - started
            )
