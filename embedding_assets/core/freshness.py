"""Freshness as a number: how long each change took from its write to searchable through the live pin.

The change run writes one row per inbox write it applied (origin `upsert`: from the API's acceptance)
and one for a source change (origin `edit`: from the source's last modification, as the source reports
it) once the live pin serves the change. The rows live beside the pipeline's other tables, so the serving
API can export them as a Prometheus histogram without any channel from Dagster to the server.
"""

from datetime import datetime

import pyarrow as pa

from embedding_assets.core.inbox import applied_by_run
from embedding_assets.core.schemas import FRESHNESS_SCHEMA
from embedding_assets.core.store import LanceStore, scan, upsert

UPSERT_ORIGIN = "upsert"
EDIT_ORIGIN = "edit"


def record_freshness(
    store: LanceStore, run_id: str, source_changed_at: float, table_version: int, now: datetime
) -> list[dict]:
    """The rows of the change `run_id` applied, now searchable at `table_version`; written idempotently."""
    rows = [
        {
            "id": f"{run_id}|{entry['entry_id']}",
            "origin": UPSERT_ORIGIN,
            "seconds": (now - entry["received_at"]).total_seconds(),
        }
        for entry in applied_by_run(store, run_id)
    ]
    if source_changed_at:
        rows.append({"id": f"{run_id}|source", "origin": EDIT_ORIGIN, "seconds": now.timestamp() - source_changed_at})
    rows = [{**row, "run_id": run_id, "table_version": table_version, "searchable_at": now} for row in rows]
    upsert(store.table("freshness"), pa.Table.from_pylist(rows, schema=FRESHNESS_SCHEMA), on="id")
    return rows


def freshness_since(store: LanceStore, after: datetime) -> list[dict]:
    """Rows of changes that became searchable after `after`, oldest first."""
    where = f"searchable_at > timestamp '{after.isoformat(sep=' ')}'"
    rows = scan(store.table("freshness"), where, ["origin", "seconds", "searchable_at"]).to_pylist()
    return sorted(rows, key=lambda row: row["searchable_at"])
