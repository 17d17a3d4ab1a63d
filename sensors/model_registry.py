"""`model_registry_sensor`: the registry file is the source of truth for which versions exist.

A new valid entry becomes a `model_versions` partition; the embedding backfill sensor then
backfills every shard of it on the GPU queue. An entry removed from the registry is retired:
its partition is deleted and its pending backfills are canceled, so it is never half-run.
Malformed entries are refused with their reason in the tick's log; the others proceed.
"""

import json
from statistics import fmean

from dagster import (
    DefaultSensorStatus,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from embedding_assets.core.aliases import current_alias
from embedding_assets.core.documents import LIVE_DOCUMENTS
from embedding_assets.core.store import LanceStore
from gpu_ops.hosted_encoder import backfill_cost_usd, estimated_token_count
from gpu_ops.registry import ModelSpec
from partitions import model_version_partitions
from resources.lance_store import LanceDBResource
from resources.model_registry import ModelRegistryResource
from sensors.dagster_private import BulkActionStatus

PENDING_BACKFILL_STATUSES = (BulkActionStatus.REQUESTED,)
# Documents whose tokens are counted to estimate a hosted backfill's cost.
COST_SAMPLE_DOCUMENTS = 1_000


def backfill_cost_estimate(store: LanceStore, spec: ModelSpec) -> str:
    """What embedding the corpus with a hosted version will cost, said before its backfill starts.

    The seed formula, documents x tokens per document / 1000 x price, with tokens per document
    estimated on a sample; an upper bound, since duplicates reuse a representative's vector.
    """
    documents = store.table("documents")
    count = documents.count_rows(LIVE_DOCUMENTS)
    sample = documents.search().where(LIVE_DOCUMENTS).select(["text"]).limit(COST_SAMPLE_DOCUMENTS).to_arrow()
    per_document = fmean(map(estimated_token_count, sample.column("text").to_pylist())) if count else 0.0
    cost = backfill_cost_usd(count, per_document, spec.price_per_1k_tokens)
    return (
        f"{spec.key}: estimated backfill cost ${cost:,.4f} = {count:,} documents x {per_document:,.1f} tokens "
        f"per document / 1000 x ${spec.price_per_1k_tokens} per 1k tokens (less where duplicates reuse vectors)"
    )


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
        context.log.info(f"registered {key}: partition added; every shard will be backfilled on the GPU queue")
        if registry.specs[key].backend == "openai":
            context.log.info(backfill_cost_estimate(store, registry.specs[key]))

    requests = []
    if added:
        requests.append(model_version_partitions.build_add_request(added))
    if gone:
        requests.append(model_version_partitions.build_delete_request(gone))
    # Entries that are malformed for now keep their old fingerprint, so a fix must restore the same settings.
    kept = {key: registered_before[key] for key in registry.invalid_keys if key in registered_before}
    cursor = json.dumps({**kept, **fingerprints}, sort_keys=True)
    if not requests:
        unchanged = SkipReason(f"registry unchanged: {', '.join(registry.specs) or 'empty'}")
        return SensorResult(skip_reason=unchanged, cursor=cursor)
    return SensorResult(dynamic_partitions_requests=requests, cursor=cursor)
