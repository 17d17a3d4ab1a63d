"""Serving for production traffic over real HTTP with the real Redis: the API closed to abuse, batch and
online work isolated, hybrid search. (The canary rollout is tested at the end of test_serving.py, on
the second version that module builds.)"""

import asyncio
import hashlib
import logging
import uuid

import httpx
import pytest
import redis
import yaml

from embedding_assets.core.aliases import current_alias
from embedding_assets.core.store import scan
from serving import app as app_module
from serving.app import create_app
from serving.settings import ServingSettings
from tests.builders import DEFAULT_VERSION, make_resources
from tests.serving.serving_server import RunningServer, wait_ready

REDIS_URL = "redis://127.0.0.1:6379/0"
KEY = "production-key"
BULK_KEY = "reindex-key"
METRICS_KEY = "scraper-key"
HOSTED_VERSION = "hosted-minilm-v1"


@pytest.fixture(scope="module")
def redis_prefix():
    prefix = f"embedding-api-production-{uuid.uuid4().hex[:8]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


@pytest.fixture(scope="module")
def keyed(deployment, redis_prefix):
    """Keys configured as digests only; a metrics key; a bulk key; small bodies and a bulk capacity of one."""
    settings = ServingSettings(
        redis_url=REDIS_URL,
        redis_prefix=redis_prefix,
        api_key_digests=(hashlib.sha256(KEY.encode()).hexdigest(),),
        bulk_keys=(BULK_KEY,),
        metrics_key=METRICS_KEY,
        max_request_bytes=64 << 10,
        bulk_max_in_flight=1,
        bulk_chunk_items=8,
    )
    with RunningServer(create_app(settings, deployment["resources"])) as running:
        wait_ready(running.url)
        yield running


def _post(server, path: str, body, key: str | None = KEY, headers: dict | None = None) -> httpx.Response:
    sent = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{server.url}{path}", json=body, headers={**sent, **(headers or {})}, timeout=120)


def _code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_a_chunked_oversized_body_gets_413_and_the_server_stays_up(keyed):
    def chunks():
        # No Content-Length: 4 MB in 1 KB chunks, far past the 64 KB limit; the server must stop reading.
        for _ in range(4096):
            yield b"x" * 1024

    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    try:
        response = httpx.post(f"{keyed.url}/v1/embeddings", content=chunks(), headers=headers, timeout=60)
        assert _code(response) == (413, "request_too_large")
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
        pass  # the server answered and closed before the client finished sending: also refused
    assert httpx.get(f"{keyed.url}/health").json() == {"status": "ok"}
    assert _post(keyed, "/v1/embeddings", {"model": "live", "input": "still serving"}).status_code == 200


def test_keys_are_digests_and_metrics_need_their_key(keyed):
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    assert _code(_post(keyed, "/v1/embeddings", {"model": "live", "input": "x"}, key=digest)) == (
        401,
        "invalid_api_key",
    )
    for path in ("/metrics", "/stats"):
        assert httpx.get(f"{keyed.url}{path}").status_code == 401
        assert httpx.get(f"{keyed.url}{path}", headers={"Authorization": f"Bearer {KEY}"}).status_code == 401
        assert httpx.get(f"{keyed.url}{path}", headers={"Authorization": f"Bearer {METRICS_KEY}"}).status_code == 200


def test_an_unexpected_failure_returns_a_request_id_and_no_details(keyed, monkeypatch, caplog):
    def broken(*_args):
        raise RuntimeError("secret detail of the store at /srv/lance")

    monkeypatch.setattr(app_module, "search_version", broken)
    caplog.set_level(logging.ERROR, logger="serving.app")
    response = _post(keyed, "/v1/search", {"vector": [0.05] * 384})
    assert _code(response) == (500, "internal_error")
    request_id = response.headers["X-Request-ID"]
    assert request_id in response.json()["error"]["message"] and "secret" not in response.text
    logged = [record for record in caplog.records if request_id in record.getMessage()]
    assert logged and "secret detail" in str(logged[0].exc_info[1])


def test_only_aliases_and_servable_versions_may_be_asked_for_and_hosted_ones_need_a_key(deployment, redis_prefix):
    original = deployment["registry"].read_text()
    registry = yaml.safe_load(original)
    hosted = {
        "key": HOSTED_VERSION,
        "backend": "openai",
        "model_id": "text-embedding-3-small",
        "base_url": "http://127.0.0.1:9/v1",
        "api_key_env": "NO_SUCH_PROVIDER_KEY",
        "dim": 384,
        "max_tokens": 512,
    }
    registry["versions"].append(hosted)
    deployment["registry"].write_text(yaml.safe_dump(registry))
    try:
        _only_served_versions(deployment, redis_prefix)
    finally:
        deployment["registry"].write_text(original)


def _only_served_versions(deployment, redis_prefix):
    open_settings = ServingSettings(redis_url=REDIS_URL, redis_prefix=f"{redis_prefix}-open", preload=())
    listed = open_settings.model_copy(update={"servable_versions": (HOSTED_VERSION,)})
    with RunningServer(create_app(open_settings, deployment["resources"])) as server:
        refused = _post(server, "/v1/embeddings", {"model": HOSTED_VERSION, "input": "hello"}, key=None)
        assert _code(refused) == (404, "model_not_found")
        assert "SERVING_VERSIONS" in refused.json()["error"]["message"] and "live" in refused.json()["error"]["message"]
        assert _code(_post(server, "/v1/embeddings", {"model": "no-such", "input": "x"}, key=None)) == (
            404,
            "model_not_found",
        )
    with RunningServer(create_app(listed, deployment["resources"])) as server:
        # Listed as servable, but hosted: a made-up token is no key, and this server has none.
        needs_key = _post(server, "/v1/embeddings", {"model": HOSTED_VERSION, "input": "hello"}, key="made-up")
        assert _code(needs_key) == (401, "hosted_model_needs_key")


def test_without_keys_rotating_the_token_does_not_bypass_the_limit(deployment, redis_prefix):
    settings = ServingSettings(
        redis_url=REDIS_URL, redis_prefix=f"{redis_prefix}-limits", rate_limit_requests=3, preload=()
    )
    with RunningServer(create_app(settings, deployment["resources"])) as server:
        # Admitted requests reach validation (an empty list is a 400): only the gate is measured.
        statuses = [
            _post(server, "/v1/embeddings", {"model": "live", "input": []}, key=f"token-{n}").status_code
            for n in range(5)
        ]
    assert statuses == [400, 400, 400, 429, 429]


def test_a_store_with_no_live_alias_says_what_to_run(tmp_path, cache_dir):
    resources = make_resources(str(tmp_path / "corpus.jsonl"), str(tmp_path / "lance"), cache_dir)
    with RunningServer(create_app(ServingSettings(preload=()), resources)) as server:
        response = _post(server, "/v1/search", {"query": "sorting a list"}, key=None)
    assert _code(response) == (404, "model_not_found")
    assert "make demo" in response.json()["error"]["message"] and "does not exist" not in response.text


def test_bulk_work_has_its_own_lane_chunks_and_capacity(keyed):
    texts = [f"bulk text {n} {uuid.uuid4().hex} about reading files" for n in range(60)]

    async def two_bulk_requests():
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {BULK_KEY}"}, timeout=120) as client:
            first = asyncio.ensure_future(
                client.post(f"{keyed.url}/v1/embeddings", json={"model": "live", "input": texts})
            )
            await asyncio.sleep(0.3)
            second = await client.post(f"{keyed.url}/v1/embeddings", json={"model": "live", "input": ["one more"]})
            return await first, second

    first, second = asyncio.run(two_bulk_requests())
    assert first.status_code == 200 and len(first.json()["data"]) == len(texts)
    assert _code(second) == (429, "overloaded") and second.headers["Retry-After"]
    # An online request meanwhile, and a request marked bulk by its header, with the ordinary key.
    assert _post(keyed, "/v1/embeddings", {"model": "live", "input": "online"}).status_code == 200
    marked = _post(
        keyed, "/v1/embeddings", {"model": "live", "input": ["a header says bulk"]}, headers={"X-Workload": "bulk"}
    )
    assert marked.status_code == 200
    stats = httpx.get(f"{keyed.url}/stats", headers={"Authorization": f"Bearer {METRICS_KEY}"}).json()
    assert stats["workloads"]["bulk"]["count"] == 2 and stats["workloads"]["online"]["count"] >= 1
    metrics = httpx.get(f"{keyed.url}/metrics", headers={"Authorization": f"Bearer {METRICS_KEY}"}).text
    assert 'embedding_api_queue_wait_seconds_count{workload="bulk"}' in metrics
    assert 'embedding_api_queue_depth{workload="online"}' in metrics
    # Bulk texts reached the model 8 at a time at most (bulk_chunk_items), on the bulk lane.
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("embedding_api_batch_items") and 'workload="bulk"' in line
    }
    calls = samples[f'embedding_api_batch_items_count{{model_version="{DEFAULT_VERSION}",workload="bulk"}}']
    at_most_8 = samples[
        f'embedding_api_batch_items_bucket{{le="8.0",model_version="{DEFAULT_VERSION}",workload="bulk"}}'
    ]
    assert calls >= len(texts) / 8 and at_most_8 == calls


def test_hybrid_search_finds_an_exact_phrase_that_vector_search_ranks_low(keyed, deployment):
    store = deployment["resources"]["lancedb"].store()
    documents = scan(store.table("documents"), "deleted = false", ["doc_id", "text"]).to_pylist()
    found = None
    for document in documents[:40]:
        words = document["text"].split()
        if len(words) < 12:
            continue
        phrase = " ".join(words[len(words) // 2 : len(words) // 2 + 4])
        vector = _post(keyed, "/v1/search", {"query": phrase, "k": 10}).json()["data"]
        if document["doc_id"] not in [hit["doc_id"] for hit in vector][:3]:
            found = (document["doc_id"], phrase, [hit["doc_id"] for hit in vector])
            break
    assert found, "every phrase's document was in vector search's top 3"
    doc_id, phrase, vector_ids = found
    text = _post(keyed, "/v1/search", {"query": f'"{phrase}"', "k": 10, "mode": "text"}).json()
    hybrid = _post(keyed, "/v1/search", {"query": phrase, "k": 10, "mode": "hybrid"}).json()
    assert text["mode"] == "text" and hybrid["mode"] == "hybrid"
    assert doc_id in [hit["doc_id"] for hit in text["data"]][:3]
    hybrid_ids = [hit["doc_id"] for hit in hybrid["data"]]
    assert doc_id in hybrid_ids[:3] and (
        doc_id not in vector_ids or hybrid_ids.index(doc_id) < vector_ids.index(doc_id)
    )
    assert text["table_version"] == hybrid["table_version"] == current_alias(store).table_version
    refused = _post(keyed, "/v1/search", {"vector": [0.05] * 384, "mode": "text"})
    assert _code(refused) == (400, "invalid_request")
