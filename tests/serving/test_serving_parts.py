"""The serving API's plain parts: micro-batching, caches, rate limits, filters."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import redis.asyncio as redis

from serving.batcher import Encoded, MicroBatcher
from serving.cache import LRUVectorCache, RedisVectorCache, TieredVectorCache, decode_entry, encode_entry
from serving.errors import APIError
from serving.metrics import ServingMetrics
from serving.models import encode_for_serving
from serving.rate_limit import LocalRateLimiter, RedisRateLimiter
from serving.redis_link import RedisLink, connect
from serving.search_api import metadata_filter
from tests.private_services import free_port


class SlowEncoder:
    """Records every call; each takes a little time, as a model does."""

    def __init__(self, seconds: float = 0.01):
        self.calls: list[list[str]] = []
        self.seconds = seconds
        self.threads: set[str] = set()

    def __call__(self, texts: list[str]) -> list[Encoded]:
        self.calls.append(list(texts))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.seconds)
        if "boom" in texts:
            raise RuntimeError("model failed")
        return [Encoded(np.full(3, len(text), dtype=np.float32), len(text)) for text in texts]


def _batcher(encoder, **limits) -> MicroBatcher:
    settings = {"window_s": 0.005, "max_items": 64, "max_tokens": 100_000, **limits}
    return MicroBatcher(encoder, ThreadPoolExecutor(max_workers=1, thread_name_prefix="model"), **settings)


def test_concurrent_requests_are_coalesced_and_answered_in_order():
    encoder = SlowEncoder()

    async def burst():
        batcher = _batcher(encoder)
        results = await asyncio.gather(*(batcher.submit(["a" * n, "b" * (n + 1)]) for n in range(1, 41)))
        await batcher.close()
        return results

    results = asyncio.run(burst())
    assert [[int(r.vector[0]) for r in pair] for pair in results] == [[n, n + 1] for n in range(1, 41)]
    assert sum(len(call) for call in encoder.calls) == 80
    assert len(encoder.calls) <= 4 and max(len(call) for call in encoder.calls) <= 64
    assert len(encoder.threads) == 1


def test_a_batch_stops_at_its_item_and_token_limits():
    encoder = SlowEncoder(seconds=0.05)

    async def burst():
        batcher = _batcher(encoder, max_items=8, max_tokens=40)
        await asyncio.gather(*(batcher.submit(["x" * 160]) for _ in range(6)))
        await asyncio.gather(*(batcher.submit(["y"]) for _ in range(20)))

    asyncio.run(burst())
    assert all(len(call) == 1 for call in encoder.calls[:6])  # each text (~40 tokens) fills the budget
    assert max(len(call) for call in encoder.calls[6:]) == 8


def test_a_model_failure_reaches_its_callers_and_the_batcher_carries_on():
    encoder = SlowEncoder()

    async def run():
        batcher = _batcher(encoder)
        with pytest.raises(RuntimeError, match="model failed"):
            await batcher.submit(["boom"])
        return await batcher.submit(["fine"])

    assert int(asyncio.run(run())[0].vector[0]) == 4


def test_cache_entries_round_trip_with_their_token_count():
    entry = Encoded(np.linspace(-1, 1, 384, dtype=np.float32), 17)
    decoded = decode_entry(encode_entry(entry))
    assert decoded.tokens == 17 and np.array_equal(decoded.vector, entry.vector)


def test_the_lru_cache_evicts_the_least_recently_used():
    async def run():
        cache = LRUVectorCache(max_entries=2)
        await cache.set_many({key: Encoded(np.ones(2, dtype=np.float32), 1) for key in ("a", "b")})
        await cache.get_many(["a"])
        await cache.set_many({"c": Encoded(np.ones(2, dtype=np.float32), 1)})
        return [entry is not None for entry in await cache.get_many(["a", "b", "c"])]

    assert asyncio.run(run()) == [True, False, True]


def test_redis_cache_and_sliding_window_on_the_real_server():
    async def run():
        client = redis.from_url("redis://127.0.0.1:6379/0")
        prefix = f"embedding-api-parts-{time.time_ns()}"
        cache = RedisVectorCache(client, ttl_s=60)
        await cache.set_many({f"{prefix}:v": Encoded(np.arange(4, dtype=np.float32), 3)})
        found = await cache.get_many([f"{prefix}:v", f"{prefix}:missing"])
        ttl = await client.ttl(f"{prefix}:v")
        limiter = RedisRateLimiter(client, prefix, limit=2, window_s=1.0)
        first = [(await limiter.admit("k")).allowed for _ in range(3)]
        waited = (await limiter.admit("k")).retry_after_s
        await asyncio.sleep(1.05)
        later = (await limiter.admit("k")).allowed
        for key in [key async for key in client.scan_iter(f"{prefix}:*")]:
            await client.delete(key)
        await client.aclose()
        return found, ttl, first, waited, later

    found, ttl, first, waited, later = asyncio.run(run())
    assert found[0].tokens == 3 and list(found[0].vector) == [0, 1, 2, 3] and found[1] is None
    assert 55 < ttl <= 60
    assert first == [True, True, False] and 0 < waited <= 1.0 and later


def test_the_tiered_cache_reads_redis_behind_its_local_tier_and_carries_on_without_redis():
    entry = Encoded(np.arange(4, dtype=np.float32), 3)

    async def shared(prefix: str):
        link = RedisLink(connect("redis://127.0.0.1:6379/0", timeout_s=0.2), ServingMetrics())
        # Written by another server: this one's local tier is empty.
        await RedisVectorCache(link.client, ttl_s=60).set_many({f"{prefix}:v": entry})
        cache = TieredVectorCache(LRUVectorCache(10), RedisVectorCache(link.client, ttl_s=60), link)
        found = await cache.get_many([f"{prefix}:v", f"{prefix}:missing"])
        await link.client.delete(f"{prefix}:v")
        again = await cache.get_many([f"{prefix}:v"])
        await link.close()
        return found, again

    async def unreachable(metrics: ServingMetrics):
        link = RedisLink(connect(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2), metrics)
        cache = TieredVectorCache(LRUVectorCache(10), RedisVectorCache(link.client, ttl_s=60), link)
        await cache.set_many({"k": entry})
        found = await cache.get_many(["k", "other"])
        up = link.up
        await link.close()
        return found, up

    found, again = asyncio.run(shared(f"embedding-api-parts-{time.time_ns()}"))
    assert found[0].tokens == 3 and list(found[0].vector) == [0, 1, 2, 3] and found[1] is None
    assert again[0] is not None  # kept by the local tier once read
    metrics = ServingMetrics()
    started = time.monotonic()
    found, up = asyncio.run(unreachable(metrics))
    assert time.monotonic() - started < 1.0 and not up
    assert found[0].tokens == 3 and found[1] is None
    # One failure marks Redis down; later operations skip it until the probe finds it back.
    errors = metrics.registry.get_sample_value
    assert errors("embedding_api_redis_errors_total", {"operation": "cache_set"}) == 1
    assert errors("embedding_api_redis_errors_total", {"operation": "cache_get"}) is None


def test_the_local_sliding_window():
    async def run():
        limiter = LocalRateLimiter(limit=2, window_s=0.2)
        admitted = [(await limiter.admit("k")).allowed for _ in range(3)]
        other = (await limiter.admit("other")).allowed
        await asyncio.sleep(0.21)
        return admitted, other, (await limiter.admit("k")).allowed

    assert asyncio.run(run()) == ([True, True, False], True, True)


def test_filters_become_a_safe_predicate():
    assert metadata_filter({}) is None
    assert metadata_filter({"shard": "003", "origin": ["computed", "exact_dup"]}) == (
        "origin IN ('computed', 'exact_dup') AND shard = '003'"
    )
    assert metadata_filter({"doc_id": "it's"}) == "doc_id = 'it''s'"
    assert metadata_filter({"doc_id_prefix": "py:os_"}) == "doc_id LIKE 'py:os\\_%' ESCAPE '\\'"
    with pytest.raises(APIError, match="cannot filter on 'vector'"):
        metadata_filter({"vector": "x"})


def test_serving_refuses_a_text_longer_than_the_window_instead_of_truncating(minilm_spec, minilm_encoder):
    long_text = " ".join(["tokenization"] * 400)
    short, too_long = encode_for_serving(minilm_encoder, minilm_spec, ["a short text", long_text])
    assert short.problem is None and short.vector.shape == (minilm_spec.dim,)
    assert too_long.vector is None and too_long.problem[0] == "input_too_long"
    assert f"at most {minilm_spec.window_tokens} tokens" in too_long.problem[1]
    np.testing.assert_allclose(short.vector, minilm_encoder.encode_texts(["a short text"]).vectors[0], atol=1e-6)


def test_the_local_limiter_remembers_a_bounded_number_of_callers():
    async def run():
        limiter = LocalRateLimiter(limit=1, window_s=60, max_callers=10)
        for n in range(1000):
            await limiter.admit(f"address:{n}")
        return limiter.callers(), (await limiter.admit("address:999")).allowed

    assert asyncio.run(run()) == (10, False)


def test_bulk_batches_wait_for_online_work_to_finish():
    online_encoder, bulk_encoder = SlowEncoder(seconds=0.2), SlowEncoder(seconds=0.01)
    started: dict[str, float] = {}

    def timed(name, encoder):
        def encode(texts):
            started.setdefault(name, time.monotonic())
            result = encoder(texts)
            started.setdefault(f"{name} done", time.monotonic())
            return result

        return encode

    async def run():
        online = _batcher(timed("online", online_encoder))
        bulk = MicroBatcher(
            timed("bulk", bulk_encoder),
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="bulk"),
            window_s=0.001,
            max_items=4,
            max_tokens=100_000,
            yield_to=online,
        )
        first = asyncio.ensure_future(online.submit(["online"]))
        await asyncio.sleep(0.02)
        results = await bulk.submit([f"bulk {n}" for n in range(10)])
        await first
        return results

    results = asyncio.run(run())
    assert len(results) == 10 and [len(call) for call in bulk_encoder.calls] == [4, 4, 2]
    assert started["bulk"] >= started["online done"]
