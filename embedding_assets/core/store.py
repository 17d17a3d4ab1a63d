"""The LanceDB store every stage reads and writes through, and the lookups they share.

Plain code over `lancedb`: no Dagster here. `resources.lance_store.LanceDBResource` hands a store to
assets; tests and command-line tools build one directly.
"""

import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import BTree

from embedding_assets.core.schemas import FIXED_SCHEMAS, LOOKUP_INDEXES, embeddings_schema, embeddings_table_name

# Values per `IN (...)` filter: keeps SQL strings and plans small on large shards.
IN_LIST_SIZE = 1_000
# Another process creating the same table: how often and how patiently to retry opening it.
CREATE_RACE_ATTEMPTS = 8
CREATE_RACE_PAUSE_SECONDS = 0.25


def sql_literal(value: str | int) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


def sql_in(column: str, values: Iterable[str | int]) -> str:
    return f"{column} IN ({', '.join(sql_literal(v) for v in values)})"


class LanceStore:
    def __init__(self, uri: str, storage_options: dict[str, str] | None = None):
        self.uri = uri
        self.storage_options = storage_options or {}
        self._db = None

    @property
    def db(self):
        if self._db is None:
            self._db = lancedb.connect(self.uri, storage_options=self.storage_options or None)
        return self._db

    def table_names(self) -> list[str]:
        return list(self.db.list_tables().tables)

    def table(self, name: str):
        """A fixed table of the pipeline, created empty on first use."""
        return self._open_or_create(name, FIXED_SCHEMAS[name])

    def embeddings_table(self, model_version: str, dim: int, settings: dict | None = None, precision: str = "float32"):
        """The version's table; created with `settings` recorded, so a later edit of them can be caught."""
        return self._open_or_create(embeddings_table_name(model_version), embeddings_schema(dim, settings, precision))

    def _open_or_create(self, name: str, schema: pa.Schema):
        """Open `name`, creating it empty if missing.

        Runs in other processes may be creating the same table at this moment: its directory is listed
        before its first manifest is written, so opening it then fails. Such a table is retried briefly
        instead of failing the run.
        """
        for attempt in range(CREATE_RACE_ATTEMPTS):
            try:
                if self.has_table(name):
                    return self.db.open_table(name)
                return self.db.create_table(name, schema=schema, exist_ok=True)
            except (ValueError, RuntimeError, OSError):
                if attempt == CREATE_RACE_ATTEMPTS - 1:
                    raise
                time.sleep(CREATE_RACE_PAUSE_SECONDS * (attempt + 1))

    def open_embeddings_table(self, model_version: str, table_version: int | None = None):
        """The version's table at its latest version, or checked out at `table_version` (what readers pin)."""
        table = self.db.open_table(embeddings_table_name(model_version))
        if table_version is not None:
            table.checkout(table_version)
        return table

    def has_table(self, name: str) -> bool:
        return name in self.table_names()

    def ensure_lookup_indexes(self) -> list[str]:
        """Create the missing scalar indexes of LOOKUP_INDEXES; returns what it created (`table.column`)."""
        return [
            f"{name}.{column}"
            for name, columns in LOOKUP_INDEXES.items()
            for column in ensure_btree_indexes(self.table(name), columns)
        ]


def ensure_btree_indexes(table, columns: Iterable[str]) -> list[str]:
    """Create the missing BTree indexes on `columns` of a table that has rows; returns the columns indexed.

    Best effort: runs at once may race to create the same index, and the loser's lookups scan
    until a later call creates it.
    """
    if not table.count_rows():
        return []
    indexed = {column for index in table.list_indices() for column in index.columns}
    created = []
    for column in columns:
        if column in indexed:
            continue
        try:
            table.create_index(column, config=BTree())
            created.append(column)
        except (RuntimeError, OSError, ValueError):
            continue
    return created


def versions_written_at(table) -> dict[int, datetime]:
    """When each version of `table` was committed, in UTC (LanceDB lists naive local times)."""
    return {
        v["version"]: v["timestamp"] if v["timestamp"].tzinfo else v["timestamp"].astimezone(timezone.utc)
        for v in table.list_versions()
    }


def fixed_size_lists(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A fixed-size-list column (vectors, signatures) as one (rows, width) numpy array, without copies per row."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy().reshape(len(column), column.type.list_size)


def scan(table, where: str | None = None, columns: list[str] | None = None) -> pa.Table:
    query = table.search()
    if where:
        query = query.where(where)
    if columns:
        query = query.select(columns)
    return query.limit(None).to_arrow()


def scan_batches(table, where: str | None = None, columns: list[str] | None = None, batch_size: int = 8192):
    query = table.search()
    if where:
        query = query.where(where)
    if columns:
        query = query.select(columns)
    return query.limit(None).to_batches(batch_size)


def scan_pages(table, page_rows: int = 8192, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """Every row of `table` (at its checked-out version), one `page_rows` query at a time, in scan order.

    A streamed scan (`scan_batches`) lets Lance read ahead of a slow consumer up to its I/O buffer (2 GiB):
    over a large fragment its memory grows with the table. A page query reads only its own rows.
    """
    total = table.count_rows()
    for offset in range(0, total, page_rows):
        query = table.search()
        if columns:
            query = query.select(columns)
        yield query.offset(offset).limit(page_rows).to_arrow()


def scan_in(
    table, column: str, values: Iterable[str | int], columns: list[str] | None = None, where: str | None = None
) -> Iterator[pa.Table]:
    """Rows whose `column` is one of `values`, one Arrow table per IN_LIST_SIZE values."""
    ordered = sorted(set(values))
    for start in range(0, len(ordered), IN_LIST_SIZE):
        condition = sql_in(column, ordered[start : start + IN_LIST_SIZE])
        yield scan(table, f"({condition}) AND ({where})" if where else condition, columns)


def upsert(table, rows: pa.Table, on: str) -> None:
    if rows.num_rows:
        table.merge_insert(on).when_matched_update_all().when_not_matched_insert_all().execute(rows)


def delete_in(table, column: str, values: Iterable[str], where: str | None = None) -> int:
    ordered = sorted(set(values))
    deleted = 0
    for start in range(0, len(ordered), IN_LIST_SIZE):
        condition = sql_in(column, ordered[start : start + IN_LIST_SIZE])
        result = table.delete(f"({condition}) AND ({where})" if where else condition)
        deleted += result.num_deleted_rows
    return deleted


def s3_storage_options(endpoint_url: str = "", region: str = "", allow_http: bool = False) -> dict[str, str]:
    """LanceDB's object-store settings for an S3 (or S3-compatible) endpoint.

    Credentials are not passed: LanceDB, like boto3, reads AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY (or a role) itself, so no secret travels through this code.
    """
    options = {"aws_endpoint": endpoint_url, "aws_region": region, "allow_http": "true" if allow_http else ""}
    return {key: value for key, value in options.items() if value}
