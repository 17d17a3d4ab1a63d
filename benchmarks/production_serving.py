"""Row 9: serving for production traffic, on a 300-document index, each figure against a baseline
measured in the same run.

- 9a-c, workload isolation: online latency (one client, one uncached short text at a time) idle and
  while 3 bulk clients send 256 uncached texts per request, and the bulk clients' throughput alone and
  shared; the baseline is the same server with one lane for all work (`SERVING_BULK_MIN_ITEMS` too high
  to ever classify a request as bulk), as the API was before.
- 9d, canary routing: cached-query search with and without a canary on the live alias (the canary
  names the live version itself, so only the routing differs).
- 9e-g, search modes: latency of one cached-query search at a time, and recall@10 on the evaluation
  set the promotion gate uses (documents with the same text not collapsed, as the gate counts them).

The server runs as `python -m serving` in its own process, with the real Redis.
"""

import asyncio
import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
import redis
from dagster import instance_for_test

from benchmarks.corpora import distinct_texts, stdlib_records, write_jsonl
from benchmarks.serving import REDIS_URL, start_server
from benchmarks.table import Row, verdict
from embedding_assets.cli.pipeline_runner import run_pipeline
from embedding_assets.core.aliases import current_alias
from embedding_assets.core.canary import clear_canary, set_canary
from embedding_assets.definitions import build_definitions
from resources.deployments import local_resources

BULK_CLIENTS = 3
BULK_TEXTS = 256


def _ms(latencies: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.asarray(latencies) * 1000, [50, 99])
    return float(p50), float(p99)


async def _online(client: httpx.AsyncClient, url: str, texts: list[str], until: float) -> list[float]:
    latencies, n = [], 0
    while time.perf_counter() < until:
        body = {"model": "live", "input": f"{texts[n % len(texts)]} ({uuid.uuid4().hex[:12]})"}
        started = time.perf_counter()
        response = await client.post(f"{url}/v1/embeddings", json=body)
        response.raise_for_status()
        latencies.append(time.perf_counter() - started)
        n += 1
    return latencies


async def _bulk(client: httpx.AsyncClient, url: str, texts: list[str], until: float) -> tuple[int, float]:
    """(texts embedded, when the last request ended) for one bulk client sending requests of 256
    uncached texts until `until`; its last request is counted whole, however late it ends."""
    done = 0
    while time.perf_counter() < until:
        tag = uuid.uuid4().hex[:12]
        body = {"model": "live", "input": [f"{text} ({tag})" for text in texts[:BULK_TEXTS]]}
        response = await client.post(f"{url}/v1/embeddings", json=body)
        response.raise_for_status()
        done += BULK_TEXTS
    return done, time.perf_counter()


async def _bulk_clients(client: httpx.AsyncClient, url: str, texts: list[str], seconds: float, offset: int) -> float:
    """Texts/s of BULK_CLIENTS clients together, from their start to the end of their last request."""
    started = time.perf_counter()
    results = await asyncio.gather(
        *(_bulk(client, url, texts[i + offset :], started + seconds) for i in range(BULK_CLIENTS))
    )
    return sum(done for done, _ in results) / (max(ended for _, ended in results) - started)


def _isolation(url: str, texts: list[str], seconds: float) -> dict:
    async def measure():
        async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=16)) as client:
            # Both lanes warm (the bulk lane loads its encoder on its first call) before anything is timed.
            warm = {"model": "live", "input": texts[100 : 100 + BULK_TEXTS], "user": "warm-up"}
            (await client.post(f"{url}/v1/embeddings", json=warm, headers={"X-Workload": "bulk"})).raise_for_status()
            await _online(client, url, texts[200:], time.perf_counter() + 2)
            idle = await _online(client, url, texts, time.perf_counter() + seconds)
            alone = await _bulk_clients(client, url, texts, seconds, 0)
            online_task = asyncio.ensure_future(_online(client, url, texts[7:], time.perf_counter() + seconds))
            shared = await _bulk_clients(client, url, texts, seconds, 3)
            return {"idle": idle, "loaded": await online_task, "bulk_alone": alone, "bulk_shared": shared}

    return asyncio.run(measure())


def _search_latency(url: str, bodies: list[dict], seconds: float) -> list[float]:
    latencies, n = [], 0
    with httpx.Client(timeout=60) as client:
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            started = time.perf_counter()
            client.post(f"{url}/v1/search", json=bodies[n % len(bodies)]).raise_for_status()
            latencies.append(time.perf_counter() - started)
            n += 1
    return latencies


def _recall(url: str, queries, mode: str) -> float:
    hits = 0
    with httpx.Client(timeout=60) as client:
        for query in queries:
            body = {"query": query.query, "k": 10, "mode": mode, "collapse_duplicates": False}
            found = [hit["doc_id"] for hit in client.post(f"{url}/v1/search", json=body).json()["data"]]
            hits += any(doc_id in query.relevant for doc_id in found)
    return hits / len(queries)


def run(work: Path, cache_dir: Path, documents: int = 300, seconds: float = 20) -> list[Row]:
    root = work / "production-serving"
    records = [r for r in stdlib_records(cache_dir) if 80 <= len(r["text"]) <= 2000][:documents]
    corpus = write_jsonl(root / "corpus.jsonl", records)
    resources = local_resources(str(corpus), str(root / "lance"), cache_dir, device="cpu")
    defs = build_definitions(resources)
    with instance_for_test() as instance:
        run_pipeline(defs, instance, say=lambda _: None)
    store = resources["lancedb"].store()
    texts = distinct_texts(stdlib_records(cache_dir), 600, min_chars=40, max_chars=300)
    port = 19000 + os.getpid() % 1000
    url = f"http://127.0.0.1:{port}"
    prefix = f"embedding-api-bench9-{uuid.uuid4().hex[:8]}"
    measured = {}
    try:
        for lanes, extra in (("one lane", {"SERVING_BULK_MIN_ITEMS": str(10**6)}), ("isolated", {})):
            server = start_server(root, corpus, cache_dir, port, prefix, extra)
            try:
                measured[lanes] = _isolation(url, texts, seconds)
            finally:
                server.terminate()
                server.wait(timeout=30)
        server = start_server(root, corpus, cache_dir, port, prefix)
        try:
            warm = texts[:32]
            httpx.post(f"{url}/v1/embeddings", json={"model": "live", "input": warm}, timeout=60).raise_for_status()
            bodies = [{"query": text, "k": 10} for text in warm]
            plain = _search_latency(url, bodies, seconds / 2)
            alias = current_alias(store)
            set_canary(
                store, "live", alias.model_version, alias.table_version, 0.5, "bench", datetime.now(timezone.utc)
            )
            canaried = _search_latency(url, bodies, seconds / 2)
            clear_canary(store, "live")
            queries = resources["promotion_policy"].eval_set(store).queries
            modes = {}
            for mode in ("vector", "text", "hybrid"):
                latencies = _search_latency(url, [{**body, "mode": mode} for body in bodies], seconds / 2)
                modes[mode] = (latencies, _recall(url, queries, mode))
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
    return _rows(measured, plain, canaried, modes, len(queries), seconds)


def _rows(measured: dict, plain, canaried, modes: dict, queries: int, seconds: float) -> list[Row]:
    isolated, one_lane = measured["isolated"], measured["one lane"]
    rows = []
    for label, result in (("isolated lanes", isolated), ("one lane (before)", one_lane)):
        i50, i99 = _ms(result["idle"])
        l50, l99 = _ms(result["loaded"])
        ratio = l99 / i99
        rows.append(
            Row(
                f"9a. online under {BULK_CLIENTS} bulk clients × {BULK_TEXTS} texts, {label}",
                f"p50 {l50:.1f} / p99 {l99:.1f} ms loaded",
                f"p50 {i50:.1f} / p99 {i99:.1f} ms idle",
                ratio,
                "p99 loaded ≤ 1.5× idle",
                verdict(ratio <= 1.5),
                f"{seconds:g} s each; {len(result['loaded'])} online requests while loaded",
            )
        )
        share = result["bulk_shared"] / result["bulk_alone"]
        rows.append(
            Row(
                f"9b. bulk throughput shared with online, {label}",
                f"{result['bulk_shared']:,.0f} texts/s shared",
                f"{result['bulk_alone']:,.0f} texts/s alone",
                share,
                "≥ 0.8× alone",
                verdict(share >= 0.8),
                f"{BULK_CLIENTS} clients, {BULK_TEXTS} uncached texts per request",
            )
        )
    p50, p99 = _ms(plain)
    c50, c99 = _ms(canaried)
    rows.append(
        Row(
            "9c. canary routing overhead (search, query cached)",
            f"p50 {c50:.1f} / p99 {c99:.1f} ms with a 50 % canary",
            f"p50 {p50:.1f} / p99 {p99:.1f} ms without",
            c50 / p50,
            "p50 within 1.1×",
            verdict(c50 / p50 <= 1.1),
            "the canary names the live version: routing and the 10 % shadow queries (run off the request path) differ",
        )
    )
    vector_latency, vector_recall = modes["vector"]
    v50, _ = _ms(vector_latency)
    for letter, mode in zip("def", ("vector", "text", "hybrid")):
        latencies, recall = modes[mode]
        m50, m99 = _ms(latencies)
        rows.append(
            Row(
                f"9{letter}. search mode {mode} (k=10, query cached)",
                f"recall@10 {recall:.3f}; p50 {m50:.1f} / p99 {m99:.1f} ms",
                f"vector: recall@10 {vector_recall:.3f}; p50 {v50:.1f} ms",
                m50 / v50,
                "recall reported; hybrid ≥ vector",
                verdict(recall >= vector_recall) if mode == "hybrid" else "—",
                f"{queries} evaluation queries (the gate's set, derived from the corpus)",
            )
        )
    return rows
