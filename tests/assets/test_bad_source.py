"""A bad source never deletes, through Dagster: a JSONL file cut at a third of its bytes leaves the
live documents as they were, and a legitimate mass delete waits for an explicit `allow_mass_delete`."""

import logging
from collections import Counter

from dagster import DagsterInstance, materialize

from embedding_assets.core.sharding import shard_keys, shard_of
from embedding_assets.core.store import LanceStore, scan
from embedding_assets.corpus import corpus
from tests.builders import make_resources, write_jsonl


def _live(store: LanceStore) -> set[str]:
    return set(scan(store.table("documents"), "deleted = false", ["doc_id"]).column("doc_id").to_pylist())


def _materialize_corpus(resources: dict, instance: DagsterInstance, shard: str, **config):
    return materialize(
        [corpus],
        partition_key=shard,
        resources=resources,
        instance=instance,
        run_config={"ops": {"corpus": {"config": config}}} if config else None,
        raise_on_error=False,
    )


def _corpus_metadata(result) -> dict:
    return {key: value.value for key, value in result.asset_materializations_for_node("corpus")[0].metadata.items()}


def test_a_jsonl_file_cut_at_a_third_leaves_the_live_documents_unchanged(tmp_path, cache_dir, sample_records, instance):
    source = write_jsonl(tmp_path / "corpus.jsonl", sample_records[:60])
    resources = make_resources(str(source), str(tmp_path / "lance"), cache_dir)
    store = LanceStore(str(tmp_path / "lance"))
    for shard in shard_keys():
        assert _materialize_corpus(resources, instance, shard).success
    live_before = _live(store)
    assert len(live_before) == 60

    data = source.read_bytes()
    source.write_bytes(data[: len(data) // 3])
    results = [_materialize_corpus(resources, instance, shard) for shard in shard_keys()]

    assert _live(store) == live_before
    for result in results:
        metadata = _corpus_metadata(result)
        assert metadata["source_complete"] is False and metadata["deleted"] == 0
        assert "truncated_file" in metadata["source_problems"] and "cut short" in metadata["source_problems"]
        warnings = [entry.user_message for entry in instance.all_logs(result.run_id) if entry.level == logging.WARNING]
        assert any("could not be read whole, so no document was marked deleted" in message for message in warnings)


def test_a_mass_delete_fails_with_its_counts_until_explicitly_allowed(
    tmp_path, cache_dir, sample_records, instance, monkeypatch
):
    # Sixty documents spread over sixteen shards: a floor of one makes a few deletions a mass delete.
    monkeypatch.setenv("MASS_DELETE_FLOOR", "1")
    records = sample_records[:60]
    shard = Counter(shard_of(record["id"]) for record in records).most_common(1)[0][0]
    source = write_jsonl(tmp_path / "corpus.jsonl", records)
    resources = make_resources(str(source), str(tmp_path / "lance"), cache_dir)
    store = LanceStore(str(tmp_path / "lance"))
    assert _materialize_corpus(resources, instance, shard).success
    live_before = _live(store)

    # The documents of this shard really left the source, all but one.
    in_shard = [record for record in records if shard_of(record["id"]) == shard]
    write_jsonl(source, [record for record in records if record not in in_shard[1:]])
    refused = _materialize_corpus(resources, instance, shard)
    assert not refused.success
    failure = next(event for event in refused.all_events if event.is_step_failure)
    message = failure.event_specific_data.error.cause.message
    assert message.startswith("embedding_assets.core.corpus_sync.MassDeleteRefused")
    gone = len(in_shard) - 1
    assert f"would mark {gone} of its {len(in_shard)} live documents deleted" in message
    assert "allow_mass_delete: true" in message
    assert _live(store) == live_before

    allowed = _materialize_corpus(resources, instance, shard, allow_mass_delete=True)
    assert allowed.success and _corpus_metadata(allowed)["deleted"] == gone
    assert _live(store) == {in_shard[0]["id"]}
