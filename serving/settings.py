"""Serving configuration, read from the environment (no secret lives in code or files)."""

import hashlib
import os

from pydantic import BaseModel, Field, model_validator

SECONDS_PER_DAY = 24 * 3600


def key_digest(api_key: str) -> str:
    """How a key is configured and kept: its SHA-256, so settings and memory never hold the key itself."""
    return hashlib.sha256(api_key.encode()).hexdigest()


class ServingSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    # Empty: an in-process LRU cache and in-process rate limits (one server, nothing shared).
    redis_url: str = ""
    redis_prefix: str = "embedding-api"
    # Per Redis operation: a dead Redis must not add more than this to a request before the fallback.
    redis_timeout_s: float = Field(default=0.2, gt=0)
    # SHA-256 digests (hex) of the accepted keys. Empty: no authentication (a laptop); set it in any
    # shared deployment. `python -m serving.keys <key>` prints a key's digest.
    api_key_digests: tuple[str, ...] = ()
    # Digests of keys whose every request is bulk work (re-indexing jobs): they never take online capacity.
    bulk_key_digests: tuple[str, ...] = ()
    # Digest of the key `/metrics` and `/stats` ask for; empty: they are open (scrapers on a private network).
    metrics_key_digest: str = ""
    rate_limit_requests: int = Field(default=600, gt=0)
    rate_limit_window_s: float = Field(default=60.0, gt=0)
    # Callers the in-process rate limiter remembers at most (the least recently seen are forgotten first).
    rate_limit_max_callers: int = Field(default=50_000, gt=0)
    # Micro-batching: concurrent requests wait at most this long to share one model call.
    batch_window_ms: float = Field(default=2.0, ge=0, le=5.0)
    batch_max_items: int = Field(default=64, gt=0)
    batch_max_tokens: int = Field(default=16_384, gt=0)
    # Workload classes: a request of at least this many inputs (or with `X-Workload: bulk`, or a bulk
    # key) is bulk; its texts reach the model in chunks of `bulk_chunk_items`, each started only while
    # no online work waits, on a thread of their own.
    bulk_min_items: int = Field(default=32, gt=0)
    bulk_chunk_items: int = Field(default=16, gt=0)
    # Requests of each class in flight at once; beyond, 429 with Retry-After (admission, not a queue).
    online_max_in_flight: int = Field(default=256, gt=0)
    bulk_max_in_flight: int = Field(default=4, gt=0)
    max_input_items: int = Field(default=2048, gt=0)
    max_request_bytes: int = Field(default=8 << 20, gt=0)
    max_search_k: int = Field(default=100, gt=0)
    cache_ttl_s: int = Field(default=7 * SECONDS_PER_DAY, gt=0)
    lru_entries: int = Field(default=100_000, gt=0)
    # Loaded at start-up, so the first request does not wait (aliases or version keys).
    preload: tuple[str, ...] = ("live",)
    # Version keys callable by key besides what an alias pins or canaries (an evaluation, a migration).
    servable_versions: tuple[str, ...] = ()
    # Share of canary-routed searches also run on the alias's live version, to measure top-10 overlap.
    shadow_sample_rate: float = Field(default=0.1, ge=0, le=1)

    @classmethod
    def from_env(cls) -> "ServingSettings":
        env = os.environ
        values = {
            "host": env.get("HOST"),
            "port": env.get("PORT"),
            "redis_url": env.get("REDIS_URL"),
            "redis_prefix": env.get("SERVING_REDIS_PREFIX"),
            "redis_timeout_s": env.get("SERVING_REDIS_TIMEOUT_S"),
            # Plain keys are still read from the environment (a laptop), but only their digests are kept.
            "api_keys": _list(env.get("SERVING_API_KEYS")),
            "api_key_digests": _list(env.get("SERVING_API_KEY_DIGESTS")),
            "bulk_keys": _list(env.get("SERVING_BULK_KEYS")),
            "bulk_key_digests": _list(env.get("SERVING_BULK_KEY_DIGESTS")),
            "metrics_key": env.get("SERVING_METRICS_KEY"),
            "metrics_key_digest": env.get("SERVING_METRICS_KEY_DIGEST"),
            "rate_limit_requests": env.get("SERVING_RATE_LIMIT"),
            "rate_limit_window_s": env.get("SERVING_RATE_WINDOW_S"),
            "batch_window_ms": env.get("SERVING_BATCH_WINDOW_MS"),
            "batch_max_items": env.get("SERVING_BATCH_MAX_ITEMS"),
            "batch_max_tokens": env.get("SERVING_BATCH_MAX_TOKENS"),
            "bulk_min_items": env.get("SERVING_BULK_MIN_ITEMS"),
            "bulk_chunk_items": env.get("SERVING_BULK_CHUNK_ITEMS"),
            "online_max_in_flight": env.get("SERVING_ONLINE_MAX_IN_FLIGHT"),
            "bulk_max_in_flight": env.get("SERVING_BULK_MAX_IN_FLIGHT"),
            "preload": _list(env.get("SERVING_PRELOAD")),
            "servable_versions": _list(env.get("SERVING_VERSIONS")),
            "shadow_sample_rate": env.get("SERVING_SHADOW_SAMPLE_RATE"),
        }
        return cls.model_validate({key: value for key, value in values.items() if value is not None})

    @model_validator(mode="before")
    @classmethod
    def _plain_keys_to_digests(cls, values):
        """`api_keys`, `bulk_keys` and `metrics_key` given in plain (tests, benchmarks) are kept as digests only."""
        if not isinstance(values, dict):
            return values
        values = dict(values)
        keys, bulk = tuple(values.pop("api_keys", ())), tuple(values.pop("bulk_keys", ()))
        values["api_key_digests"] = (*values.get("api_key_digests", ()), *map(key_digest, (*keys, *bulk)))
        values["bulk_key_digests"] = (*values.get("bulk_key_digests", ()), *map(key_digest, bulk))
        if values.get("metrics_key"):
            values["metrics_key_digest"] = key_digest(values.pop("metrics_key"))
        values.pop("metrics_key", None)
        return values


def _list(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(item.strip() for item in value.split(",") if item.strip())
