"""Serving configuration, read from the environment (no secret lives in code or files)."""

import os

from pydantic import BaseModel, Field

SECONDS_PER_DAY = 24 * 3600


class ServingSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    # Empty: an in-process LRU cache and in-process rate limits (one server, nothing shared).
    redis_url: str = ""
    redis_prefix: str = "embedding-api"
    # Per Redis operation: a dead Redis must not add more than this to a request before the fallback.
    redis_timeout_s: float = Field(default=0.2, gt=0)
    # Empty: no authentication (a laptop); set it in any shared deployment.
    api_keys: tuple[str, ...] = ()
    rate_limit_requests: int = Field(default=600, gt=0)
    rate_limit_window_s: float = Field(default=60.0, gt=0)
    # Micro-batching: concurrent requests wait at most this long to share one model call.
    batch_window_ms: float = Field(default=2.0, ge=0, le=5.0)
    batch_max_items: int = Field(default=64, gt=0)
    batch_max_tokens: int = Field(default=16_384, gt=0)
    max_input_items: int = Field(default=2048, gt=0)
    max_request_bytes: int = Field(default=8 << 20, gt=0)
    max_search_k: int = Field(default=100, gt=0)
    cache_ttl_s: int = Field(default=7 * SECONDS_PER_DAY, gt=0)
    lru_entries: int = Field(default=100_000, gt=0)
    # Loaded at start-up, so the first request does not wait (aliases or version keys).
    preload: tuple[str, ...] = ("live",)

    @classmethod
    def from_env(cls) -> "ServingSettings":
        env = os.environ
        values = {
            "host": env.get("HOST"),
            "port": env.get("PORT"),
            "redis_url": env.get("REDIS_URL"),
            "redis_prefix": env.get("SERVING_REDIS_PREFIX"),
            "redis_timeout_s": env.get("SERVING_REDIS_TIMEOUT_S"),
            "api_keys": _list(env.get("SERVING_API_KEYS")),
            "rate_limit_requests": env.get("SERVING_RATE_LIMIT"),
            "rate_limit_window_s": env.get("SERVING_RATE_WINDOW_S"),
            "batch_window_ms": env.get("SERVING_BATCH_WINDOW_MS"),
            "batch_max_items": env.get("SERVING_BATCH_MAX_ITEMS"),
            "batch_max_tokens": env.get("SERVING_BATCH_MAX_TOKENS"),
            "preload": _list(env.get("SERVING_PRELOAD")),
        }
        return cls.model_validate({key: value for key, value in values.items() if value is not None})


def _list(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(item.strip() for item in value.split(",") if item.strip())
