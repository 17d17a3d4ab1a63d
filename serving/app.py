"""The HTTP API: `/v1/embeddings` (OpenAI-compatible), `/v1/search`, `/v1/documents` (online writes, in
`documents_api.py`), health, readiness, metrics, stats."""

import asyncio
import base64
import logging
import math
import random
import time
import uuid
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from embedding_assets.core.aliases import LIVE_ALIAS
from serving.access import WORKLOAD_HEADER, Caller, identify, parse_body, require_metrics_key
from serving.cache import LRUVectorCache, RedisVectorCache, TieredVectorCache
from serving.documents_api import FreshnessExport, documents_router
from serving.embedding import EmbeddingService
from serving.errors import APIError, retry_after
from serving.metrics import LatencyMiddleware, ServingMetrics
from serving.models import WORKLOADS, ModelPool, Route
from serving.rate_limit import FallbackRateLimiter, LocalRateLimiter, RedisRateLimiter, key_identity
from serving.redis_link import RedisLink, connect
from serving.search_api import metadata_filter, search_version
from serving.settings import ServingSettings

log = logging.getLogger(__name__)
SHADOW_K = 10
UNLOAD_EVERY_S = 30.0
UNLOAD_GRACE_S = 30.0


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: str | list[str]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, gt=0)
    user: str | None = None


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str | None = None
    vector: list[float] | None = None
    k: int = Field(default=10, gt=0)
    model: str = LIVE_ALIAS
    filters: dict[str, str | list[str]] = Field(default_factory=dict)
    # vector: nearest vectors; text: full-text (BM25; a query in double quotes is an exact phrase);
    # hybrid: both, fused by reciprocal rank.
    mode: Literal["vector", "text", "hybrid"] = "vector"
    # One hit per distinct text: documents with the same normalized text (exact duplicates) collapse.
    collapse_duplicates: bool = True


def vector_payload(vector, encoding_format: str):
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4", copy=False).tobytes()).decode("ascii")
    return vector.tolist()


def create_app(settings: ServingSettings, resources: dict) -> FastAPI:
    """The API over the pipeline's `lancedb` and `model_registry` resources."""
    metrics = ServingMetrics()
    store = resources["lancedb"].store()
    pool = ModelPool(resources["model_registry"], store, settings, metrics)
    cache = LRUVectorCache(settings.lru_entries)
    limiter = LocalRateLimiter(
        settings.rate_limit_requests, settings.rate_limit_window_s, settings.rate_limit_max_callers
    )
    link = RedisLink(connect(settings.redis_url, settings.redis_timeout_s), metrics) if settings.redis_url else None
    if link:
        shared_limiter = RedisRateLimiter(
            link.client, settings.redis_prefix, settings.rate_limit_requests, settings.rate_limit_window_s
        )
        cache = TieredVectorCache(cache, RedisVectorCache(link.client, settings.cache_ttl_s), link)
        limiter = FallbackRateLimiter(shared_limiter, limiter, link)
    embedding = EmbeddingService(cache, settings.redis_prefix, metrics)
    started_at = time.time()
    in_flight = dict.fromkeys(WORKLOADS, 0)
    capacity = {"online": settings.online_max_in_flight, "bulk": settings.bulk_max_in_flight}
    for workload in WORKLOADS:
        metrics.queue_depth.labels(workload).set_function(lambda workload=workload: pool.queued(workload))
        metrics.in_flight.labels(workload).set_function(lambda workload=workload: in_flight[workload])
    shadows: set[asyncio.Task] = set()

    def preload_versions() -> dict[str, str | None]:
        """Each preload name (and its canary) and the version it resolves to now (None: not resolvable yet)."""
        versions = {}
        for name in settings.preload:
            try:
                versions[name] = pool.resolve(name).model_version
            except APIError:
                versions[name] = None
            canary = pool.canary(name)
            if canary is not None:
                versions[f"{name} (canary)"] = canary.model_version
        return versions

    async def unload_unserved() -> None:
        """Every 30 s, models nothing serves any more are dropped; their lanes close after a grace period."""
        while True:
            await asyncio.sleep(UNLOAD_EVERY_S)
            for model in pool.unload_unservable():
                log.info("model %s is no longer served: unloading it", model.spec.key)
                await asyncio.sleep(UNLOAD_GRACE_S)
                for batcher in model.batchers.values():
                    await batcher.close()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        for version in preload_versions().values():
            if version:
                pool.start_loading(version)
        unloader = asyncio.get_running_loop().create_task(unload_unserved())
        yield
        unloader.cancel()
        for task in list(shadows):
            task.cancel()
        await pool.close()
        await cache.close()
        if link:
            await link.close()

    app = FastAPI(title="Embedding API", lifespan=lifespan)

    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        metrics.rejections.labels(error.code).inc()
        version = getattr(request.state, "model_version", None)
        if version:
            metrics.version_errors.labels(version, error.code).inc()
        return error.response()

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        request_id = uuid.uuid4().hex
        log.error("request %s to %s failed", request_id, request.url.path, exc_info=error)
        version = getattr(request.state, "model_version", None)
        if version:
            metrics.version_errors.labels(version, "internal_error").inc()
        message = f"internal error (request id {request_id}): the server logged the details"
        return APIError(500, message, "internal_error", headers={"X-Request-ID": request_id}).response()

    app.add_middleware(LatencyMiddleware, metrics=metrics)

    async def admit(request: Request) -> Caller:
        caller = identify(request, settings)
        admission = await limiter.admit(key_identity(caller.identity))
        if not admission.allowed:
            raise APIError(
                429,
                f"rate limit of {settings.rate_limit_requests} requests per {settings.rate_limit_window_s:g} s reached",
                "rate_limit_exceeded",
                headers=retry_after(admission.retry_after_s),
            )
        return caller

    def workload_of(request: Request, caller: Caller, items: int) -> str:
        marked = request.headers.get(WORKLOAD_HEADER, "").strip().lower() == "bulk"
        return "bulk" if caller.bulk_key or marked or items >= settings.bulk_min_items else "online"

    @asynccontextmanager
    async def occupying(workload: str, route_path: str):
        """Admission by class: beyond its in-flight capacity a request is refused at once, never queued."""
        if in_flight[workload] >= capacity[workload]:
            raise APIError(
                429,
                f"{workload} capacity of {capacity[workload]} requests in flight reached; retry shortly",
                "overloaded",
                headers=retry_after(1),
            )
        in_flight[workload] += 1
        started = time.perf_counter()
        try:
            yield
            seconds = time.perf_counter() - started
            metrics.workload_seconds.labels(workload, route_path).observe(seconds)
            metrics.recent[workload].add(seconds)
        finally:
            in_flight[workload] -= 1

    def route_for(request: Request, name: str, caller: Caller, user: str | None = None) -> Route:
        route = pool.resolve(name, user or caller.sticky)
        request.state.model_version = route.model_version
        if pool.registry().spec(route.model_version).backend == "openai" and not caller.authenticated:
            raise APIError(
                401,
                f"model {route.model_version} is hosted (each call spends the operator's provider key): it is "
                "served only with an API key, and this server has none configured",
                "hosted_model_needs_key",
                "model",
            )
        return route

    def record(route: Route, path: str, started: float) -> None:
        metrics.record_version(
            route.model_version, "canary" if route.canary else "live", path, time.perf_counter() - started
        )

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        started = time.perf_counter()
        caller = await admit(request)
        body = await parse_body(request, EmbeddingRequest, settings.max_request_bytes)
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts:
            raise APIError(400, "input is an empty list", "empty_input", "input")
        if len(texts) > settings.max_input_items:
            raise APIError(400, f"{len(texts)} inputs; at most {settings.max_input_items}", "too_many_inputs", "input")
        route = route_for(request, body.model, caller, body.user)
        version = route.model_version
        model = pool.ready_model(version)
        if body.dimensions is not None and body.dimensions != model.spec.dim:
            raise APIError(
                400,
                f"model {version} makes {model.spec.dim}-d vectors and cannot shorten them to {body.dimensions}",
                "unsupported_dimensions",
                "dimensions",
            )
        workload = workload_of(request, caller, len(texts))
        async with occupying(workload, "/v1/embeddings"):
            results = await embedding.embed(model, texts, workload=workload)
        tokens = sum(result.tokens for result in results)
        data = [
            {"object": "embedding", "index": index, "embedding": vector_payload(result.vector, body.encoding_format)}
            for index, result in enumerate(results)
        ]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        record(route, "/v1/embeddings", started)
        return JSONResponse(
            {"object": "list", "data": data, "model": version, "canary": route.canary, "usage": usage},
            headers={"X-Model-Version": version},
        )

    async def shadow_overlap(route: Route, query: str, where: str | None, canary_ids: list[str]) -> None:
        """The live version's top results for the same query, compared with the canary's (off the request path)."""
        live = pool.loaded().get(route.live.model_version)
        if live is None:
            pool.start_loading(route.live.model_version)
            return
        try:
            vector = (await embedding.embed(live, [query], "query", workload="bulk"))[0].vector
            hits = await asyncio.to_thread(
                search_version, store, live.spec.key, vector, len(canary_ids), where, route.live
            )
        except Exception as error:  # a shadow never fails a request; it is counted as missing
            log.warning("shadow query on %s failed: %s", route.live.model_version, error)
            return
        live_ids = {hit["doc_id"] for hit in hits.hits}
        metrics.shadow_overlap.labels(route.model_version).observe(len(live_ids & set(canary_ids)) / len(canary_ids))

    @app.post("/v1/search")
    async def search(request: Request) -> JSONResponse:
        started = time.perf_counter()
        caller = await admit(request)
        body = await parse_body(request, SearchRequest, settings.max_request_bytes)
        if (body.query is None) == (body.vector is None):
            raise APIError(400, "give exactly one of query (a text) or vector", "invalid_request", "query")
        if body.mode != "vector" and body.query is None:
            raise APIError(400, f"mode {body.mode} searches texts: give query, not vector", "invalid_request", "mode")
        if body.k > settings.max_search_k:
            raise APIError(400, f"k={body.k}; at most {settings.max_search_k}", "invalid_request", "k")
        where = metadata_filter(body.filters)
        route = route_for(request, body.model, caller)
        version = route.model_version
        workload = workload_of(request, caller, 1)
        async with occupying(workload, "/v1/search"):
            if body.mode == "text":
                vector, usage = None, {"prompt_tokens": 0, "total_tokens": 0}
            elif body.query is not None:
                model = pool.ready_model(version)
                encoded = (await embedding.embed(model, [body.query], "query", workload=workload))[0]
                vector, usage = encoded.vector, {"prompt_tokens": encoded.tokens, "total_tokens": encoded.tokens}
            else:
                spec = pool.registry().spec(version)
                if not all(map(math.isfinite, body.vector)):
                    raise APIError(400, "vector holds NaN or infinite values", "bad_vector", "vector")
                if len(body.vector) != spec.dim:
                    raise APIError(
                        400, f"vector has {len(body.vector)} values; {version} is {spec.dim}-d", "bad_vector", "vector"
                    )
                vector, usage = body.vector, {"prompt_tokens": 0, "total_tokens": 0}
            result = await asyncio.to_thread(
                search_version,
                store,
                version,
                vector,
                body.k,
                where,
                route.pin,
                body.mode,
                body.query,
                body.collapse_duplicates,
            )
        metrics.search_results.labels(version, "empty" if not result.hits else "found").inc()
        shadowed = route.canary and body.mode == "vector" and body.query is not None and result.hits
        if shadowed and random.random() < settings.shadow_sample_rate:
            top = [hit["doc_id"] for hit in result.hits[:SHADOW_K]]
            task = asyncio.get_running_loop().create_task(shadow_overlap(route, body.query, where, top))
            shadows.add(task)
            task.add_done_callback(shadows.discard)
        record(route, "/v1/search", started)
        return JSONResponse(
            {
                "object": "list",
                "model": version,
                "alias": route.alias,
                "canary": route.canary,
                "mode": body.mode,
                "table_version": result.table_version,
                "data": result.hits,
                "usage": usage,
            },
            headers={"X-Model-Version": version},
        )

    app.include_router(documents_router(settings, store, metrics, admit))
    freshness = FreshnessExport(store, metrics)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        versions = preload_versions()
        loaded = pool.loaded()
        waiting = sorted(version for version in versions.values() if version and version not in loaded)
        for version in waiting:  # a canary set since start-up loads before traffic reaches it
            pool.start_loading(version)
        body = {"ready": not waiting, "preload": versions, "loading": waiting, "loaded": sorted(loaded)}
        return JSONResponse(body, status_code=200 if not waiting else 503)

    @app.get("/metrics")
    async def prometheus_metrics(request: Request) -> Response:
        require_metrics_key(request, settings)
        await asyncio.to_thread(freshness.observe_new)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/stats")
    async def stats(request: Request) -> dict:
        require_metrics_key(request, settings)
        sample = metrics.registry.get_sample_value
        hits = sample("embedding_api_cache_lookups_total", {"result": "hit"}) or 0
        misses = sample("embedding_api_cache_lookups_total", {"result": "miss"}) or 0
        models = {}
        for version, model in pool.loaded().items():
            calls = sample("embedding_api_model_calls_total", {"model_version": version}) or 0
            items = sample("embedding_api_items_embedded_total", {"model_version": version}) or 0
            models[version] = {
                "device": model.encoder.device,
                "dtype": model.encoder.dtype,
                "load_seconds": round(model.load_seconds, 3),
                "model_calls": int(calls),
                "items_embedded": int(items),
                "mean_batch_items": round(items / calls, 2) if calls else 0.0,
            }
        versions = {}
        for version, recent in metrics.recent_by_version.items():
            empty = sample("embedding_api_search_results_total", {"model_version": version, "result": "empty"}) or 0
            found = sample("embedding_api_search_results_total", {"model_version": version, "result": "found"}) or 0
            overlap_sum = sample("embedding_api_canary_top10_overlap_sum", {"model_version": version})
            overlap_count = sample("embedding_api_canary_top10_overlap_count", {"model_version": version})
            versions[version] = {
                **recent.summary(),
                "empty_result_rate": round(empty / (empty + found), 4) if empty + found else 0.0,
                "shadow_queries": int(overlap_count or 0),
                "mean_top10_overlap_with_live": round(overlap_sum / overlap_count, 4) if overlap_count else None,
            }
        workloads = {
            workload: {
                **metrics.recent[workload].summary(),
                "in_flight": in_flight[workload],
                "queued": pool.queued(workload),
            }
            for workload in WORKLOADS
        }
        return {
            "uptime_s": round(time.time() - started_at, 1),
            "cache": {
                "backend": "redis" if link else "lru",
                "redis_up": link.up if link else None,
                "hits": int(hits),
                "misses": int(misses),
                "hit_rate": round(hits / (hits + misses), 4) if hits + misses else 0.0,
            },
            "models": models,
            "versions": versions,
            "workloads": workloads,
            "preload": preload_versions(),
        }

    return app
