"""A version stored as float16, built through Dagster beside the same model stored as float32."""

import numpy as np
import pytest
import yaml
from dagster import instance_for_test

from embedding_assets.cli.pipeline_runner import apply_source_changes, run_pipeline
from embedding_assets.core.store import LanceStore, fixed_size_lists, scan
from embedding_assets.core.vector_search import search
from embedding_assets.definitions import build_definitions
from tests.builders import DEFAULT_VERSION, MODELS_YAML, lone_document, make_resources, write_jsonl

HALF = "minilm-l6-f16"
# Documents embedded by both versions: enough for search to have near neighbours, few enough to be quick.
PRECISION_CORPUS = 100


@pytest.fixture(scope="module")
def built(tmp_path_factory, sample_records, cache_dir):
    """The default registry plus the same model stored as float16, built over the sample corpus once (the
    first test only reads it)."""
    tmp_path = tmp_path_factory.mktemp("precision")
    registry = yaml.safe_load(MODELS_YAML.read_text())
    registry["versions"].append({**registry["versions"][0], "key": HALF, "vector_precision": "float16"})
    registry_path = tmp_path / "models.yaml"
    registry_path.write_text(yaml.safe_dump(registry))
    corpus_path = write_jsonl(tmp_path / "corpus.jsonl", sample_records[:PRECISION_CORPUS])
    defs = build_definitions(make_resources(str(corpus_path), str(tmp_path / "lance"), cache_dir, registry_path))
    with instance_for_test() as instance:
        report = run_pipeline(defs, instance, say=lambda _: None)
        yield defs, instance, corpus_path, LanceStore(str(tmp_path / "lance")), report


def _vectors(store, version) -> dict[str, np.ndarray]:
    rows = scan(store.open_embeddings_table(version), None, ["id", "vector"])
    return dict(zip(rows.column("id").to_pylist(), fixed_size_lists(rows.column("vector"))))


def test_a_float16_version_stores_the_float32_vectors_rounded(built):
    _, _, _, store, report = built
    half_table = store.open_embeddings_table(HALF)
    assert str(half_table.schema.field("vector").type.value_type) == "halffloat"
    full, half = _vectors(store, DEFAULT_VERSION), _vectors(store, HALF)
    assert full.keys() == half.keys() and full
    for row_id, vector in full.items():
        assert half[row_id].dtype == np.float16
        assert np.abs(half[row_id].astype(np.float32) - vector).max() < 1e-3
    # Its checks ran on its own table and passed: the norms of rounded unit vectors are still unit.
    half_checks = [check for check in report.checks if check.model_version == HALF]
    assert half_checks and all(check.passed for check in half_checks), half_checks


def test_a_float16_version_searches_like_float32_and_restores_retained_vectors(built, sample_records, minilm_encoder):
    defs, instance, corpus_path, store, _ = built
    records = sample_records[:PRECISION_CORPUS]
    for query in ("read a file line by line", "parse command line arguments", "a thread pool"):
        hits = {
            version: [hit.doc_id for hit in search(store, version, None, minilm_encoder, query, k=5)]
            for version in (DEFAULT_VERSION, HALF)
        }
        assert hits[HALF] == hits[DEFAULT_VERSION]
    # A deleted document's float16 rows are retained, and its return is served from them: no model call.
    victim = lone_document(store, records, HALF)
    cursor, _ = apply_source_changes(defs, instance)
    write_jsonl(corpus_path, [record for record in records if record is not victim])
    cursor, _ = apply_source_changes(defs, instance, cursor)
    write_jsonl(corpus_path, records)
    _, runs = apply_source_changes(defs, instance, cursor)
    half_runs = [m.metadata for m in runs if m.asset == "embeddings" and m.partition.startswith(HALF)]
    assert half_runs and sum(m["model_calls"] for m in half_runs) == 0
    assert sum(m["restored_from_retained"] for m in half_runs) > 0
