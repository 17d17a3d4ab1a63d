"""Vectors of content a version's table no longer holds, kept for a window so bringing it back is free.

A deleted document, or one whose content changed, takes its rows out of `embeddings__<version>`;
restoring it (a truncated file put back, an edit reverted) would pay the model again for vectors
computed minutes before. So the embedding run first copies those rows into `retained__<version>`,
keyed by (origin_hash, chunk): a killed run has lost nothing, and a rerun overwrites what it kept.
When the content comes back (the same document or any other with that content) the run reads its
vectors from here as it reads them from the version's table. Readers never open this table. A
daily job drops rows retained longer than the window, and a version's retention drops its table.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pyarrow as pa

from embedding_assets.core.schemas import (
    EMBEDDINGS_TABLE_PREFIX,
    RETAINED_TABLE_PREFIX,
    TIMESTAMP,
    retained_schema,
    retained_table_name,
)
from embedding_assets.core.store import LanceStore, ensure_btree_indexes, scan, sql_in, sql_literal, upsert

# Documents whose rows are read and written at a time: what one retain holds in memory.
RETAIN_BATCH_DOCUMENTS = 256
# origin_hash: the run's lookups of returning content; id: the key every write merges on.
RETAINED_LOOKUP_COLUMNS = ("origin_hash", "id")
DEFAULT_RETENTION_DAYS = 7


def retained_table(store: LanceStore, model_version: str, vector_type: pa.FixedSizeListType):
    return store.db.create_table(retained_table_name(model_version), schema=retained_schema(vector_type), exist_ok=True)


def open_retained_table(store: LanceStore, model_version: str):
    """The version's retained table, or None when it has never retained anything."""
    name = retained_table_name(model_version)
    return store.db.open_table(name) if store.has_table(name) else None


def retain_documents(
    store: LanceStore,
    model_version: str,
    table,
    shard: str,
    doc_ids: Iterable[str],
    now: datetime,
    batch_documents: int = RETAIN_BATCH_DOCUMENTS,
) -> int:
    """Copy the rows `doc_ids` have in the version's `table` (in `shard`) to its retained table, before
    the caller deletes or overwrites them; returns the rows kept (each content's rows once)."""
    ordered = sorted(set(doc_ids))
    if not ordered:
        return 0
    retained = retained_table(store, model_version, table.schema.field("vector").type)
    kept = 0
    for start in range(0, len(ordered), batch_documents):
        condition = f"({sql_in('doc_id', ordered[start : start + batch_documents])}) AND shard = {sql_literal(shard)}"
        rows = _keyed_by_content(scan(table, condition), now)
        upsert(retained, rows, on="id")
        kept += rows.num_rows
    ensure_btree_indexes(retained, RETAINED_LOOKUP_COLUMNS)
    return kept


def _keyed_by_content(rows: pa.Table, now: datetime) -> pa.Table:
    """The rows with `id` = `<origin_hash>#<chunk>` and `retained_at` = now, one per id (documents with
    the same content carry the same vectors, and a merge must not see its key twice)."""
    first: dict[str, int] = {}
    for index, (content, chunk) in enumerate(
        zip(rows.column("origin_hash").to_pylist(), rows.column("chunk").to_pylist())
    ):
        first.setdefault(f"{content}#{chunk}", index)
    unique = rows.take(list(first.values()))
    unique = unique.set_column(unique.schema.get_field_index("id"), "id", pa.array(list(first), pa.string()))
    unique = unique.append_column("retained_at", pa.array([now] * unique.num_rows, TIMESTAMP))
    return unique.cast(retained_schema(unique.schema.field("vector").type))


def drop_retained_table(store: LanceStore, model_version: str) -> bool:
    """Drop the version's retained table, when its version table goes; whether there was one."""
    name = retained_table_name(model_version)
    if not store.has_table(name):
        return False
    store.db.drop_table(name)
    return True


@dataclass
class RetainedCollection:
    # model_version -> rows dropped for being older than the window / rows still within it.
    rows_dropped: dict[str, int] = field(default_factory=dict)
    rows_kept: dict[str, int] = field(default_factory=dict)
    # Versions whose retained table was dropped whole: their version table is gone.
    tables_dropped: list[str] = field(default_factory=list)


def collect_retained(store: LanceStore, now: datetime, window: timedelta) -> RetainedCollection:
    """Drop retained rows older than `window` (and retained tables whose version table is gone), then
    compact what is left so the runs' lookups of returning content stay indexed."""
    names = store.table_names()
    versions = {
        name.removeprefix(EMBEDDINGS_TABLE_PREFIX) for name in names if name.startswith(EMBEDDINGS_TABLE_PREFIX)
    }
    collection = RetainedCollection()
    for version in sorted(
        name.removeprefix(RETAINED_TABLE_PREFIX) for name in names if name.startswith(RETAINED_TABLE_PREFIX)
    ):
        if version not in versions:
            drop_retained_table(store, version)
            collection.tables_dropped.append(version)
            continue
        table = store.db.open_table(retained_table_name(version))
        cutoff = (now - window).isoformat()
        dropped = table.delete(f"retained_at < timestamp {sql_literal(cutoff)}").num_deleted_rows
        # Compaction frees the dropped rows' files and folds the day's writes into the lookup indexes.
        table.optimize()
        ensure_btree_indexes(table, RETAINED_LOOKUP_COLUMNS)
        collection.rows_dropped[version] = dropped
        collection.rows_kept[version] = table.count_rows()
    return collection
