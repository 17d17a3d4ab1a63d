"""Asset checks on each version's table. The blocking ones gate `live_index`."""

import warnings

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    AssetRecordsFilter,
    PreviewWarning,
    asset_check,
)

from embedding_assets.core.aliases import current_alias
from embedding_assets.core.ann_recall import ann_recall
from embedding_assets.core.fidelity import vector_fidelity
from embedding_assets.core.index_checks import (
    CheckOutcome,
    count_parity,
    quarantine_report,
    single_model_version,
    vector_sanity,
)
from embedding_assets.core.promotion import compare_quality
from embedding_assets.core.reembedding_plan import Outcome, latest_plan, plan_errors
from embedding_assets.core.version_diff import diff_refusal, version_diff_for
from embedding_assets.index import lance_index
from partitions import embedding_partition_key, model_version_partitions, shard_partitions
from resources.lance_store import LanceDBResource
from resources.model_registry import ModelRegistryResource
from resources.promotion_policy import PromotionPolicyResource
from resources.reembedding_budget import ReembeddingBudgetResource

# Checks partitioned like their asset (one verdict per model version) are a preview feature of Dagster 1.13.
warnings.filterwarnings("ignore", category=PreviewWarning, message=".*partitions_def on an AssetCheckSpec.*")


def _result(outcome: CheckOutcome, severity: AssetCheckSeverity = AssetCheckSeverity.ERROR) -> AssetCheckResult:
    return AssetCheckResult(
        passed=outcome.passed, severity=severity, description=outcome.description, metadata=outcome.metadata
    )


@asset_check(asset=lance_index, partitions_def=model_version_partitions, blocking=True)
def count_parity_check(
    context: AssetCheckExecutionContext, lancedb: LanceDBResource, model_registry: ModelRegistryResource
) -> AssetCheckResult:
    """Every live, non-quarantined document has all its windows; no orphan, stale or duplicate row."""
    spec = model_registry.spec(context.partition_key)
    return _result(count_parity(lancedb.store(), spec, model_registry.encoder(spec).token_spans))


@asset_check(asset=lance_index, partitions_def=model_version_partitions, blocking=True)
def single_model_version_check(
    context: AssetCheckExecutionContext, lancedb: LanceDBResource, model_registry: ModelRegistryResource
) -> AssetCheckResult:
    """The table holds vectors of its own model version only."""
    return _result(single_model_version(lancedb.store(), model_registry.spec(context.partition_key)))


@asset_check(asset=lance_index, partitions_def=model_version_partitions, blocking=True)
def vector_sanity_check(
    context: AssetCheckExecutionContext, lancedb: LanceDBResource, model_registry: ModelRegistryResource
) -> AssetCheckResult:
    """Registry dim, no NaN or infinity, unit norm where the model normalizes."""
    return _result(vector_sanity(lancedb.store(), model_registry.spec(context.partition_key)))


@asset_check(asset=lance_index, partitions_def=model_version_partitions, blocking=True)
def ann_recall_check(
    context: AssetCheckExecutionContext, lancedb: LanceDBResource, model_registry: ModelRegistryResource
) -> AssetCheckResult:
    """ANN recall@10 against exact search on 200 stored vectors is at least 0.95."""
    return _result(ann_recall(lancedb.store(), model_registry.spec(context.partition_key)))


@asset_check(asset=lance_index, partitions_def=model_version_partitions, blocking=True)
def eval_recall_check(
    context: AssetCheckExecutionContext,
    lancedb: LanceDBResource,
    model_registry: ModelRegistryResource,
    promotion_policy: PromotionPolicyResource,
) -> AssetCheckResult:
    """Recall@10 and MRR on the evaluation set (frozen; derived from the corpus unless one is given), no
    worse than the live version's minus the tolerance. Not measured fails."""
    store = lancedb.store()
    registry = model_registry.registry()
    spec = registry.spec(context.partition_key)
    alias = current_alias(store)
    other_live = alias and alias.model_version != spec.key and alias.model_version in registry.specs
    eval_set = promotion_policy.eval_set(store)
    comparison = compare_quality(
        store,
        model_registry.loaded(spec.key),
        model_registry.loaded(alias.model_version) if other_live else None,
        eval_set.queries,
        promotion_policy.recall_tolerance,
        live_table_version=alias.table_version if other_live else None,
    )
    serving = alias is not None and alias.model_version == spec.key
    description = comparison.describe() + (" (this version is live)" if serving else "")
    return AssetCheckResult(
        passed=comparison.passed,
        description=description,
        metadata={**comparison.metadata(), "eval_set": eval_set.provenance},
    )


@asset_check(asset=lance_index, partitions_def=model_version_partitions)
def vector_fidelity_check(
    context: AssetCheckExecutionContext, lancedb: LanceDBResource, model_registry: ModelRegistryResource
) -> AssetCheckResult:
    """Mean cosine to the vectors of the version's fidelity_reference (the same weights on torch) on shared rows: what
    a faster runtime or int8 changed. A warning, never a gate: recall on the evaluation set gates every version."""
    registry = model_registry.registry()
    spec = registry.spec(context.partition_key)
    reference = registry.specs.get(spec.fidelity_reference) if spec.fidelity_reference else None
    return _result(vector_fidelity(lancedb.store(), spec, reference), AssetCheckSeverity.WARN)


@asset_check(asset=lance_index, partitions_def=model_version_partitions)
def quarantine_check(context: AssetCheckExecutionContext, lancedb: LanceDBResource) -> AssetCheckResult:
    """Inputs refused by the corpus stage or by this version's embedding, counted by reason (a warning)."""
    return _result(quarantine_report(lancedb.store(), context.partition_key), AssetCheckSeverity.WARN)


@asset_check(asset=lance_index, partitions_def=model_version_partitions)
def version_diff_check(
    context: AssetCheckExecutionContext,
    lancedb: LanceDBResource,
    model_registry: ModelRegistryResource,
    promotion_policy: PromotionPolicyResource,
) -> AssetCheckResult:
    """What readers would see change against the live version: neighbour overlap@10, rank shifts, documents
    that lose or gain visibility (with examples), recall and MRR of both. Informational unless the policy
    sets thresholds, which then refuse the promotion."""
    store = lancedb.store()
    alias = current_alias(store)
    registry = model_registry.registry()
    candidate = context.partition_key
    if alias is None or alias.model_version == candidate or alias.model_version not in registry.specs:
        return AssetCheckResult(passed=True, description="no other live version to compare with")
    try:
        diff = version_diff_for(
            store,
            (*model_registry.loaded(candidate), store.open_embeddings_table(candidate).version),
            (*model_registry.loaded(alias.model_version), alias.table_version),
            promotion_policy.eval_set(store).queries,
        )
    except (ValueError, RuntimeError, OSError) as error:
        # A table the blocking checks refuse (wrong width, botched vectors) cannot be searched: they say why.
        return AssetCheckResult(
            passed=True, severity=AssetCheckSeverity.WARN, description=f"not compared: {type(error).__name__}: {error}"
        )
    refusal = diff_refusal(diff, promotion_policy.diff_thresholds())
    return AssetCheckResult(
        passed=refusal is None,
        severity=AssetCheckSeverity.ERROR if refusal else AssetCheckSeverity.WARN,
        description=diff.describe() + (f"; refused: {refusal}" if refusal else ""),
        metadata=diff.metadata(),
    )


def _backfill_outcome(context: AssetCheckExecutionContext, model_version: str, after: float, gpu_hour_usd: float):
    """The first embeddings materialization of each shard after the plan: the backfill the plan priced."""
    keys = [str(embedding_partition_key(model_version, shard)) for shard in shard_partitions.get_partition_keys()]
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("embeddings"), asset_partitions=keys, after_timestamp=after),
        limit=10 * len(keys),
        ascending=True,
    ).records
    first = {}
    for record in records:
        first.setdefault(record.partition_key, record)
    if len(first) < len(keys):
        return None, len(first), len(keys)
    metadata = [{k: v.value for k, v in r.asset_materialization.metadata.items()} for r in first.values()]
    device_seconds = sum(float(m.get("wall_seconds", 0)) for m in metadata)
    start = min(r.timestamp - float(m.get("wall_seconds", 0)) for r, m in zip(first.values(), metadata))
    outcome = Outcome(
        calls=sum(int(m.get("model_calls", 0)) for m in metadata),
        tokens=sum(int(m.get("tokens", 0)) for m in metadata),
        cost_usd=sum(float(m.get("estimated_cost_usd", 0)) for m in metadata) or device_seconds / 3600 * gpu_hour_usd,
        wall_seconds=max(r.timestamp for r in first.values()) - start,
    )
    return outcome, len(first), len(keys)


@asset_check(asset=lance_index, partitions_def=model_version_partitions)
def reembedding_plan_check(
    context: AssetCheckExecutionContext, lancedb: LanceDBResource, reembedding_budget: ReembeddingBudgetResource
) -> AssetCheckResult:
    """The version's re-embedding plan beside what its backfill did (calls, tokens, cost, wall) and each
    estimate's error; informational, never blocks."""
    recorded = latest_plan(lancedb.store(), context.partition_key)
    if recorded is None:
        return AssetCheckResult(passed=True, description="no re-embedding plan was made for this version")
    outcome, done, total = _backfill_outcome(
        context, context.partition_key, recorded.planned_at.timestamp(), reembedding_budget.gpu_hour_usd
    )
    if outcome is None:
        return AssetCheckResult(passed=True, description=f"backfill in progress: {done}/{total} shards embedded")
    errors = plan_errors(recorded.plan, outcome)
    description = ", ".join(
        f"{name} planned {e['planned']:,.4g} vs actual {e['actual']:,.4g} ({e['error']:+.1%})"
        for name, e in errors.items()
    )
    metadata = {f"{name}_{field}": value for name, error in errors.items() for field, value in error.items()} | {
        "planned_at": recorded.planned_at.isoformat(),
        "plan_device": recorded.plan.device,
    }
    return AssetCheckResult(passed=True, severity=AssetCheckSeverity.WARN, description=description, metadata=metadata)


index_checks = [
    count_parity_check,
    single_model_version_check,
    vector_sanity_check,
    ann_recall_check,
    eval_recall_check,
    vector_fidelity_check,
    quarantine_check,
    reembedding_plan_check,
    version_diff_check,
]
