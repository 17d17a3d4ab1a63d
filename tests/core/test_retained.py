"""Deleted or changed content stays cheap to bring back: its vectors wait in the retained table."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from embedding_assets.core.corpus_sync import sync_corpus_shard
from embedding_assets.core.dedup import dedup_shard
from embedding_assets.core.embedding_run import embed_shard
from embedding_assets.core.minhash import MinHasher
from embedding_assets.core.retained import collect_retained, open_retained_table, retain_documents, retained_table
from embedding_assets.core.retention import apply_retention
from embedding_assets.core.schemas import retained_table_name
from embedding_assets.core.sharding import shard_of
from embedding_assets.core.sources import iter_source
from embedding_assets.core.store import scan
from embedding_assets.core.text import content_hash, normalize_text
from gpu_ops.registry import ModelRegistry
from partitions import shard_partitions
from tests.builders import write_jsonl

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
SHARD = "003"
WINDOW = timedelta(days=7)


class Corpus:
    """The sample corpus in a JSONL file, synced and deduplicated as the corpus and dedup stages would."""

    def __init__(self, store, tmp_path, records):
        self.store, self.tmp_path, self.hasher = store, tmp_path, MinHasher()
        self.write(records)

    def write(self, records: list[dict]) -> None:
        path = write_jsonl(self.tmp_path / "corpus.jsonl", records)
        for shard in shard_partitions.get_partition_keys():
            sync_corpus_shard(self.store, iter_source(str(path), self.tmp_path, shard), shard, NOW)
        for shard in shard_partitions.get_partition_keys():
            dedup_shard(self.store, shard, self.hasher)


@pytest.fixture
def embedded(store, tmp_path, sample_records, minilm_spec, minilm_encoder):
    corpus = Corpus(store, tmp_path, sample_records)
    embed_shard(store, minilm_spec, lambda: minilm_encoder, SHARD, lambda: NOW)
    return corpus


def _rows(store, spec, doc_id: str) -> list[dict]:
    """The document's rows in the version's table now (a table handle does not see later writes)."""
    table = store.open_embeddings_table(spec.key)
    return sorted(scan(table, f"doc_id = '{doc_id}'").to_pylist(), key=lambda row: row["chunk"])


def _own_content_document(store, spec, records) -> dict:
    """A record of SHARD whose rows embed its own content, which no other document carries."""
    table = store.open_embeddings_table(spec.key)
    rows = scan(table, f"shard = '{SHARD}'", ["doc_id", "content_hash", "origin_hash"]).to_pylist()
    carriers = {}
    for row in rows:
        carriers.setdefault(row["origin_hash"], set()).add(row["doc_id"])
    own = sorted(
        r["doc_id"]
        for r in rows
        if r["origin_hash"] == r["content_hash"] and carriers[r["origin_hash"]] == {r["doc_id"]}
    )
    return next(record for record in records if record["id"] == own[0])


def test_a_deleted_document_is_retained_and_restoring_it_costs_no_model_call(
    store, embedded, sample_records, minilm_spec, minilm_encoder
):
    victim = _own_content_document(store, minilm_spec, sample_records)
    before = _rows(store, minilm_spec, victim["id"])

    embedded.write([r for r in sample_records if r["id"] != victim["id"]])
    deleted = embed_shard(store, minilm_spec, lambda: minilm_encoder, SHARD, lambda: NOW)
    assert deleted.rows_retained == len(before) and deleted.model_calls == 0
    assert _rows(store, minilm_spec, victim["id"]) == []
    retained = sorted(scan(open_retained_table(store, minilm_spec.key), None).to_pylist(), key=lambda r: r["chunk"])
    assert [(row["origin_hash"], row["chunk"], row["retained_at"]) for row in retained] == [
        (row["origin_hash"], row["chunk"], NOW) for row in before
    ]
    assert all(np.array_equal(kept["vector"], row["vector"]) for kept, row in zip(retained, before))

    embedded.write(sample_records)
    restored = embed_shard(store, minilm_spec, lambda: minilm_encoder, SHARD, lambda: NOW)
    assert restored.model_calls == 0 and restored.encoder is None and restored.restored == 1
    after = _rows(store, minilm_spec, victim["id"])
    assert [row["id"] for row in after] == [row["id"] for row in before]
    assert all(np.array_equal(new["vector"], old["vector"]) for new, old in zip(after, before))
    assert {row["origin"] for row in after} == {"cache"}
    assert embed_shard(store, minilm_spec, lambda: minilm_encoder, SHARD, lambda: NOW).vectors_written == 0


def test_reverting_an_edit_costs_no_model_call(store, embedded, sample_records, minilm_spec, minilm_encoder):
    victim = _own_content_document(store, minilm_spec, sample_records)
    before = _rows(store, minilm_spec, victim["id"])
    edit = victim["text"] + " Edited."

    embedded.write([{**r, "text": edit} if r is victim else r for r in sample_records])
    edited = embed_shard(store, minilm_spec, lambda: minilm_encoder, SHARD, lambda: NOW)
    assert edited.model_calls == 1 and edited.rows_retained == len(before)

    embedded.write(sample_records)
    reverted = embed_shard(store, minilm_spec, lambda: minilm_encoder, SHARD, lambda: NOW)
    assert reverted.model_calls == 0 and reverted.restored == 1
    after = _rows(store, minilm_spec, victim["id"])
    assert all(np.array_equal(new["vector"], old["vector"]) for new, old in zip(after, before))
    # The edit left in turn: both contents are kept, so flipping back and forth never calls the model.
    kept = {row["origin_hash"] for row in scan(open_retained_table(store, minilm_spec.key), None).to_pylist()}
    assert kept == {before[0]["origin_hash"], content_hash(normalize_text(edit))}


def test_another_document_with_retained_content_reuses_it(store, embedded, sample_records, minilm_spec, minilm_encoder):
    victim = _own_content_document(store, minilm_spec, sample_records)
    before = _rows(store, minilm_spec, victim["id"])
    embedded.write([r for r in sample_records if r["id"] != victim["id"]])
    embed_shard(store, minilm_spec, lambda: minilm_encoder, SHARD, lambda: NOW)

    newcomer = next(f"moved:{n}" for n in range(100) if shard_of(f"moved:{n}") == SHARD)
    embedded.write([*(r for r in sample_records if r["id"] != victim["id"]), {**victim, "id": newcomer}])
    moved = embed_shard(store, minilm_spec, lambda: minilm_encoder, SHARD, lambda: NOW)
    assert moved.model_calls == 0 and moved.restored == 1
    assert [row["vector"] for row in _rows(store, minilm_spec, newcomer)] == [row["vector"] for row in before]


def test_garbage_collection_drops_what_outlived_the_window_then_restoring_costs_the_model(
    store, embedded, sample_records, minilm_spec, minilm_encoder
):
    victim = _own_content_document(store, minilm_spec, sample_records)
    embedded.write([r for r in sample_records if r["id"] != victim["id"]])
    retained = embed_shard(store, minilm_spec, lambda: minilm_encoder, SHARD, lambda: NOW).rows_retained

    within = collect_retained(store, NOW + WINDOW - timedelta(hours=1), WINDOW)
    assert within.rows_dropped == {minilm_spec.key: 0} and within.rows_kept == {minilm_spec.key: retained}
    expired = collect_retained(store, NOW + WINDOW + timedelta(hours=1), WINDOW)
    assert expired.rows_dropped == {minilm_spec.key: retained} and expired.rows_kept == {minilm_spec.key: 0}

    embedded.write(sample_records)
    restored = embed_shard(store, minilm_spec, lambda: minilm_encoder, SHARD, lambda: NOW)
    assert restored.model_calls == 1 and restored.restored == 0


def test_retaining_again_overwrites_writes_batch_by_batch_and_indexes_the_lookups(store, embedded, minilm_spec):
    table = store.open_embeddings_table(minilm_spec.key)
    doc_ids = sorted(set(scan(table, f"shard = '{SHARD}'", ["doc_id"]).column("doc_id").to_pylist()))
    rows = scan(table, f"shard = '{SHARD}'", ["origin_hash", "chunk"]).to_pylist()
    contents = {(row["origin_hash"], row["chunk"]) for row in rows}

    first = retain_documents(store, minilm_spec.key, table, SHARD, doc_ids, NOW, batch_documents=4)
    versions = len(open_retained_table(store, minilm_spec.key).list_versions())
    again = retain_documents(store, minilm_spec.key, table, SHARD, doc_ids, NOW + timedelta(days=1), batch_documents=4)
    retained = open_retained_table(store, minilm_spec.key)
    # One write per batch of 4 documents: a retain never holds more than a batch's rows at once.
    assert len(retained.list_versions()) - versions == -(-len(doc_ids) // 4)
    kept = scan(retained, None, ["id", "retained_at"]).to_pylist()
    assert first == again == len(kept) == len(contents)
    assert len({row["id"] for row in kept}) == len(kept)
    assert {row["retained_at"] for row in kept} == {NOW + timedelta(days=1)}
    # Returning content is looked up by origin_hash and every write merges on id: both indexed.
    assert {column for index in retained.list_indices() for column in index.columns} == {"origin_hash", "id"}


def test_retained_tables_are_not_versions_and_go_with_their_version(store, embedded, minilm_spec):
    key = minilm_spec.key
    table = store.open_embeddings_table(key)
    retain_documents(store, key, table, SHARD, [scan(table, None, ["doc_id"]).column("doc_id")[0].as_py()], NOW)
    retained_table(store, "gone", table.schema.field("vector").type)

    kept = apply_retention(store, ModelRegistry(specs={key: minilm_spec}), keep=0)
    assert kept.kept == [key] and kept.dropped == []
    assert collect_retained(store, NOW, WINDOW).tables_dropped == ["gone"]
    assert store.has_table(retained_table_name(key)) and not store.has_table(retained_table_name("gone"))

    assert apply_retention(store, ModelRegistry(), keep=0).dropped == [key]
    assert not store.has_table(retained_table_name(key))
