"""`reembedding_plan`: what a version's backfill will call, cost and take, before it calls anything.

Requested per model version by `model_registry_sensor` ahead of its embeddings (they depend on it),
on the queue its backfill will use, so the measured throughput is the one the backfill will get. A plan over the budget fails
with its numbers: the version's embeddings stay unrequested, and `embeddings` refuses to run for it.
"""

import time
from datetime import datetime, timezone

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    Failure,
    MaterializeResult,
    asset,
)

from embedding_assets.core.reembedding_count import plan_reembedding
from embedding_assets.core.reembedding_plan import over_budget, record_plan
from embedding_assets.dedup import dedup_signatures
from gpu_ops.launch import GPU_TAG
from partitions import model_version_partitions, shard_partitions
from resources.lance_store import LanceDBResource
from resources.model_registry import ModelRegistryResource
from resources.reembedding_budget import ReembeddingBudgetResource


def gpu_runs_at_once(context: AssetExecutionContext, configured: int) -> int:
    """The configured number, else the instance's concurrency limit on GPU-tagged runs (1 when unlimited)."""
    if configured:
        return configured
    queue = getattr(context.instance.run_coordinator, "get_run_queue_config", None)
    limits = queue().tag_concurrency_limits if queue else []
    [(key, value)] = GPU_TAG.items()
    return next((int(limit["limit"]) for limit in limits if (limit["key"], limit.get("value")) == (key, value)), 1)


@asset(
    partitions_def=model_version_partitions,
    group_name="embeddings",
    kinds={"lancedb"},
    deps=[AssetDep(dedup_signatures, partition_mapping=AllPartitionMapping())],
)
def reembedding_plan(
    context: AssetExecutionContext,
    lancedb: LanceDBResource,
    model_registry: ModelRegistryResource,
    reembedding_budget: ReembeddingBudgetResource,
) -> MaterializeResult:
    """Documents, representatives the model will encode after duplicate and stored-vector reuse, windows,
    tokens, cost (list and Batch API price) and ETA from a throughput measured here; checked against the budget."""
    spec = model_registry.spec(context.partition_key)
    started = time.perf_counter()
    encoder = model_registry.encoder(spec)
    load_seconds = time.perf_counter() - started
    store = lancedb.store()
    plan = plan_reembedding(
        store,
        spec,
        encoder,
        shard_partitions.get_partition_keys(),
        gpu_runs_at_once(context, reembedding_budget.gpu_concurrent_runs),
        load_seconds,
        reembedding_budget.gpu_hour_usd,
    )
    budget = reembedding_budget.budget()
    reason = over_budget(plan, budget)
    record_plan(store, plan, reason, datetime.now(timezone.utc))
    metadata = {
        **plan.metadata(),
        "max_reembed_cost": budget.max_cost_usd or "no limit",
        "max_reembed_hours": budget.max_hours or "no limit",
    }
    if reason:
        raise Failure(f"{spec.key}: re-embedding over budget, no model call made: {reason}", metadata=metadata)
    context.log.info(
        f"{spec.key}: {plan.calls:,} model calls for {plan.documents:,} documents, {plan.tokens:,} tokens, "
        f"ETA {plan.eta_seconds / 3600:.3f} h on {plan.device}, ${plan.billed_cost_usd:,.4f}"
    )
    return MaterializeResult(metadata=metadata)
