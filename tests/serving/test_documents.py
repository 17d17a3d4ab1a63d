"""Online writes over real HTTP: into the inbox, through `corpus_change_sensor` and `apply_change_job`, to search.

In order: the end-to-end test applies every write the module made before it; the burst comes last."""

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from embedding_assets.cli.pipeline_runner import apply_source_changes
from embedding_assets.core.aliases import current_alias
from embedding_assets.core.store import scan
from serving.app import create_app
from serving.settings import ServingSettings
from tests.builders import DEFAULT_VERSION
from tests.serving.serving_server import RunningServer, wait_ready

API_KEY = "writer-key"
NEW_TEXT = "Reticulate the splines of a zeppelin hangar before the airship docks at dawn."
OVERWRITE_TEXT = "A lighthouse keeper logs every passing ship, its flag and its cargo, in a bound ledger."


def _server(deployment, **settings) -> RunningServer:
    return RunningServer(create_app(ServingSettings(api_keys=(API_KEY,), **settings), deployment["resources"]))


def _call(server, method: str, path: str, body=None, key: str = API_KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, f"{server.url}{path}", json=body, headers=headers, timeout=60)


def _histogram_count(server, origin: str) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text):
        for sample in family.samples:
            if sample.name == "embedding_change_to_searchable_seconds_count" and sample.labels["origin"] == origin:
                return sample.value
    return 0.0


def test_bad_writes_get_the_apis_error_shapes(deployment):
    cases = [
        ({"text": "no id"}, 400, "invalid_request"),
        ({"id": "  ", "text": "blank id"}, 400, "missing_id"),
        ({"id": "x" * 513, "text": "long id"}, 400, "invalid_id"),
        ({"documents": [{"id": "a", "text": "1"}, {"id": "a", "text": "2"}]}, 400, "duplicate_id"),
        ({"documents": []}, 400, "empty_input"),
        ({"documents": [{"id": f"d{n}", "text": "t"} for n in range(4)]}, 400, "too_many_inputs"),
        ({"id": "a", "text": "x" * 5000}, 413, "request_too_large"),
    ]
    with _server(deployment, max_input_items=3, max_request_bytes=4096) as server:
        for body, status, code in cases:
            response = _call(server, "POST", "/v1/documents", body)
            assert response.status_code == status, (body, response.text)
            assert response.json()["error"]["code"] == code
        assert _call(server, "POST", "/v1/documents", {"id": "a", "text": "t"}, key="wrong").status_code == 401
        assert _call(server, "GET", "/v1/documents/never-written").json()["error"]["code"] == "document_not_found"
    assert not deployment["resources"]["lancedb"].store().table("inbox").count_rows()


def test_writes_survive_a_restart_and_reach_search_through_the_change_job(deployment):
    defs, instance = deployment["defs"], deployment["instance"]
    store = deployment["resources"]["lancedb"].store()
    documents = {row["doc_id"]: row for row in scan(store.table("documents"), "deleted = false").to_pylist()}
    source_ids = sorted(documents)
    overwritten, deleted, copied = source_ids[3], source_ids[5], documents[source_ids[7]]
    writes = [
        {"id": "online:new", "text": NEW_TEXT, "title": "airships", "metadata": {"team": "docs"}},
        {"id": overwritten, "text": OVERWRITE_TEXT},
        # Exact duplicate of a document already embedded: its vector is copied, no model call.
        {"id": "online:copy", "text": copied["text"]},
        {"id": "online:empty", "text": ""},
    ]
    with _server(deployment) as first:
        accepted = _call(first, "POST", "/v1/documents", {"documents": writes})
        assert accepted.status_code == 202 and accepted.json()["ids"] == [w["id"] for w in writes]
        assert _call(first, "DELETE", f"/v1/documents/{deleted}").status_code == 202

    with _server(deployment) as server:
        wait_ready(server.url)
        status = _call(server, "GET", "/v1/documents/online:new").json()
        assert status["status"] == "pending" and status["change_id"] == accepted.json()["change_id"]
        assert status["metadata"] == {"team": "docs"}
        assert _call(server, "GET", f"/v1/documents/{overwritten}").json()["status"] == "pending"

        # The sensor's next tick plans the inbox's writes; the run it asks for applies them.
        cursor, made = apply_source_changes(defs, instance)
        embedded = [m.metadata for m in made if m.asset == "embeddings"]
        assert sum(metadata["model_calls"] for metadata in embedded) == 2
        live = next(m.metadata for m in made if m.asset == "live_index")
        assert live["decision"] == "advanced" and live["upserts_searchable"] == 5
        pin = current_alias(store)

        status = _call(server, "GET", "/v1/documents/online:new").json()
        assert status["status"] == "live" and status["table_version"] == pin.table_version
        assert status["model_version"] == DEFAULT_VERSION and status["applied_by"]
        assert _call(server, "GET", "/v1/documents/online:copy").json()["status"] == "live"
        assert _call(server, "GET", f"/v1/documents/{overwritten}").json()["status"] == "live"
        assert _call(server, "GET", f"/v1/documents/{deleted}").json()["status"] == "deleted"
        # An id only the source knows has a status too.
        assert _call(server, "GET", f"/v1/documents/{source_ids[0]}").json()["status"] == "live"
        rejected = _call(server, "GET", "/v1/documents/online:empty").json()
        assert rejected["status"] == "rejected" and rejected["reason"] == "empty_text"

        found = _call(server, "POST", "/v1/search", {"query": NEW_TEXT, "k": 3}).json()
        assert found["data"][0]["doc_id"] == "online:new" and found["table_version"] == pin.table_version
        assert _call(server, "POST", "/v1/search", {"query": OVERWRITE_TEXT, "k": 1}).json()["data"][0]["doc_id"] == (
            overwritten
        )
        gone = _call(
            server, "POST", "/v1/search", {"query": documents[deleted]["text"], "filters": {"doc_id": deleted}}
        )
        assert gone.json()["data"] == []
        assert _histogram_count(server, "upsert") == 5

    # Nothing new: the next tick asks for nothing. The same change run again costs no model call.
    assert apply_source_changes(defs, instance, cursor)[1] == []
    run = instance.get_runs(limit=1)[0]
    again = defs.resolve_job_def(run.job_name).execute_in_process(run_config=run.run_config, instance=instance)
    assert again.success
    calls = [
        m.metadata["model_calls"].value
        for m in again.asset_materializations_for_node("index_and_advance")
        if m.asset_key.to_user_string() == "embeddings"
    ]
    assert calls and sum(calls) == 0
    ids = scan(store.open_embeddings_table(DEFAULT_VERSION), None, ["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids))


def test_a_burst_of_1000_upserts_is_accepted_while_embeddings_are_served(deployment):
    before = deployment["resources"]["lancedb"].store().table("inbox").count_rows()

    async def burst(url: str) -> tuple[list[int], list[int]]:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:
            writing = asyncio.Semaphore(32)

            async def upsert(n: int) -> int:
                async with writing:
                    body = {"id": f"burst:{n}", "text": f"Burst document number {n} about tide tables."}
                    return (await client.post("/v1/documents", json=body)).status_code

            writes = asyncio.gather(*(upsert(n) for n in range(1000)))
            embedded = []
            while not writes.done():
                response = await client.post(
                    "/v1/embeddings", json={"model": "live", "input": "what time is high tide"}
                )
                embedded.append(response.status_code)
            return await writes, embedded

    with _server(deployment, rate_limit_requests=10_000) as server:
        wait_ready(server.url)
        written, embedded = asyncio.run(burst(server.url))
        assert _call(server, "GET", "/v1/documents/burst:999").json()["status"] == "pending"
    assert written == [202] * 1000
    assert embedded and set(embedded) == {200}
    store = deployment["resources"]["lancedb"].store()
    assert store.table("inbox").count_rows() == before + 1000
    # Requests that arrived together shared a commit (and a fragment).
    assert store.table("inbox").stats()["fragment_stats"]["num_fragments"] < 1000
