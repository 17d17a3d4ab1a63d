"""The embedding stage on its own: reuse, quarantine of bad model output, resumption."""

from datetime import datetime, timezone

import numpy as np
import pytest

from embedding_assets.core.corpus_sync import sync_corpus_shard
from embedding_assets.core.dedup import dedup_shard
from embedding_assets.core.embedding_run import VersionSettingsChanged, embed_shard, embed_shards
from embedding_assets.core.index_checks import count_parity
from embedding_assets.core.minhash import MinHasher
from embedding_assets.core.sharding import shard_of
from embedding_assets.core.sources import iter_source
from embedding_assets.core.store import scan
from partitions import shard_partitions
from tests.builders import CountingEncoder, write_jsonl

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
SHARD = "003"


class FaultyEncoder(CountingEncoder):
    """The real encoder, with chosen texts turned into NaN vectors: a model gone wrong."""

    def __init__(self, encoder, poisoned: set[str]):
        super().__init__(encoder)
        self.poisoned = poisoned

    def encode_texts(self, texts, token_counts=None):
        encoded = super().encode_texts(texts, token_counts)
        for i, text in enumerate(texts):
            if text in self.poisoned:
                encoded.vectors[i, 0] = np.nan
        return encoded


@pytest.fixture
def prepared(store, tmp_path, sample_records):
    corpus_path = write_jsonl(tmp_path / "corpus.jsonl", sample_records)
    hasher = MinHasher()
    for shard in shard_partitions.get_partition_keys():
        sync_corpus_shard(store, iter_source(str(corpus_path), tmp_path, shard), shard, NOW)
    for shard in shard_partitions.get_partition_keys():
        dedup_shard(store, shard, hasher)
    documents = scan(store.table("documents"), f"shard = '{SHARD}'", ["doc_id", "text"]).to_pylist()
    return store, {row["doc_id"]: row["text"] for row in documents}


def _quarantine(store, version):
    rows = scan(store.table("quarantine"), f"stage = 'embed' AND model_version = '{version}'").to_pylist()
    return {row["doc_id"]: row for row in rows}


def test_a_nan_vector_is_quarantined_the_rest_is_written_and_rerun_costs_nothing(prepared, minilm_spec, minilm_encoder):
    store, texts = prepared
    victim = sorted(texts)[0]
    faulty = FaultyEncoder(minilm_encoder, {texts[victim]})
    stats = embed_shard(store, minilm_spec, lambda: faulty, SHARD, lambda: NOW)
    assert stats.quarantine_reasons == {"non_finite_vector": 1}
    held = _quarantine(store, minilm_spec.key)
    assert held[victim]["reason"] == "non_finite_vector" and held[victim]["shard"] == SHARD
    ids = set(scan(store.open_embeddings_table(minilm_spec.key), None, ["doc_id"]).column("doc_id").to_pylist())
    assert victim not in ids and len(ids) == len(texts) - 1

    again = FaultyEncoder(minilm_encoder, set())
    stats = embed_shard(store, minilm_spec, lambda: again, SHARD, lambda: NOW)
    assert stats.model_calls == 0 and again.texts_seen == [] and stats.quarantined == 1


def test_a_model_with_the_wrong_dimension_writes_nothing_and_says_why(prepared, minilm_spec, minilm_encoder):
    store, texts = prepared
    wrong = minilm_spec.model_copy(update={"key": "minilm-wrong-dim", "dim": 128})
    stats = embed_shard(store, wrong, lambda: minilm_encoder, SHARD, lambda: NOW)
    assert stats.vectors_written == 0 and stats.quarantine_reasons == {"wrong_dimension": len(texts)}
    assert "384-d vectors, registry dim 128" in next(iter(_quarantine(store, wrong.key).values()))["detail"]


def test_texts_over_the_token_limit_are_quarantined(prepared, minilm_spec, minilm_encoder):
    store, texts = prepared
    strict = minilm_spec.model_copy(update={"key": "minilm-strict", "max_document_tokens": 40})
    stats = embed_shard(store, strict, lambda: minilm_encoder, SHARD, lambda: NOW)
    long_docs = {d for d, text in texts.items() if len(minilm_encoder.token_spans([text])[0]) > 40}
    assert long_docs and set(_quarantine(store, strict.key)) == long_docs
    assert stats.quarantine_reasons == {"too_many_tokens": len(long_docs)}


def test_a_run_that_dies_mid_shard_resumes_with_only_the_missing_work(
    prepared, minilm_spec, minilm_encoder, monkeypatch
):
    store, texts = prepared

    class DiesAfterOneGroup(FaultyEncoder):
        def encode_texts(self, texts_, token_counts=None):
            if self.texts_seen:
                raise RuntimeError("worker lost")
            return super().encode_texts(texts_, token_counts)

    dying = DiesAfterOneGroup(minilm_encoder, set())
    with pytest.raises(RuntimeError, match="worker lost"):
        embed_shard(store, minilm_spec, lambda: dying, SHARD, lambda: NOW, commit_group=4)
    committed = scan(store.open_embeddings_table(minilm_spec.key), None, ["id"]).num_rows
    assert committed > 0

    resumed = FaultyEncoder(minilm_encoder, set())
    stats = embed_shard(store, minilm_spec, lambda: resumed, SHARD, lambda: NOW)
    assert not set(resumed.texts_seen) & set(dying.texts_seen)
    table = scan(store.open_embeddings_table(minilm_spec.key), None, ["id", "doc_id"])
    assert table.num_rows == len(set(table.column("id").to_pylist()))
    assert set(table.column("doc_id").to_pylist()) == set(texts)
    assert stats.up_to_date > 0


def test_a_first_build_appends_its_rows_and_a_rewritten_document_replaces_its_own(
    prepared, minilm_spec, minilm_encoder, sample_records, tmp_path, monkeypatch
):
    """New documents' rows are appended (no merge on id joins the table); a document that had rows is
    merged, so it keeps one row per id and none of its old content."""
    import embedding_assets.core.embedding_run.run as run_module

    store, texts = prepared
    merged = []
    real_upsert = run_module.upsert
    monkeypatch.setattr(
        run_module, "upsert", lambda table, rows, on: (merged.append(rows), real_upsert(table, rows, on))
    )
    embed_shard(store, minilm_spec, lambda: minilm_encoder, SHARD, lambda: NOW)
    assert merged == []

    edited = sorted(texts)[0]
    records = [
        {**r, "text": f"{r['text']} A sentence added by an edit."} if r["id"] == edited else r for r in sample_records
    ]
    sync_corpus_shard(store, iter_source(str(write_jsonl(tmp_path / "edited.jsonl", records)), tmp_path, SHARD),
                      SHARD, NOW)  # fmt: skip
    dedup_shard(store, SHARD, MinHasher())
    stats = embed_shard(store, minilm_spec, lambda: minilm_encoder, SHARD, lambda: NOW)
    assert stats.documents_written == 1
    assert {doc for rows in merged for doc in rows.column("doc_id").to_pylist()} == {edited}
    table = scan(store.open_embeddings_table(minilm_spec.key), None, ["id", "doc_id", "content_hash"])
    assert table.num_rows == len(set(table.column("id").to_pylist()))
    current = scan(store.table("documents"), f"doc_id = '{edited}'", ["content_hash"]).column("content_hash")[0]
    assert {h for d, h in zip(*(table.column(c).to_pylist() for c in ("doc_id", "content_hash"))) if d == edited} == {
        current.as_py()
    }


def test_a_version_whose_settings_changed_since_its_table_was_made_fails_before_any_model_call(
    prepared, minilm_spec, minilm_encoder
):
    store, texts = prepared
    embed_shard(store, minilm_spec, lambda: minilm_encoder, SHARD, lambda: NOW)
    table_version = store.open_embeddings_table(minilm_spec.key).version
    edited = minilm_spec.model_copy(update={"max_tokens": 128, "normalize": False})
    loads = []
    with pytest.raises(VersionSettingsChanged) as changed:
        embed_shard(store, edited, lambda: loads.append(1) or minilm_encoder, SHARD, lambda: NOW)
    message = str(changed.value)
    assert f"max_tokens: {minilm_spec.max_tokens} -> 128" in message and "normalize: True -> False" in message
    assert "new key with a bumped revision" in message
    assert loads == [] and store.open_embeddings_table(minilm_spec.key).version == table_version
    # A call setting is no vector setting: editing it under the same key is fine.
    calls_only = minilm_spec.model_copy(update={"max_retries": 2})
    assert (
        embed_shard(store, calls_only, lambda: loads.append(1) or minilm_encoder, SHARD, lambda: NOW).model_calls == 0
    )


def test_shards_embedded_in_one_stream_write_what_each_alone_would_and_call_the_model_once_per_content(
    prepared, tmp_path, minilm_spec, minilm_encoder
):
    store, _ = prepared
    shards = shard_partitions.get_partition_keys()
    counting = CountingEncoder(minilm_encoder)
    pooled = embed_shards(store, minilm_spec, lambda: counting, shards, lambda: NOW)
    columns = ["id", "doc_id", "shard", "origin_hash", "vector"]
    rows = {row["id"]: row for row in scan(store.open_embeddings_table(minilm_spec.key), None, columns).to_pylist()}

    alone = minilm_spec.model_copy(update={"key": "minilm-one-shard-at-a-time"})
    for shard in shards:
        embed_shard(store, alone, lambda: minilm_encoder, shard, lambda: NOW)
    expected = {row["id"]: row for row in scan(store.open_embeddings_table(alone.key), None, columns).to_pylist()}

    assert rows.keys() == expected.keys()
    assert all(rows[i]["shard"] == expected[i]["shard"] == shard_of(rows[i]["doc_id"]) for i in rows)
    assert all(np.allclose(rows[i]["vector"], expected[i]["vector"], atol=1e-5) for i in rows)
    # Each representative reached the model once, counted in one shard, and no window was sent twice.
    calls = sum(stats.model_calls for stats in pooled.values())
    assert calls == len({row["origin_hash"] for row in rows.values()})
    assert len(counting.texts_seen) == sum(stats.windows_encoded for stats in pooled.values())
    assert sum(stats.documents_written for stats in pooled.values()) == len({row["doc_id"] for row in rows.values()})
    assert sum(1 for stats in pooled.values() if stats.model_calls) > 1
    again = embed_shards(store, minilm_spec, lambda: counting, shards, lambda: NOW)
    assert sum(stats.model_calls for stats in again.values()) == 0

    # count_parity agrees, and tokenizes a content once per version: the next gate reads the counts it kept.
    tokenized = []

    def token_spans(texts):
        tokenized.extend(texts)
        return minilm_encoder.token_spans(texts)

    assert count_parity(store, minilm_spec, token_spans).passed and tokenized
    tokenized.clear()
    assert count_parity(store, minilm_spec, token_spans).passed and tokenized == []
