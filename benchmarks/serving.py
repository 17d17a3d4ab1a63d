"""Row 8: the serving API under a bounded load, against calling the encoder directly in-process.

The server runs as `python -m serving` in its own process (as `make serve` does), with the real
Redis; the load comes from `clients` concurrent HTTP clients on 127.0.0.1 for `seconds` each.
"""

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import redis
from dagster import instance_for_test

from benchmarks.corpora import distinct_texts, stdlib_records, write_jsonl
from benchmarks.deployment import DEFAULT_VERSION
from benchmarks.table import Row, verdict
from embedding_assets.cli.pipeline_runner import run_pipeline
from embedding_assets.definitions import build_definitions
from gpu_ops.loading import load_encoder
from gpu_ops.registry import load_registry
from resources.deployments import local_resources

REDIS_URL = "redis://127.0.0.1:6379/0"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODELS_YAML = PROJECT_ROOT / "models.yaml"


def _percentiles(latencies: list[float]) -> tuple[float, float, float]:
    p50, p95, p99 = np.percentile(np.asarray(latencies) * 1000, [50, 95, 99])
    return float(p50), float(p95), float(p99)


def _short_texts(cache_dir: Path, count: int) -> list[str]:
    """Single short texts (a sentence or two, well under 512 tokens), as applications send."""
    return distinct_texts(stdlib_records(cache_dir), count, min_chars=40, max_chars=300)


def direct_encoder_baseline(
    cache_dir: Path, texts: list[str], registry: Path = MODELS_YAML, version: str = DEFAULT_VERSION
) -> tuple[list[float], float]:
    """Latencies of one `encode_texts([text])` call at a time, in-process, on the same texts."""
    encoder = load_encoder(load_registry(registry).spec(version), cache_dir, "cpu")
    encoder.encode_texts(texts[:8])
    latencies = []
    for text in texts:
        started = time.perf_counter()
        encoder.encode_texts([text])
        latencies.append(time.perf_counter() - started)
    return latencies, len(texts) / sum(latencies)


async def _load(url: str, path: str, bodies, clients: int, seconds: float) -> tuple[list[float], float, int]:
    """(latencies of successful requests, requests/s, failures) for `clients` workers over `seconds`."""
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient, offset: int):
        nonlocal failures
        n = offset
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            response = await client.post(f"{url}{path}", json=bodies(n))
            if response.status_code == 200:
                latencies.append(time.perf_counter() - started)
            else:
                failures += 1
            n += clients

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client, offset) for offset in range(clients)))
        elapsed = time.perf_counter() - started
    return latencies, len(latencies) / elapsed, failures


def start_server(
    root: Path, corpus: Path, cache_dir: Path, port: int, prefix: str, extra: dict | None = None
) -> subprocess.Popen:
    """`python -m serving` over the store in `root`, once it answers /ready; `extra` adds settings."""
    env = {
        **os.environ,
        "CORPUS_URI": str(corpus),
        "EMBEDDINGS_URI": str(root / "lance"),
        "EMBEDDINGS_DATA_DIR": str(cache_dir.parent),
        "EMBEDDING_DEVICE": "cpu",
        "PORT": str(port),
        "REDIS_URL": REDIS_URL,
        "SERVING_REDIS_PREFIX": prefix,
        # The load is the point here, not the limit.
        "SERVING_RATE_LIMIT": str(10**9),
        **(extra or {}),
    }
    server = subprocess.Popen([sys.executable, "-m", "serving"], env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise RuntimeError("the serving API did not become ready")
        time.sleep(0.5)


def run(
    work: Path, cache_dir: Path, documents: int, seconds: float, clients: int, registry: Path = MODELS_YAML
) -> list[Row]:
    """The server runs the live version of `registry` (its first entry: e.g. models-cpu.yaml's ONNX int8)."""
    root = work / "serving"
    records = [r for r in stdlib_records(cache_dir) if 80 <= len(r["text"]) <= 2000][:documents]
    corpus = write_jsonl(root / "corpus.jsonl", records)
    version = next(iter(load_registry(registry).specs))
    defs = build_definitions(local_resources(str(corpus), str(root / "lance"), cache_dir, registry, device="cpu"))
    with instance_for_test() as instance:
        run_pipeline(defs, instance, say=lambda _: None)
    texts = _short_texts(cache_dir, 400)
    direct, direct_rps = direct_encoder_baseline(cache_dir, texts, registry, version)
    d50, _, d99 = _percentiles(direct)
    baseline = f"{direct_rps:,.0f} calls/s; p50 {d50:.1f} / p99 {d99:.1f} ms (encode_texts([text]) in-process)"

    port = 18000 + os.getpid() % 1000
    prefix = f"embedding-api-bench-{uuid.uuid4().hex[:8]}"
    server = start_server(root, corpus, cache_dir, port, prefix, {"MODEL_REGISTRY": str(registry)})
    url = f"http://127.0.0.1:{port}"
    warm = texts[:64]
    # name: (route, request body of the n-th request, the p99 goal in ms)
    scenarios = {
        "one short text, uncached": (
            "/v1/embeddings",
            lambda n: {"model": "live", "input": f"{texts[n % len(texts)]} ({uuid.uuid4().hex[:12]})"},
            100,
        ),
        "one short text, cached": ("/v1/embeddings", lambda n: {"model": "live", "input": warm[n % 64]}, 10),
        "search k=10, query cached": ("/v1/search", lambda n: {"query": warm[n % 64], "k": 10}, 100),
    }
    rows = []
    try:
        httpx.post(f"{url}/v1/embeddings", json={"model": "live", "input": warm}, timeout=60).raise_for_status()
        letters = iter("abcdefgh")
        for name, (path, bodies, goal_ms) in scenarios.items():
            # One client shows the latency floor; `clients` show throughput and queueing.
            for concurrency in (1, clients):
                calls_before = _model_calls(url, version)
                latencies, rps, failures = asyncio.run(_load(url, path, bodies, concurrency, seconds))
                calls = _model_calls(url, version) - calls_before
                p50, p95, p99 = _percentiles(latencies)
                rows.append(
                    Row(
                        f"8{next(letters)}. serving {version}: {name}, {concurrency} client{'s' * (concurrency > 1)}",
                        f"{rps:,.0f} req/s; p50 {p50:.1f} / p95 {p95:.1f} / p99 {p99:.1f} ms",
                        baseline,
                        rps / direct_rps,
                        f"p99 < {goal_ms} ms",
                        verdict(p99 < goal_ms and failures == 0),
                        f"{seconds:g} s on 127.0.0.1: {len(latencies):,} requests, {failures} failed, "
                        f"{calls:,} model calls ({len(latencies) / calls if calls else 0:.1f} requests per call)",
                    )
                )
    finally:
        server.terminate()
        server.wait(timeout=30)
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
    return rows


def _model_calls(url: str, version: str) -> int:
    return httpx.get(f"{url}/stats").json()["models"][version]["model_calls"]
