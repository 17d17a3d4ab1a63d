"""A Parquet source: columns `id` and `text` (optional `title`), or `image` (bytes or a path) and an
optional `caption`; read in batches, so memory stays flat whatever the file's size.

A footer or a row group that does not parse, missing columns, or no row at all make the read not
provably whole (`whole_source`): the corpus stage then marks nothing deleted.
"""

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedding_assets.core.sources.records import ImageReader, SourceRecord, SourceRejection, record_from_fields

# Parquet rows batched together: small where a row may hold a 10 MB image.
PARQUET_BATCH_ROWS = {"text": 4096, "image": 64}


def iter_parquet(
    path: Path, source_uri: str, shard: str | None = None, read_image: ImageReader | None = None
) -> Iterator[SourceRecord]:
    name = source_uri.rsplit("/", 1)[-1]
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        detail = f"{source_uri} is not a readable Parquet file ({error}): restore it or write it again"
        yield SourceRejection(name, "unreadable_parquet", detail, source_uri, whole_source=True)
        return
    present = parquet.schema_arrow.names
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
    try:
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
    except (pa.ArrowException, OSError) as error:
        detail = f"{source_uri} could not be read after row {position} ({error}): restore it or write it again"
        yield SourceRejection(name, "unreadable_parquet", detail, source_uri, whole_source=True)
        return
    if not position:
        detail = f"{source_uri} holds no row: if the file was emptied by mistake, restore it"
        yield SourceRejection(name, "empty_file", detail, source_uri, whole_source=True)
