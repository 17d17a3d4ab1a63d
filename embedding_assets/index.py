from datetime import datetime, timezone
from typing import Literal

from dagster import AssetExecutionContext, AssetKey, AutomationCondition, Config, Failure, MaterializeResult, asset

from embedding_assets.core.aliases import (
    LIVE_ALIAS,
    Alias,
    current_alias,
    ever_live,
    protected_table_versions,
    switch_alias,
)
from embedding_assets.core.ann_recall import calibrate_probes
from embedding_assets.core.eval_sets import EvalSet
from embedding_assets.core.gates import record_verdict
from embedding_assets.core.index_build import build_index
from embedding_assets.core.promotion import PromotionDecision, decide_advance, decide_promotion
from embedding_assets.core.retention import apply_retention
from embedding_assets.core.store import LanceStore, versions_written_at
from embedding_assets.core.version_diff import VersionDiff, diff_refusal, version_diff_for
from embedding_assets.embeddings import embeddings
from gpu_ops.registry import ModelRegistry, ModelSpec
from partitions import model_version_partitions
from resources.lance_store import LanceDBResource
from resources.model_registry import ModelRegistryResource
from resources.promotion_policy import PromotionPolicyResource


class IndexConfig(Config):
    # Below this many rows exact search takes about 10 ms or less (see benchmarks/): no ANN index.
    ann_min_rows: int = 10_000
    ann_index_type: Literal["IVF_HNSW_SQ", "IVF_HNSW_PQ", "IVF_PQ", "IVF_SQ", "IVF_RQ", "IVF_FLAT"] = "IVF_HNSW_SQ"
    # "when_due": compact and update indexes only once enough rows wait for it (core/index_build.py,
    # needs_optimize), as a change's run does; "always": on every build.
    compaction: Literal["always", "when_due"] = "always"


def index_version(log, lancedb: LanceDBResource, model_version: str, config: IndexConfig) -> dict:
    """The index stage for one version; its materialization's metadata. The asset and the change job share it."""
    store = lancedb.store()
    stats = build_index(
        store,
        model_version,
        config.ann_min_rows,
        config.ann_index_type,
        protected_table_versions(store, model_version),
        always_optimize=config.compaction == "always",
    )
    # A rebuilt or updated ANN index gets its readers' probing calibrated (a new table version when it changes).
    table = store.open_embeddings_table(model_version)
    calibration = calibrate_probes(table) if stats.ann_changed else None
    probing = {}
    if calibration is not None:
        tried = ", ".join(f"{setting}: {recall:.3f}" for setting, recall in calibration.tried.items())
        log.info(
            f"{model_version}: readers probe {calibration.nprobes} partitions with a beam of {calibration.ef} "
            f"(recall@10 by nprobes/ef: {tried})"
        )
        probing = {
            "reader_nprobes": calibration.nprobes,
            "reader_ef": calibration.ef,
            "calibration_recall_by_nprobes_ef": tried,
        }
    log.info(f"{model_version}: {stats.rows} rows, search {stats.search_mode}")
    return {
        "dagster/row_count": stats.rows,
        "table_version": table.version,
        "ann_index": stats.ann_index,
        **probing,
        "search_mode": stats.search_mode,
        "compacted": stats.optimized,
        "scalar_indexes": ", ".join(stats.scalar_indexes),
        "text_index": f"documents.text (full text): {stats.text_index}",
    }


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
    return MaterializeResult(metadata=index_version(context.log, lancedb, context.partition_key, config))


class LiveIndexConfig(Config):
    # Empty: the newest registered version that was never live and whose index is built.
    model_version: str = ""
    # Waives the retrieval-quality comparison (never the blocking checks); logged.
    force: bool = False
    switched_by: str = "live_index"


def _awaiting_promotion(context: AssetExecutionContext, store: LanceStore, registry: ModelRegistry) -> str | None:
    indexed = context.instance.get_materialized_partitions(AssetKey("lance_index"))
    been_live = ever_live(store)
    return next((v for v in reversed(registry.specs) if v in indexed and v not in been_live), None)


def _decision_metadata(decision: PromotionDecision, live: str | None, eval_set: EvalSet) -> dict:
    metadata = {
        "candidate": decision.candidate,
        "candidate_table_version": decision.table_version,
        "live_before": live or "none",
        "forced": decision.forced,
        "reasons": "; ".join(decision.reasons) or "all gates passed",
        "eval_set": eval_set.provenance,
        **{
            f"gate {name}": "pass" if outcome.passed else outcome.description
            for name, outcome in decision.verdict.outcomes.items()
        },
    }
    if decision.quality is not None:
        metadata |= {"eval": decision.quality.describe(), **decision.quality.metadata()}
    return metadata


def _write_to_pin_seconds(store: LanceStore, model_version: str, table_version: int, pinned_at: datetime) -> float:
    """From the commit of the pinned table version (the last write readers now see) to the pin."""
    written = versions_written_at(store.open_embeddings_table(model_version))[table_version]
    return round((pinned_at - written).total_seconds(), 3)


def advance_live_pin(
    log,
    store: LanceStore,
    live: tuple[ModelSpec, object],
    alias: Alias,
    eval_set: EvalSet,
    tolerance: float,
) -> dict:
    """Move the live pin to the table's latest version once its gates pass; else readers stay put."""
    latest = store.open_embeddings_table(alias.model_version).version
    if latest == alias.table_version:
        reason = f"already live at table version {latest}"
        log.info(f"{LIVE_ALIAS} stays on {alias.model_version}: {reason}")
        return {
            "decision": "kept",
            "model_version": alias.model_version,
            "table_version": latest,
            "reasons": reason,
        }
    decision = decide_advance(store, live, alias.table_version, eval_set.queries, tolerance)
    now = datetime.now(timezone.utc)
    record_verdict(store, decision.verdict, now)
    metadata = _decision_metadata(decision, alias.model_version, eval_set)
    if not decision.promote:
        log.warning(
            f"{LIVE_ALIAS} held on {alias.model_version} table version {alias.table_version}: table version "
            f"{decision.table_version} failed its gates: " + "; ".join(decision.reasons)
        )
        return {
            "decision": "held",
            "model_version": alias.model_version,
            "table_version": alias.table_version,
            **metadata,
        }
    switched = switch_alias(store, alias.model_version, decision.table_version, "live_index (advance)", now)
    seconds = _write_to_pin_seconds(store, alias.model_version, decision.table_version, now)
    log.info(
        f"{LIVE_ALIAS} advanced on {alias.model_version} from table version {alias.table_version} to "
        f"{switched.table_version}, {seconds}s after its last write"
    )
    return {
        "decision": "advanced",
        "model_version": switched.model_version,
        "table_version": switched.table_version,
        "table_version_before": alias.table_version,
        "write_to_pin_seconds": seconds,
        **metadata,
    }


def _version_diff(
    store: LanceStore,
    model_registry: ModelRegistryResource,
    promotion_policy: PromotionPolicyResource,
    decision: PromotionDecision,
    alias: Alias | None,
    eval_set: EvalSet,
) -> VersionDiff | None:
    """The candidate's version-diff report against the live version (the check's, when it made one for
    these table versions), beside the decision; its thresholds, when set, refuse the promotion."""
    if not decision.verdict.passed or alias is None or alias.model_version not in model_registry.registry().specs:
        return None
    diff = version_diff_for(
        store,
        (*model_registry.loaded(decision.candidate), decision.table_version),
        (*model_registry.loaded(alias.model_version), alias.table_version),
        eval_set.queries,
    )
    refusal = diff_refusal(diff, promotion_policy.diff_thresholds())
    if refusal:
        decision.refusals.append(f"version_diff: {refusal}")
        decision.promote = decision.promote and decision.forced
    return diff


@asset(group_name="index", kinds={"lancedb"}, deps=[lance_index], automation_condition=AutomationCondition.eager())
def live_index(
    context: AssetExecutionContext,
    config: LiveIndexConfig,
    lancedb: LanceDBResource,
    model_registry: ModelRegistryResource,
    promotion_policy: PromotionPolicyResource,
) -> MaterializeResult:
    """The `live` alias readers resolve: a table and the table version they read. It moves, in one
    commit, only to a table version that passed every gate: to a new model version (promotion), or
    to a newer table version of the live one (after any change to its table)."""
    store = lancedb.store()
    registry = model_registry.registry()
    alias = current_alias(store, LIVE_ALIAS)
    live = alias.model_version if alias else None
    eval_set = promotion_policy.eval_set(store)
    candidate = config.model_version or _awaiting_promotion(context, store, registry)
    if (candidate is None or candidate == live) and alias is not None and live in registry.specs:
        advanced = advance_live_pin(
            context.log, store, model_registry.loaded(live), alias, eval_set, promotion_policy.recall_tolerance
        )
        return MaterializeResult(metadata=advanced)
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
        lambda: (model_registry.loaded(live), alias.table_version) if live in registry.specs else None,
        eval_set.queries,
        promotion_policy.recall_tolerance,
        config.force,
    )
    diff = _version_diff(store, model_registry, promotion_policy, decision, alias, eval_set)
    now = datetime.now(timezone.utc)
    record_verdict(store, decision.verdict, now)
    metadata = _decision_metadata(decision, live, eval_set) | (
        {"version_diff": diff.describe(), **diff.metadata()} if diff else {}
    )
    if not decision.promote:
        message = f"{candidate} not promoted, {LIVE_ALIAS} stays on {live}: " + "; ".join(decision.reasons)
        if config.model_version:
            raise Failure(message, metadata=metadata)
        context.log.warning(message)
        return MaterializeResult(metadata={"decision": "kept", "model_version": live or "none", **metadata})

    switched = switch_alias(store, candidate, decision.table_version, config.switched_by, now, LIVE_ALIAS)
    retention = apply_retention(store, registry, promotion_policy.keep_retired_versions)
    context.log.info(
        f"{LIVE_ALIAS} switched from {live} to {candidate} at table version {switched.table_version}; "
        f"retention dropped {retention.dropped or 'nothing'}"
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
