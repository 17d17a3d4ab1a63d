from datetime import datetime, timezone
from typing import Literal

from dagster import AssetExecutionContext, AssetKey, AutomationCondition, Config, Failure, MaterializeResult, asset

from embedding_assets.core.aliases import LIVE_ALIAS, current_alias, ever_live, switch_alias
from embedding_assets.core.index_build import build_index
from embedding_assets.core.promotion import PromotionDecision, decide_promotion
from embedding_assets.core.retention import apply_retention
from embedding_assets.core.store import LanceStore
from embedding_assets.embeddings import embeddings
from gpu_ops.registry import ModelRegistry
from partitions import model_version_partitions
from resources.lance_store import LanceDBResource
from resources.model_registry import ModelRegistryResource
from resources.promotion_policy import PromotionPolicyResource


class IndexConfig(Config):
    # Below this many rows exact search takes about 10 ms or less (see benchmarks/): no ANN index.
    ann_min_rows: int = 10_000
    ann_index_type: Literal["IVF_HNSW_SQ", "IVF_HNSW_PQ", "IVF_PQ", "IVF_SQ", "IVF_FLAT"] = "IVF_HNSW_SQ"


@asset(
    partitions_def=model_version_partitions,
    group_name="index",
    kinds={"lancedb"},
    deps=[embeddings],
    # Waits for every shard of the version, then rebuilds after any of them changes.
    automation_condition=AutomationCondition.eager(),
)
def lance_index(context: AssetExecutionContext, config: IndexConfig, lancedb: LanceDBResource) -> MaterializeResult:
    """The version's table, compacted, with scalar indexes and (when large enough) an ANN index."""
    stats = build_index(lancedb.store(), context.partition_key, config.ann_min_rows, config.ann_index_type)
    context.log.info(f"{context.partition_key}: {stats.rows} rows, search {stats.search_mode}")
    return MaterializeResult(
        metadata={
            "dagster/row_count": stats.rows,
            "table_version": stats.table_version,
            "ann_index": stats.ann_index,
            "search_mode": stats.search_mode,
            "scalar_indexes": ", ".join(stats.scalar_indexes),
        }
    )


class LiveIndexConfig(Config):
    # Empty: the newest registered version that was never live and whose index is built.
    model_version: str = ""
    # Waives the retrieval-quality comparison (never completeness or sanity); logged.
    force: bool = False
    switched_by: str = "live_index"


def _awaiting_promotion(context: AssetExecutionContext, store: LanceStore, registry: ModelRegistry) -> str | None:
    indexed = context.instance.get_materialized_partitions(AssetKey("lance_index"))
    been_live = ever_live(store)
    return next((v for v in reversed(registry.specs) if v in indexed and v not in been_live), None)


def _decision_metadata(decision: PromotionDecision, live: str | None) -> dict:
    metadata = {
        "candidate": decision.candidate,
        "live_before": live or "none",
        "forced": decision.forced,
        "reasons": "; ".join(decision.reasons) or "all gates passed",
        **{
            f"gate {name}": "pass" if outcome.passed else outcome.description
            for name, outcome in decision.gates.items()
        },
    }
    if decision.quality is not None:
        metadata |= {"eval": decision.quality.describe(), **decision.quality.metadata()}
    return metadata


@asset(group_name="index", kinds={"lancedb"}, deps=[lance_index], automation_condition=AutomationCondition.eager())
def live_index(
    context: AssetExecutionContext,
    config: LiveIndexConfig,
    lancedb: LanceDBResource,
    model_registry: ModelRegistryResource,
    promotion_policy: PromotionPolicyResource,
) -> MaterializeResult:
    """The `live` alias readers resolve. It moves, in one commit, only to a version that passes every gate."""
    store = lancedb.store()
    registry = model_registry.registry()
    alias = current_alias(store, LIVE_ALIAS)
    live = alias.model_version if alias else None
    candidate = config.model_version or _awaiting_promotion(context, store, registry)
    if candidate is None or candidate == live:
        reason = "already live" if candidate else "no registered version awaits promotion"
        context.log.info(f"{LIVE_ALIAS} stays on {live}: {reason}")
        return MaterializeResult(metadata={"decision": "kept", "model_version": live or "none", "reasons": reason})

    if config.force:
        context.log.warning(
            f"promotion of {candidate} forced by {config.switched_by}: the quality comparison is waived"
        )
    decision = decide_promotion(
        store,
        model_registry.loaded(candidate),
        lambda: model_registry.loaded(live) if live in registry.specs else None,
        promotion_policy.eval_set(),
        promotion_policy.recall_tolerance,
        config.force,
    )
    metadata = _decision_metadata(decision, live)
    if not decision.promote:
        message = f"{candidate} not promoted, {LIVE_ALIAS} stays on {live}: " + "; ".join(decision.reasons)
        if config.model_version:
            raise Failure(message, metadata=metadata)
        context.log.warning(message)
        return MaterializeResult(metadata={"decision": "kept", "model_version": live or "none", **metadata})

    switched = switch_alias(store, candidate, config.switched_by, datetime.now(timezone.utc), LIVE_ALIAS)
    retention = apply_retention(store, registry, promotion_policy.keep_retired_versions)
    context.log.info(
        f"{LIVE_ALIAS} switched from {live} to {candidate}; retention dropped {retention.dropped or 'nothing'}"
    )
    return MaterializeResult(
        metadata={
            "decision": "promoted",
            "model_version": switched.model_version,
            "table": switched.table,
            "table_version": switched.table_version,
            "switched_at": switched.switched_at.isoformat(),
            "switched_by": switched.switched_by,
            "tables_dropped": ", ".join(retention.dropped) or "none",
            **metadata,
        }
    )
