"""Through Dagster: deleted or changed content comes back without model calls until the daily GC drops it."""

import numpy as np
import pytest
from dagster import instance_for_test

from embedding_assets.cli.pipeline_runner import apply_source_changes, run_pipeline
from embedding_assets.core.aliases import current_alias
from embedding_assets.core.retained import open_retained_table
from embedding_assets.core.store import LanceStore, scan
from embedding_assets.core.vector_search import search
from embedding_assets.definitions import build_definitions
from tests.builders import DEFAULT_VERSION, lone_document, make_resources, write_jsonl


@pytest.fixture
def graph(tmp_path, sample_records, cache_dir, monkeypatch):
    corpus_path = write_jsonl(tmp_path / "corpus.jsonl", sample_records)
    lance = str(tmp_path / "lance")
    defs = build_definitions(make_resources(str(corpus_path), lance, cache_dir))
    # The same deployment with a retention window of 0 days: its GC drops every retained row.
    monkeypatch.setenv("RETAINED_VECTOR_DAYS", "0")
    no_window = build_definitions(make_resources(str(corpus_path), lance, cache_dir))
    with instance_for_test() as instance:
        run_pipeline(defs, instance, say=lambda _: None)
        yield defs, no_window, instance, corpus_path, LanceStore(lance)


class Source:
    """Edits the JSONL source and runs what corpus_change_sensor asks for, summing the embedding runs."""

    def __init__(self, defs, instance, corpus_path):
        self.defs, self.instance, self.corpus_path = defs, instance, corpus_path
        self.cursor, _ = apply_source_changes(defs, instance)

    def write(self, records: list[dict]) -> dict:
        write_jsonl(self.corpus_path, records)
        self.cursor, runs = apply_source_changes(self.defs, self.instance, self.cursor)
        embedded = [m.metadata for m in runs if m.asset == "embeddings"]
        assert embedded, "the change ran no embedding"
        return {
            key: sum(m[key] for m in embedded) for key in ("model_calls", "rows_retained", "restored_from_retained")
        }


def _rows(store, doc_id: str) -> list[dict]:
    table = store.open_embeddings_table(DEFAULT_VERSION)
    return sorted(scan(table, f"doc_id = '{doc_id}'").to_pylist(), key=lambda row: row["chunk"])


def _retained(store) -> list[dict]:
    return scan(open_retained_table(store, DEFAULT_VERSION), None).to_pylist()


def _same_vectors(rows: list[dict], before: list[dict]) -> bool:
    return [row["id"] for row in rows] == [row["id"] for row in before] and all(
        np.array_equal(row["vector"], old["vector"]) for row, old in zip(rows, before)
    )


def _gc(defs, instance) -> dict:
    result = defs.resolve_job_def("retained_gc_job").execute_in_process(instance=instance)
    output = next(event for event in result.all_events if event.is_successful_output)
    return {key: value.value for key, value in output.event_specific_data.metadata.items()}


def test_deleted_and_reverted_content_returns_free_until_the_gc_drops_it(graph, sample_records, minilm_encoder):
    defs, no_window, instance, corpus_path, store = graph
    source = Source(defs, instance, corpus_path)
    victim = lone_document(store, sample_records)
    before = _rows(store, victim["id"])
    without = [r for r in sample_records if r["id"] != victim["id"]]

    deleted = source.write(without)
    assert deleted == {"model_calls": 0, "rows_retained": len(before), "restored_from_retained": 0}
    assert _rows(store, victim["id"]) == [] and len(_retained(store)) == len(before)
    # Readers never see retained rows: the checks count the version's table, and once the live alias
    # pins the table version without the document, search (which reads that pin) no longer finds it.
    index = defs.resolve_job_def("index_job").execute_in_process(partition_key=DEFAULT_VERSION, instance=instance)
    parity = next(e for e in index.get_asset_check_evaluations() if e.check_name == "count_parity_check")
    assert parity.passed
    defs.resolve_job_def("live_index_job").execute_in_process(instance=instance)
    live = current_alias(store)
    hits = search(store, live.model_version, live.table_version, minilm_encoder, victim["text"], k=10)
    assert victim["id"] not in {hit.doc_id for hit in hits}

    assert source.write(sample_records) == {"model_calls": 0, "rows_retained": 0, "restored_from_retained": 1}
    assert _same_vectors(_rows(store, victim["id"]), before)

    edit = [{**r, "text": r["text"] + " Edited."} if r is victim else r for r in sample_records]
    assert source.write(edit)["model_calls"] == 1
    assert source.write(sample_records)["model_calls"] == 0
    assert _same_vectors(_rows(store, victim["id"]), before)

    assert _gc(defs, instance)["rows_dropped"] == 0
    source.write(without)
    collected = _gc(no_window, instance)
    assert collected["rows_dropped"] > 0 and collected["rows_kept"] == 0 and _retained(store) == []
    assert source.write(sample_records)["model_calls"] == 1
