"""A hosted backfill through the Batch API, against a local server that speaks its protocol."""

import numpy as np
import pytest
import yaml
from dagster import instance_for_test

from embedding_assets.core.hosted_batches import ShardBatchLedger
from embedding_assets.core.index_checks import count_parity
from embedding_assets.core.sharding import shard_of
from embedding_assets.core.store import LanceStore, fixed_size_lists, scan
from embedding_assets.core.text import normalize_text
from embedding_assets.definitions import build_definitions
from gpu_ops import hosted_encoder
from gpu_ops.batch_api import BatchApiEncoder, MemoryLedger
from gpu_ops.registry import ModelSpec
from partitions import embedding_partition_key
from tests.builders import DEFAULT_VERSION, MODELS_YAML, make_resources, write_jsonl
from tests.gpu_ops.openai_stub_server import StubConfig, StubEmbeddingsServer
from tests.gpu_ops.test_hosted_encoder import API_KEY, API_KEY_ENV, EXACT, PRICE, hosted_entry

BATCH_VERSION = "stub-minilm-batch-v1"
SHARDS = ("003", "011")


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    monkeypatch.setattr(hosted_encoder, "RETRY_BASE_SECONDS", 0.05)


def _batch_entry(base_url: str, wait_s: float) -> dict:
    return hosted_entry(
        base_url,
        key=BATCH_VERSION,
        batch_api=True,
        max_request_items=4,
        batch_poll_s=0.02,
        batch_wait_s=wait_s,
    )


def _vectors_by_id(store: LanceStore, version: str) -> dict[str, np.ndarray]:
    rows = scan(store.open_embeddings_table(version), None, ["id", "vector"])
    return dict(zip(rows.column("id").to_pylist(), fixed_size_lists(rows.column("vector"))))


def test_a_batch_backfill_survives_a_restart_and_partial_failures_and_equals_the_synchronous_path(
    tmp_path, sample_records, minilm_encoder, cache_dir
):
    records = [
        record
        for record, spans in zip(sample_records, minilm_encoder.token_spans([r["text"] for r in sample_records]))
        if shard_of(record["id"]) in SHARDS and len(spans) <= minilm_encoder.spec.window_tokens
    ]
    texts = [normalize_text(record["text"]) for record in records]
    refused = next(
        r for r in reversed(records) if r["id"].startswith("py:") and texts.count(normalize_text(r["text"])) == 1
    )
    # Each batch takes 6 polls; its first request line fails with a 500; one text is refused (400).
    config = StubConfig(
        api_key=API_KEY, batch_polls=6, batch_failed_lines=1, rejected_texts={normalize_text(refused["text"])}
    )
    versions = yaml.safe_load(MODELS_YAML.read_text())["versions"]
    registry = tmp_path / "models.yaml"
    corpus = write_jsonl(tmp_path / "corpus.jsonl", records)
    store = LanceStore(str(tmp_path / "lance"))
    with StubEmbeddingsServer(minilm_encoder, config) as server, instance_for_test() as instance:

        def run(job: str, partition_key, wait_s: float = 30.0):
            registry.write_text(yaml.safe_dump({"versions": [*versions, _batch_entry(server.base_url, wait_s)]}))
            defs = build_definitions(make_resources(str(corpus), str(tmp_path / "lance"), cache_dir, registry))
            return defs.resolve_job_def(job).execute_in_process(
                partition_key=partition_key, instance=instance, raise_on_error=False
            )

        instance.add_dynamic_partitions("model_versions", [DEFAULT_VERSION, BATCH_VERSION])
        for shard in SHARDS:
            assert run("corpus_job", shard).success and run("dedup_job", shard).success
            assert run("embed_job", embedding_partition_key(DEFAULT_VERSION, shard)).success

        # The first run of shard 003 is stopped while its batch is in progress (a restart in the middle):
        # the batch id stays with the shard.
        first = run("embed_job", embedding_partition_key(BATCH_VERSION, "003"), wait_s=0.05)
        assert not first.success
        [pending] = ShardBatchLedger(store, BATCH_VERSION, "003").batch_ids()
        assert server.batches[pending]["status"] != "completed"

        metadata = {}
        for shard in SHARDS:
            result = run("embed_job", embedding_partition_key(BATCH_VERSION, shard))
            assert result.success
            materialization = result.asset_materializations_for_node("embeddings")[-1]
            metadata[shard] = {key: value.value for key, value in materialization.metadata.items()}
        # One upload and one batch per shard: the rerun resumed the pending batch instead of paying again.
        uploads = [call for call in server.batch_calls if call == ("POST", "/v1/files")]
        assert len(uploads) == len(server.batches) == len(SHARDS)
        assert pending in metadata["003"]["batch_ids"]
        assert all(ShardBatchLedger(store, BATCH_VERSION, shard).batch_ids() == [] for shard in SHARDS)

        # Partial failures: the 500 line and the line holding the refused text went through the synchronous path,
        # which isolated the refused text; everything else came from the batch at half the price.
        assert sum(m["batch_fallback_requests"] for m in metadata.values()) >= len(SHARDS)
        assert all(m["batch_tokens"] > 0 for m in metadata.values())
        for m in metadata.values():
            synchronous = m["provider_tokens"] - m["batch_tokens"]
            expected = (m["batch_tokens"] / 2 + synchronous) / 1000 * PRICE
            assert m["estimated_cost_usd"] == pytest.approx(expected, abs=1e-6)
        held = scan(store.table("quarantine"), f"model_version = '{BATCH_VERSION}'").to_pylist()
        assert [(row["doc_id"], row["reason"]) for row in held] == [(refused["id"], "provider_rejected")]

        spec = ModelSpec.model_validate(_batch_entry(server.base_url, 30.0))
        assert count_parity(store, spec, BatchApiEncoder(spec).token_spans).passed
        local, remote = _vectors_by_id(store, DEFAULT_VERSION), _vectors_by_id(store, BATCH_VERSION)
        assert remote.keys() == local.keys() - {refused["id"]}
        ids = sorted(remote)
        np.testing.assert_allclose(np.stack([remote[i] for i in ids]), np.stack([local[i] for i in ids]), atol=EXACT)

        # A rerun asks the provider nothing.
        calls, requests = len(server.batch_calls), len(server.requests)
        for shard in SHARDS:
            rerun = run("embed_job", embedding_partition_key(BATCH_VERSION, shard))
            assert rerun.asset_materializations_for_node("embeddings")[-1].metadata["model_calls"].value == 0
        assert (len(server.batch_calls), len(server.requests)) == (calls, requests)


def test_an_expired_batch_falls_back_to_the_synchronous_path_for_what_it_did_not_answer(minilm_encoder, sample_records):
    texts = [normalize_text(r["text"]) for r in sample_records[:12]]
    config = StubConfig(api_key=API_KEY, batch_polls=1, batch_outcome="expired")
    with StubEmbeddingsServer(minilm_encoder, config) as server:
        encoder = BatchApiEncoder(ModelSpec.model_validate(_batch_entry(server.base_url, 5.0)), MemoryLedger())
        encoded = encoder.encode_texts(texts)
        # Without a ledger (queries: evaluation, version diff, serving) nothing waits for a batch.
        batches = len(server.batches)
        BatchApiEncoder(ModelSpec.model_validate(_batch_entry(server.base_url, 5.0))).encode_texts(texts[:2])
        assert len(server.batches) == batches
    assert not encoded.failures and np.isfinite(encoded.vectors).all()
    # 12 texts, 4 per request: the expired batch answered its first half (1 of 3 lines); 2 went synchronously.
    assert encoder.fallback_requests == 2 and len(server.answered) == 2 + 1
    np.testing.assert_allclose(encoded.vectors, minilm_encoder.encode_texts(texts).vectors, atol=EXACT)
