"""Asset checks on each version's table. The blocking ones gate `live_index`."""

import warnings

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, PreviewWarning, asset_check

from embedding_assets.core.aliases import current_alias
from embedding_assets.core.index_checks import (
    CheckOutcome,
    ann_recall,
    count_parity,
    quarantine_report,
    single_model_version,
    vector_sanity,
)
from embedding_assets.core.promotion import compare_quality
from embedding_assets.index import lance_index
from partitions import model_version_partitions
from resources.lance_store import LanceDBResource
from resources.model_registry import ModelRegistryResource
from resources.promotion_policy import PromotionPolicyResource

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
def quarantine_check(context: AssetCheckExecutionContext, lancedb: LanceDBResource) -> AssetCheckResult:
    """Inputs refused by the corpus stage or by this version's embedding, counted by reason (a warning)."""
    return _result(quarantine_report(lancedb.store(), context.partition_key), AssetCheckSeverity.WARN)


index_checks = [
    count_parity_check,
    single_model_version_check,
    vector_sanity_check,
    ann_recall_check,
    eval_recall_check,
    quarantine_check,
]
