"""The ann_recall check: what the ANN index loses against exact search, with readers' own settings.

A build also calibrates those settings: when the index's recall on a sample falls short, readers of
that table version probe more IVF partitions or widen the HNSW beam (calibrate_probes). The check then
measures the recorded setting on a different sample, so the gate is never graded on the queries the
calibration chose by.
"""

import hashlib
import heapq
import time
from dataclasses import dataclass
from functools import partial

import numpy as np

from embedding_assets.core.index_build import (
    READER_SETTINGS,
    reader_settings,
    record_reader_settings,
    rows_per_query,
    vector_index_type,
    vector_query,
)
from embedding_assets.core.index_checks import CheckOutcome
from embedding_assets.core.store import LanceStore, fixed_size_lists, scan_batches, scan_in, scan_pages
from gpu_ops.registry import ModelSpec

MINIMUM_RECALL = 0.95
# Calibration aims this far above the gate's minimum, so that the check's own sample clears it too.
CALIBRATION_MARGIN = 0.01
CALIBRATION_SAMPLE = "calibration"
# Of the sampled queries, those also timed one at a time (as a reader sends them).
LATENCY_QUERIES = 50
ANN_BATCH = 25


def sample_row_ids(table, size: int, salt: str = "") -> list[str]:
    """A deterministic sample of row ids: the ids with the smallest sha1 (of salt + id: another salt, another
    sample), kept `size` at a time while the ids stream past (not every id of the table in one list)."""
    key = partial(_salted_sha1, salt)
    smallest: list[str] = []
    for batch in scan_batches(table, None, ["id"]):
        smallest = heapq.nsmallest(size, [*smallest, *batch.column("id").to_pylist()], key=key)
    return smallest


def _salted_sha1(salt: str, row_id: str) -> bytes:
    return hashlib.sha1((salt + row_id).encode()).digest()


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


def _sampled_vectors(table, size: int, salt: str = "") -> list:
    return [
        vector
        for part in scan_in(table, "id", sample_row_ids(table, size, salt), ["vector"])
        for vector in fixed_size_lists(part.column("vector"))
    ]


def exact_distances(table, queries: list, k: int) -> list[list[float]]:
    """The k smallest cosine distances of each query over every row, a page of rows at a time: LanceDB's exact
    search of a batch scans the whole table at once (+259 MB over its start at 250,000 rows of 256 floats)."""
    if not queries:
        return []
    unit = np.asarray(queries, dtype=np.float32)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    best = np.full((len(unit), 0), np.inf, dtype=np.float32)
    for page in scan_pages(table, columns=["vector"]):
        vectors = fixed_size_lists(page.column("vector")).astype(np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        best = np.concatenate([best, 1.0 - unit @ vectors.T], axis=1)
        best = np.sort(best, axis=1)[:, :k]
    return best.tolist()


class _RecallProbe:
    """Sampled stored vectors with their exact top k, measured against the ANN index at any probing, ANN_BATCH
    queries per search (a batch of 200 held +399 MB at 250,000 rows, 25 at a time +204 MB)."""

    def __init__(self, table, queries: list, k: int):
        self.table, self.queries, self.k = table, queries, k
        self.exact = exact_distances(table, queries, k)

    def recall(self, nprobes: int | None = None, ef: int | None = None) -> float:
        if not self.queries:
            return 0.0
        found = []
        for start in range(0, len(self.queries), ANN_BATCH):
            batch = self.queries[start : start + ANN_BATCH]
            found += _distances_per_query(vector_query(self.table, batch, self.k, nprobes, ef), len(batch))
        return float(np.mean([recall_with_ties(f, truth) for f, truth in zip(found, self.exact)]))


@dataclass
class ProbeCalibration:
    nprobes: int
    ef: int
    recall: float
    # recall measured at each setting tried, in order ("nprobes/ef" -> recall)
    tried: dict[str, float]


def calibrate_probes(
    table, minimum: float = MINIMUM_RECALL, sample_size: int = 200, k: int = 10
) -> ProbeCalibration | None:
    """The cheapest of READER_SETTINGS (IVF partitions probed, HNSW beam) at which the index finds `minimum` +
    CALIBRATION_MARGIN of the exact top k on a calibration sample (else the widest), recorded on the table for
    its readers when it differs from theirs now. None without an ANN index (exact search has nothing to tune).
    Builds of the same vectors differ (k-means, graphs): at 250,000 static vectors one lost recall to
    probing, another inside its partitions (benchmarks/, row 13)."""
    if vector_index_type(table) is None:
        return None
    probe = _RecallProbe(table, _sampled_vectors(table, sample_size, CALIBRATION_SAMPLE), k)
    tried: dict[str, float] = {}
    for nprobes, ef in READER_SETTINGS:
        recall = tried[f"{nprobes}/{ef}"] = probe.recall(nprobes, ef)
        if recall >= minimum + CALIBRATION_MARGIN:
            break
    if (nprobes, ef) != reader_settings(table):
        record_reader_settings(table, nprobes, ef)
    return ProbeCalibration(nprobes, ef, recall, tried)


def ann_recall(
    store: LanceStore,
    spec: ModelSpec,
    table_version: int | None = None,
    sample_size: int = 200,
    k: int = 10,
    minimum: float = MINIMUM_RECALL,
) -> CheckOutcome:
    table = store.open_embeddings_table(spec.key, table_version)
    index = vector_index_type(table)
    if index is None:
        return CheckOutcome(
            True,
            "no ANN index: every search is exact, so there is no approximation to measure",
            {"search_mode": "exact", "measured": False, "rows": table.count_rows()},
        )
    queries = _sampled_vectors(table, sample_size)
    # Latency is a reader's: one query at a time, on a sample. Recall compares all of them with exact
    # search (one pass over the table's pages for the exact side, not one search per query).
    latencies = []
    for vector in queries[:LATENCY_QUERIES]:
        started = time.perf_counter()
        vector_query(table, vector, k).select(["id", "_distance"]).to_arrow()
        latencies.append(time.perf_counter() - started)
    recall = _RecallProbe(table, queries, k).recall()
    nprobes, ef = reader_settings(table)
    return CheckOutcome(
        recall >= minimum,
        f"ANN recall@{k} {recall:.3f} on {len(queries)} stored vectors, probing {nprobes} partitions with a "
        f"beam of {ef} (minimum {minimum})",
        {
            "search_mode": f"ANN ({index})",
            "measured": True,
            f"recall_at_{k}": recall,
            "minimum": minimum,
            "queries": len(queries),
            "nprobes": nprobes,
            "ef": ef,
            "latency_p50_ms": float(np.percentile(latencies, 50) * 1000) if latencies else 0.0,
            "latency_p99_ms": float(np.percentile(latencies, 99) * 1000) if latencies else 0.0,
        },
    )
