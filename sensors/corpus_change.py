"""`corpus_change_sensor`: a changed source costs one run over the shards it touches.

The sensor plans the change (which shards to re-ingest, which to re-deduplicate and embed: see
`core/change_plan.py`) and asks for one `apply_change_job` run, which also indexes and moves the
live pin through its gates. The next change waits until that run finished; a failed run is
planned again on the next tick. The source's fingerprint (sizes, times, ETags) is read on every
tick, so an unchanged source costs nothing.
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
from embedding_assets.core.minhash import MinHasher
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
            state = {"fingerprint": pending["fingerprint"]}
        else:
            context.log.error(f"change {pending['id']}: its run did not succeed ({status.value}); planning again")
            state = {"fingerprint": state.get("fingerprint")}
    fingerprint = corpus_source.fingerprint()
    if fingerprint == state.get("fingerprint"):
        return SensorResult(skip_reason=SkipReason(f"{corpus_source.describe()} unchanged"), cursor=json.dumps(state))
    store = lancedb.store()
    if not store.table("documents").count_rows():
        context.log.info("no documents yet: the first build is a backfill (`make demo`), not an incremental run")
        return SensorResult(
            skip_reason=SkipReason("nothing built yet"), cursor=json.dumps({"fingerprint": fingerprint})
        )
    # Freshness counts from the edit where the source can tell (file times, S3 LastModified).
    detected_at = corpus_source.last_modified() or time.time()
    plan = plan_changes(store, corpus_source.read(None), MinHasher())
    if plan.empty:
        return SensorResult(
            skip_reason=SkipReason("source touched, no document changed"),
            cursor=json.dumps({"fingerprint": fingerprint}),
        )
    change_id = f"{plan.digest[:12]}-{int(detected_at)}"
    config = {"ingest_shards": plan.ingest_shards, "dedup_shards": plan.dedup_shards, "detected_at": detected_at}
    request = RunRequest(
        job_name=apply_change_job.name,
        run_key=f"change-{change_id}",
        run_config={"ops": {"ingest_change": {"config": config}}},
        tags={CHANGE_TAG: change_id, **INCREMENTAL_PRIORITY},
    )
    context.log.info(
        f"change {change_id}: {plan.added} added, {plan.edited} edited, {plan.removed} removed, "
        f"{plan.refused} refused; corpus for shards {', '.join(plan.ingest_shards)}, "
        f"dedup and embeddings for {', '.join(plan.dedup_shards)}, in one run"
    )
    pending = {"id": change_id, "fingerprint": fingerprint}
    return SensorResult(run_requests=[request], cursor=json.dumps({**state, "pending": pending}))
