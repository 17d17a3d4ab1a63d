"""Row 11: how a version's vectors are stored and indexed, side by side on the same vectors.

Each variant is one LanceDB table of the same embedding-like vectors (see lancedb_index.py), stored
as float32 or float16, with one ANN index. Recall@10 is measured by id against exact search of the
float32 table, so it counts every loss: the stored rounding, the index's compression, the probing.
Compressed indexes (PQ, SQ, RaBitQ) are read as the pipeline reads them, with exact re-ranking of
k x REFINE_FACTOR candidates; their recall without it is reported to show what the re-ranking buys.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import lancedb
import pyarrow as pa
from lancedb.index import IvfPq, IvfRq, IvfSq

from benchmarks.lancedb_index import DIM, QUERIES, WARM_UP, embedding_like_batches, id_recall, ms, timed_search
from benchmarks.table import Row, verdict
from embedding_assets.core.index_build import ANN_INDEXES, DISTANCE, ROWS_PER_IVF_PARTITION
from embedding_assets.core.schemas import VECTOR_PRECISIONS
from embedding_assets.index import IndexConfig


@dataclass(frozen=True)
class Variant:
    name: str
    precision: str
    index: object


def variants(partitions: int) -> list[Variant]:
    default = ANN_INDEXES[IndexConfig().ann_index_type](distance_type=DISTANCE, num_partitions=partitions)
    return [
        Variant("float32, IVF_HNSW_SQ (default)", "float32", default),
        Variant("float16, IVF_HNSW_SQ", "float16", default),
        # 48 sub-vectors of 8 dimensions: 48 bytes a vector in the index, 32x smaller than float32.
        Variant(
            "float32, IVF_PQ", "float32", IvfPq(distance_type=DISTANCE, num_partitions=partitions, num_sub_vectors=48)
        ),
        Variant(
            "float16, IVF_PQ", "float16", IvfPq(distance_type=DISTANCE, num_partitions=partitions, num_sub_vectors=48)
        ),
        Variant("float32, IVF_SQ", "float32", IvfSq(distance_type=DISTANCE, num_partitions=partitions)),
        Variant("float32, IVF_RQ (RaBitQ)", "float32", IvfRq(distance_type=DISTANCE, num_partitions=partitions)),
    ]


def _stored_as(batches: list[pa.RecordBatch], precision: str) -> list[pa.RecordBatch]:
    vector_type = pa.list_(VECTOR_PRECISIONS[precision], DIM)
    schema = pa.schema([("id", pa.string()), ("vector", vector_type)])
    return [
        pa.record_batch([batch.column("id"), batch.column("vector").cast(vector_type)], schema=schema)
        for batch in batches
    ]


def _bytes_under(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def run(work: Path, rows: int) -> list[Row]:
    batches = embedding_like_batches(rows)
    queries = embedding_like_batches(QUERIES + WARM_UP, seed=99)[0].column("vector").to_numpy(zero_copy_only=False)
    partitions = max(1, rows // ROWS_PER_IVF_PARTITION)
    db = lancedb.connect(str(work / "vector-storage"))
    measured = []
    truth = None
    for number, variant in enumerate(variants(partitions)):
        name = f"v{number}"
        table = db.create_table(name, data=_stored_as(batches, variant.precision), mode="overwrite")
        if truth is None:
            _, truth = timed_search(table, queries[WARM_UP:], exact=True)
        data_bytes = _bytes_under(work / "vector-storage" / f"{name}.lance" / "data")
        started = time.perf_counter()
        table.create_index("vector", config=variant.index)
        build_seconds = time.perf_counter() - started
        index_bytes = _bytes_under(work / "vector-storage" / f"{name}.lance" / "_indices")
        timed_search(table, queries[:WARM_UP])
        timings, found = timed_search(table, queries[WARM_UP:])
        _, unrefined = timed_search(table, queries[WARM_UP:], refine_factor=None)
        measured.append(
            (
                variant,
                data_bytes,
                index_bytes,
                build_seconds,
                timings,
                id_recall(found, truth),
                id_recall(unrefined, truth),
            )
        )
        db.drop_table(name)
    _, base_data, base_index, _, base_timings, base_recall, _ = measured[0]
    result = []
    for variant, data_bytes, index_bytes, build_seconds, timings, recall, unrefined in measured:
        result.append(
            Row(
                f"11. {variant.name} at {rows:,}",
                f"recall@10 {recall:.3f}; p50 {ms(timings, 50):.1f} / p99 {ms(timings, 99):.1f} ms; "
                f"vectors {data_bytes / 2**20:,.0f} MiB, index {index_bytes / 2**20:,.0f} MiB",
                f"default: recall@10 {base_recall:.3f}; p50 {ms(base_timings, 50):.1f} ms; "
                f"{base_data / 2**20:,.0f} + {base_index / 2**20:,.0f} MiB",
                (data_bytes + index_bytes) / (base_data + base_index),
                "size, recall and latency side by side; recall ≥ 0.95",
                verdict(recall >= 0.95),
                f"ratio: bytes on disk vs the default; recall without re-ranking {unrefined:.3f}; "
                f"index built in {build_seconds:.0f} s; {partitions} partitions, nprobes 3, ef 60, refine 5",
            )
        )
    return result
