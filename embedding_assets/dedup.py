from dagster import AllPartitionMapping, AssetDep, AssetExecutionContext, MaterializeResult, asset

from embedding_assets.core.dedup import DedupStats, SignatureIndex, dedup_shard
from embedding_assets.core.dedup_change import dedup_change
from embedding_assets.core.minhash import BANDS, NEAR_DUPLICATE_JACCARD, NUM_PERM, ROWS_PER_BAND, MinHasher
from embedding_assets.corpus import corpus
from partitions import shard_partitions
from resources.lance_store import LanceDBResource


def deduplicate_shard(log, lancedb: LanceDBResource, shard: str) -> dict:
    """One shard of the dedup stage; its materialization's metadata."""
    return _metadata(log, shard, dedup_shard(lancedb.store(), shard, MinHasher()))


def deduplicate_changed(log, lancedb: LanceDBResource, shards: list[str]) -> dict[str, dict]:
    """The dedup stage for a change of `shards` (core/dedup_change.py): shard -> its materialization's
    metadata, for each shard whose rows moved."""
    store = lancedb.store()
    store.ensure_lookup_indexes()
    stats = dedup_change(store, shards, SignatureIndex(store, MinHasher()))
    return {shard: _metadata(log, shard, shard_stats) for shard, shard_stats in sorted(stats.items())}


def _metadata(log, shard: str, stats: DedupStats) -> dict:
    log.info(
        f"shard {shard}: {stats.self_representatives} representatives, "
        f"{stats.exact_duplicates} exact and {stats.near_duplicates} near duplicates"
    )
    return {
        "dagster/row_count": stats.documents,
        "representatives": stats.self_representatives,
        "exact_duplicates": stats.exact_duplicates,
        "near_duplicates": stats.near_duplicates,
        "contents_signed": stats.contents_signed,
        "contents_banded": stats.contents_banded,
        "rows_written": stats.rows_written,
        "rows_removed": stats.rows_removed,
        "minhash": f"{NUM_PERM} permutations, char 3-grams, LSH {BANDS}x{ROWS_PER_BAND}",
        "near_duplicate_jaccard": NEAR_DUPLICATE_JACCARD,
    }


@asset(
    partitions_def=shard_partitions,
    group_name="dedup",
    kinds={"lancedb"},
    # Near duplicates are looked for across the whole corpus, so every corpus shard feeds every dedup shard.
    deps=[AssetDep(corpus, partition_mapping=AllPartitionMapping())],
)
def dedup_signatures(context: AssetExecutionContext, lancedb: LanceDBResource) -> MaterializeResult:
    """MinHash signatures, LSH band rows and the representative of every document in the shard."""
    return MaterializeResult(metadata=deduplicate_shard(context.log, lancedb, context.partition_key))
