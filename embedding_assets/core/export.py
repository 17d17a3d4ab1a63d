"""Parquet exports of a version's vectors with their provenance, for teams that read files.

Written page by page from the newest table version whose gates passed (memory stays flat whatever the table's
size) as `<prefix>/<model_version>/YYYY-MM/batch-NNNN.parquet`, then a `manifest.json` naming
exactly the files of this export: readers go by the manifest.
"""

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import pyarrow.parquet as pq

from embedding_assets.core.gates import readable_table_version
from embedding_assets.core.store import LanceStore, scan_pages

# Rows per file, read as one page query (core/store.scan_pages): about 8 MiB of 256-d float32 vectors.
BATCH_ROWS = 8_192


@dataclass
class ExportResult:
    files: list[str]
    rows: int
    manifest: str
    table_version: int


def export_version(
    store: LanceStore,
    model_version: str,
    put: Callable[[str, bytes], None],
    prefix: str,
    now: datetime,
    batch_rows: int = BATCH_ROWS,
) -> ExportResult:
    version = readable_table_version(store, model_version)
    if version is None:
        raise ValueError(
            f"{model_version} has no table version that passed its gates yet: materialize live_index, which checks it"
        )
    table = store.open_embeddings_table(model_version, version)
    base = f"{prefix.rstrip('/')}/{model_version}/{now:%Y-%m}"
    files, rows = [], 0
    for number, batch in enumerate(scan_pages(table, batch_rows)):
        buffer = io.BytesIO()
        pq.write_table(batch, buffer, compression="zstd")
        key = f"{base}/batch-{number:04d}.parquet"
        put(key, buffer.getvalue())
        files.append(key)
        rows += batch.num_rows
    manifest = {
        "model_version": model_version,
        "table_version": version,
        "exported_at": now.isoformat(),
        "rows": rows,
        "files": files,
        "schema": table.schema.to_string(),
    }
    manifest_key = f"{base}/manifest.json"
    put(manifest_key, json.dumps(manifest, indent=2).encode())
    return ExportResult(files, rows, manifest_key, version)
