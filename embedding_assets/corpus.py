from datetime import datetime, timezone

from dagster import AssetExecutionContext, Config, MaterializeResult, asset

from embedding_assets.core.corpus_sync import sync_corpus_shard
from embedding_assets.core.inbox import InboxSnapshot, mark_applied, read_inbox, with_inbox
from partitions import shard_partitions
from resources.corpus_source import CorpusSourceResource
from resources.lance_store import LanceDBResource


class CorpusConfig(Config):
    # Let this run mark more documents deleted than the corpus source's mass-delete limit allows:
    # for a source that really lost many documents, after checking that it is the right one.
    allow_mass_delete: bool = False


def sync_shard(
    log,
    corpus_source: CorpusSourceResource,
    lancedb: LanceDBResource,
    shard: str,
    allow_mass_delete: bool,
    run_id: str,
    inbox: InboxSnapshot | None = None,
) -> dict:
    """One shard of the corpus stage: the source with the inbox laid over it (`inbox`, or the latest one), and
    the inbox's pending writes of the shard then marked applied by `run_id`; its materialization's metadata.
    The asset and the change job share it."""
    store = lancedb.store()
    inbox = inbox or read_inbox(store, shard=shard)
    now = datetime.now(timezone.utc)
    stats = sync_corpus_shard(
        store,
        with_inbox(corpus_source.read(shard), inbox, shard),
        shard,
        now,
        corpus_source.mass_delete_guard(allow_mass_delete),
    )
    applied = mark_applied(store, [entry for entry in inbox.pending if entry["shard"] == shard], run_id, now)
    if not stats.source_complete:
        log.warning(
            f"{corpus_source.describe()} could not be read whole, so no document was marked deleted for being absent "
            f"from it: {'; '.join(stats.source_problems)}. Fix the source and rerun to apply its deletions."
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
        "inbox_version": inbox.version,
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
    return MaterializeResult(
        metadata=sync_shard(
            context.log, corpus_source, lancedb, context.partition_key, config.allow_mass_delete, context.run.run_id
        )
    )
