"""Row 5: LanceDB ingest, ANN index build, recall and latency with the shipped defaults, and the
table size below which no ANN index is built (exact search there takes about 10 ms).

Vectors are embedding-like: a 16-dimensional mixture of 200 clusters projected to 384
dimensions plus noise, then normalized. Real sentence embeddings have such low intrinsic
dimension; isotropic noise in 384 dimensions does not, and makes every neighbour a near tie.
"""

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
K = 10
LATENT = 16
CHUNK = 100_000
QUERIES = 100
WARM_UP = 10
SCHEMA = pa.schema([("id", pa.string()), ("vector", pa.list_(pa.float32(), DIM))])


def embedding_like_batches(rows: int, seed: int = 0) -> list[pa.RecordBatch]:
    rng = np.random.default_rng(seed)
    projection = np.random.default_rng(1).standard_normal((LATENT, DIM)).astype(np.float32)
    centres = 2 * np.random.default_rng(2).standard_normal((200, LATENT)).astype(np.float32)
    batches = []
    for start in range(0, rows, CHUNK):
        count = min(CHUNK, rows - start)
        latent = centres[rng.integers(0, len(centres), count)] + rng.standard_normal((count, LATENT)).astype(np.float32)
        vectors = latent @ projection + 0.3 * rng.standard_normal((count, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = pa.array([f"v{start + i}" for i in range(count)])
        batches.append(
            pa.record_batch([ids, pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIM)], schema=SCHEMA)
        )
    return batches


def timed_search(table, queries, exact: bool = False, **probing) -> tuple[list[float], list[list[str]]]:
    """(seconds, ids of the 10 nearest) per query, as readers query (`probing` overrides their settings)."""
    timings, found = [], []
    for vector in queries:
        query = vector_query(table, vector, K, **probing).select(["id", "_distance"])
        if exact:
            query = query.bypass_vector_index()
        started = time.perf_counter()
        found.append(query.to_arrow().column("id").to_pylist())
        timings.append(time.perf_counter() - started)
    return timings, found


def id_recall(found: list[list[str]], truth: list[list[str]]) -> float:
    """Share of the exact 10 nearest ids found, averaged (the vectors are continuous: no ties)."""
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def ms(values, percentile) -> float:
    return float(np.percentile(values, percentile) * 1000)


# Row 5d: where a query's time goes. Each probing setting runs the same queries, warm, in the same run.
PROBING_PROFILE = {
    "before (nprobes 10, ef 150, refine 5)": {"nprobes": 10, "ef": 150, "refine_factor": 5},
    "fewer partitions (nprobes 3, ef 150, refine 5)": {"nprobes": 3, "ef": 150, "refine_factor": 5},
    "now (nprobes 3, ef 60, refine 5)": {},
    "no re-ranking (nprobes 3, ef 60)": {"refine_factor": None},
}


def run(work: Path, rows: int) -> list[Row]:
    batches = embedding_like_batches(rows)
    queries = embedding_like_batches(QUERIES + WARM_UP, seed=99)[0].column("vector").to_numpy(zero_copy_only=False)
    db = lancedb.connect(str(work / "lance-bench"))
    with Stopwatch() as parquet:
        with pq.ParquetWriter(work / "baseline.parquet", SCHEMA) as writer:
            for batch in batches:
                writer.write_batch(batch)
    with Stopwatch() as ingest:
        table = db.create_table("vectors", data=batches, schema=SCHEMA, mode="overwrite")

    timed_search(table, queries[:WARM_UP], exact=True)
    exact_times, truth = timed_search(table, queries[WARM_UP:], exact=True)
    config = IndexConfig()
    partitions = max(1, rows // ROWS_PER_IVF_PARTITION)
    with Stopwatch() as build:
        table.create_index(
            "vector", config=ANN_INDEXES[config.ann_index_type](distance_type=DISTANCE, num_partitions=partitions)
        )
    profile = {}
    for name, probing in PROBING_PROFILE.items():
        timed_search(table, queries[:WARM_UP], **probing)
        timings, found = timed_search(table, queries[WARM_UP:], **probing)
        profile[name] = (timings, id_recall(found, truth))
    ann_times, recall = profile["now (nprobes 3, ef 60, refine 5)"]

    small = db.create_table("small", data=embedding_like_batches(config.ann_min_rows), schema=SCHEMA, mode="overwrite")
    timed_search(small, queries[:WARM_UP], exact=True)
    small_times, _ = timed_search(small, queries[WARM_UP:], exact=True)
    tiny = db.create_table("tiny", data=embedding_like_batches(100), schema=SCHEMA, mode="overwrite")
    timed_search(tiny, queries[:WARM_UP], exact=True)
    floor_times, _ = timed_search(tiny, queries[WARM_UP:], exact=True)
    before_times, _ = profile["before (nprobes 10, ef 150, refine 5)"]
    return [
        Row(
            f"5a. LanceDB ingest ({rows:,} × {DIM})",
            f"{rows / ingest.seconds:,.0f} vectors/s",
            f"{rows / parquet.seconds:,.0f} vectors/s (same Arrow batches to a Parquet file)",
            parquet.seconds / ingest.seconds,
            "≥ 100k vectors/s",
            verdict(rows / ingest.seconds >= 100_000),
            "batches generated before timing",
        ),
        Row(
            f"5b. ANN {config.ann_index_type} at {rows:,}",
            f"recall@10 {recall:.3f}, p50 {ms(ann_times, 50):.1f} ms, p99 {ms(ann_times, 99):.1f} ms",
            f"exact search p50 {ms(exact_times, 50):.0f} ms",
            float(np.percentile(exact_times, 50) / np.percentile(ann_times, 50)),
            "recall ≥ 0.95 at p99 ≤ 10 ms",
            verdict(recall >= 0.95 and ms(ann_times, 99) <= 10),
            f"index built in {build.seconds:.0f} s ({partitions} partitions); queries: nprobes 3, ef 60, "
            f"refine 5; {QUERIES} queries after {WARM_UP} warm-up; recall by id against exact search",
        ),
        Row(
            f"5c. exact search at ann_min_rows ({config.ann_min_rows:,})",
            f"p50 {ms(small_times, 50):.1f} ms, p99 {ms(small_times, 99):.1f} ms (exact, no index)",
            f"ANN p50 {ms(ann_times, 50):.1f} ms at {rows:,} rows",
            float(np.percentile(small_times, 50) / np.percentile(ann_times, 50)),
            "skip the index where exact is about as fast",
            verdict(ms(small_times, 50) <= 2 * ms(ann_times, 50)),
            "below this size exact search is exact and about as fast, so no ANN index is built",
        ),
        Row(
            f"5d. where the tail came from ({rows:,})",
            "; ".join(
                f"{name}: recall {recall:.3f}, p50 {ms(timings, 50):.1f} / p99 {ms(timings, 99):.1f} ms"
                for name, (timings, recall) in profile.items()
            ),
            f"before: p99 {ms(before_times, 99):.1f} ms",
            float(np.percentile(before_times, 99) / np.percentile(ann_times, 99)),
            "p99 ≤ 10 ms at recall ≥ 0.95",
            verdict(recall >= 0.95 and ms(ann_times, 99) <= 10),
            f"the same warm queries per setting; floor (LanceDB + Python on a 100-row table): "
            f"p50 {ms(floor_times, 50):.1f} / p99 {ms(floor_times, 99):.1f} ms",
        ),
    ]
