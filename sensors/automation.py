"""Declarative automation: the daemon turns missing and stale partitions into runs.

Embeddings are requested as backfills (listed on the UI's Backfills page) carrying the GPU
run tags; indexing and promotion run on ordinary capacity.
"""

from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus

from embedding_assets.embeddings import embeddings
from embedding_assets.index import lance_index, live_index
from gpu_ops.launch import GpuLaunchSettings, gpu_run_tags


def build_automation_sensors(gpu_settings: GpuLaunchSettings) -> list[AutomationConditionSensorDefinition]:
    return [
        AutomationConditionSensorDefinition(
            "embedding_backfill_sensor",
            target=AssetSelection.assets(embeddings),
            run_tags=gpu_run_tags(gpu_settings),
            emit_backfills=True,
            default_status=DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=30,
            description="Backfills every shard of a newly registered local model version on the GPU queue, once planned.",
        ),
        AutomationConditionSensorDefinition(
            "index_and_promotion_sensor",
            target=AssetSelection.assets(lance_index, live_index),
            default_status=DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=30,
            description="Indexes a version once all its shards are embedded, then decides its promotion.",
        ),
    ]
