from datetime import datetime, timezone

from dagster import (
    AssetExecutionContext,
    AssetSelection,
    AutomationCondition,
    Config,
    Failure,
    MaterializeResult,
    asset,
)

from embedding_assets.core.embedding_run import COMMIT_GROUP_CONTENTS, EmbedStats, Progress, embed_shards
from embedding_assets.core.reembedding_plan import latest_plan
from embedding_assets.core.schemas import embeddings_table_name
from embedding_assets.dedup import dedup_signatures
from embedding_assets.reembedding_plan import reembedding_plan
from gpu_ops.launch import HOSTED_QUEUE_TAG
from partitions import embedding_partitions
from resources.lance_store import LanceDBResource
from resources.model_registry import ModelRegistryResource


def _log_progress(log, model_version: str):
    def report(progress: Progress) -> None:
        log.info(
            f"{model_version} shard {progress.shard}: {progress.documents_done}/{progress.documents_total} documents, "
            f"{progress.docs_per_second:.1f} docs/s, ETA {progress.eta_seconds:.0f}s"
        )

    return report


# A hosted version's plan ran on its provider's queue: its shards are `hosted_backfill_sensor`'s, not the GPU's.
PLANNED_FOR_A_PROVIDER = AutomationCondition.any_deps_match(
    AutomationCondition.executed_with_tags(tag_keys={HOSTED_QUEUE_TAG})
).allow(AssetSelection.assets(reembedding_plan))


class EmbeddingsConfig(Config):
    # Representatives encoded and committed together: what a killed run can lose.
    commit_group_contents: int = COMMIT_GROUP_CONTENTS


def embed_partition(
    log,
    lancedb: LanceDBResource,
    model_registry: ModelRegistryResource,
    model_version: str,
    shard: str,
    commit_group: int = COMMIT_GROUP_CONTENTS,
) -> dict:
    """One (version, shard) of the embeddings stage; its materialization's metadata."""
    return embed_partitions(log, lancedb, model_registry, model_version, [shard], commit_group)[shard]


def embed_partitions(
    log,
    lancedb: LanceDBResource,
    model_registry: ModelRegistryResource,
    model_version: str,
    shards: list[str],
    commit_group: int = COMMIT_GROUP_CONTENTS,
) -> dict[str, dict]:
    """`shards` of one version in one encoding stream (core/embedding_run/run.py, embed_shards): shard -> its
    materialization's metadata. The asset (one shard) and the change job (the shards a change touched)
    share it; the model loads once per run (the resource keeps it)."""
    spec = model_registry.spec(model_version)
    store = lancedb.store()
    stats = embed_shards(
        store,
        spec,
        lambda: model_registry.encoder(spec),
        shards,
        lambda: datetime.now(timezone.utc),
        _log_progress(log, model_version),
        commit_group,
    )
    table_version = store.open_embeddings_table(model_version).version
    return {
        shard: _metadata(log, model_version, shard, shard_stats, table_version) for shard, shard_stats in stats.items()
    }


def _metadata(log, model_version: str, shard: str, stats: EmbedStats, table_version: int) -> dict:
    if stats.undeduplicated:
        log.warning(f"{stats.undeduplicated} documents had no current signature: materialize dedup_signatures")
    if stats.skipped_modality:
        log.info(f"{model_version} embeds text only: {stats.skipped_modality} images without text skipped")
    log.info(
        f"{model_version} shard {shard}: {stats.model_calls} model calls, {stats.vectors_written} vectors written, "
        f"{stats.up_to_date} up to date, {stats.restored} restored from retained vectors, "
        f"{stats.rows_retained} rows retained, {stats.quarantined} quarantined"
    )
    return {
        "dagster/row_count": stats.documents,
        "model_calls": stats.model_calls,
        "windows_encoded": stats.windows_encoded,
        "images_encoded": stats.images_encoded,
        "skipped_modality": stats.skipped_modality,
        "batches": stats.batches,
        "tokens": stats.tokens,
        "vectors_written": stats.vectors_written,
        "documents_written": stats.documents_written,
        "up_to_date": stats.up_to_date,
        "reused_cache": stats.reused["cache"],
        "reused_exact_dup": stats.reused["exact_dup"],
        "reused_near_dup": stats.reused["near_dup"],
        "rows_deleted": stats.rows_deleted,
        # Deleted or changed content's rows kept for the retention window, and documents brought back from them.
        "rows_retained": stats.rows_retained,
        "restored_from_retained": stats.restored,
        "quarantined": stats.quarantined,
        "quarantine_reasons": dict(stats.quarantine_reasons),
        "docs_per_second": round(stats.docs_per_second, 1),
        "wall_seconds": round(stats.seconds, 2),
        "table": embeddings_table_name(model_version),
        "table_version": table_version,
        # Where the model ran and its backoffs; a hosted model's requests, retries, tokens and cost.
        **(stats.encoder.metadata() if stats.encoder else {"device": "not loaded"}),
    }


@asset(
    partitions_def=embedding_partitions,
    group_name="embeddings",
    kinds={"lancedb", "pytorch"},
    deps=[dedup_signatures, reembedding_plan],
    # A new model_versions partition leaves every shard missing: once its plan is in (within the budget),
    # the automation sensor backfills a local version's shards on the GPU queue.
    automation_condition=(AutomationCondition.on_missing() & ~PLANNED_FOR_A_PROVIDER).with_label(
        "on_missing, planned for the GPU"
    ),
)
def embeddings(
    context: AssetExecutionContext,
    config: EmbeddingsConfig,
    lancedb: LanceDBResource,
    model_registry: ModelRegistryResource,
) -> MaterializeResult:
    """Vectors of the shard's documents for one model version; only unseen content reaches the model."""
    keys = context.partition_key.keys_by_dimension
    planned = latest_plan(lancedb.store(), keys["model_version"])
    if planned is not None and not planned.within_budget:
        raise Failure(
            f"{keys['model_version']}: its re-embedding plan of {planned.planned_at:%Y-%m-%d %H:%M} is over budget "
            f"({planned.reason}); raise the budget and materialize reembedding_plan again. No model call made."
        )
    return MaterializeResult(
        metadata=embed_partition(
            context.log, lancedb, model_registry, keys["model_version"], keys["shard"], config.commit_group_contents
        )
    )
