"""Row 5: LanceDB ingest, ANN index build, recall and latency with the shipped index defaults,
and the table size below which exact search is faster (why `ann_min_rows` is what it is)."""

import time
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.deployment import Stopwatch
from benchmarks.table import Row, verdict
from embedding_assets.core.index_build import ANN_INDEXES, DISTANCE, ROWS_PER_IVF_PARTITION, vector_query
from embedding_assets.index import IndexConfig

DIM = 384
CHUNK = 100_000
QUERIES = 100


def _clustered_batches(rows: int, seed: int = 0):
    """Unit vectors around 2,000 centres: closer to real embeddings than uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, DIM)).astype(np.float32)
    for start in range(0, rows, CHUNK):
        count = min(CHUNK, rows - start)
        vectors = centres[rng.integers(0, len(centres), count)] + 0.35 * rng.standard_normal((count, DIM)).astype(
            np.float32
        )
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        yield pa.record_batch(
            [
                pa.array([f"v{start + i}" for i in range(count)]),
                pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIM),
            ],
            names=["id", "vector"],
        )


def _latencies(table, queries, k=10, exact=False) -> tuple[list[float], list[list[str]]]:
    timings, results = [], []
    for vector in queries:
        query = vector_query(table, vector, k).select(["id"])
        if exact:
            query = query.bypass_vector_index()
        started = time.perf_counter()
        results.append(query.to_arrow().column("id").to_pylist())
        timings.append(time.perf_counter() - started)
    return timings, results


def run(work: Path, rows: int) -> list[Row]:
    db = lancedb.connect(str(work / "lance-bench"))
    schema = pa.schema([("id", pa.string()), ("vector", pa.list_(pa.float32(), DIM))])
    with Stopwatch() as parquet:
        with pq.ParquetWriter(work / "baseline.parquet", schema) as writer:
            for batch in _clustered_batches(rows):
                writer.write_batch(batch)
    with Stopwatch() as ingest:
        table = db.create_table("vectors", data=_clustered_batches(rows), schema=schema, mode="overwrite")
    queries = [
        v + 0.05 * np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
        for i, v in enumerate(
            next(_clustered_batches(QUERIES, seed=99)).column("vector").to_numpy(zero_copy_only=False)
        )
    ]

    exact_times, truth = _latencies(table, queries, exact=True)
    config = IndexConfig()
    with Stopwatch() as build:
        table.create_index(
            "vector",
            config=ANN_INDEXES[config.ann_index_type](
                distance_type=DISTANCE, num_partitions=max(1, rows // ROWS_PER_IVF_PARTITION)
            ),
        )
    ann_times, found = _latencies(table, queries)
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]))
    p50, p99 = np.percentile(ann_times, 50) * 1000, np.percentile(ann_times, 99) * 1000

    small = db.create_table("small", data=_clustered_batches(config.ann_min_rows), schema=schema, mode="overwrite")
    small_exact, _ = _latencies(small, queries[:30], exact=True)
    return [
        Row(
            f"5a. LanceDB ingest ({rows:,} × {DIM})",
            f"{rows / ingest.seconds:,.0f} vectors/s",
            f"{rows / parquet.seconds:,.0f} vectors/s (same batches to a Parquet file)",
            parquet.seconds / ingest.seconds,
            "≥ 100k vectors/s",
            verdict(rows / ingest.seconds >= 100_000),
            "clustered synthetic unit vectors, generated in the timed loop on both sides",
        ),
        Row(
            f"5b. ANN {config.ann_index_type} at {rows:,}",
            f"recall@10 {recall:.3f}, p50 {p50:.1f} ms, p99 {p99:.1f} ms",
            f"exact search p50 {np.percentile(exact_times, 50) * 1000:.1f} ms",
            float(np.percentile(exact_times, 50) / np.percentile(ann_times, 50)),
            "recall ≥ 0.95 at p99 ≤ 10 ms",
            verdict(recall >= 0.95 and p99 <= 10),
            f"index built in {build.seconds:.0f} s ({max(1, rows // ROWS_PER_IVF_PARTITION)} partitions), "
            f"refine_factor 10, {QUERIES} queries",
        ),
        Row(
            "5c. exact search below ann_min_rows",
            f"p50 {np.percentile(small_exact, 50) * 1000:.1f} ms at {config.ann_min_rows:,} rows (exact)",
            f"ANN p50 {p50:.1f} ms at {rows:,} rows",
            float(np.percentile(ann_times, 50) / np.percentile(small_exact, 50)),
            "exact no slower than ANN below the threshold",
            verdict(np.percentile(small_exact, 50) <= np.percentile(ann_times, 50) * 1.5),
            "no ANN index is built below ann_min_rows; exact search there is exact and about as fast",
        ),
    ]
