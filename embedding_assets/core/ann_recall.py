"""The ann_recall check: what the ANN index loses against exact search, with readers' own settings."""

import hashlib
import heapq
import time

import numpy as np

from embedding_assets.core.index_build import rows_per_query, vector_index_type, vector_query
from embedding_assets.core.index_checks import CheckOutcome
from embedding_assets.core.store import LanceStore, fixed_size_lists, scan_batches, scan_in
from gpu_ops.registry import ModelSpec

# Of the sampled queries, those also timed one at a time (as a reader sends them).
LATENCY_QUERIES = 50


def sample_row_ids(table, size: int) -> list[str]:
    """A deterministic sample of row ids: the ids with the smallest sha1, kept `size` at a time while the
    ids stream past (not every id of the table in one list)."""
    smallest: list[str] = []
    for batch in scan_batches(table, None, ["id"]):
        smallest = heapq.nsmallest(size, [*smallest, *batch.column("id").to_pylist()], key=_sha1)
    return smallest


def _sha1(row_id: str) -> bytes:
    return hashlib.sha1(row_id.encode()).digest()


def recall_with_ties(found: list[float], exact: list[float], tolerance: float = 1e-5) -> float:
    """Share of the exact top-k that the approximate search matched, by distance.

    Exact duplicates share a vector, so several rows tie at the same distance and either search
    may return any of them: a hit is any result no farther than the exact k-th neighbour.
    """
    if not exact:
        return 1.0
    return sum(distance <= exact[-1] + tolerance for distance in found[: len(exact)]) / len(exact)


def _distances_per_query(query, queries: int) -> list[list[float]]:
    """The ranked distances of each query of a batched search."""
    return [[row["_distance"] for row in found] for found in rows_per_query(query.select(["id", "_distance"]), queries)]


def ann_recall(
    store: LanceStore,
    spec: ModelSpec,
    table_version: int | None = None,
    sample_size: int = 200,
    k: int = 10,
    minimum: float = 0.95,
) -> CheckOutcome:
    table = store.open_embeddings_table(spec.key, table_version)
    index = vector_index_type(table)
    if index is None:
        return CheckOutcome(
            True,
            "no ANN index: every search is exact, so there is no approximation to measure",
            {"search_mode": "exact", "measured": False, "rows": table.count_rows()},
        )
    queries = [
        vector
        for part in scan_in(table, "id", sample_row_ids(table, sample_size), ["vector"])
        for vector in fixed_size_lists(part.column("vector"))
    ]
    # Latency is a reader's: one query at a time, on a sample. Recall compares all of them with exact
    # search in two batched searches (one scan of the table for the exact side, not one per query).
    latencies = []
    for vector in queries[:LATENCY_QUERIES]:
        started = time.perf_counter()
        vector_query(table, vector, k).select(["id", "_distance"]).to_arrow()
        latencies.append(time.perf_counter() - started)
    recalls = []
    if queries:
        approximate = _distances_per_query(vector_query(table, queries, k), len(queries))
        exact = _distances_per_query(vector_query(table, queries, k).bypass_vector_index(), len(queries))
        recalls = [recall_with_ties(found, truth) for found, truth in zip(approximate, exact)]
    recall = float(np.mean(recalls)) if recalls else 0.0
    return CheckOutcome(
        recall >= minimum,
        f"ANN recall@{k} {recall:.3f} on {len(queries)} stored vectors (minimum {minimum})",
        {
            "search_mode": f"ANN ({index})",
            "measured": True,
            f"recall_at_{k}": recall,
            "minimum": minimum,
            "queries": len(queries),
            "latency_p50_ms": float(np.percentile(latencies, 50) * 1000) if latencies else 0.0,
            "latency_p99_ms": float(np.percentile(latencies, 99) * 1000) if latencies else 0.0,
        },
    )
