"""The upgrade lifecycle, in-process on a real instance with two real models.

v1 (all-MiniLM-L6-v2) live -> register v2 (all-mpnet-base-v2) -> sensor -> every shard ->
index and checks -> promoted -> rollback -> promote again; and candidates that must not go live.
"""

import shutil

import pytest
import torch
import yaml
from dagster import AssetKey, evaluate_automation_conditions, instance_for_test
from sentence_transformers import SentenceTransformer

from embedding_assets.cli.manage import register
from embedding_assets.cli.pipeline_runner import run_pipeline
from embedding_assets.cli.search import search_live
from embedding_assets.core.aliases import current_alias
from embedding_assets.core.store import LanceStore
from embedding_assets.definitions import build_definitions
from tests.builders import MODELS_YAML, make_resources, stable_sample, write_jsonl
from tests.sensors.ticks import Tick

MPNET = {
    "key": "mpnet-base-v1",
    "backend": "sentence-transformers",
    "model_id": "sentence-transformers/all-mpnet-base-v2",
    "source": "split-zip:all-mpnet-base-v2",
    "revision": "1",
    "dim": 768,
    "max_tokens": 384,
    "normalize": True,
    "dtype": "auto",
}


@pytest.fixture(scope="module")
def eval_corpus(stdlib_table) -> list[dict]:
    """90 documents of the Python docs: the evaluation set is derived from them (title -> document)."""
    rows = [row for row in stdlib_table.to_pylist() if row["id"].startswith("py:") and 80 <= len(row["text"]) <= 1500]
    return [{"id": row["id"], "title": row["title"], "text": row["text"]} for row in stable_sample(rows, 90)]


class Deployment:
    """A registry file, a corpus and a store bound to one Definitions and one instance."""

    def __init__(self, root, records, cache_dir, instance):
        self.registry = root / "models.yaml"
        shutil.copy(MODELS_YAML, self.registry)
        corpus = write_jsonl(root / "corpus.jsonl", records)
        self.defs = build_definitions(make_resources(str(corpus), str(root / "lance"), cache_dir, self.registry))
        self.store = LanceStore(str(root / "lance"))
        self.instance = instance

    def run(self, job, partition_key=None, config=None):
        return self.defs.resolve_job_def(job).execute_in_process(
            partition_key=partition_key, instance=self.instance, run_config=config, raise_on_error=False
        )

    def promote(self, version=None, force=False):
        config = {"model_version": version or "", "force": force}
        result = self.run("live_index_job", config={"ops": {"live_index": {"config": config}}})
        materialization = result.asset_materializations_for_node("live_index")
        return result, {k: v.value for k, v in materialization[0].metadata.items()} if materialization else {}

    def live(self):
        return current_alias(self.store).model_version


@pytest.fixture
def deployment(tmp_path, eval_corpus, cache_dir):
    with instance_for_test() as instance:
        deployment = Deployment(tmp_path, eval_corpus, cache_dir, instance)
        report = run_pipeline(deployment.defs, instance, say=lambda _: None)
        assert report.live_version == "minilm-l6-v1"
        yield deployment


def _embed_every_shard(deployment, version, cursor, during=lambda: None):
    """What the automation sensor's backfill does: every requested shard, one run each."""
    tick = Tick(deployment.defs, deployment.instance)
    # The plan comes first, on the GPU queue: the version's shards wait for it.
    [plan] = tick.result.run_requests
    assert (plan.job_name, plan.partition_key, plan.tags["gpu"]) == ("plan_job", version, "true")
    assert deployment.run("plan_job", version).success
    evaluation = evaluate_automation_conditions(defs=deployment.defs, instance=deployment.instance, cursor=cursor)
    shards = sorted(evaluation.get_requested_partitions(AssetKey("embeddings")))
    assert shards and all(key.startswith(f"{version}|") for key in shards)
    for position, key in enumerate(shards):
        assert deployment.run("embed_job", key).success
        if position == len(shards) // 2:
            during()
    return evaluation, shards


def test_register_backfill_promote_rollback_promote(deployment):
    baseline = evaluate_automation_conditions(defs=deployment.defs, instance=deployment.instance)
    register(str(deployment.registry), MPNET)

    def still_serving_v1():
        assert deployment.live() == "minilm-l6-v1"
        version, hits = search_live(deployment.defs, "Return the radix in which the Decimal class does arithmetic")
        assert version == "minilm-l6-v1" and hits

    evaluation, shards = _embed_every_shard(deployment, "mpnet-base-v1", baseline.cursor, still_serving_v1)
    assert len(shards) == 16

    after = evaluate_automation_conditions(defs=deployment.defs, instance=deployment.instance, cursor=evaluation.cursor)
    assert after.get_requested_partitions(AssetKey("lance_index")) == {"mpnet-base-v1"}
    index = deployment.run("index_job", "mpnet-base-v1")
    verdicts = {e.check_name: e for e in index.get_asset_check_evaluations()}
    assert all(e.passed for e in verdicts.values()), {k: e.description for k, e in verdicts.items()}
    comparison = verdicts["eval_recall_check"].metadata
    assert comparison["queries"].value >= 30 and "live_recall_at_10" in comparison

    result, decision = deployment.promote()
    assert result.success and decision["decision"] == "promoted", decision
    assert deployment.live() == "mpnet-base-v1"
    assert decision["candidate_recall_at_10"] >= decision["live_recall_at_10"] - 0.02

    rollback = deployment.run("rollback_job")
    assert rollback.success and deployment.live() == "minilm-l6-v1"
    # A rolled-back version is never promoted again automatically...
    _, kept = deployment.promote()
    assert kept["decision"] == "kept" and deployment.live() == "minilm-l6-v1"
    # ...only by hand, through the same gates.
    result, again = deployment.promote("mpnet-base-v1")
    assert result.success and again["decision"] == "promoted" and deployment.live() == "mpnet-base-v1"
    version, hits = search_live(deployment.defs, "Return the radix in which the Decimal class does arithmetic")
    assert version == "mpnet-base-v1" and hits


@pytest.fixture(scope="module")
def scrambled_model(tmp_path_factory, minilm_spec, cache_dir) -> str:
    """all-MiniLM-L6-v2's architecture with random weights: a real model that retrieves badly."""
    model = SentenceTransformer(minilm_spec.resolved_source(cache_dir), device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.05)
    path = tmp_path_factory.mktemp("scrambled") / "model"
    model.save(str(path))
    return str(path)


def _bad_candidate(deployment, entry):
    baseline = evaluate_automation_conditions(defs=deployment.defs, instance=deployment.instance)
    register(str(deployment.registry), entry)
    _embed_every_shard(deployment, entry["key"], baseline.cursor)
    verdicts = {e.check_name: e for e in deployment.run("index_job", entry["key"]).get_asset_check_evaluations()}
    _, automatic = deployment.promote()
    manual, _ = deployment.promote(entry["key"])
    forced, _ = deployment.promote(entry["key"], force=True)
    return verdicts, automatic, manual, forced


def test_a_candidate_that_retrieves_badly_is_not_promoted_and_says_why(deployment, scrambled_model):
    entry = {**yaml.safe_load(MODELS_YAML.read_text())["versions"][0], "key": "scrambled-v1", "source": scrambled_model}
    verdicts, automatic, manual, forced = _bad_candidate(deployment, entry)
    check = verdicts["eval_recall_check"]
    assert not check.passed and check.metadata["recall_delta"].value < -0.02
    assert automatic["decision"] == "kept" and "eval_recall" in automatic["reasons"]
    assert automatic["candidate_recall_at_10"] < automatic["live_recall_at_10"]
    assert not manual.success
    # force waives the quality comparison only; the table itself is complete and sane.
    assert forced.success and deployment.live() == "scrambled-v1"


def test_a_candidate_with_the_wrong_dimension_never_goes_live_even_forced(deployment):
    entry = {**yaml.safe_load(MODELS_YAML.read_text())["versions"][0], "key": "wrong-dim-v1", "dim": 128}
    verdicts, automatic, manual, forced = _bad_candidate(deployment, entry)
    parity = verdicts["count_parity_check"]
    assert not parity.passed and "the model botched the vectors" in parity.description
    assert automatic["decision"] == "kept" and "count_parity" in automatic["reasons"]
    assert not manual.success and not forced.success
    assert deployment.live() == "minilm-l6-v1"
