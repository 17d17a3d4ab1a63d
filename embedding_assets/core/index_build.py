"""The index stage: compact a version's table and keep its indexes current.

Below `ann_min_rows` rows no ANN index is built: exact search over a compacted table is
faster and exact. Scalar indexes serve the lookups the pipeline itself makes. The full-text index
of `documents.text` (text and hybrid search, see core/text_search.py) is kept current here too.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from lancedb.index import Bitmap, BTree, HnswPq, HnswSq, IvfFlat, IvfPq, IvfRq, IvfSq

from embedding_assets.core.store import LanceStore, versions_written_at
from embedding_assets.core.text_index import ensure_text_index

SCALAR_INDEXES = {"content_hash": BTree, "origin_hash": BTree, "doc_id": BTree, "shard": Bitmap}
# IVF_PQ, IVF_SQ and IVF_RQ (RaBitQ) keep compressed vectors only: readers re-rank with exact distances
# (REFINE_FACTOR), which brings their recall back (benchmarks/, row 11: size, recall, latency side by side).
ANN_INDEXES = {
    "IVF_HNSW_SQ": HnswSq,
    "IVF_HNSW_PQ": HnswPq,
    "IVF_PQ": IvfPq,
    "IVF_SQ": IvfSq,
    "IVF_RQ": IvfRq,
    "IVF_FLAT": IvfFlat,
}
DISTANCE = "cosine"
ROWS_PER_IVF_PARTITION = 4_096
# How readers probe an ANN index: IVF partitions visited, HNSW beam width, and candidates re-ranked
# with exact distances (k x REFINE_FACTOR rows read, quantization error gone). Measured at 1,000,000
# vectors (benchmarks/, row 5d): the tail came from probing, not re-ranking: 10 partitions with a beam
# of 150 gave p99 68 ms, 3 with 60 gave 11 ms at the same recall@10 (1.000). The ann_recall check
# measures recall with these same settings on every build, so a corpus they do not suit fails its gate.
# (NPROBES, EF) is where readers start: a build whose own recall falls short searches wider, down
# READER_SETTINGS, and the table version records its setting (SETTINGS_METADATA on the vector field, see
# core/ann_recall.py). At 250,000 static vectors one build lost recall to probing (0.964 with 3 partitions,
# 0.975 with 6), another inside the partitions (0.949 with 3 or 24 partitions, 0.978 with a beam of 200).
NPROBES = 3
EF = 60
READER_SETTINGS = ((NPROBES, EF), (6, EF), (6, 200), (12, 200), (24, 300))
SETTINGS_METADATA = {"nprobes": "search_nprobes", "ef": "search_ef"}
REFINE_FACTOR = 5
# A change's rows wait for the next compaction and index update until they are this share of the
# table's rows, or its fragments this many: readers search unindexed rows exactly (a little slower),
# and a 1 % edit does not pay to rewrite and re-index the whole table (benchmarks/, row 3).
MAX_UNINDEXED_SHARE = 0.05
MAX_FRAGMENTS = 64
# Cleanup removes table versions older than this (LanceDB's own default) unless an alias needs them.
DEFAULT_CLEANUP_AGE = timedelta(days=7)
CLEANUP_MARGIN = timedelta(hours=1)


def reader_settings(table) -> tuple[int, int]:
    """(IVF partitions probed, HNSW beam) for readers of this table version: its build's calibration, else
    (NPROBES, EF)."""
    recorded = table.schema.field("vector").metadata or {}
    nprobes, ef = (recorded.get(key.encode()) for key in SETTINGS_METADATA.values())
    return (int(nprobes), int(ef)) if nprobes and ef else (NPROBES, EF)


def record_reader_settings(table, nprobes: int, ef: int) -> None:
    """Record the search settings readers use on the vector field: a new table version, checked like any other."""
    values = {SETTINGS_METADATA["nprobes"]: str(nprobes), SETTINGS_METADATA["ef"]: str(ef)}
    table.update_field_metadata({"path": "vector", "metadata": values})


def vector_query(
    table,
    vector,
    k: int,
    nprobes: int | None = None,
    ef: int | None = None,
    refine_factor: int | None = REFINE_FACTOR,
):
    """How every reader queries a version's table (search, checks); ignored by exact search. `nprobes` and
    `ef` default to the table version's own (reader_settings); they are parameters so that calibration and
    benchmarks/ can measure others."""
    if nprobes is None or ef is None:
        own_nprobes, own_ef = reader_settings(table)
        nprobes, ef = own_nprobes if nprobes is None else nprobes, own_ef if ef is None else ef
    return (
        table.search(vector)
        .distance_type(DISTANCE)
        .nprobes(nprobes)
        .ef(max(ef, k * (refine_factor or 1)))
        .refine_factor(refine_factor)
        .limit(k)
    )


def rows_per_query(query, queries: int) -> list[list[dict]]:
    """The result rows of each of `queries` vectors searched at once, nearest first. LanceDB tags a batched
    search's rows with `query_index`; a search of one vector has none."""
    rows: list[list[dict]] = [[] for _ in range(queries)]
    for row in query.to_arrow().to_pylist():
        rows[row.pop("query_index", 0)].append(row)
    return [sorted(found, key=lambda row: row["_distance"]) for found in rows]


@dataclass
class IndexStats:
    rows: int
    table_version: int
    ann_index: str
    scalar_indexes: list[str]
    search_mode: str
    text_index: str = "none"
    # Whether this build compacted the table and brought its indexes up to date (see needs_optimize).
    optimized: bool = False
    # Whether this build created or updated the ANN index, so readers' search settings need calibrating.
    ann_changed: bool = False


def vector_index_type(table) -> str | None:
    for index in table.list_indices():
        if "vector" in index.columns and index.index_type not in ("BTree", "Bitmap", "LabelList", "FTS"):
            return index.index_type
    return None


def cleanup_horizon(table, protected: set[int], now: datetime) -> timedelta:
    """How old a table version must be for cleanup to remove it: LanceDB's default week, stretched
    so that every protected version (pinned by an alias, or rollback's target) is younger."""
    written = versions_written_at(table)
    ages = [now - written[version] for version in protected if version in written]
    return max([DEFAULT_CLEANUP_AGE, *(age + CLEANUP_MARGIN for age in ages)])


def needs_optimize(table) -> bool:
    """Whether enough rows are unindexed, or the table is split in enough fragments, to compact it and
    update its indexes now rather than at a later change."""
    stats = table.stats()
    if stats["fragment_stats"]["num_fragments"] > MAX_FRAGMENTS:
        return True
    unindexed = max((table.index_stats(index.name).num_unindexed_rows for index in table.list_indices()), default=0)
    return unindexed > MAX_UNINDEXED_SHARE * max(1, stats["num_rows"])


def build_index(
    store: LanceStore,
    model_version: str,
    ann_min_rows: int,
    ann_index_type: str,
    protected: set[int] = frozenset(),
    always_optimize: bool = True,
) -> IndexStats:
    """Compact, clean up and index (a change's run: only when `needs_optimize`); `protected` table versions
    stay readable whatever their age."""
    table = store.open_embeddings_table(model_version)
    optimized = always_optimize or needs_optimize(table)
    if optimized:
        table.optimize(cleanup_older_than=cleanup_horizon(table, protected, datetime.now(timezone.utc)))
    indexed = {column for index in table.list_indices() for column in index.columns}
    for column, index_config in SCALAR_INDEXES.items():
        if column not in indexed:
            table.create_index(column, config=index_config())
    rows = table.count_rows()
    created = rows >= ann_min_rows and vector_index_type(table) is None
    if created:
        partitions = max(1, rows // ROWS_PER_IVF_PARTITION)
        table.create_index(
            "vector", config=ANN_INDEXES[ann_index_type](distance_type=DISTANCE, num_partitions=partitions)
        )
    ann = vector_index_type(table)
    text_index = ensure_text_index(store)
    return IndexStats(
        rows=rows,
        table_version=table.version,
        ann_index=ann or "none",
        scalar_indexes=sorted(SCALAR_INDEXES),
        search_mode=f"ANN ({ann})" if ann else f"exact (fewer than {ann_min_rows:,} rows)",
        text_index=text_index,
        optimized=optimized,
        ann_changed=ann is not None and (optimized or created),
    )
