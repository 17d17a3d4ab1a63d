"""A Parquet source: columns `id` and `text` (optional `title`), or `image` (bytes or a path) and an
optional `caption`; read in batches, so memory stays flat whatever the file's size."""

from collections.abc import Iterator
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedding_assets.core.sources.records import ImageReader, SourceRecord, SourceRejection, record_from_fields

# Parquet rows batched together: small where a row may hold a 10 MB image.
PARQUET_BATCH_ROWS = {"text": 4096, "image": 64}


def iter_parquet(
    path: Path, source_uri: str, shard: str | None = None, read_image: ImageReader | None = None
) -> Iterator[SourceRecord]:
    parquet = pq.ParquetFile(path)
    present = parquet.schema_arrow.names
    name = source_uri.rsplit("/", 1)[-1]
    missing = [] if "id" in present else ["id"]
    if "text" not in present and "image" not in present:
        missing.append("text (or image)")
    if missing:
        detail = f"{source_uri} lacks column(s) {', '.join(missing)}"
        yield SourceRejection(name, "missing_columns", detail, source_uri, whole_source=True)
        return

    columns = [column for column in ("id", "text", "title", "image", "caption") if column in present]
    batch_rows = PARQUET_BATCH_ROWS["image" if "image" in columns else "text"]
    first_row_of: dict[str, int] = {}
    position = 0
    for batch in parquet.iter_batches(columns=columns, batch_size=batch_rows):
        values = {column: batch.column(column).to_pylist() for column in columns}
        values["id"] = pc.cast(batch.column("id"), "string").to_pylist()
        for row in range(batch.num_rows):
            position += 1
            fields = {column: values[column][row] for column in columns}
            where = f"{source_uri}#row-{position}"
            record = record_from_fields(
                fields, f"{name}:row-{position}", where, first_row_of, position, source_uri, read_image, shard
            )
            if record is not None:
                yield record
