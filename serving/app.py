"""The HTTP API: `/v1/embeddings` (OpenAI-compatible), `/v1/search`, health, readiness, metrics, stats."""

import asyncio
import base64
import hmac
import json
import math
import time
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from embedding_assets.core.aliases import LIVE_ALIAS
from serving.cache import LRUVectorCache, RedisVectorCache, TieredVectorCache
from serving.embedding import EmbeddingService
from serving.errors import APIError, retry_after
from serving.metrics import LatencyMiddleware, ServingMetrics
from serving.models import ModelPool
from serving.rate_limit import FallbackRateLimiter, LocalRateLimiter, RedisRateLimiter, key_identity
from serving.redis_link import RedisLink, connect
from serving.search_api import metadata_filter, search_version
from serving.settings import ServingSettings


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


async def parse_body(request: Request, schema: type[BaseModel], max_bytes: int) -> BaseModel:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise APIError(413, f"request body of {int(declared):,} bytes exceeds {max_bytes:,}", "request_too_large")
    body = await request.body()
    if len(body) > max_bytes:
        raise APIError(413, f"request body of {len(body):,} bytes exceeds {max_bytes:,}", "request_too_large")
    try:
        return schema.model_validate(json.loads(body))
    except json.JSONDecodeError as error:
        raise APIError(400, f"the body is not valid JSON: {error}", "invalid_json") from error
    except ValidationError as error:
        first = error.errors()[0]
        param = ".".join(map(str, first["loc"])) or None
        raise APIError(400, f"{param or 'body'}: {first['msg']}", "invalid_request", param) from error


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
    limiter = LocalRateLimiter(settings.rate_limit_requests, settings.rate_limit_window_s)
    link = RedisLink(connect(settings.redis_url, settings.redis_timeout_s), metrics) if settings.redis_url else None
    if link:
        shared_limiter = RedisRateLimiter(
            link.client, settings.redis_prefix, settings.rate_limit_requests, settings.rate_limit_window_s
        )
        cache = TieredVectorCache(cache, RedisVectorCache(link.client, settings.cache_ttl_s), link)
        limiter = FallbackRateLimiter(shared_limiter, limiter, link)
    embedding = EmbeddingService(cache, settings.redis_prefix, metrics)
    started_at = time.time()

    def preload_versions() -> dict[str, str | None]:
        """Each preload name and the version it resolves to now (None: not resolvable yet)."""
        versions = {}
        for name in settings.preload:
            try:
                versions[name] = pool.resolve(name)[0]
            except APIError:
                versions[name] = None
        return versions

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        for version in preload_versions().values():
            if version:
                pool.start_loading(version)
        yield
        await pool.close()
        await cache.close()
        if link:
            await link.close()

    app = FastAPI(title="Embedding API", lifespan=lifespan)

    @app.exception_handler(APIError)
    async def api_error(_request: Request, error: APIError) -> JSONResponse:
        metrics.rejections.labels(error.code).inc()
        return error.response()

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, error: Exception) -> JSONResponse:
        return APIError(500, f"internal error: {type(error).__name__}: {error}", "internal_error").response()

    app.add_middleware(LatencyMiddleware, metrics=metrics)

    async def authorize(request: Request) -> None:
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        # Compared in constant time, so response timing does not leak how much of a key was right.
        if settings.api_keys and not any(
            hmac.compare_digest(token.encode(), key.encode()) for key in settings.api_keys
        ):
            message = "missing API key: send 'Authorization: Bearer <key>'" if not token else "invalid API key"
            raise APIError(401, message, "invalid_api_key")
        caller = token or (request.client.host if request.client else "anonymous")
        admission = await limiter.admit(key_identity(caller))
        if not admission.allowed:
            raise APIError(
                429,
                f"rate limit of {settings.rate_limit_requests} requests per {settings.rate_limit_window_s:g} s reached",
                "rate_limit_exceeded",
                headers=retry_after(admission.retry_after_s),
            )

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        await authorize(request)
        body = await parse_body(request, EmbeddingRequest, settings.max_request_bytes)
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts:
            raise APIError(400, "input is an empty list", "empty_input", "input")
        if len(texts) > settings.max_input_items:
            raise APIError(400, f"{len(texts)} inputs; at most {settings.max_input_items}", "too_many_inputs", "input")
        version, _alias = pool.resolve(body.model)
        model = pool.ready_model(version)
        if body.dimensions is not None and body.dimensions != model.spec.dim:
            raise APIError(
                400,
                f"model {version} makes {model.spec.dim}-d vectors and cannot shorten them to {body.dimensions}",
                "unsupported_dimensions",
                "dimensions",
            )
        results = await embedding.embed(model, texts)
        tokens = sum(result.tokens for result in results)
        data = [
            {"object": "embedding", "index": index, "embedding": vector_payload(result.vector, body.encoding_format)}
            for index, result in enumerate(results)
        ]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse({"object": "list", "data": data, "model": version, "usage": usage})

    @app.post("/v1/search")
    async def search(request: Request) -> JSONResponse:
        await authorize(request)
        body = await parse_body(request, SearchRequest, settings.max_request_bytes)
        if (body.query is None) == (body.vector is None):
            raise APIError(400, "give exactly one of query (a text) or vector", "invalid_request", "query")
        if body.k > settings.max_search_k:
            raise APIError(400, f"k={body.k}; at most {settings.max_search_k}", "invalid_request", "k")
        where = metadata_filter(body.filters)
        version, alias = pool.resolve(body.model)
        if body.query is not None:
            model = pool.ready_model(version)
            encoded = (await embedding.embed(model, [body.query], "query"))[0]
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
        result = await asyncio.to_thread(search_version, store, version, vector, body.k, where, alias)
        return JSONResponse(
            {
                "object": "list",
                "model": version,
                "alias": alias.alias if alias else None,
                "table_version": result.table_version,
                "data": result.hits,
                "usage": usage,
            }
        )

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        versions = preload_versions()
        loaded = pool.loaded()
        waiting = sorted(version for version in versions.values() if version and version not in loaded)
        body = {"ready": not waiting, "preload": versions, "loading": waiting, "loaded": sorted(loaded)}
        return JSONResponse(body, status_code=200 if not waiting else 503)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/stats")
    async def stats() -> dict:
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
            "preload": preload_versions(),
        }

    return app
