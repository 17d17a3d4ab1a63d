"""The API's one Redis connection, and whether Redis can be used right now.

Redis only shares the vector cache and the rate limits between servers; every answer can be made
without it. So a Redis error never reaches a caller: the operation raises `RedisUnavailable`, the
caller falls back to its in-process tier, and further operations skip Redis at once (no timeout per
request) until a background probe, retried with a backoff, finds Redis answering again. An outage is
logged when it starts and when it ends, not per request; /metrics counts the errors.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from serving.metrics import ServingMetrics

log = logging.getLogger(__name__)
T = TypeVar("T")

# First wait before probing a lost Redis, doubled after each failed probe up to the last.
PROBE_DELAY_S = 0.5
PROBE_MAX_DELAY_S = 4.0


class RedisUnavailable(Exception):
    """Redis is down or just failed: use the in-process tier."""


def connect(url: str, timeout_s: float) -> redis.Redis:
    """A client that fails fast: one immediate retry (a pooled connection gone stale after a Redis
    restart), no backoff, and short socket timeouts, so a dead Redis costs a request milliseconds."""
    return redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), retries=1)
    )


class RedisLink:
    def __init__(self, client: redis.Redis, metrics: ServingMetrics):
        self.client = client
        self._metrics = metrics
        self._probe: asyncio.Task | None = None
        metrics.redis_up.set(1)

    @property
    def up(self) -> bool:
        return self._probe is None

    async def run(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`'s result, or `RedisUnavailable` when Redis is down or fails now."""
        if not self.up:
            raise RedisUnavailable(operation)
        try:
            return await call()
        except (redis.RedisError, OSError) as error:
            self._metrics.redis_errors.labels(operation).inc()
            self._lost(operation, error)
            raise RedisUnavailable(operation) from error

    def _lost(self, operation: str, error: Exception) -> None:
        if not self.up:  # concurrent requests failing together: one outage, one log line
            return
        log.warning(
            "Redis failed (%s: %s: %s); serving from the in-process cache and rate limiter until it answers again",
            operation,
            type(error).__name__,
            error,
        )
        self._metrics.redis_up.set(0)
        self._probe = asyncio.get_running_loop().create_task(self._probe_until_back())

    async def _probe_until_back(self) -> None:
        delay = PROBE_DELAY_S
        while True:
            await asyncio.sleep(delay)
            try:
                await self.client.ping()
                break
            except (redis.RedisError, OSError):
                self._metrics.redis_errors.labels("probe").inc()
                delay = min(2 * delay, PROBE_MAX_DELAY_S)
        log.info("Redis answers again; the shared cache and rate limits are back in use")
        self._metrics.redis_up.set(1)
        self._probe = None

    async def close(self) -> None:
        if self._probe:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await asyncio.shield(self.client.aclose())
