"""The whole graph, in-process on a Dagster instance, with the real model on real text."""

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from dagster import AssetKey, DagsterInstance, instance_for_test, materialize

from embedding_assets.cli.pipeline_runner import run_pipeline
from embedding_assets.core.aliases import current_alias
from embedding_assets.core.index_build import READER_SETTINGS
from embedding_assets.core.store import LanceStore, fixed_size_lists, scan
from embedding_assets.core.text import content_hash, normalize_text
from embedding_assets.core.vector_search import search
from embedding_assets.corpus import corpus
from embedding_assets.definitions import build_definitions
from tests.builders import DEFAULT_VERSION, make_resources, near_duplicate_pair, write_jsonl

BLOCKING_CHECKS = {
    "count_parity_check",
    "single_model_version_check",
    "vector_sanity_check",
    "ann_recall_check",
    "eval_recall_check",
}


@dataclass
class BuiltGraph:
    root: Path
    corpus_path: Path
    store: LanceStore
    instance: DagsterInstance
    first: object
    second: object


@pytest.fixture(scope="module")
def built(tmp_path_factory, sample_records, cache_dir):
    root = tmp_path_factory.mktemp("graph")
    corpus_path = write_jsonl(root / "corpus.jsonl", sample_records)
    defs = build_definitions(make_resources(str(corpus_path), str(root / "lance"), cache_dir))
    with instance_for_test() as instance:
        first = run_pipeline(defs, instance, say=lambda _: None)
        second = run_pipeline(defs, instance, say=lambda _: None)
        yield BuiltGraph(root, corpus_path, LanceStore(str(root / "lance")), instance, first, second)


def _table(store):
    return scan(store.open_embeddings_table(DEFAULT_VERSION), None)


def test_every_document_gets_vectors_and_every_check_passes(built, sample_records):
    report = built.first
    counts = report.per_version[DEFAULT_VERSION]
    assert report.totals["documents"] == len(sample_records)
    assert report.totals["exact_duplicates"] >= 1 and report.totals["near_duplicates"] >= 1
    assert counts["model_calls"] > 0
    assert counts["vectors_written"] == counts["rows"] == _table(built.store).num_rows
    informational = {"quarantine_check", "reembedding_plan_check", "version_diff_check", "vector_fidelity_check"}
    assert {check.name for check in report.checks} == BLOCKING_CHECKS | informational
    assert all(check.passed for check in report.checks), report.checks
    assert report.live_version == DEFAULT_VERSION
    assert current_alias(built.store).table == f"embeddings__{DEFAULT_VERSION}"


def test_model_calls_equal_unique_representatives(built):
    signatures = scan(built.store.table("signatures"), None, ["representative_hash"])
    representatives = set(signatures.column("representative_hash").to_pylist())
    assert built.first.per_version[DEFAULT_VERSION]["model_calls"] == len(representatives)


def test_second_materialization_makes_zero_model_calls(built):
    counts = built.second.per_version[DEFAULT_VERSION]
    assert counts["model_calls"] == 0 and counts["vectors_written"] == 0
    assert counts["rows"] == built.first.per_version[DEFAULT_VERSION]["rows"]
    assert all(check.passed for check in built.second.checks)


def test_provenance_says_how_each_vector_was_made(built, sample_records, minilm_encoder):
    rows = {row["id"]: row for row in _table(built.store).to_pylist()}
    texts = {record["id"]: normalize_text(record["text"]) for record in sample_records}
    for row in rows.values():
        assert row["model_version"] == DEFAULT_VERSION and row["dim"] == 384
        assert row["model_id"] == "sentence-transformers/all-MiniLM-L6-v2" and row["generated_at"] is not None
        assert row["content_hash"] == content_hash(texts[row["doc_id"]])

    original, copy = near_duplicate_pair("")
    kinds = {rows[original]["origin"], rows[copy]["origin"]}
    assert "near_dup" in kinds and kinds & {"computed", "cache"}
    duplicate = rows[original] if rows[original]["origin"] == "near_dup" else rows[copy]
    source = rows[copy] if duplicate is rows[original] else rows[original]
    assert duplicate["origin_hash"] == source["content_hash"]
    assert np.array_equal(duplicate["vector"], source["vector"])

    exact = rows["exact-dup:copy"]
    twin = next(r for r in rows.values() if r["content_hash"] == exact["content_hash"] and r["id"] != exact["id"])
    assert {exact["origin"], twin["origin"]} & {"exact_dup"}
    assert np.array_equal(exact["vector"], twin["vector"])

    computed = next(r for r in rows.values() if r["origin"] == "computed" and "#" not in r["id"])
    expected = minilm_encoder.encode_texts([texts[computed["doc_id"]]]).vectors[0]
    assert np.allclose(computed["vector"], expected, atol=1e-5)


def test_long_documents_are_windowed_and_found_once(built, minilm_encoder):
    windows = sorted(r for r in _table(built.store).column("id").to_pylist() if r.startswith("topic:assert"))
    assert len(windows) >= 2 and windows[0] == "topic:assert#0"
    pinned = current_alias(built.store).table_version
    hits = search(
        built.store, DEFAULT_VERSION, pinned, minilm_encoder, "The assert statement inserts debugging assertions", k=5
    )
    assert hits[0].doc_id == "topic:assert"
    assert len({hit.doc_id for hit in hits}) == len(hits)


def test_materializations_and_check_results_are_recorded_on_the_instance(built):
    event = built.instance.get_latest_materialization_event(AssetKey("embeddings"))
    metadata = event.asset_materialization.metadata
    assert {"model_calls", "reused_exact_dup", "reused_near_dup", "tokens", "docs_per_second", "wall_seconds"} <= set(
        metadata
    )
    corpus_event = built.instance.get_latest_materialization_event(AssetKey("corpus"))
    # The latest corpus run's row count is its shard's live documents, as the table holds them.
    shard = corpus_event.asset_materialization.partition
    live = built.store.table("documents").count_rows(f"shard = '{shard}' AND deleted = false")
    assert live > 0 and corpus_event.asset_materialization.metadata["dagster/row_count"].value == live
    partitions = built.instance.get_materialized_partitions(AssetKey("embeddings"))
    assert len(partitions) == 16 and all(key.startswith(f"{DEFAULT_VERSION}|") for key in partitions)


def _tampered_copy(built, tmp_path, cache_dir, tamper, run_config=None):
    """Index a copy of the built table after `tamper` changed it, then try to make it live."""
    lance = tmp_path / "lance"
    shutil.copytree(built.root / "lance", lance)
    store = LanceStore(str(lance))
    store.db.drop_table("aliases")
    tamper(store.open_embeddings_table(DEFAULT_VERSION))
    defs = build_definitions(make_resources(str(built.corpus_path), str(lance), cache_dir))
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("model_versions", [DEFAULT_VERSION])
        result = defs.resolve_job_def("index_job").execute_in_process(
            partition_key=DEFAULT_VERSION, instance=instance, raise_on_error=False, run_config=run_config
        )
        verdicts = {e.check_name: e for e in result.get_asset_check_evaluations()}
        promote = {"ops": {"live_index": {"config": {"model_version": DEFAULT_VERSION}}}}
        live = defs.resolve_job_def("live_index_job").execute_in_process(
            instance=instance, raise_on_error=False, run_config=promote
        )
    return verdicts, live


def test_a_deleted_row_fails_count_parity_and_blocks_promotion(built, tmp_path, cache_dir):
    verdicts, live = _tampered_copy(built, tmp_path, cache_dir, lambda table: table.delete("id = 'exact-dup:copy'"))
    assert not verdicts["count_parity_check"].passed
    assert verdicts["count_parity_check"].metadata["missing_documents"].value == 1
    assert "exact-dup:copy" in verdicts["count_parity_check"].metadata["examples"].value
    assert verdicts["single_model_version_check"].passed and verdicts["vector_sanity_check"].passed
    assert not live.success


def test_a_foreign_version_row_fails_the_single_version_check(built, tmp_path, cache_dir):
    def write_foreign_row(table):
        row = scan(table, "id = 'exact-dup:copy'")
        foreign = row.set_column(row.schema.get_field_index("id"), "id", pa.array(["intruder"]))
        foreign = foreign.set_column(
            foreign.schema.get_field_index("model_version"), "model_version", pa.array(["other-v9"])
        )
        table.add(foreign)

    verdicts, live = _tampered_copy(built, tmp_path, cache_dir, write_foreign_row)
    assert not verdicts["single_model_version_check"].passed
    assert "other-v9" in verdicts["single_model_version_check"].metadata["model_versions"].value
    assert not verdicts["count_parity_check"].passed
    assert not live.success


def test_a_row_under_a_shard_outside_the_corpus_fails_count_parity(built, tmp_path, cache_dir):
    """count_parity compares shard by shard; a row filed under no shard of the corpus is still counted."""

    def write_stray_row(table):
        row = scan(table, "id = 'exact-dup:copy'")
        stray = row.set_column(row.schema.get_field_index("id"), "id", pa.array(["stray"]))
        table.add(stray.set_column(stray.schema.get_field_index("shard"), "shard", pa.array(["999"])))

    verdicts, live = _tampered_copy(built, tmp_path, cache_dir, write_stray_row)
    assert not verdicts["count_parity_check"].passed
    assert verdicts["count_parity_check"].metadata["rows_outside_shards"].value == 1
    assert "1 orphaned" in verdicts["count_parity_check"].description
    assert not live.success


def test_a_vector_off_unit_norm_fails_vector_sanity(built, tmp_path, cache_dir):
    # LanceDB itself refuses NaN on write; a scaled vector is what slips through a buggy encoder.
    def poison(table):
        row = scan(table, "id = 'exact-dup:copy'")
        vector = fixed_size_lists(row.column("vector")) * 3.0
        row = row.set_column(
            row.schema.get_field_index("vector"),
            "vector",
            pa.FixedSizeListArray.from_arrays(pa.array(vector.reshape(-1)), 384),
        )
        table.merge_insert("id").when_matched_update_all().execute(row)

    verdicts, _ = _tampered_copy(built, tmp_path, cache_dir, poison)
    assert not verdicts["vector_sanity_check"].passed
    assert verdicts["vector_sanity_check"].metadata["off_unit_norm"].value == 1
    assert verdicts["vector_sanity_check"].metadata["norm_max"].value == pytest.approx(3.0, rel=1e-3)


def test_ann_recall_is_measured_once_the_table_has_an_ann_index(built, tmp_path, cache_dir):
    config = {"ops": {"lance_index": {"config": {"ann_min_rows": 100}}}}
    verdicts, live = _tampered_copy(built, tmp_path, cache_dir, lambda table: None, config)
    recall = verdicts["ann_recall_check"]
    assert recall.metadata["measured"].value is True
    assert recall.metadata["search_mode"].value == "ANN (IvfHnswSq)"
    assert recall.metadata["queries"].value == 200
    # Readers probe what the build calibrated (core/ann_recall.py), recorded on the table version checked.
    assert (recall.metadata["nprobes"].value, recall.metadata["ef"].value) in READER_SETTINGS
    assert recall.passed == (recall.metadata["recall_at_10"].value >= 0.95)
    assert recall.passed and live.success


def test_corpus_asset_reports_its_counts_through_materialize(tmp_path, cache_dir):
    corpus_path = write_jsonl(
        tmp_path / "c.jsonl",
        [{"id": f"doc-{i}", "text": f"text number {i}"} for i in range(40)] + [{"id": "blank", "text": " "}],
    )
    resources = make_resources(str(corpus_path), str(tmp_path / "lance"), cache_dir)
    with instance_for_test() as instance:
        totals = {"dagster/row_count": 0, "quarantined": 0}
        for shard in [f"{i:03d}" for i in range(16)]:
            result = materialize([corpus], partition_key=shard, resources=resources, instance=instance)
            metadata = result.asset_materializations_for_node("corpus")[0].metadata
            for key in totals:
                totals[key] += metadata[key].value
    assert totals == {"dagster/row_count": 40, "quarantined": 1}


def test_recall_counts_ties_at_the_kth_distance_as_hits():
    from embedding_assets.core.ann_recall import recall_with_ties

    exact = [0.0, 0.0, 0.1, 0.2]
    assert recall_with_ties([0.0, 0.0, 0.1, 0.2], exact) == 1.0
    # Another row at the same distance as the 4th neighbour is just as right.
    assert recall_with_ties([0.0, 0.1, 0.0, 0.2], exact) == 1.0
    assert recall_with_ties([0.0, 0.0, 0.1, 0.35], exact) == 0.75
    assert recall_with_ties([], []) == 1.0
