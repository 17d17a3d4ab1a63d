"""Per-caller sliding-window rate limits: in Redis (shared by every server) or in process.

A caller is its API key when keys are configured, else its client address (a token it sends is then
ignored, so sending a new token each time gains nothing). The in-process limiter remembers at most
`max_callers` callers, forgetting the least recently seen first; Redis keys expire with their window.

With Redis down, limits are kept in process: each server then admits up to the limit on its own,
which errs toward serving, never toward refusing a caller for an outage that is not theirs.
"""

import hashlib
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass

import redis.asyncio as redis

from serving.redis_link import RedisLink, RedisUnavailable

# Drop what fell out of the window, count, and admit if under the limit: one atomic step.
_SLIDING_WINDOW = """
local key, now, window, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, now, ARGV[4])
  redis.call('PEXPIRE', key, window)
  return 0
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return tonumber(oldest[2]) + window - now
"""


@dataclass(frozen=True)
class Admission:
    allowed: bool
    retry_after_s: float = 0.0


def key_identity(api_key: str) -> str:
    """What a limit is stored under: a digest, so no key is ever written to Redis."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:24]


class RedisRateLimiter:
    def __init__(self, client: redis.Redis, prefix: str, limit: int, window_s: float):
        self._script = client.register_script(_SLIDING_WINDOW)
        self._prefix = prefix
        self._limit = limit
        self._window_ms = int(window_s * 1000)

    async def admit(self, identity: str) -> Admission:
        wait_ms = await self._script(
            keys=[f"{self._prefix}:ratelimit:{identity}"],
            args=[int(time.time() * 1000), self._window_ms, self._limit, uuid.uuid4().hex],
        )
        return Admission(True) if int(wait_ms) == 0 else Admission(False, int(wait_ms) / 1000)


class LocalRateLimiter:
    def __init__(self, limit: int, window_s: float, max_callers: int = 50_000):
        self._limit = limit
        self._window_s = window_s
        self._max_callers = max_callers
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def callers(self) -> int:
        return len(self._seen)

    async def admit(self, identity: str) -> Admission:
        now = time.monotonic()
        seen = self._seen.setdefault(identity, deque())
        self._seen.move_to_end(identity)
        while len(self._seen) > self._max_callers:
            self._seen.popitem(last=False)
        while seen and seen[0] <= now - self._window_s:
            seen.popleft()
        if len(seen) < self._limit:
            seen.append(now)
            return Admission(True)
        return Admission(False, seen[0] + self._window_s - now)


class FallbackRateLimiter:
    """Redis's shared window while Redis answers, the in-process window while it does not."""

    def __init__(self, shared: RedisRateLimiter, local: LocalRateLimiter, link: RedisLink):
        self._shared = shared
        self._local = local
        self._link = link

    async def admit(self, identity: str) -> Admission:
        try:
            return await self._link.run("rate_limit", lambda: self._shared.admit(identity))
        except RedisUnavailable:
            return await self._local.admit(identity)
