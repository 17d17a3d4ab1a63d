"""The index stage: compact a version's table and keep its indexes current.

Below `ann_min_rows` rows no ANN index is built: exact search over a compacted table is
faster and exact. Scalar indexes serve the lookups the pipeline itself makes.
"""

from dataclasses import dataclass

from resources.lance_store import LanceStore

SCALAR_INDEXES = {"content_hash": "BTREE", "origin_hash": "BTREE", "doc_id": "BTREE", "shard": "BITMAP"}
DISTANCE = "cosine"
ROWS_PER_IVF_PARTITION = 4_096


@dataclass
class IndexStats:
    rows: int
    table_version: int
    ann_index: str
    scalar_indexes: list[str]
    search_mode: str


def vector_index_type(table) -> str | None:
    for index in table.list_indices():
        if "vector" in index.columns and index.index_type not in ("BTree", "Bitmap", "LabelList", "FTS"):
            return index.index_type
    return None


def build_index(store: LanceStore, model_version: str, ann_min_rows: int, ann_index_type: str) -> IndexStats:
    table = store.open_embeddings_table(model_version)
    table.optimize()
    indexed = {column for index in table.list_indices() for column in index.columns}
    for column, index_type in SCALAR_INDEXES.items():
        if column not in indexed:
            table.create_scalar_index(column, index_type=index_type)
    rows = table.count_rows()
    if rows >= ann_min_rows and vector_index_type(table) is None:
        table.create_index(
            metric=DISTANCE,
            index_type=ann_index_type,
            num_partitions=max(1, rows // ROWS_PER_IVF_PARTITION),
            vector_column_name="vector",
        )
    ann = vector_index_type(table)
    return IndexStats(
        rows=rows,
        table_version=table.version,
        ann_index=ann or "none",
        scalar_indexes=sorted(SCALAR_INDEXES),
        search_mode=f"ANN ({ann})" if ann else f"exact (fewer than {ann_min_rows:,} rows)",
    )
