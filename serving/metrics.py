"""Prometheus metrics of one server, in a registry of its own (never the process-global one)."""

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


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
            ["model_version"],
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

    def record_batch(self, model_version: str, items: int) -> None:
        self.model_calls.labels(model_version).inc()
        self.batch_items.labels(model_version).observe(items)
        self.items_embedded.labels(model_version).inc(items)


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
