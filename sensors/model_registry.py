"""`model_registry_sensor`: the registry file is the source of truth for which versions exist.

A new valid entry becomes a `model_versions` partition, and once the corpus is deduplicated its
re-embedding plan is requested on the queue its backfill will use (the GPU's, or its provider's
for a hosted version), so the plan's throughput is measured where the backfill runs. Once the
plan fits the budget, `embedding_backfill_sensor` backfills a local version's shards on the GPU
queue and `hosted_backfill_sensor` a hosted version's on its provider's queue. An entry removed from the registry is retired:
its partition is deleted and its pending backfills are canceled, so it is never half-run.
Malformed entries are refused with their reason in the tick's log; the others proceed.
"""

import json

from dagster import (
    AssetKey,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from embedding_assets.core.aliases import current_alias
from embedding_assets.jobs import plan_job
from gpu_ops.launch import GpuLaunchSettings, run_tags_for
from gpu_ops.registry import ModelRegistry
from partitions import model_version_partitions
from resources.lance_store import LanceDBResource
from resources.model_registry import ModelRegistryResource
from sensors.dagster_private import BulkActionStatus

PENDING_BACKFILL_STATUSES = (BulkActionStatus.REQUESTED,)


def _cancel_backfills_of(context: SensorEvaluationContext, model_version: str) -> int:
    canceled = 0
    for status in PENDING_BACKFILL_STATUSES:
        for backfill in context.instance.get_backfills(status=status):
            data = backfill.asset_backfill_data
            if data is None:
                continue
            partitions = {
                key.partition_key for key in data.target_subset.iterate_asset_partitions() if key.partition_key
            }
            if any(p == model_version or p.startswith(f"{model_version}|") for p in partitions):
                context.instance.update_backfill(backfill.with_status(BulkActionStatus.CANCELING))
                canceled += 1
    return canceled


def _plan_requests(context: SensorEvaluationContext, registry: ModelRegistry, fingerprints: dict) -> list[RunRequest]:
    """A plan run for each registered version without a plan, once every shard read from the corpus is
    deduplicated (the plan counts representatives); keyed by version and settings, so a refused plan is
    not retried by itself."""
    deduplicated = context.instance.get_materialized_partitions(AssetKey("dedup_signatures"))
    if not deduplicated or not context.instance.get_materialized_partitions(AssetKey("corpus")) <= deduplicated:
        return []
    planned = context.instance.get_materialized_partitions(AssetKey("reembedding_plan"))
    settings = GpuLaunchSettings.from_env()
    return [
        RunRequest(
            job_name=plan_job.name,
            partition_key=key,
            run_key=f"plan:{key}:{fingerprints[key]}",
            tags=run_tags_for(spec, settings),
        )
        for key, spec in registry.specs.items()
        if key not in planned
    ]


@sensor(minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING)
def model_registry_sensor(
    context: SensorEvaluationContext, model_registry: ModelRegistryResource, lancedb: LanceDBResource
):
    """Adds a partition for each new registry version, retires removed ones, refuses malformed ones."""
    registry = model_registry.registry()
    registered_before: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    for error in registry.errors:
        context.log.error(f"registry entry refused: {error}")

    fingerprints = {}
    for key, spec in registry.specs.items():
        fingerprint = spec.fingerprint()
        if key in registered_before and registered_before[key] != fingerprint:
            context.log.error(
                f"{key}: its settings changed after it was registered; vectors in embeddings__{key} were made "
                "with the old ones. Register the change under a new key (e.g. a new revision suffix)."
            )
            fingerprint = registered_before[key]
        fingerprints[key] = fingerprint

    partitions = set(context.instance.get_dynamic_partitions(model_version_partitions.name))
    added = [key for key in registry.specs if key not in partitions]
    store = lancedb.store()
    live = current_alias(store)
    gone = sorted(partitions - registry.specs.keys() - registry.invalid_keys)
    if live and live.model_version in gone:
        context.log.error(f"{live.model_version} is live: promote another version before removing it from the registry")
        gone.remove(live.model_version)
    for key in gone:
        canceled = _cancel_backfills_of(context, key)
        context.log.info(f"retired {key}: partition removed, {canceled} pending backfill(s) canceled; its table stays")
    for key in added:
        spec = registry.specs[key]
        queue = (
            "its provider's queue" if spec.backend == "openai" else "the CPU" if spec.runs_on_cpu else "the GPU queue"
        )
        context.log.info(f"registered {key}: partition added; planned, then backfilled on {queue}")

    requests = []
    if added:
        requests.append(model_version_partitions.build_add_request(added))
    if gone:
        requests.append(model_version_partitions.build_delete_request(gone))
    # Entries that are malformed for now keep their old fingerprint, so a fix must restore the same settings.
    kept = {key: registered_before[key] for key in registry.invalid_keys if key in registered_before}
    cursor = json.dumps({**kept, **fingerprints}, sort_keys=True)
    plans = _plan_requests(context, registry, fingerprints)
    if not requests and not plans:
        unchanged = SkipReason(f"registry unchanged: {', '.join(registry.specs) or 'empty'}")
        return SensorResult(skip_reason=unchanged, cursor=cursor)
    return SensorResult(dynamic_partitions_requests=requests, run_requests=plans, cursor=cursor)
