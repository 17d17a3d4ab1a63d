"""`corpus_change_sensor`: a changed source costs runs for the touched shards only.

A change becomes a batch with three phases, each a set of runs tagged with the batch id:
`corpus` for the shards whose documents changed, then `dedup` for those and the shards whose
representatives may move with them, then `embeddings` of those shards for every registered
model version (the live one, candidates being backfilled, and the previous one, so a rollback
serves fresh vectors). A phase starts once every run of the previous one succeeded; a failed
run abandons the batch and the next tick plans it again. `lance_index` and `live_index`
follow through declarative automation.
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

from embedding_assets.core.change_plan import plan_changes
from embedding_assets.core.minhash import MinHasher
from embedding_assets.jobs import corpus_job, dedup_job, embed_job
from partitions import embedding_partition_key, model_version_partitions
from resources.corpus_source import CorpusSourceResource
from resources.lance_store import LanceDBResource

BATCH_TAG = "embedding/change_batch"
PHASE_TAG = "embedding/phase"
PHASE_JOBS = {"corpus": corpus_job, "dedup": dedup_job, "embed": embed_job}
NEXT_PHASE = {"corpus": "dedup", "dedup": "embed", "embed": None}
# Incremental runs go ahead of queued backfill runs.
INCREMENTAL_PRIORITY = {"dagster/priority": "1"}


def _phase_requests(context: SensorEvaluationContext, batch: dict) -> list[RunRequest]:
    phase = batch["phase"]
    shards = batch["ingest_shards"] if phase == "corpus" else batch["dedup_shards"]
    if phase == "embed":
        versions = context.instance.get_dynamic_partitions(model_version_partitions.name)
        keys = [embedding_partition_key(version, shard) for version in versions for shard in shards]
    else:
        keys = shards
    tags = {BATCH_TAG: batch["id"], PHASE_TAG: phase, **INCREMENTAL_PRIORITY}
    return [
        RunRequest(
            job_name=PHASE_JOBS[phase].name, partition_key=key, run_key=f"{batch['id']}:{phase}:{key}", tags=tags
        )
        for key in keys
    ]


def _advance(context: SensorEvaluationContext, state: dict) -> SensorResult:
    batch = state["batch"]
    runs = context.instance.get_runs(RunsFilter(tags={BATCH_TAG: batch["id"], PHASE_TAG: batch["phase"]}))
    finished = [run for run in runs if run.is_finished]
    if len(finished) < batch["expected"]:
        return SensorResult(
            skip_reason=SkipReason(
                f"change {batch['id']}: {len(finished)}/{batch['expected']} {batch['phase']} runs done"
            ),
            cursor=json.dumps(state),
        )
    failed = [run.run_id for run in finished if run.status != DagsterRunStatus.SUCCESS]
    if failed:
        context.log.error(f"change {batch['id']}: {batch['phase']} run(s) {', '.join(failed)} failed; planning again")
        return SensorResult(skip_reason=SkipReason("change abandoned"), cursor=json.dumps({}))
    following = NEXT_PHASE[batch["phase"]]
    if following is None:
        context.log.info(f"change {batch['id']} applied")
        return SensorResult(
            skip_reason=SkipReason("change applied"), cursor=json.dumps({"fingerprint": batch["fingerprint"]})
        )
    batch = {**batch, "phase": following}
    requests = _phase_requests(context, batch)
    batch["expected"] = len(requests)
    context.log.info(f"change {batch['id']}: {following} for {len(requests)} partition(s)")
    return SensorResult(run_requests=requests, cursor=json.dumps({**state, "batch": batch}))


@sensor(jobs=list(PHASE_JOBS.values()), minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING)
def corpus_change_sensor(
    context: SensorEvaluationContext, corpus_source: CorpusSourceResource, lancedb: LanceDBResource
):
    """Re-ingests, re-deduplicates and re-embeds only the shards a source change touches."""
    state = json.loads(context.cursor) if context.cursor else {}
    if "batch" in state:
        return _advance(context, state)
    fingerprint = corpus_source.fingerprint()
    if fingerprint == state.get("fingerprint"):
        return SkipReason(f"{corpus_source.describe()} unchanged")
    store = lancedb.store()
    if not store.table("documents").count_rows():
        context.log.info("no documents yet: the first build is a backfill (`make demo`), not an incremental run")
        return SensorResult(
            skip_reason=SkipReason("nothing built yet"), cursor=json.dumps({"fingerprint": fingerprint})
        )
    plan = plan_changes(store, corpus_source.read(None), MinHasher())
    if plan.empty:
        return SensorResult(
            skip_reason=SkipReason("source touched, no document changed"),
            cursor=json.dumps({"fingerprint": fingerprint}),
        )
    batch = {
        "id": f"{plan.digest[:12]}-{int(time.time())}",
        "fingerprint": fingerprint,
        "phase": "corpus",
        "ingest_shards": plan.ingest_shards,
        "dedup_shards": plan.dedup_shards,
    }
    requests = _phase_requests(context, batch)
    batch["expected"] = len(requests)
    context.log.info(
        f"change {batch['id']}: {plan.added} added, {plan.edited} edited, {plan.removed} removed, "
        f"{plan.refused} refused; corpus for shards {', '.join(plan.ingest_shards)}, "
        f"dedup and embeddings for {', '.join(plan.dedup_shards)}"
    )
    return SensorResult(run_requests=requests, cursor=json.dumps({**state, "batch": batch}))
