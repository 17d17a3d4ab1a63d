"""The hosted (OpenAI-compatible) backend against a real HTTP server backed by the local MiniLM."""

import logging
from contextlib import ExitStack

import numpy as np
import pytest
import yaml
from dagster import build_sensor_context, instance_for_test

from embedding_assets.core.index_checks import count_parity
from embedding_assets.core.sharding import shard_of
from embedding_assets.core.store import LanceStore, fixed_size_lists, scan
from embedding_assets.core.text import normalize_text
from embedding_assets.definitions import build_definitions
from gpu_ops import hosted_encoder
from gpu_ops.hosted_encoder import (
    HostedEncoder,
    HostedModelError,
    backfill_cost_usd,
    estimated_token_count,
    request_batches,
)
from gpu_ops.loading import load_encoder
from gpu_ops.registry import ModelSpec, parse_registry
from partitions import embedding_partition_key
from tests.builders import DEFAULT_VERSION, MODELS_YAML, make_resources, write_jsonl
from tests.gpu_ops.openai_stub_server import StubConfig, StubEmbeddingsServer

API_KEY_ENV = "STUB_OPENAI_API_KEY"
API_KEY = "sk-stub-secret-0123"
HOSTED_VERSION = "stub-minilm-v1"
PRICE = 0.02
# Vectors over HTTP equal the local model's up to float32 noise from different batch padding.
EXACT = 1e-5


def hosted_entry(base_url: str, **overrides) -> dict:
    return {
        "key": HOSTED_VERSION,
        "backend": "openai",
        "model_id": "stub-minilm",
        "base_url": base_url,
        "api_key_env": API_KEY_ENV,
        "dim": 384,
        "max_tokens": 512,
        "price_per_1k_tokens": PRICE,
        "max_request_items": 8,
        "max_concurrent_requests": 4,
        "max_retries": 4,
        "request_timeout_s": 5.0,
        **overrides,
    }


def hosted_spec(base_url: str, **overrides) -> ModelSpec:
    return ModelSpec.model_validate(hosted_entry(base_url, **overrides))


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    # Jitter up to 50 ms, 100 ms, … instead of 0.5 s, 1 s, …: the policy is the same, the tests faster.
    monkeypatch.setattr(hosted_encoder, "RETRY_BASE_SECONDS", 0.05)


@pytest.fixture
def serve(minilm_encoder):
    """serve(**faults): a running stub server backed by MiniLM, stopped after the test."""
    with ExitStack() as stack:
        yield lambda **faults: stack.enter_context(StubEmbeddingsServer(minilm_encoder, StubConfig(API_KEY, **faults)))


@pytest.fixture(scope="module")
def texts(sample_records) -> list[str]:
    return [record["text"] for record in sample_records[:24]]


@pytest.fixture(scope="module")
def local_vectors(texts, minilm_encoder) -> np.ndarray:
    return minilm_encoder.encode_texts(texts).vectors


def test_hosted_entries_validate_and_bad_ones_are_refused_with_a_reason(minilm_spec):
    url = "https://api.example.com/v1"
    valid = hosted_entry(url, key="openai-3-small-v1")
    registry = parse_registry(
        {
            "versions": [
                valid,
                {k: v for k, v in hosted_entry(url, key="no-url").items() if k != "base_url"},
                hosted_entry("ftp://api.example.com", key="not-http"),
                hosted_entry(url, key="key-inline", api_key_env="sk-proj-abc-123"),
                hosted_entry(url, key="other-width", dimensions=256),
                hosted_entry(url, key="images", modality="multimodal"),
                hosted_entry(url, key="negative-price", price_per_1k_tokens=-1),
                hosted_entry(url, key="no-concurrency", max_concurrent_requests=0),
            ]
        }
    )
    assert list(registry.specs) == ["openai-3-small-v1"]
    errors = "\n".join(registry.errors)
    assert "no-url: entry: Value error, an openai model needs base_url" in errors
    assert "not-http: entry: Value error, base_url 'ftp://api.example.com' is not an http(s) URL" in errors
    assert "key-inline: entry: Value error, api_key_env must name an environment variable" in errors
    assert "sk-proj-abc-123" not in errors
    assert "other-width: entry: Value error, dimensions 256 asks the provider for a width other than dim" in errors
    assert "images: entry: Value error, an openai model embeds texts only" in errors
    assert "negative-price: price_per_1k_tokens: Input should be greater than or equal to 0" in errors
    assert "no-concurrency: max_concurrent_requests: Input should be greater than 0" in errors

    spec = registry.specs["openai-3-small-v1"]
    # Price, limits and retries change how it is called, not its vectors: same key, same fingerprint.
    recalled = ModelSpec.model_validate({**valid, "price_per_1k_tokens": 0.5, "max_concurrent_requests": 16})
    assert recalled.fingerprint() == spec.fingerprint()
    assert ModelSpec.model_validate({**valid, "model_id": "other-model"}).fingerprint() != spec.fingerprint()
    # The fingerprint a deployed registry sensor recorded for the default version before hosted fields existed.
    assert minilm_spec.fingerprint() == "bbd8f58bd33b8a72"


def test_requests_are_packed_to_the_item_and_token_limits(serve, texts, local_vectors):
    assert request_batches([100, 100, 100, 50, 50, 400, 10], max_items=3, max_tokens=250) == [
        [0, 1],
        [2, 3, 4],
        [5],
        [6],
    ]
    server = serve()
    encoder = HostedEncoder(hosted_spec(server.base_url, max_request_items=5, max_request_tokens=300))
    encoded = encoder.encode_texts(texts)
    sent = [request.inputs for request in server.requests]
    assert sorted(text for inputs in sent for text in inputs) == sorted(texts)
    assert max(map(len, sent)) == 5
    assert all(len(inputs) == 1 or sum(map(estimated_token_count, inputs)) <= 300 for inputs in sent)
    assert any(len(inputs) < 5 for inputs in sent[:-1])  # the token limit closed a request early
    assert len(sent) == encoded.batches == encoder.requests and encoder.retries == 0
    np.testing.assert_allclose(encoded.vectors, local_vectors, atol=EXACT)


def test_concurrent_requests_never_exceed_the_limit(serve, texts):
    server = serve(latency_s=0.3)
    encoder = HostedEncoder(hosted_spec(server.base_url, max_request_items=2, max_concurrent_requests=3))
    encoder.encode_texts(texts[:16])
    assert len(server.requests) == 8
    assert server.max_in_flight == 3


def test_a_429_is_retried_no_sooner_than_its_retry_after(serve, texts, local_vectors):
    server = serve(script=["429"], retry_after_s=1)
    encoder = HostedEncoder(hosted_spec(server.base_url))
    encoded = encoder.encode_texts(texts[:4])
    refused, answered = server.requests
    assert (refused.status, answered.status) == (429, 200)
    # Without Retry-After the first backoff is at most 50 ms here.
    assert answered.arrived - refused.arrived >= 1.0
    assert (encoder.requests, encoder.retries) == (2, 1)
    np.testing.assert_allclose(encoded.vectors, local_vectors[:4], atol=EXACT)


@pytest.mark.parametrize("fault", ["500", "slow", "malformed"])
def test_server_errors_timeouts_and_malformed_json_are_retried(serve, texts, local_vectors, fault):
    server = serve(script=[fault], slow_s=3.0)
    encoder = HostedEncoder(hosted_spec(server.base_url, request_timeout_s=1.5))
    encoded = encoder.encode_texts(texts[:4])
    assert [request.fault for request in server.requests] == [fault, None]
    assert (encoder.requests, encoder.retries) == (2, 1)
    np.testing.assert_allclose(encoded.vectors, local_vectors[:4], atol=EXACT)


def test_retries_are_bounded_and_then_the_run_fails_without_blaming_a_document(serve, texts):
    server = serve(script=["500"] * 3)
    encoder = HostedEncoder(hosted_spec(server.base_url, max_retries=2))
    with pytest.raises(HostedModelError, match="gave up after 3 attempts .*HTTP 500: injected 500"):
        encoder.encode_texts(texts[:2])
    assert len(server.requests) == 3


def test_an_input_error_is_never_retried_and_only_the_refused_text_fails(serve, texts, local_vectors):
    server = serve(rejected_texts={texts[5]})
    encoder = HostedEncoder(hosted_spec(server.base_url, max_request_items=8))
    encoded = encoder.encode_texts(texts[:8])
    assert encoded.failures == {5: ("provider_rejected", "HTTP 400: input 0 is invalid: unsupported content")}
    assert np.isnan(encoded.vectors[5]).all()
    others = [i for i in range(8) if i != 5]
    np.testing.assert_allclose(encoded.vectors[others], local_vectors[others], atol=EXACT)
    # Halved until the refused text stood alone (8 -> 4 -> 2 -> 1), no request ever sent twice.
    payloads = [tuple(request.inputs) for request in server.requests]
    assert len(payloads) == len(set(payloads)) == 7 and encoder.retries == 0
    assert [len(request.inputs) for request in server.requests if request.status == 400] == [8, 4, 2, 1]


def test_a_wrong_or_missing_key_fails_at_once_and_the_key_is_never_shown(serve, texts, monkeypatch, cache_dir):
    server = serve()
    spec = hosted_spec(server.base_url)
    monkeypatch.setenv(API_KEY_ENV, "sk-wrong-key-456")
    with pytest.raises(HostedModelError, match="HTTP 401 .*Incorrect API key") as error:
        load_encoder(spec, cache_dir).encode_texts(texts[:2])
    assert "sk-wrong-key-456" not in str(error.value) and len(server.requests) == 1
    monkeypatch.delenv(API_KEY_ENV)
    with pytest.raises(HostedModelError, match=f"set the environment variable {API_KEY_ENV}"):
        load_encoder(spec, cache_dir)


def test_cost_is_the_providers_tokens_times_the_price(serve, texts):
    server = serve()
    encoder = HostedEncoder(hosted_spec(server.base_url, price_per_1k_tokens=0.13, max_request_items=4))
    encoder.encode_texts(texts[:12])
    billed = sum(request.tokens for request in server.answered)
    assert encoder.tokens == billed > 0
    assert encoder.metadata() == {
        "device": "hosted (float32)",
        "provider_requests": 3,
        "provider_retries": 0,
        "provider_tokens": billed,
        "price_per_1k_tokens": 0.13,
        "estimated_cost_usd": round(billed / 1000 * 0.13, 6),
    }
    assert backfill_cost_usd(documents=10_000, tokens_per_document=250, price_per_1k_tokens=0.13) == pytest.approx(325)


def _registry_sensor_tick(defs, instance):
    """One model_registry_sensor tick, applied as the daemon would; returns what it logged and its run requests."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    with build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as context:
        context.log.addHandler(handler)
        result = defs.resolve_sensor_def("model_registry_sensor")(context)
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return lines, result.run_requests


def _vectors_by_id(store: LanceStore, version: str) -> dict[str, np.ndarray]:
    rows = scan(store.open_embeddings_table(version), None, ["id", "vector"])
    return dict(zip(rows.column("id").to_pylist(), fixed_size_lists(rows.column("vector"))))


def test_a_hosted_version_is_embedded_side_by_side_complete_and_exact_while_half_the_requests_fail(
    tmp_path, sample_records, minilm_encoder, cache_dir, serve
):
    shards = ("003", "011")
    records = [
        record
        for record, spans in zip(sample_records, minilm_encoder.token_spans([r["text"] for r in sample_records]))
        if shard_of(record["id"]) in shards and len(spans) <= minilm_encoder.spec.window_tokens
    ]
    texts = [record["text"] for record in records]
    refused = next(r for r in reversed(records) if r["id"].startswith("py:") and texts.count(r["text"]) == 1)
    # Every distinct request fails once (500, 429 with Retry-After 1 s, malformed JSON in turn), so half fail.
    server = serve(failures_per_payload=1, rejected_texts={normalize_text(refused["text"])})
    versions = yaml.safe_load(MODELS_YAML.read_text())["versions"]
    registry = tmp_path / "models.yaml"
    registry.write_text(yaml.safe_dump({"versions": [*versions, hosted_entry(server.base_url, max_request_items=4)]}))
    corpus = write_jsonl(tmp_path / "corpus.jsonl", records)
    defs = build_definitions(make_resources(str(corpus), str(tmp_path / "lance"), cache_dir, registry))
    store = LanceStore(str(tmp_path / "lance"))
    with instance_for_test() as instance:

        def run(job: str, partition_key):
            return defs.resolve_job_def(job).execute_in_process(partition_key=partition_key, instance=instance)

        for shard in shards:
            run("corpus_job", shard)
            run("dedup_job", shard)
        # Before any backfill starts, the registry sensor asks for the hosted version's plan on its provider's
        # queue, and the plan prices the calls its backfill will make.
        log, plans = _registry_sensor_tick(defs, instance)
        assert any(f"registered {HOSTED_VERSION}" in line and "provider's queue" in line for line in log), log
        [hosted_plan] = [r for r in plans if r.partition_key == HOSTED_VERSION]
        assert hosted_plan.tags == {"hosted_provider": server.base_url.split("//")[1].split("/")[0]}
        planned = run("plan_job", HOSTED_VERSION).asset_materializations_for_node("reembedding_plan")[-1].metadata
        planned = {key: value.value for key, value in planned.items()}
        assert planned["estimated_cost_usd"] == pytest.approx(planned["tokens"] / 1000 * PRICE, abs=1e-6)
        assert planned["estimated_batch_cost_usd"] == "n/a" or planned["billed_at"] == "list price"
        # The plan sends nothing: a provider's rate is not measured by a few paid requests.
        assert server.requests == [] and planned["measured_calls_per_second"] == 0

        metadata = {}
        for version in (DEFAULT_VERSION, HOSTED_VERSION):
            for shard in shards:
                result = run("embed_job", embedding_partition_key(version, shard))
                materialization = result.asset_materializations_for_node("embeddings")[-1]
                metadata[version, shard] = {key: value.value for key, value in materialization.metadata.items()}
        requests_made = len(server.requests)

        hosted = [metadata[HOSTED_VERSION, shard] for shard in shards]
        faults = sum(request.fault is not None for request in server.requests)
        assert faults * 2 == requests_made
        assert {request.fault for request in server.requests} == {"500", "429", "malformed", None}
        assert sum(m["provider_requests"] for m in hosted) == requests_made
        assert sum(m["provider_retries"] for m in hosted) == faults
        tokens = sum(m["provider_tokens"] for m in hosted)
        assert tokens == sum(request.tokens for request in server.answered)
        # The plan counted the representatives the backfill sent (the refused one included).
        assert planned["model_calls"] == sum(m["model_calls"] for m in hosted)
        assert sum(m["estimated_cost_usd"] for m in hosted) == pytest.approx(tokens / 1000 * PRICE, abs=1e-5)
        assert all(m["device"] == "hosted (float32)" for m in hosted)

        held = scan(store.table("quarantine"), f"model_version = '{HOSTED_VERSION}'").to_pylist()
        assert [(row["doc_id"], row["reason"]) for row in held] == [(refused["id"], "provider_rejected")]
        assert held[0]["detail"] == "HTTP 400: input 0 is invalid: unsupported content"

        spec = defs.resources["model_registry"].spec(HOSTED_VERSION)
        parity = count_parity(store, spec, HostedEncoder(spec).token_spans)
        assert parity.passed, parity
        local, remote = _vectors_by_id(store, DEFAULT_VERSION), _vectors_by_id(store, HOSTED_VERSION)
        assert remote.keys() == local.keys() - {refused["id"]}
        ids = sorted(remote)
        np.testing.assert_allclose(np.stack([remote[i] for i in ids]), np.stack([local[i] for i in ids]), atol=EXACT)

        for shard in shards:
            rerun = run("embed_job", embedding_partition_key(HOSTED_VERSION, shard))
            assert rerun.asset_materializations_for_node("embeddings")[-1].metadata["model_calls"].value == 0
        assert len(server.requests) == requests_made
