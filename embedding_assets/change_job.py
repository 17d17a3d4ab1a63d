"""`apply_change_job`: one run applies a change of the source, whatever the number of shards it touches.

A 1 % edit spreads over every shard. As one run per partition it paid Dagster's bookkeeping and a
model load for each of them; here one run goes through the phases in order (corpus for the
touched shards, dedup for those whose representatives may move, embeddings of those shards for
every registered version with each model loaded once, then each version's index, and the live
pin's advance through the gates). Each phase reports a materialization per partition it wrote,
through the same functions the assets use, so the UI's partition view stays true.
"""

import threading
import time
from datetime import datetime, timezone

from dagster import (
    AssetMaterialization,
    Config,
    OpExecutionContext,
    in_process_executor,
    job,
    op,
)

from embedding_assets.core.aliases import LIVE_ALIAS, current_alias
from embedding_assets.core.freshness import UPSERT_ORIGIN, record_freshness
from embedding_assets.core.inbox import compact_inbox, read_inbox
from embedding_assets.core.reembedding_plan import latest_plan
from embedding_assets.corpus import sync_shards
from embedding_assets.dedup import deduplicate_changed
from embedding_assets.embeddings import embed_partitions
from embedding_assets.index import IndexConfig, advance_live_pin, index_version
from partitions import embedding_partition_key, model_version_partitions
from resources.corpus_source import CorpusSourceResource
from resources.lance_store import LanceDBResource
from resources.model_registry import ModelRegistryResource
from resources.promotion_policy import PromotionPolicyResource


class ChangeConfig(Config):
    # What the change touches (see core/change_plan.py): shards to re-ingest, and to re-deduplicate and embed.
    ingest_shards: list[str]
    dedup_shards: list[str]
    # When the source changed, or else when the change was seen (epoch seconds): the run reports the
    # time from then until the change is searchable through the live pin.
    detected_at: float = 0.0
    # When the source changed, if it did (0: only the inbox did): the `edit` freshness row counts from it.
    source_changed_at: float = 0.0
    # The inbox's table version the sensor planned from: the run applies exactly what it held (None: the latest).
    inbox_version: int | None = None
    allow_mass_delete: bool = False


def _report(context: OpExecutionContext, asset: str, partition: str | None, metadata: dict) -> None:
    context.log_event(AssetMaterialization(asset_key=asset, partition=partition, metadata=metadata))


def _versions_to_embed(context: OpExecutionContext, lancedb: LanceDBResource) -> tuple[list[str], list[str]]:
    """(to embed, refused): every registered version (the live one, candidates being backfilled, and the
    previous one for rollback) but those whose re-embedding plan the budget refused, which make no model
    call here either."""
    versions = context.instance.get_dynamic_partitions(model_version_partitions.name)
    refused = [v for v in versions if (plan := latest_plan(lancedb.store(), v)) is not None and not plan.within_budget]
    return [v for v in versions if v not in refused], refused


def _load_models_meanwhile(context: OpExecutionContext, lancedb: LanceDBResource, registry: ModelRegistryResource):
    """Start loading the models this run will need while the corpus and dedup phases run: in a fresh
    run process, importing torch and loading weights is seconds of a change's time to searchable, and
    the gate of the live pin needs the live model even when nothing is embedded. A failed load here is
    only a missed head start: the phase that needs the model loads it again and reports the error."""
    specs = registry.registry().specs
    wanted = [specs[version] for version in _versions_to_embed(context, lancedb)[0] if version in specs]

    def load():
        for spec in wanted:
            try:
                registry.encoder(spec)
            except Exception:  # noqa: BLE001 - the phase that needs the model loads it again and fails there
                return

    threading.Thread(target=load, name="load-models-meanwhile", daemon=True).start()


@op
def ingest_change(
    context: OpExecutionContext,
    config: ChangeConfig,
    corpus_source: CorpusSourceResource,
    lancedb: LanceDBResource,
    model_registry: ModelRegistryResource,
) -> dict:
    _load_models_meanwhile(context, lancedb, model_registry)
    inbox = read_inbox(lancedb.store(), config.inbox_version)
    synced = sync_shards(
        context.log, corpus_source, lancedb, config.ingest_shards, config.allow_mass_delete, context.run.run_id, inbox
    )
    for shard, metadata in synced.items():
        _report(context, "corpus", shard, metadata)
    compact_inbox(lancedb.store())
    return {
        "shards": config.dedup_shards,
        "ingest_shards": config.ingest_shards,
        "detected_at": config.detected_at,
        "source_changed_at": config.source_changed_at,
    }


@op
def deduplicate_change(context: OpExecutionContext, change: dict, lancedb: LanceDBResource) -> dict:
    """Only what the change can move is decided again. Embedding follows the documents: it runs where
    the source changed and where a signature row moved (a new representative, or a row removed)."""
    moved = deduplicate_changed(context.log, lancedb, change["shards"])
    for shard, metadata in moved.items():
        _report(context, "dedup_signatures", shard, metadata)
    return {**change, "shards": sorted(set(change["ingest_shards"]) | moved.keys())}


@op
def embed_change(
    context: OpExecutionContext, change: dict, lancedb: LanceDBResource, model_registry: ModelRegistryResource
) -> dict:
    versions, refused = _versions_to_embed(context, lancedb)
    if refused:
        context.log.warning(f"not embedded, their re-embedding plans are over budget: {', '.join(refused)}")
    calls, embedded = 0, []
    for version in versions:
        # One encoding stream over the shards; a Batch API version keeps its jobs per shard.
        pooled = [change["shards"]] if not model_registry.spec(version).batch_api else [[s] for s in change["shards"]]
        for shards in pooled:
            for shard, metadata in embed_partitions(context.log, lancedb, model_registry, version, shards).items():
                calls += metadata["model_calls"]
                embedded.append((embedding_partition_key(version, shard), metadata))
    context.log.info(f"change embedded with {calls} model calls over {len(versions)} version(s)")
    return {**change, "versions": versions, "embedded": embedded}


def _freshness_metadata(rows: list[dict]) -> dict:
    """The change's freshness rows summed up on the live_index materialization (the histogram is the server's)."""
    upserts = sorted(row["seconds"] for row in rows if row["origin"] == UPSERT_ORIGIN)
    if not upserts:
        return {}
    return {
        "upserts_searchable": len(upserts),
        "upsert_to_searchable_seconds_p50": round(upserts[len(upserts) // 2], 3),
        "upsert_to_searchable_seconds_max": round(upserts[-1], 3),
    }


@op
def index_and_advance(
    context: OpExecutionContext,
    change: dict,
    lancedb: LanceDBResource,
    model_registry: ModelRegistryResource,
    promotion_policy: PromotionPolicyResource,
) -> None:
    """The versions' indexes, then the live pin. The embeddings, index and live_index materializations are
    reported together at the end: the assets' eager automation (which rebuilds `lance_index` after its
    `embeddings`, `live_index` after its index) must not start a second run for what this run does."""
    indexed = {
        version: index_version(context.log, lancedb, version, IndexConfig(compaction="when_due"))
        for version in change["versions"]
    }
    store = lancedb.store()
    alias = current_alias(store, LIVE_ALIAS)
    live = None
    if alias is None or alias.model_version not in model_registry.registry().specs:
        context.log.info("nothing is live yet: the change is indexed, promotion is live_index's to decide")
    else:
        live = advance_live_pin(
            context.log,
            store,
            model_registry.loaded(alias.model_version),
            alias,
            promotion_policy.eval_set(store),
            promotion_policy.recall_tolerance,
        )
        if change["detected_at"] and live["decision"] == "advanced":
            live["change_to_searchable_seconds"] = round(time.time() - change["detected_at"], 3)
        if live["decision"] in ("advanced", "kept"):
            live |= _freshness_metadata(
                record_freshness(
                    store,
                    context.run.run_id,
                    change["source_changed_at"],
                    live["table_version"],
                    datetime.now(timezone.utc),
                )
            )
    for partition, metadata in change["embedded"]:
        _report(context, "embeddings", partition, metadata)
    for version, metadata in indexed.items():
        _report(context, "lance_index", version, metadata)
    if live is not None:
        _report(context, "live_index", None, live)


@job(
    executor_def=in_process_executor,
    description="Apply one change of the source in one run: corpus, dedup, embeddings, index, then the live pin.",
)
def apply_change_job():
    index_and_advance(embed_change(deduplicate_change(ingest_change())))
