"""corpus_change_sensor end to end: edits, additions and deletions cost only what changed."""

import numpy as np
import pytest
from dagster import instance_for_test

from embedding_assets.cli.pipeline_runner import apply_source_changes, run_pipeline
from embedding_assets.core.aliases import current_alias
from embedding_assets.core.sharding import shard_of
from embedding_assets.core.store import LanceStore, scan
from embedding_assets.core.text import content_hash, normalize_text
from embedding_assets.definitions import build_definitions
from tests.builders import DEFAULT_VERSION, make_resources, near_duplicate_pair, write_jsonl


def drive(defs, instance, cursor=None):
    cursor, made = apply_source_changes(defs, instance, cursor)
    return cursor, [(m.asset, m.partition, m.metadata) for m in made]


@pytest.fixture
def graph(tmp_path, sample_records, cache_dir):
    corpus_path = write_jsonl(tmp_path / "corpus.jsonl", sample_records)
    defs = build_definitions(make_resources(str(corpus_path), str(tmp_path / "lance"), cache_dir))
    with instance_for_test() as instance:
        run_pipeline(defs, instance, say=lambda _: None)
        yield defs, instance, corpus_path, LanceStore(str(tmp_path / "lance"))


def _rows(store):
    return {row["id"]: row for row in scan(store.open_embeddings_table(DEFAULT_VERSION), None).to_pylist()}


def test_a_change_costs_only_what_changed(graph, sample_records):
    defs, instance, corpus_path, store = graph
    cursor, executed = drive(defs, instance)
    assert executed == []
    before = _rows(store)

    original, copy = near_duplicate_pair("")
    representative = next(d for d in (original, copy) if before[d]["content_hash"] == before[d]["origin_hash"])
    survivor = copy if representative == original else original
    edited = next(r for r in sample_records if r["id"].startswith("py:") and r["id"] not in (original, copy))
    base = next(r for r in sample_records if r["id"].startswith("py:") and 600 <= len(r["text"]) <= 1200)
    near_id = next(f"near:{n}" for n in range(100) if shard_of(f"near:{n}") != shard_of(base["id"]))
    words = base["text"].split(" ")
    records = [r for r in sample_records if r["id"] != representative]
    records = [
        {**r, "text": r["text"] + " Changed in this release."} if r["id"] == edited["id"] else r for r in records
    ]
    records += [
        {"id": "brand-new", "text": "Schedule a callback to run after the given number of seconds, on the event loop."},
        {"id": near_id, "text": " ".join(words[:-2] + ["slightly", "edited"])},
    ]
    write_jsonl(corpus_path, records)

    cursor, executed = drive(defs, instance, cursor)
    # One run for the whole change, reporting a materialization per partition it wrote.
    runs = {a: [key for name, key, _ in executed if name == a] for a in ("corpus", "dedup_signatures", "embeddings")}
    touched = {shard_of(d) for d in (representative, edited["id"], "brand-new", near_id)}
    assert set(runs["corpus"]) == touched
    assert set(runs["dedup_signatures"]) >= touched | {shard_of(survivor)}
    assert len(runs["dedup_signatures"]) < 16
    assert {key.split("|")[1] for key in runs["embeddings"]} == set(runs["dedup_signatures"])
    live = [metadata for name, _, metadata in executed if name == "live_index"]
    assert live and live[0]["decision"] == "advanced" and live[0]["change_to_searchable_seconds"] > 0

    calls = sum(metadata["model_calls"] for name, _, metadata in executed if name == "embeddings")
    # The edited text, the new document, and the survivor of the deleted representative: nothing else.
    assert calls == 3

    after = _rows(store)
    assert representative not in after
    rep_hash = before[representative]["origin_hash"]
    assert not scan(store.table("signatures"), f"doc_id = '{representative}'").num_rows
    assert not scan(store.table("lsh_bands"), f"content_hash = '{rep_hash}'").num_rows
    assert after[survivor]["origin"] == "computed" and after[survivor]["origin_hash"] == after[survivor]["content_hash"]
    assert after[edited["id"]]["content_hash"] == content_hash(
        normalize_text(edited["text"] + " Changed in this release.")
    )
    assert not np.allclose(after[edited["id"]]["vector"], before[edited["id"]]["vector"])
    near = after[near_id]
    assert near["origin"] == "near_dup" and near["origin_hash"] == after[base["id"]]["origin_hash"]
    assert np.array_equal(near["vector"], after[base["id"]]["vector"])
    same = ("content_hash", "origin_hash")
    untouched = [k for k in before if k in after and all(before[k][c] == after[k][c] for c in same)]
    assert len(untouched) > len(before) - 10
    assert all(before[k]["generated_at"] == after[k]["generated_at"] for k in untouched)

    index = defs.resolve_job_def("index_job").execute_in_process(partition_key=DEFAULT_VERSION, instance=instance)
    assert all(e.passed for e in index.get_asset_check_evaluations() if e.check_name != "quarantine_check")
    assert current_alias(store).table_version == live[0]["table_version"]

    _, again = drive(defs, instance, cursor)
    assert again == []
