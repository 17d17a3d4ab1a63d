"""The garbage collection of retained vectors (`core.retained`), run daily by `retained_gc_schedule`.

Vectors of deleted or changed content are kept so that bringing the content back costs no model
call; past the window (`LanceDBResource.retained_vector_days`) they only cost storage.
"""

from datetime import datetime, timedelta, timezone

from dagster import OpExecutionContext, Output, op

from embedding_assets.core.retained import collect_retained
from resources.lance_store import LanceDBResource


@op
def drop_expired_retained_vectors(context: OpExecutionContext, lancedb: LanceDBResource):
    """Drop retained rows older than the window, and retained tables whose version table is gone."""
    window = timedelta(days=lancedb.retained_vector_days)
    result = collect_retained(lancedb.store(), datetime.now(timezone.utc), window)
    context.log.info(
        f"retained vectors older than {lancedb.retained_vector_days} days: dropped {sum(result.rows_dropped.values())} "
        f"rows, kept {sum(result.rows_kept.values())}; tables of dropped versions removed: "
        f"{result.tables_dropped or 'none'}"
    )
    yield Output(
        None,
        metadata={
            "window_days": lancedb.retained_vector_days,
            "rows_dropped": sum(result.rows_dropped.values()),
            "rows_kept": sum(result.rows_kept.values()),
            "rows_dropped_by_version": result.rows_dropped,
            "rows_kept_by_version": result.rows_kept,
            "tables_dropped": result.tables_dropped,
        },
    )
