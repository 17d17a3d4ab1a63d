"""Materialize the whole graph in-process on a Dagster instance: what `make demo` runs.

A first build runs each partition as its own run in the instance; later builds apply the source's
change as `corpus_change_sensor` does, in one `apply_change_job` run over what changed. Every
run, materialization and check evaluation shows in the UI (`make ui`) exactly as if launched there.
"""

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from dagster import AssetKey, DagsterInstance, Definitions, SkipReason, build_sensor_context

from embedding_assets.core.documents import LIVE_DOCUMENTS
from embedding_assets.core.schemas import embeddings_table_name
from embedding_assets.jobs import corpus_job, dedup_job, embed_job, export_job, index_job, live_index_job, plan_job
from partitions import embedding_partition_key, model_version_partitions, shard_partitions
from sensors.corpus_change import corpus_change_sensor

QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


@dataclass
class CheckReport:
    model_version: str
    name: str
    passed: bool
    blocking: bool
    description: str

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else ("FAIL" if self.blocking else "WARN")


@dataclass
class PipelineReport:
    totals: Counter = field(default_factory=Counter)
    per_version: dict[str, Counter] = field(default_factory=dict)
    checks: list[CheckReport] = field(default_factory=list)
    live_version: str | None = None
    live_error: str | None = None
    registry_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _metadata(result, asset_name: str) -> dict:
    materializations = result.asset_materializations_for_node(asset_name)
    return {key: value.value for key, value in materializations[-1].metadata.items()} if materializations else {}


def _add(counter: Counter, metadata: dict, fields: dict[str, str]) -> None:
    for total, key in fields.items():
        counter[total] += int(metadata.get(key, 0) or 0)


CORPUS_TOTALS = {"documents": "dagster/row_count", "corpus_quarantined": "quarantined", "deleted": "deleted"}
DEDUP_TOTALS = {"exact_duplicates": "exact_duplicates", "near_duplicates": "near_duplicates"}
EMBEDDING_TOTALS = {
    name: name
    for name in (
        "model_calls",
        "vectors_written",
        "quarantined",
        "skipped_modality",
        "reused_exact_dup",
        "reused_near_dup",
        "reused_cache",
        "tokens",
    )
}


def run_pipeline(
    defs: Definitions,
    instance: DagsterInstance,
    say: Callable[[str], None] = print,
    allow_mass_delete: bool = False,
) -> PipelineReport:
    """Build every registered version; on a store built before, apply the source's change as the sensor does
    (one run over what changed) and embed only versions that have no table yet. `allow_mass_delete` lets the
    corpus runs mark more documents deleted than the source's limit allows."""
    started = time.monotonic()
    report = PipelineReport()
    registry = defs.resources["model_registry"].registry()
    report.registry_errors = registry.errors
    versions = list(registry.specs)
    new_versions = [v for v in versions if not instance.has_dynamic_partition(model_version_partitions.name, v)]
    if new_versions:
        instance.add_dynamic_partitions(model_version_partitions.name, new_versions)
    shards = shard_partitions.get_partition_keys()

    def execute(job, partition_key=None, raise_on_error: bool = True, run_config: dict = QUIET_RUN_CONFIG):
        return defs.resolve_job_def(job.name).execute_in_process(
            partition_key=partition_key, instance=instance, run_config=run_config, raise_on_error=raise_on_error
        )

    store = defs.resources["lancedb"].store()
    if store.table("documents").count_rows():
        # Built before: a change of the source takes the sensor's path, one run over what it touches.
        say("source changes: what corpus_change_sensor would run (one apply_change_job run)")
        _, made = apply_source_changes(defs, instance, allow_mass_delete=allow_mass_delete)
        for change in made:
            _add(report.totals, change.metadata, CORPUS_TOTALS if change.asset == "corpus" else DEDUP_TOTALS)
            if change.asset == "embeddings":
                version = change.partition.split("|")[0]
                _add(report.per_version.setdefault(version, Counter()), change.metadata, EMBEDDING_TOTALS)
        report.totals["documents"] = store.table("documents").count_rows(LIVE_DOCUMENTS)
        to_embed = [v for v in versions if not store.has_table(embeddings_table_name(v))]
    else:
        corpus_config = {**QUIET_RUN_CONFIG, "ops": {"corpus": {"config": {"allow_mass_delete": allow_mass_delete}}}}
        say(f"corpus: {len(shards)} shards")
        for shard in shards:
            _add(
                report.totals, _metadata(execute(corpus_job, shard, run_config=corpus_config), "corpus"), CORPUS_TOTALS
            )
        say(f"dedup: {len(shards)} shards")
        for shard in shards:
            _add(report.totals, _metadata(execute(dedup_job, shard), "dedup_signatures"), DEDUP_TOTALS)
        to_embed = versions
    planned = instance.get_materialized_partitions(AssetKey("reembedding_plan"))
    for version in versions:
        counter = report.per_version.setdefault(version, Counter())
        # As the daemon does: a version is planned once, before its first backfill, and not embedded over budget.
        if version in to_embed and version not in planned:
            plan = execute(plan_job, version, raise_on_error=False)
            if not plan.success:
                say(f"plan: {version} refused (over budget or not loadable): see its reembedding_plan run")
                continue
            counter["planned_calls"] = int(_metadata(plan, "reembedding_plan").get("model_calls", 0) or 0)
        if version in to_embed:
            say(f"embeddings: {version} over {len(shards)} shards")
            for shard in shards:
                metadata = _metadata(execute(embed_job, embedding_partition_key(version, shard)), "embeddings")
                _add(counter, metadata, EMBEDDING_TOTALS)
        say(f"index and checks: {version}")
        result = execute(index_job, version, raise_on_error=False)
        counter["rows"] = int(_metadata(result, "lance_index").get("dagster/row_count", 0) or 0)
        for evaluation in result.get_asset_check_evaluations():
            report.checks.append(
                CheckReport(
                    version,
                    evaluation.check_name,
                    evaluation.passed,
                    evaluation.blocking,
                    evaluation.description or "",
                )
            )
    say("live index")
    # Several versions registered at once are each considered once (as the daemon would, one
    # after another), so one run of the pipeline leaves the alias where a second run keeps it.
    for _ in range(max(1, len(versions))):
        result = execute(live_index_job, raise_on_error=False)
        if not result.success or _metadata(result, "live_index").get("decision") != "promoted":
            break
    live_metadata = _metadata(result, "live_index")
    if not result.success:
        failure = next((event for event in result.all_events if event.is_step_failure), None)
        report.live_error = failure.event_specific_data.error.message if failure else "live_index failed"
    elif live_metadata.get("model_version", "none") == "none":
        report.live_error = f"no version passed its gates: {live_metadata.get('reasons', 'none was checked')}"
    else:
        report.live_version = live_metadata["model_version"]
    # Exports read the newest table version whose gates passed: after live_index has checked them.
    for version in versions:
        exported = execute(export_job, version, raise_on_error=False)
        report.per_version[version]["exported_rows"] = int(
            _metadata(exported, "parquet_export").get("dagster/row_count", 0) or 0
        )
    report.seconds = time.monotonic() - started
    return report


@dataclass(frozen=True)
class Materialized:
    """One materialization a change run reported: which asset, which partition, its metadata."""

    asset: str
    partition: str | None
    metadata: dict


def _materializations(result) -> list[Materialized]:
    return [
        Materialized(
            event.asset_key.to_user_string(),
            event.partition,
            {key: value.value for key, value in event.metadata.items()},
        )
        for event in (e.event_specific_data.materialization for e in result.all_events if e.is_step_materialization)
    ]


def apply_source_changes(
    defs: Definitions,
    instance: DagsterInstance,
    cursor: str | None = None,
    max_ticks: int = 5,
    allow_mass_delete: bool = False,
) -> tuple[str | None, list[Materialized]]:
    """What the daemon does with `corpus_change_sensor`, in-process: tick it and run what it asks
    for, until it settles. Returns the sensor's cursor and what the runs materialized."""
    made: list[Materialized] = []
    for _ in range(max_ticks):
        with build_sensor_context(
            instance=instance, definitions=defs, resources=defs.resources, cursor=cursor
        ) as context:
            result = defs.resolve_sensor_def(corpus_change_sensor.name)(context)
        if isinstance(result, SkipReason):
            return cursor, made
        cursor = result.cursor
        if not result.run_requests:
            return cursor, made
        for request in result.run_requests:
            change = {**request.run_config["ops"]["ingest_change"]["config"], "allow_mass_delete": allow_mass_delete}
            run_config = {"ops": {"ingest_change": {"config": change}}}
            run = defs.resolve_job_def(request.job_name).execute_in_process(
                run_config=run_config, tags=request.tags, instance=instance
            )
            made += _materializations(run)
    raise RuntimeError(f"corpus_change_sensor did not settle in {max_ticks} ticks")
