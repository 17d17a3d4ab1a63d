"""The re-embedding plan: priced before any call, equal to what the backfill really calls, stopped by the budget."""

from dagster import AssetKey, instance_for_test

from embedding_assets.cli.pipeline_runner import run_pipeline
from embedding_assets.core.reembedding_plan import (
    Budget,
    Outcome,
    ReembeddingPlan,
    latest_plan,
    over_budget,
    plan_errors,
)
from embedding_assets.core.store import LanceStore
from embedding_assets.definitions import build_definitions
from partitions import embedding_partition_key, shard_partitions
from resources.reembedding_budget import ReembeddingBudgetResource
from tests.builders import DEFAULT_VERSION, make_resources, write_jsonl


def _small_corpus(sample_records) -> list[dict]:
    """60 documents of the sample, its long document (several windows), its near and exact duplicates."""
    return sample_records[:60] + sample_records[-4:]


def _materialized(instance, asset: str, partition: str) -> dict:
    records = instance.fetch_materializations(AssetKey(asset), limit=1000).records
    found = [r for r in records if r.partition_key == partition]
    return {k: v.value for k, v in found[0].asset_materialization.metadata.items()}


def test_the_plan_names_the_calls_tokens_and_windows_the_backfill_really_makes(tmp_path, sample_records, cache_dir):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", _small_corpus(sample_records))
    defs = build_definitions(make_resources(str(corpus), str(tmp_path / "lance"), cache_dir))
    with instance_for_test() as instance:
        report = run_pipeline(defs, instance, say=lambda _: None)
        assert report.live_version == DEFAULT_VERSION
        plan = _materialized(instance, "reembedding_plan", DEFAULT_VERSION)
        shards = [
            _materialized(instance, "embeddings", str(embedding_partition_key(DEFAULT_VERSION, shard)))
            for shard in shard_partitions.get_partition_keys()
        ]
        assert plan["documents"] == 64 and plan["reuse_exact_dup"] >= 1 and plan["reuse_near_dup"] >= 1
        assert plan["model_calls"] == sum(s["model_calls"] for s in shards) < 64
        assert plan["tokens"] == sum(s["tokens"] for s in shards)
        assert plan["windows"] == sum(s["windows_encoded"] for s in shards) > plan["model_calls"]
        assert plan["measured_calls_per_second"] > 0 and plan["device"].startswith("cpu")
        checks = {c.name: c for c in report.checks if c.model_version == DEFAULT_VERSION}
        assert checks["reembedding_plan_check"].passed
        assert "calls planned" in checks["reembedding_plan_check"].description
        assert "(+0.0%)" in checks["reembedding_plan_check"].description.split("tokens")[0]


def test_a_plan_over_budget_stops_the_backfill_before_any_model_call(tmp_path, sample_records, cache_dir):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", _small_corpus(sample_records)[:20])
    resources = make_resources(str(corpus), str(tmp_path / "lance"), cache_dir)
    resources["reembedding_budget"] = ReembeddingBudgetResource(max_reembed_hours=1e-9, gpu_concurrent_runs=2)
    defs = build_definitions(resources)
    with instance_for_test() as instance:
        report = run_pipeline(defs, instance, say=lambda _: None)
        assert report.live_version is None
        store = LanceStore(str(tmp_path / "lance"))
        recorded = latest_plan(store, DEFAULT_VERSION)
        assert not recorded.within_budget and "max_reembed_hours" in recorded.reason
        assert f"{recorded.plan.calls:,} calls" in recorded.reason and "2 GPU run(s) at once" in recorded.reason
        # Launched by hand anyway, the embedding stage refuses before loading the model.
        key = embedding_partition_key(DEFAULT_VERSION, shard_partitions.get_partition_keys()[0])
        result = defs.resolve_job_def("embed_job").execute_in_process(
            partition_key=key, instance=instance, raise_on_error=False
        )
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert "over budget" in failure.event_specific_data.error.message
        assert store.open_embeddings_table(DEFAULT_VERSION).count_rows() == 0


def _plan(**changes) -> ReembeddingPlan:
    values = dict(
        model_version="v",
        documents=1000,
        to_write=1000,
        up_to_date=0,
        reuse_exact=50,
        reuse_near=30,
        reuse_stored=0,
        calls=900,
        calls_if_shards_race=905,
        quarantined=0,
        windows=1200,
        tokens=300_000,
        shards_to_run=16,
        device="cuda (float16)",
        sample_calls=32,
        sample_seconds=0.5,
        load_seconds=3.0,
        concurrent_runs=2,
        price_per_1k_tokens=0.0,
        batch_api=False,
        gpu_hour_usd=0.0,
    )
    return ReembeddingPlan(**(values | changes))


def test_eta_is_calls_over_the_measured_rate_over_the_gpu_runs_at_once():
    plan = _plan()
    assert plan.calls_per_second == 64
    assert plan.eta_seconds == (900 / 64 + 16 * 3.0) / 2


def test_hosted_plans_are_priced_at_list_and_batch_price_and_the_budget_says_why():
    hosted = _plan(price_per_1k_tokens=0.00013, batch_api=True)
    assert hosted.cost_usd == 300_000 / 1000 * 0.00013
    assert hosted.batch_cost_usd == hosted.cost_usd / 2 == hosted.billed_cost_usd
    reason = over_budget(hosted, Budget(max_cost_usd=0.01))
    assert "estimated cost $0.0195 > max_reembed_cost $0.0100" in reason and "300,000 tokens" in reason
    assert over_budget(hosted, Budget(max_cost_usd=1.0, max_hours=1.0)) is None
    local = _plan(gpu_hour_usd=1.2)
    assert local.batch_cost_usd is None and local.cost_usd > 0


def test_plan_errors_are_relative_to_what_happened():
    errors = plan_errors(_plan(), Outcome(calls=900, tokens=250_000, cost_usd=0.0, wall_seconds=62.0))
    assert errors["calls"]["error"] == 0.0
    assert errors["tokens"]["error"] == 0.2
    assert errors["wall_seconds"]["planned"] == round(_plan().eta_seconds, 6)
