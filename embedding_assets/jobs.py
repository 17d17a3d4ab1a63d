"""Every job of the project, as objects: sensors, the command-line tools and `definitions.py` use these.

One job per stage runs one partition of it (the UI launches and backfills them); rollback and
retention act on the live alias outside the asset graph, and the garbage collection of retained
vectors runs daily on its schedule.
"""

from dagster import AssetSelection, DefaultScheduleStatus, ScheduleDefinition, define_asset_job, job

from embedding_assets.alias_ops import drop_retired_tables, move_canary, switch_live_alias_back
from embedding_assets.change_job import apply_change_job
from embedding_assets.corpus import corpus
from embedding_assets.dedup import dedup_signatures
from embedding_assets.embeddings import embeddings
from embedding_assets.export import parquet_export
from embedding_assets.index import lance_index, live_index
from embedding_assets.reembedding_plan import reembedding_plan
from embedding_assets.retained_gc import drop_expired_retained_vectors

corpus_job = define_asset_job("corpus_job", selection=AssetSelection.assets(corpus))
dedup_job = define_asset_job("dedup_job", selection=AssetSelection.assets(dedup_signatures))
plan_job = define_asset_job("plan_job", selection=AssetSelection.assets(reembedding_plan))
embed_job = define_asset_job("embed_job", selection=AssetSelection.assets(embeddings))
index_job = define_asset_job("index_job", selection=AssetSelection.assets(lance_index))
live_index_job = define_asset_job("live_index_job", selection=AssetSelection.assets(live_index))
export_job = define_asset_job("export_job", selection=AssetSelection.assets(parquet_export))


@job(description="Switch the live alias back to the version that served before (or to_version).")
def rollback_job():
    switch_live_alias_back()


@job(description="Route a share of live traffic to a candidate version whose gates pass (0 clears, 100 promotes).")
def canary_job():
    move_canary()


@job(description="Drop version tables that are neither live, previous, registered, nor among the newest retired.")
def retention_job():
    drop_retired_tables()


@job(description="Drop retained vectors of deleted or changed content older than the retention window.")
def retained_gc_job():
    drop_expired_retained_vectors()


all_jobs = [
    apply_change_job,
    corpus_job,
    dedup_job,
    plan_job,
    embed_job,
    index_job,
    live_index_job,
    export_job,
    rollback_job,
    canary_job,
    retention_job,
    retained_gc_job,
]
# Daily at 03:00 UTC: the window is counted in days, so once a day keeps the table within a day of it.
retained_gc_schedule = ScheduleDefinition(
    job=retained_gc_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
)
