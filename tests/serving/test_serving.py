"""The serving API over real HTTP on 127.0.0.1, with the real model, real Redis and a built index.

The last two tests change what is live, in order: an alias switch and rollback, then a canary rollout."""

import asyncio
import json
import time
import uuid

import httpx
import numpy as np
import openai
import pytest
import redis
import yaml

from embedding_assets.cli.pipeline_runner import run_pipeline
from embedding_assets.core.aliases import current_alias
from embedding_assets.core.canary import current_canary
from embedding_assets.core.store import LanceStore, fixed_size_lists, scan
from gpu_ops.hosted_encoder import HostedEncoder
from gpu_ops.registry import ModelSpec
from serving.app import create_app
from serving.settings import SECONDS_PER_DAY, ServingSettings
from tests.builders import DEFAULT_VERSION
from tests.serving.serving_server import RunningServer, wait_ready

REDIS_URL = "redis://127.0.0.1:6379/0"
API_KEY = "test-key"
# Same weights under another key: a second version with a table of its own.
SECOND_VERSION = "minilm-l6-raw-v1"


@pytest.fixture(scope="module")
def redis_prefix():
    prefix = f"embedding-api-test-{uuid.uuid4().hex[:8]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


@pytest.fixture(scope="module")
def server(deployment, redis_prefix):
    settings = ServingSettings(redis_url=REDIS_URL, redis_prefix=redis_prefix, api_keys=(API_KEY,), batch_window_ms=5)
    with RunningServer(create_app(settings, deployment["resources"])) as running:
        wait_ready(running.url)
        yield running


def _post(server, path: str, body, key: str = API_KEY, headers: dict | None = None, **kwargs) -> httpx.Response:
    sent = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{server.url}{path}", json=body, headers={**sent, **(headers or {})}, timeout=60, **kwargs)


def _stats(server) -> dict:
    return httpx.get(f"{server.url}/stats").json()


def _single_window_rows(store: LanceStore, count: int) -> list[tuple[str, np.ndarray]]:
    """(text, stored vector) of documents embedded as one window, from the pipeline's tables."""
    rows = scan(store.open_embeddings_table(DEFAULT_VERSION), "chunk = 0 AND id = doc_id AND origin = 'computed'")
    texts = dict(zip(*scan(store.table("documents"), None, ["doc_id", "text"]).to_pydict().values()))
    vectors = fixed_size_lists(rows.column("vector"))
    doc_ids = rows.column("doc_id").to_pylist()
    return [(texts[doc_id], vectors[index]) for index, doc_id in enumerate(doc_ids[:count])]


def test_the_openai_client_gets_the_pipelines_vectors(server, deployment):
    store = deployment["resources"]["lancedb"].store()
    expected = _single_window_rows(store, 6)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)
    # The client asks for base64 by default and decodes it; float is asked for explicitly too.
    by_alias = client.embeddings.create(model="live", input=[text for text, _ in expected])
    by_key = client.embeddings.create(model=DEFAULT_VERSION, input=expected[0][0], encoding_format="float")
    assert by_alias.model == DEFAULT_VERSION and by_alias.usage.prompt_tokens > len(expected)
    for item, (_, vector) in zip(by_alias.data, expected):
        np.testing.assert_allclose(np.asarray(item.embedding, dtype=np.float32), vector, atol=2e-6)
    np.testing.assert_allclose(np.asarray(by_key.data[0].embedding, dtype=np.float32), expected[0][1], atol=2e-6)


def test_search_finds_the_document_of_a_known_query_with_its_provenance(server, deployment):
    store = deployment["resources"]["lancedb"].store()
    documents = scan(store.table("documents"), "doc_id LIKE 'py:%'", ["doc_id", "text"]).to_pylist()
    target, other = documents[3], documents[5]
    response = _post(server, "/v1/search", {"query": target["text"], "k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == DEFAULT_VERSION and body["alias"] == "live"
    assert body["table_version"] == store.open_embeddings_table(DEFAULT_VERSION).version
    top = body["data"][0]
    assert top["doc_id"] == target["doc_id"] and top["score"] > 0.99
    assert top["provenance"]["model_version"] == DEFAULT_VERSION and top["provenance"]["origin"] == "computed"

    filtered = _post(server, "/v1/search", {"query": target["text"], "filters": {"doc_id": [other["doc_id"]]}})
    assert [hit["doc_id"] for hit in filtered.json()["data"]] == [other["doc_id"]]
    # Ids hold `_`, a LIKE wildcard: the prefix filter must match it literally.
    prefix = other["doc_id"][:-1]
    prefixed = _post(server, "/v1/search", {"query": target["text"], "k": 5, "filters": {"doc_id_prefix": prefix}})
    assert prefixed.json()["data"] and all(hit["doc_id"].startswith(prefix) for hit in prefixed.json()["data"])

    vector = _post(server, "/v1/embeddings", {"model": "live", "input": target["text"]}).json()["data"][0]["embedding"]
    by_vector = _post(server, "/v1/search", {"vector": vector, "k": 1})
    assert by_vector.json()["data"][0]["doc_id"] == target["doc_id"]


def test_a_concurrent_burst_shares_model_calls(server):
    texts = [f"burst {uuid.uuid4().hex} about parsing command line arguments" for _ in range(32)]
    before = _stats(server)["models"][DEFAULT_VERSION]["model_calls"]

    async def burst():
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as client:
            return await asyncio.gather(
                *(client.post(f"{server.url}/v1/embeddings", json={"model": "live", "input": text}) for text in texts)
            )

    responses = asyncio.run(burst())
    assert all(response.status_code == 200 for response in responses)
    calls = _stats(server)["models"][DEFAULT_VERSION]["model_calls"] - before
    assert 1 <= calls < len(texts) / 2, f"{len(texts)} requests took {calls} model calls"


def test_a_repeated_text_is_served_from_the_cache_and_kept_in_redis(server, redis_prefix):
    text = f"cache probe {uuid.uuid4().hex}: how do I read a file line by line?"
    first = _post(server, "/v1/embeddings", {"model": "live", "input": text}).json()
    stats = _stats(server)
    second = _post(server, "/v1/embeddings", {"model": "live", "input": [text, text]}).json()
    after = _stats(server)
    assert after["cache"]["backend"] == "redis"
    assert after["cache"]["hits"] == stats["cache"]["hits"] + 1
    assert after["models"][DEFAULT_VERSION]["model_calls"] == stats["models"][DEFAULT_VERSION]["model_calls"]
    assert second["data"][0]["embedding"] == second["data"][1]["embedding"] == first["data"][0]["embedding"]
    assert second["usage"]["prompt_tokens"] == 2 * first["usage"]["prompt_tokens"]
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{redis_prefix}:vector:{DEFAULT_VERSION}:*"))
    assert keys and all(7 * SECONDS_PER_DAY - 120 < client.ttl(key) <= 7 * SECONDS_PER_DAY for key in keys)


def test_bad_requests_get_openai_shaped_errors_and_the_server_stays_up(server):
    too_long = " ".join(["tokenization"] * 400)
    cases = [
        ({"model": "live", "input": ""}, 400, "empty_input"),
        ({"model": "live", "input": ["fine", "   "]}, 400, "empty_input"),
        ({"model": "live", "input": []}, 400, "empty_input"),
        ({"model": "live", "input": ["x"] * 2049}, 400, "too_many_inputs"),
        ({"model": "live", "input": too_long}, 400, "input_too_long"),
        ({"model": "live", "input": [1, 2, 3]}, 400, "invalid_request"),
        ({"model": "no-such-model", "input": "hello"}, 404, "model_not_found"),
        ({"model": "live", "input": "hello", "dimensions": 128}, 400, "unsupported_dimensions"),
        ({"model": "live", "input": "hello", "encoding_format": "int8"}, 400, "invalid_request"),
    ]
    for body, status, code in cases:
        response = _post(server, "/v1/embeddings", body)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), body
        assert response.json()["error"]["message"]
    search_cases = [
        ({"k": 3}, 400, "invalid_request"),
        ({"query": "a", "vector": [0.1]}, 400, "invalid_request"),
        ({"vector": [0.1, 0.2]}, 400, "bad_vector"),
        ({"query": "a", "k": 1000}, 400, "invalid_request"),
        ({"query": "a", "filters": {"title": "x"}}, 400, "invalid_filter"),
    ]
    for body, status, code in search_cases:
        response = _post(server, "/v1/search", body)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), body
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    # NaN is no JSON, but clients (Python's json among them) send it: it must not reach the index.
    not_a_number = json.dumps({"vector": [float("nan")] * 384})
    nan_vector = httpx.post(f"{server.url}/v1/search", content=not_a_number, headers=headers)
    assert (nan_vector.status_code, nan_vector.json()["error"]["code"]) == (400, "bad_vector")
    malformed = httpx.post(f"{server.url}/v1/embeddings", content=b'{"model": "live", "input": ', headers=headers)
    assert (malformed.status_code, malformed.json()["error"]["code"]) == (400, "invalid_json")
    huge = httpx.post(f"{server.url}/v1/embeddings", content=b"x" * (9 << 20), headers=headers, timeout=60)
    assert (huge.status_code, huge.json()["error"]["code"]) == (413, "request_too_large")
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    assert _post(server, "/v1/embeddings", {"model": "live", "input": "still serving"}).status_code == 200


def test_metrics_and_stats_report_the_traffic(server):
    metrics = httpx.get(f"{server.url}/metrics").text
    for name in (
        "embedding_api_request_seconds_bucket",
        "embedding_api_batch_items_bucket",
        "embedding_api_cache_lookups_total",
        "embedding_api_model_load_seconds",
        "embedding_api_model_calls_total",
    ):
        assert name in metrics
    assert 'route="/v1/embeddings",status="200"' in metrics
    model = _stats(server)["models"][DEFAULT_VERSION]
    assert model["device"] == "cpu" and model["model_calls"] > 0 and model["mean_batch_items"] >= 1


def test_api_keys_and_the_per_key_sliding_window(deployment, redis_prefix):
    settings = ServingSettings(
        redis_url=REDIS_URL,
        redis_prefix=f"{redis_prefix}-limits",
        api_keys=("key-one", "key-two"),
        rate_limit_requests=3,
        rate_limit_window_s=60,
        preload=(),
    )
    with RunningServer(create_app(settings, deployment["resources"])) as limited:
        # Admitted requests reach validation (an empty list is a 400): only the gate is measured.
        body = {"model": "live", "input": []}
        assert _post(limited, "/v1/embeddings", body, key=None).json()["error"]["code"] == "invalid_api_key"
        assert _post(limited, "/v1/embeddings", body, key="wrong").status_code == 401
        assert [_post(limited, "/v1/embeddings", body, key="key-one").status_code for _ in range(3)] == [400] * 3
        refused = _post(limited, "/v1/embeddings", body, key="key-one")
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert _post(limited, "/v1/embeddings", body, key="key-two").status_code == 400
    windows = list(redis.Redis.from_url(REDIS_URL).scan_iter(f"{redis_prefix}-limits:ratelimit:*"))
    assert len(windows) == 2 and not any(b"key-one" in key for key in windows)


def test_the_api_is_an_openai_compatible_backend_for_the_pipelines_hosted_encoder(server, monkeypatch, minilm_encoder):
    """The pipeline's own hosted backend, pointed at this API, gets the local model's vectors."""
    monkeypatch.setenv("SERVING_TEST_KEY", API_KEY)
    spec = ModelSpec(
        key="served-minilm-v1",
        backend="openai",
        model_id=DEFAULT_VERSION,
        base_url=f"{server.url}/v1",
        api_key_env="SERVING_TEST_KEY",
        dim=384,
        max_tokens=512,
        max_request_items=4,
    )
    texts = ["How do I sort a list in place?", "Open a file for reading", "Parse JSON from a string"] * 2
    too_long = " ".join(["tokenization"] * 400)
    encoded = HostedEncoder(spec).encode_texts([*texts, too_long])
    np.testing.assert_allclose(encoded.vectors[: len(texts)], minilm_encoder.encode_texts(texts).vectors, atol=2e-6)
    reason, detail = encoded.failures[len(texts)]
    assert reason == "provider_rejected" and "at most 254 tokens" in detail


def test_an_alias_switch_and_a_rollback_are_followed_without_a_restart(server, deployment):
    """Last: it changes what is live. A new version goes live, loads (503 meanwhile), then is rolled back."""
    registry = yaml.safe_load(deployment["registry"].read_text())
    second = {**registry["versions"][0], "key": SECOND_VERSION, "normalize": False}
    registry["versions"].append(second)
    deployment["registry"].write_text(yaml.safe_dump(registry))
    # Registered, but neither live, canary nor listed as servable: nobody may load it through the API.
    unbuilt = _post(server, "/v1/search", {"vector": [0.05] * 384, "model": SECOND_VERSION})
    assert (unbuilt.status_code, unbuilt.json()["error"]["code"]) == (404, "model_not_found")
    assert "SERVING_VERSIONS" in unbuilt.json()["error"]["message"]
    report = run_pipeline(deployment["defs"], deployment["instance"], say=lambda _: None)
    assert report.live_version == SECOND_VERSION, report.live_error

    query = {"model": "live", "input": "How do I sort a list in place?"}
    loading = _post(server, "/v1/embeddings", query)
    assert loading.status_code == 503 and loading.json()["error"]["code"] == "model_loading"
    assert int(loading.headers["Retry-After"]) >= 1
    wait_ready(server.url)
    served = _post(server, "/v1/embeddings", query).json()
    assert served["model"] == SECOND_VERSION
    assert _post(server, "/v1/search", {"query": query["input"]}).json()["model"] == SECOND_VERSION

    rollback = deployment["defs"].resolve_job_def("rollback_job").execute_in_process(instance=deployment["instance"])
    assert rollback.success
    store = deployment["resources"]["lancedb"].store()
    assert current_alias(store).model_version == DEFAULT_VERSION
    after = _post(server, "/v1/search", {"query": query["input"]}).json()
    assert after["model"] == DEFAULT_VERSION and after["data"]
    assert _post(server, "/v1/embeddings", query).json()["model"] == DEFAULT_VERSION


def _canary_job(deployment, model_version: str, percent: float):
    config = {"ops": {"move_canary": {"config": {"model_version": model_version, "percent": percent}}}}
    job = deployment["defs"].resolve_job_def("canary_job")
    return job.execute_in_process(run_config=config, instance=deployment["instance"], raise_on_error=False)


def _versions_by_user(server, users: list[str]) -> dict[str, tuple[str, int]]:
    routed = {}
    for user in users:
        body = _post(
            server, "/v1/search", {"query": "read a file line by line", "k": 3}, key=None, headers={"X-User-Id": user}
        )
        assert body.status_code == 200, body.text
        routed[user] = (body.json()["model"], body.json()["table_version"])
    return routed


def test_a_canary_is_sticky_consistent_gated_and_cleared_in_seconds(deployment, redis_prefix):
    """After the alias switch test: the second version was built, went live and was rolled back. It is
    canaried at 50 %, refused while its gates fail, cleared by rollback and by 0 %, then made live at 100 %."""
    store = deployment["resources"]["lancedb"].store()
    rollback = deployment["defs"].resolve_job_def("rollback_job")
    live = current_alias(store)
    assert live.model_version == DEFAULT_VERSION

    assert _canary_job(deployment, SECOND_VERSION, 50).success
    canary = current_canary(store, "live")
    assert (canary.model_version, canary.share) == (SECOND_VERSION, 0.5)
    settings = ServingSettings(redis_url=REDIS_URL, redis_prefix=f"{redis_prefix}-canary", shadow_sample_rate=1.0)
    users = [f"user-{n}" for n in range(24)]
    with RunningServer(create_app(settings, deployment["resources"])) as server:
        wait_ready(server.url)
        first, again = _versions_by_user(server, users), _versions_by_user(server, users)
        assert first == again  # sticky
        pins = {DEFAULT_VERSION: live.table_version, SECOND_VERSION: canary.table_version}
        assert {version for version, _ in first.values()} == set(pins)
        assert all(table_version == pins[version] for version, table_version in first.values())
        # Embedded and searched within one version: the embeddings a user gets come from its version.
        for user in users[:6]:
            embedded = _post(server, "/v1/embeddings", {"model": "live", "input": "x", "user": user}, key=None)
            assert embedded.json()["model"] == first[user][0] == embedded.headers["X-Model-Version"]
        stats = lambda: httpx.get(f"{server.url}/stats").json()["versions"]  # noqa: E731
        deadline_ok = lambda: (stats().get(SECOND_VERSION) or {}).get("shadow_queries", 0) > 0  # noqa: E731
        from tests.private_services import wait_until

        wait_until(deadline_ok, "a shadow query compared the canary with live")
        assert stats()[SECOND_VERSION]["mean_top10_overlap_with_live"] >= 0.9  # same weights, same ranking
        assert stats()[SECOND_VERSION]["empty_result_rate"] == 0.0 and stats()[DEFAULT_VERSION]["count"] > 0

        # An orphan row makes the candidate's newest table version fail count_parity: no move.
        table = store.open_embeddings_table(SECOND_VERSION)
        orphan = scan(table).slice(0, 1).to_pylist()[0] | {"id": "orphan:1", "doc_id": "orphan:1"}
        table.add([orphan])
        refused = _canary_job(deployment, SECOND_VERSION, 100)
        assert not refused.success and current_canary(store, "live") == canary
        assert current_alias(store).model_version == DEFAULT_VERSION
        table.delete("doc_id = 'orphan:1'")

        # make rollback during a canary pulls the canary; live stays.
        assert rollback.execute_in_process(instance=deployment["instance"]).success
        assert current_canary(store, "live") is None and current_alias(store) == live
        assert {version for version, _ in _versions_by_user(server, users).values()} == {DEFAULT_VERSION}

        assert _canary_job(deployment, SECOND_VERSION, 10).success
        started = time.monotonic()
        assert _canary_job(deployment, SECOND_VERSION, 0).success
        assert current_canary(store, "live") is None and time.monotonic() - started < 10
        assert _canary_job(deployment, SECOND_VERSION, 100).success
        assert current_alias(store).model_version == SECOND_VERSION and current_canary(store, "live") is None
        assert {version for version, _ in _versions_by_user(server, users).values()} == {SECOND_VERSION}
