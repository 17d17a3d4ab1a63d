"""`corpus_change_sensor`: a changed source costs one run over the shards it touches.

The sensor plans the change (which shards to re-ingest, which to re-deduplicate and embed: see
`core/change_plan.py`) and asks for one `apply_change_job` run, which also indexes and moves the
live pin through its gates. The next change waits until that run finished; a failed run is
planned again on the next tick. The source's fingerprint (sizes, times, ETags) and the inbox's row
count are read on every tick, so an unchanged source and inbox cost nothing. Writes to the inbox (the
serving API's `POST` / `DELETE /v1/documents`) are planned with the source, laid over it, and the run
applies the inbox as of the table version planned from.
"""

import json
import time

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from embedding_assets.change_job import apply_change_job
from embedding_assets.core.change_plan import plan_changes
from embedding_assets.core.corpus_sync import known_file_versions
from embedding_assets.core.inbox import inbox_fingerprint, read_inbox, with_inbox
from embedding_assets.core.minhash import MinHasher
from embedding_assets.core.sharding import shard_keys
from resources.corpus_source import CorpusSourceResource
from resources.lance_store import LanceDBResource

CHANGE_TAG = "embedding/change"
# Incremental runs go ahead of queued backfill runs.
INCREMENTAL_PRIORITY = {"dagster/priority": "1"}


def _pending_outcome(context: SensorEvaluationContext, change_id: str) -> DagsterRunStatus | None:
    """The status of the change's run once it finished; None while it is queued or running."""
    runs = context.instance.get_runs(RunsFilter(tags={CHANGE_TAG: change_id}), limit=1)
    if not runs:
        return DagsterRunStatus.FAILURE
    return runs[0].status if runs[0].is_finished else None


# A tick reads only the source's fingerprint (sizes, times, ETags): cheap enough to look every 5 seconds,
# which bounds how long an edit waits to be seen.
@sensor(jobs=[apply_change_job], minimum_interval_seconds=5, default_status=DefaultSensorStatus.RUNNING)
def corpus_change_sensor(
    context: SensorEvaluationContext, corpus_source: CorpusSourceResource, lancedb: LanceDBResource
):
    """Applies a source change in one run (`apply_change_job`) over the shards it touches."""
    state = json.loads(context.cursor) if context.cursor else {}
    pending = state.get("pending")
    if pending:
        status = _pending_outcome(context, pending["id"])
        if status is None:
            return SkipReason(f"change {pending['id']} in progress")
        if status == DagsterRunStatus.SUCCESS:
            context.log.info(f"change {pending['id']} applied")
            state = {"fingerprint": pending["fingerprint"], "inbox": pending["inbox"]}
        else:
            context.log.error(f"change {pending['id']}: its run did not succeed ({status.value}); planning again")
            state = {"fingerprint": state.get("fingerprint")}
    store = lancedb.store()
    fingerprint, inbox_rows = corpus_source.fingerprint(), inbox_fingerprint(store)
    seen = {"fingerprint": fingerprint, "inbox": inbox_rows}
    if fingerprint == state.get("fingerprint") and inbox_rows == state.get("inbox"):
        return SensorResult(
            skip_reason=SkipReason(f"{corpus_source.describe()} and the inbox unchanged"), cursor=json.dumps(state)
        )
    if not store.table("documents").count_rows():
        context.log.info("no documents yet: the first build is a backfill (`make demo`), not an incremental run")
        return SensorResult(skip_reason=SkipReason("nothing built yet"), cursor=json.dumps(seen))
    inbox = read_inbox(store)
    # Freshness counts from the edit where the source can tell (file times, S3 LastModified), and from
    # the longest-waiting write of the inbox.
    source_changed_at = (
        (corpus_source.last_modified() or time.time()) if fingerprint != state.get("fingerprint") else 0.0
    )
    detected_at = min(filter(None, (source_changed_at, inbox.oldest_pending)), default=time.time())
    # Files a folder's or a prefix's listing shows unchanged since their documents were read are not read.
    known = known_file_versions(store, shard_keys())
    plan = plan_changes(store, with_inbox(corpus_source.read(None, known), inbox, None), MinHasher())
    # Writes that change nothing (the same text again) are still applied, so their status leaves `pending`.
    ingest_shards = sorted(set(plan.ingest_shards) | inbox.pending_shards)
    if not ingest_shards:
        return SensorResult(skip_reason=SkipReason("source touched, no document changed"), cursor=json.dumps(seen))
    # The inbox's version too: two changes of the same documents within a second stay two runs.
    change_id = f"{plan.digest[:12]}-{int(detected_at)}" + (f"-inbox{inbox.version}" if inbox.pending else "")
    config = {
        "ingest_shards": ingest_shards,
        "dedup_shards": plan.dedup_shards,
        "detected_at": detected_at,
        "source_changed_at": source_changed_at,
        "inbox_version": inbox.version,
    }
    request = RunRequest(
        job_name=apply_change_job.name,
        run_key=f"change-{change_id}",
        run_config={"ops": {"ingest_change": {"config": config}}},
        tags={CHANGE_TAG: change_id, **INCREMENTAL_PRIORITY},
    )
    context.log.info(
        f"change {change_id}: {plan.added} added, {plan.edited} edited, {plan.removed} removed, "
        f"{plan.refused} refused, {len(inbox.pending)} inbox writes; corpus for shards {', '.join(ingest_shards)}, "
        f"dedup and embeddings for {', '.join(plan.dedup_shards) or 'none'}, in one run"
    )
    return SensorResult(run_requests=[request], cursor=json.dumps({**state, "pending": {"id": change_id, **seen}}))
