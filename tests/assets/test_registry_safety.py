"""A registry edit never changes a version's vectors behind its key: a version whose vector settings
changed since its table was made fails before any model call, naming what changed."""

import shutil

import yaml

from embedding_assets.core.sharding import shard_of
from embedding_assets.core.store import LanceStore, scan
from embedding_assets.definitions import build_definitions
from embedding_assets.jobs import corpus_job, dedup_job, embed_job
from partitions import embedding_partition_key, model_version_partitions
from tests.builders import DEFAULT_VERSION, MODELS_YAML, make_resources, write_jsonl


def test_editing_a_registered_versions_settings_fails_its_next_run_before_any_model_call(
    tmp_path, cache_dir, sample_records, instance
):
    registry = tmp_path / "models.yaml"
    shutil.copy(MODELS_YAML, registry)
    records = sample_records[:40]
    shard = shard_of(records[0]["id"])
    corpus = write_jsonl(tmp_path / "corpus.jsonl", records)
    defs = build_definitions(make_resources(str(corpus), str(tmp_path / "lance"), cache_dir, registry))
    store = LanceStore(str(tmp_path / "lance"))
    instance.add_dynamic_partitions(model_version_partitions.name, [DEFAULT_VERSION])

    def run(job, partition_key):
        return defs.resolve_job_def(job.name).execute_in_process(
            partition_key=partition_key, instance=instance, raise_on_error=False
        )

    assert run(corpus_job, shard).success and run(dedup_job, shard).success
    assert run(embed_job, embedding_partition_key(DEFAULT_VERSION, shard)).success
    table = store.open_embeddings_table(DEFAULT_VERSION)
    version_before, rows_before = table.version, scan(table, None, ["id", "vector"]).to_pylist()
    assert rows_before

    document = yaml.safe_load(registry.read_text())
    entry = document["versions"][0]
    old_tokens, entry["max_tokens"], entry["dtype"] = entry["max_tokens"], 128, "float16"
    registry.write_text(yaml.safe_dump(document))
    # A new document would reach the model if the run went ahead.
    write_jsonl(corpus, [*records, {"id": "new-doc", "text": "A document the edited model must not embed."}])
    assert run(corpus_job, shard_of("new-doc")).success and run(dedup_job, shard_of("new-doc")).success

    result = run(embed_job, embedding_partition_key(DEFAULT_VERSION, shard_of("new-doc")))
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    message = failure.event_specific_data.error.cause.message
    assert f"max_tokens: {old_tokens} -> 128" in message and "dtype: 'auto' -> 'float16'" in message
    assert "new key with a bumped revision" in message
    assert not result.asset_materializations_for_node("embeddings")
    table = store.open_embeddings_table(DEFAULT_VERSION)
    assert table.version == version_before and scan(table, None, ["id", "vector"]).to_pylist() == rows_before
