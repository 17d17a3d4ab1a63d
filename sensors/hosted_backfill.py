"""`hosted_backfill_sensor`: a hosted version's shards, on its provider's queue instead of the GPU's.

Once a hosted version's re-embedding plan is in (it fits the budget), each shard without
embeddings gets one run, tagged with the provider's queue (`gpu_ops.launch.HOSTED_QUEUE_TAG`),
whose concurrency limit in `dagster.yaml` stands for the provider's rate limits. Run keys name the
version, its settings and the shard, so a repeated tick launches nothing twice.
"""

from dagster import AssetKey, DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from embedding_assets.jobs import embed_job
from gpu_ops.launch import hosted_run_tags
from partitions import embedding_partition_key, shard_partitions
from resources.model_registry import ModelRegistryResource


@sensor(minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING)
def hosted_backfill_sensor(context: SensorEvaluationContext, model_registry: ModelRegistryResource):
    """Backfills every shard of a planned hosted version on its provider's queue."""
    hosted = {key: spec for key, spec in model_registry.registry().specs.items() if spec.backend == "openai"}
    planned = context.instance.get_materialized_partitions(AssetKey("reembedding_plan"))
    embedded = context.instance.get_materialized_partitions(AssetKey("embeddings"))
    requests = [
        RunRequest(
            job_name=embed_job.name,
            partition_key=str(key),
            run_key=f"{spec.key}:{spec.fingerprint()}:{shard}",
            tags=hosted_run_tags(spec.base_url or ""),
        )
        for spec in hosted.values()
        if spec.key in planned
        for shard in shard_partitions.get_partition_keys()
        if str(key := embedding_partition_key(spec.key, shard)) not in embedded
    ]
    if not requests:
        return SkipReason(f"no planned hosted version awaits shards ({', '.join(hosted) or 'none registered'})")
    return SensorResult(run_requests=requests)
