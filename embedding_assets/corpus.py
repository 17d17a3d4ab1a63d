from datetime import datetime, timezone

from dagster import AssetExecutionContext, Config, MaterializeResult, asset

from embedding_assets.core.corpus_sync import CorpusSyncStats, known_file_versions, shard_passes, sync_corpus_shards
from embedding_assets.core.inbox import InboxSnapshot, mark_applied, read_inbox, with_inbox
from partitions import shard_partitions
from resources.corpus_source import CorpusSourceResource
from resources.lance_store import LanceDBResource


class CorpusConfig(Config):
    # Let this run mark more documents deleted than the corpus source's mass-delete limit allows:
    # for a source that really lost many documents, after checking that it is the right one.
    allow_mass_delete: bool = False


def sync_shards(
    log,
    corpus_source: CorpusSourceResource,
    lancedb: LanceDBResource,
    shards: list[str],
    allow_mass_delete: bool,
    run_id: str,
    inbox: InboxSnapshot | None = None,
) -> dict[str, dict]:
    """The corpus stage for `shards`, in as few reads of the source as memory allows (`shard_passes`): the
    source with the inbox laid over it (`inbox`, or the latest one), and the inbox's pending writes of those
    shards then marked applied by `run_id`. Returns each shard's materialization metadata. The asset (one
    shard) and the change job (every shard it touches) share it."""
    if not shards:
        return {}
    store = lancedb.store()
    inbox = inbox or read_inbox(store, shard=shards[0] if len(shards) == 1 else None)
    now = datetime.now(timezone.utc)
    stats = {}
    for group in shard_passes(store, shards):
        one = group[0] if len(group) == 1 else None
        stats |= sync_corpus_shards(
            store,
            with_inbox(corpus_source.read(one, known_file_versions(store, group)), inbox, one),
            group,
            now,
            corpus_source.mass_delete_guard(allow_mass_delete),
        )
    return {
        shard: _shard_metadata(
            log,
            corpus_source,
            lancedb,
            shard,
            shard_stats,
            mark_applied(store, [entry for entry in inbox.pending if entry["shard"] == shard], run_id, now),
            inbox.version,
            allow_mass_delete,
        )
        for shard, shard_stats in stats.items()
    }


def _shard_metadata(
    log,
    corpus_source: CorpusSourceResource,
    lancedb: LanceDBResource,
    shard: str,
    stats: CorpusSyncStats,
    applied: int,
    inbox_version: int,
    allow_mass_delete: bool,
) -> dict:
    if not stats.source_complete:
        log.warning(
            f"{corpus_source.describe()} could not be read whole, so no document was marked deleted for being absent "
            f"from it (shard {shard}): {'; '.join(stats.source_problems)}. Fix the source and rerun to apply its "
            "deletions."
        )
    log.info(
        f"shard {shard}: {stats.live} documents (+{stats.added} ~{stats.changed} -{stats.deleted}), "
        f"{stats.quarantined} quarantined"
    )
    return {
        "dagster/row_count": stats.live,
        "added": stats.added,
        "changed": stats.changed,
        "deleted": stats.deleted,
        "unchanged": stats.unchanged,
        "quarantined": stats.quarantined,
        "quarantine_reasons": dict(stats.quarantine_reasons),
        "modalities": dict(stats.modalities),
        "inbox_writes_applied": applied,
        "inbox_version": inbox_version,
        "source": corpus_source.describe(),
        "source_complete": stats.source_complete,
        "source_problems": "; ".join(stats.source_problems) or "none",
        "allow_mass_delete": allow_mass_delete,
        "table_uri": f"{lancedb.uri}/documents.lance",
    }


@asset(partitions_def=shard_partitions, group_name="corpus", kinds={"lancedb"})
def corpus(
    context: AssetExecutionContext,
    config: CorpusConfig,
    corpus_source: CorpusSourceResource,
    lancedb: LanceDBResource,
) -> MaterializeResult:
    """The shard's documents (the source's, and the inbox's writes), normalized and content-hashed; what left
    them is marked deleted."""
    shard = context.partition_key
    metadata = sync_shards(context.log, corpus_source, lancedb, [shard], config.allow_mass_delete, context.run.run_id)
    return MaterializeResult(metadata=metadata[shard])
