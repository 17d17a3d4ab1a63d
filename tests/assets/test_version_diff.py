"""The version-diff report: what readers would see change, beside the promotion decision, blocking only on request."""

import json
import shutil
from datetime import datetime, timezone

import pytest
import yaml
from dagster import instance_for_test

from embedding_assets.cli.manage import _print_version_diff
from embedding_assets.cli.pipeline_runner import run_pipeline
from embedding_assets.core.aliases import current_alias
from embedding_assets.core.embedding_run import embed_shard
from embedding_assets.core.evaluation import EvalQuery
from embedding_assets.core.store import LanceStore
from embedding_assets.core.version_diff import DiffThresholds, VersionDiff, compute_version_diff, diff_refusal
from embedding_assets.definitions import build_definitions
from gpu_ops.loading import load_encoder
from gpu_ops.registry import load_registry
from partitions import shard_partitions
from resources.promotion_policy import PromotionPolicyResource
from tests.builders import DEFAULT_VERSION, MODELS_YAML, make_resources, write_jsonl

# The same weights with a window of 128 tokens: long documents are cut differently, short ones agree.
NARROW = {**yaml.safe_load(MODELS_YAML.read_text())["versions"][0], "key": "minilm-l6-narrow", "max_tokens": 128}


@pytest.fixture
def upgraded(tmp_path, sample_records, cache_dir):
    """v1 live on 45 documents, and NARROW registered, planned, embedded and indexed beside it."""
    registry = tmp_path / "models.yaml"
    shutil.copy(MODELS_YAML, registry)
    corpus = write_jsonl(tmp_path / "corpus.jsonl", sample_records[:45])
    resources = make_resources(str(corpus), str(tmp_path / "lance"), cache_dir, registry)
    with instance_for_test() as instance:
        assert run_pipeline(build_definitions(resources), instance, say=lambda _: None).live_version == DEFAULT_VERSION
        registry.write_text(
            yaml.safe_dump({"versions": [*yaml.safe_load(MODELS_YAML.read_text())["versions"], NARROW]})
        )
        defs = build_definitions(resources)
        instance.add_dynamic_partitions("model_versions", [NARROW["key"]])

        def run(job, partition_key=None, config=None, definitions=defs):
            return definitions.resolve_job_def(job).execute_in_process(
                partition_key=partition_key, instance=instance, run_config=config, raise_on_error=False
            )

        assert run("plan_job", NARROW["key"]).success
        # The backfill's work, without a run per shard: what embed_job calls.
        store = LanceStore(str(tmp_path / "lance"))
        spec = load_registry(registry).spec(NARROW["key"])
        encoder = load_encoder(spec, cache_dir, "cpu")
        for shard in shard_partitions.get_partition_keys():
            embed_shard(store, spec, lambda: encoder, shard, lambda: datetime.now(timezone.utc))
        yield run, resources, run("index_job", NARROW["key"]), LanceStore(str(tmp_path / "lance"))


def _promote(run, definitions, force=False):
    config = {"model_version": NARROW["key"], "switched_by": "test", "force": force}
    config = {"ops": {"live_index": {"config": config}}}
    return run("live_index_job", config=config, definitions=definitions)


def test_the_report_is_a_check_on_the_candidate_and_sits_beside_the_promotion_decision(
    upgraded, capsys, minilm_spec, minilm_encoder
):
    run, resources, index, store = upgraded
    [check] = [e for e in index.get_asset_check_evaluations() if e.check_name == "version_diff_check"]
    report = {key: value.value for key, value in check.metadata.items()}
    assert check.passed and not check.blocking
    assert 0.5 < report["diff_overlap_at_10"] <= 1.0
    assert report["diff_queries"].endswith("+ 45 documents")
    assert {"p50", "p90", "max", "unchanged_share"} <= json.loads(report["diff_rank_shift"]).keys()
    assert len(json.loads(report["diff_lost_examples"])) == min(2, report["diff_lost_documents"])
    assert len(json.loads(report["diff_gained_examples"])) == min(2, report["diff_gained_documents"])
    assert report["diff_live_recall_at_10"] > 0 and report["diff_candidate_recall_at_10"] > 0

    # Thresholds make it block: the candidate is refused with the report's numbers, and v1 stays live.
    strict = dict(resources) | {
        "promotion_policy": PromotionPolicyResource(diff_min_overlap_at_10=0.999, diff_max_lost_share=0.0)
    }
    refused = _promote(run, build_definitions(strict))
    assert not refused.success and current_alias(store).model_version == DEFAULT_VERSION
    failure = next(e for e in refused.all_events if e.is_step_failure)
    assert "version_diff: overlap@10" in failure.event_specific_data.error.message

    # Without thresholds it only informs (force waives the recall tolerance a narrower window may miss).
    promoted = _promote(run, build_definitions(resources), force=True)
    assert promoted.success and current_alias(store).model_version == NARROW["key"]
    decision = {k: v.value for k, v in promoted.asset_materializations_for_node("live_index")[-1].metadata.items()}
    assert decision["decision"] == "promoted"
    # The promotion read the check's report for the same two table versions.
    assert decision["diff_overlap_at_10"] == report["diff_overlap_at_10"]
    _print_version_diff(decision)
    printed = capsys.readouterr().out
    assert printed.startswith(f"version diff: {NARROW['key']} vs {DEFAULT_VERSION}: overlap@10")

    # A version against itself changes nothing.
    same = (minilm_spec, minilm_encoder, None)
    queries = [EvalQuery("How do I read a file line by line?", ("nothing",))]
    itself = compute_version_diff(store, same, same, queries, sample_documents=10)
    assert itself.overlap_at_10 == 1.0 and itself.lost == itself.gained == 0
    assert itself.rank_shift["max"] == 0 and itself.document_queries == 10 and itself.eval_queries == 0


def test_a_scrambled_candidate_loses_visibility_and_thresholds_say_why():
    diff = VersionDiff(
        candidate="c",
        live="l",
        eval_queries=10,
        document_queries=20,
        overlap_at_10=0.12,
        eval_overlap_at_10=0.1,
        document_overlap_at_10=0.13,
        rank_shift={"p50": 3.0, "p90": 7.0, "max": 9.0, "unchanged_share": 0.1},
        visible_live=80,
        lost=40,
        gained=35,
    )
    assert diff_refusal(diff, DiffThresholds()) is None
    assert diff_refusal(diff, DiffThresholds(min_overlap_at_10=0.5)) == "overlap@10 0.120 < 0.5"
    assert "50.0% of documents lost visibility > 25.0%" in diff_refusal(diff, DiffThresholds(max_lost_share=0.25))
    assert VersionDiff.from_json(diff.to_json()) == diff
