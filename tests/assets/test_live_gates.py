"""The live index changes only through its gates: what readers see while a change is written, when its
checks fail, and when a run dies by SIGKILL in `lance_index` or in the alias switch.

Readers are asked exactly as the serving API asks (`search_version` with the alias): each test
compares the rows of the pinned table version before and after the fault, and counts model calls
on recovery.
"""

import shutil

import numpy as np
import pyarrow as pa
import pytest

from embedding_assets.cli.pipeline_runner import run_pipeline
from embedding_assets.core.aliases import current_alias, open_pinned
from embedding_assets.core.gates import readable_table_version
from embedding_assets.core.schemas import embeddings_schema
from embedding_assets.core.sharding import shard_of
from embedding_assets.core.store import scan, sql_literal, upsert
from partitions import embedding_partition_key
from serving.search_api import search_version
from tests.assets.child_runs import Deployment, kill_when
from tests.builders import DEFAULT_VERSION, write_jsonl

NEW_DOC = {"id": "gates:new", "title": "new", "text": "Zebras graze on the savanna at dawn, far from any keyboard."}


def _metadata(result, node: str) -> dict:
    materializations = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in materializations[-1].metadata.items()} if materializations else {}


def _change_source(deployment, records, minilm_encoder) -> list[str]:
    """Add NEW_DOC to the source and run corpus, dedup and embeddings for its shard (as a change run does)."""
    write_jsonl(deployment.corpus, [*records, NEW_DOC])
    shard = shard_of(NEW_DOC["id"])
    for job in ("corpus_job", "dedup_job"):
        assert deployment.run(job, shard).success
    embedded = deployment.run("embed_job", embedding_partition_key(DEFAULT_VERSION, shard))
    assert _metadata(embedded, "embeddings")["model_calls"] == 1
    return [shard]


def _reader_finds_new_doc(deployment, minilm_encoder) -> bool:
    """What an API client searching `live` for NEW_DOC's text gets, through the pinned version."""
    vector = minilm_encoder.encode_texts([NEW_DOC["text"]]).vectors[0]
    alias = current_alias(deployment.store)
    hits = search_version(deployment.store, alias.model_version, vector, 3, None, alias).hits
    return any(hit["doc_id"] == NEW_DOC["id"] for hit in hits)


def _pinned_rows(deployment) -> dict:
    return deployment.rows(open_pinned(deployment.store, current_alias(deployment.store)))


@pytest.fixture(scope="module")
def built(tmp_path_factory, sample_records, cache_dir):
    """One deployment built once; each test gets a copy of its folder (store, instance, source)."""
    root = tmp_path_factory.mktemp("live_gates")
    deployment = Deployment(root, sample_records, cache_dir)
    report = run_pipeline(deployment.defs, deployment.instance, say=lambda _: None)
    assert report.live_version == DEFAULT_VERSION, report.live_error
    deployment.instance.dispose()
    return root


@pytest.fixture
def live(built, tmp_path, sample_records, cache_dir):
    shutil.copytree(built, tmp_path / "copy")
    return Deployment(tmp_path / "copy", sample_records, cache_dir)


def test_a_change_is_invisible_until_its_gates_pass_then_the_pin_advances(live, sample_records, minilm_encoder):
    before = current_alias(live.store)
    rows_before = _pinned_rows(live)
    _change_source(live, sample_records, minilm_encoder)
    # Written, not yet checked: readers still see exactly the pinned rows.
    assert live.store.open_embeddings_table(DEFAULT_VERSION).version > before.table_version
    assert _pinned_rows(live).keys() == rows_before.keys() and not _reader_finds_new_doc(live, minilm_encoder)

    assert live.run("index_job", DEFAULT_VERSION).success
    advanced = _metadata(live.run("live_index_job"), "live_index")
    assert advanced["decision"] == "advanced", advanced
    assert 0 <= advanced["write_to_pin_seconds"] < 600
    after = current_alias(live.store)
    assert after.table_version == advanced["table_version"] > before.table_version
    assert readable_table_version(live.store, DEFAULT_VERSION) == after.table_version
    assert _reader_finds_new_doc(live, minilm_encoder)
    assert _pinned_rows(live).keys() == rows_before.keys() | {NEW_DOC["id"]}


def test_a_failing_check_after_a_change_holds_the_pin_and_a_fix_moves_it(live, sample_records, minilm_encoder):
    before = current_alias(live.store)
    rows_before = _pinned_rows(live)
    _change_source(live, sample_records, minilm_encoder)
    # The change's vector comes back broken (as from a model whose normalization failed): off unit norm.
    table = live.store.open_embeddings_table(DEFAULT_VERSION)
    broken = scan(table, f"doc_id = {sql_literal(NEW_DOC['id'])}").to_pylist()[0]
    broken["vector"] = [3.0 * value for value in broken["vector"]]
    upsert(table, pa.Table.from_pylist([broken], schema=embeddings_schema(len(broken["vector"]))), on="id")

    held = _metadata(live.run("live_index_job"), "live_index")
    assert held["decision"] == "held" and "vector_sanity" in held["reasons"], held
    assert current_alias(live.store) == before
    pinned = _pinned_rows(live)
    assert pinned.keys() == rows_before.keys() and not _reader_finds_new_doc(live, minilm_encoder)
    assert all(abs(np.linalg.norm(row["vector"]) - 1.0) < 1e-3 for row in pinned.values())

    # The fix: drop the broken row; the next embeddings run re-embeds it and the gates pass.
    table.delete(f"id = {sql_literal(broken['id'])}")
    shard = shard_of(NEW_DOC["id"])
    fixed = live.run("embed_job", embedding_partition_key(DEFAULT_VERSION, shard))
    assert _metadata(fixed, "embeddings")["model_calls"] == 1
    advanced = _metadata(live.run("live_index_job"), "live_index")
    assert advanced["decision"] == "advanced", advanced
    assert _reader_finds_new_doc(live, minilm_encoder)


def _table_versions(deployment) -> int:
    return len(deployment.store.open_embeddings_table(DEFAULT_VERSION).list_versions())


def test_sigkill_during_lance_index_leaves_readers_on_the_pinned_rows(live, sample_records, minilm_encoder):
    before = current_alias(live.store)
    rows_before = _pinned_rows(live)
    _change_source(live, sample_records, minilm_encoder)
    versions = _table_versions(live)
    child = live.materialize_in_child("lance_index", DEFAULT_VERSION)
    # Killed as soon as the index stage committed its first table version (compaction), mid-stage.
    assert kill_when(child, lambda: _table_versions(live) > versions), child.stdout.read().decode()[-2000:]

    assert current_alias(live.store) == before
    pinned = _pinned_rows(live)
    assert pinned.keys() == rows_before.keys()
    assert all(np.array_equal(pinned[i]["vector"], rows_before[i]["vector"]) for i in pinned)
    # Recovery: the stages run again; nothing is embedded twice, no id is duplicated.
    recovered = live.run("embed_job", embedding_partition_key(DEFAULT_VERSION, shard_of(NEW_DOC["id"])))
    assert _metadata(recovered, "embeddings")["model_calls"] == 0
    assert live.run("index_job", DEFAULT_VERSION).success
    assert _metadata(live.run("live_index_job"), "live_index")["decision"] == "advanced"
    ids = scan(live.store.open_embeddings_table(DEFAULT_VERSION), None, ["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids)) and _reader_finds_new_doc(live, minilm_encoder)


def test_sigkill_during_the_alias_switch_leaves_one_checked_pin(live, sample_records, minilm_encoder):
    before = current_alias(live.store)
    rows_before = _pinned_rows(live)
    _change_source(live, sample_records, minilm_encoder)
    assert live.run("index_job", DEFAULT_VERSION).success
    verdicts = live.store.table("gate_verdicts").count_rows()
    child = live.materialize_in_child("live_index")
    # Killed the moment the verdict is recorded: between the gates and the one-commit switch.
    assert kill_when(child, lambda: live.store.table("gate_verdicts").count_rows() > verdicts)

    after, pinned = current_alias(live.store), _pinned_rows(live)
    # Either the old pin with its rows, or the new one whose gates passed; nothing in between.
    if after == before:
        assert pinned.keys() == rows_before.keys()
    else:
        assert after.table_version == readable_table_version(live.store, DEFAULT_VERSION)
        assert pinned.keys() == rows_before.keys() | {NEW_DOC["id"]}
    recovered = _metadata(live.run("live_index_job"), "live_index")
    assert recovered["decision"] in ("advanced", "kept"), recovered
    assert _reader_finds_new_doc(live, minilm_encoder)
