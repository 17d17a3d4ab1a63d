"""The vector cache, keyed by (model version, its settings' fingerprint, content hash).

A version key never changes meaning (the registry refuses edits), and the fingerprint guards
against a key removed and registered again with other settings: nothing stale crosses versions.
Values hold the token count with the vector, so a hit still reports usage.
"""

from collections import OrderedDict

import numpy as np
import redis.asyncio as redis

from serving.batcher import Encoded
from serving.redis_link import RedisLink, RedisUnavailable

_COUNT_BYTES = 4


def encode_entry(entry: Encoded) -> bytes:
    return np.uint32(entry.tokens).tobytes() + entry.vector.astype("<f4", copy=False).tobytes()


def decode_entry(value: bytes) -> Encoded:
    tokens = int(np.frombuffer(value[:_COUNT_BYTES], dtype=np.uint32)[0])
    return Encoded(np.frombuffer(value[_COUNT_BYTES:], dtype="<f4"), tokens)


class LRUVectorCache:
    """In-process, for a single server without Redis."""

    def __init__(self, max_entries: int):
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._max_entries = max_entries

    async def get_many(self, keys: list[str]) -> list[Encoded | None]:
        found = []
        for key in keys:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            found.append(decode_entry(value) if value is not None else None)
        return found

    async def set_many(self, entries: dict[str, Encoded]) -> None:
        for key, entry in entries.items():
            self._entries[key] = encode_entry(entry)
            self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    async def close(self) -> None:
        self._entries.clear()


class RedisVectorCache:
    """Shared by every server process; entries expire after `ttl_s` (7 days by default)."""

    def __init__(self, client: redis.Redis, ttl_s: int):
        self._client = client
        self._ttl_s = ttl_s

    async def get_many(self, keys: list[str]) -> list[Encoded | None]:
        values = await self._client.mget(keys) if keys else []
        return [decode_entry(value) if value is not None else None for value in values]

    async def set_many(self, entries: dict[str, Encoded]) -> None:
        if not entries:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for key, entry in entries.items():
                pipe.set(key, encode_entry(entry), ex=self._ttl_s)
            await pipe.execute()


class TieredVectorCache:
    """The in-process LRU in front of Redis. Entries are content-addressed and never go stale, so the
    local tier is always right to answer; it also carries the server alone while Redis is down."""

    def __init__(self, local: LRUVectorCache, shared: RedisVectorCache, link: RedisLink):
        self._local = local
        self._shared = shared
        self._link = link

    async def get_many(self, keys: list[str]) -> list[Encoded | None]:
        found = dict(zip(keys, await self._local.get_many(keys)))
        missing = [key for key, entry in found.items() if entry is None]
        if missing:
            try:
                shared = await self._link.run("cache_get", lambda: self._shared.get_many(missing))
            except RedisUnavailable:
                shared = [None] * len(missing)
            from_redis = {key: entry for key, entry in zip(missing, shared) if entry is not None}
            await self._local.set_many(from_redis)
            found.update(from_redis)
        return [found[key] for key in keys]

    async def set_many(self, entries: dict[str, Encoded]) -> None:
        await self._local.set_many(entries)
        try:
            await self._link.run("cache_set", lambda: self._shared.set_many(entries))
        except RedisUnavailable:
            pass  # the entry is in the local tier; other servers compute it once more

    async def close(self) -> None:
        await self._local.close()


def cache_key(prefix: str, model_version: str, fingerprint: str, content_hash: str) -> str:
    return f"{prefix}:vector:{model_version}:{fingerprint}:{content_hash}"
