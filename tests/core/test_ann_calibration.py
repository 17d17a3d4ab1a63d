"""Readers' probing calibrated per table version: more IVF partitions where the corpus needs them."""

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import HnswSq

from embedding_assets.core.ann_recall import CALIBRATION_MARGIN, MINIMUM_RECALL, calibrate_probes
from embedding_assets.core.index_build import EF, NPROBES, READER_SETTINGS, reader_settings


def _table(tmp_path, vectors: np.ndarray, partitions: int):
    rows = pa.table(
        {
            "id": [f"row-{n}" for n in range(len(vectors))],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]),
        }
    )
    table = lancedb.connect(str(tmp_path)).create_table("vectors", rows)
    table.create_index("vector", config=HnswSq(distance_type="cosine", num_partitions=partitions))
    return table


def test_a_corpus_without_clusters_gets_more_probes_recorded_on_its_table_version(tmp_path):
    # Uniform random directions have no cluster for 3 of 64 partitions to catch.
    vectors = np.random.default_rng(7).normal(size=(12_000, 16)).astype(np.float32)
    table = _table(tmp_path, vectors, partitions=64)
    before = table.version

    calibration = calibrate_probes(table)

    chosen = (calibration.nprobes, calibration.ef)
    # The settings are tried cheapest first, up to the first that reaches the target (or the widest).
    assert list(calibration.tried) == [f"{n}/{ef}" for n, ef in READER_SETTINGS[: READER_SETTINGS.index(chosen) + 1]]
    assert calibration.tried[f"{NPROBES}/{EF}"] < MINIMUM_RECALL + CALIBRATION_MARGIN
    assert chosen != (NPROBES, EF) and calibration.recall > calibration.tried[f"{NPROBES}/{EF}"]
    assert calibration.recall >= MINIMUM_RECALL + CALIBRATION_MARGIN or chosen == READER_SETTINGS[-1]
    # A new table version carries the setting; the version before it keeps the default.
    assert table.version == before + 1 and reader_settings(table) == chosen
    older = lancedb.connect(str(tmp_path)).open_table("vectors")
    older.checkout(before)
    assert reader_settings(older) == (NPROBES, EF)
    # Calibrating the same index again writes nothing.
    version = table.version
    again = calibrate_probes(table)
    assert (again.nprobes, again.ef) == chosen and table.version == version
    # Later writes and compaction keep the setting.
    table.add(pa.table({"id": ["late"], "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors[0]), 16)}))
    table.optimize()
    assert reader_settings(table) == chosen


def test_clustered_vectors_keep_the_default_probes_and_write_no_version(tmp_path):
    rng = np.random.default_rng(11)
    centres = rng.normal(size=(8, 16))
    vectors = (np.repeat(centres, 1_000, axis=0) + 0.01 * rng.normal(size=(8_000, 16))).astype(np.float32)
    table = _table(tmp_path, vectors, partitions=8)
    version = table.version

    calibration = calibrate_probes(table)

    assert (calibration.nprobes, calibration.ef) == (NPROBES, EF) and list(calibration.tried) == [f"{NPROBES}/{EF}"]
    assert calibration.recall >= MINIMUM_RECALL + CALIBRATION_MARGIN
    assert table.version == version and reader_settings(table) == (NPROBES, EF)


def test_exact_distances_over_pages_equal_lancedbs_exact_search(tmp_path):
    from embedding_assets.core.ann_recall import exact_distances
    from embedding_assets.core.index_build import vector_query

    vectors = np.random.default_rng(3).normal(size=(20_000, 16)).astype(np.float32)
    table = _table(tmp_path, vectors, partitions=8)
    queries = list(vectors[:5] + 0.1)

    ours = exact_distances(table, queries, 10)

    for query, found in zip(queries, ours):
        truth = vector_query(table, query, 10).bypass_vector_index().to_arrow().column("_distance").to_pylist()
        assert np.allclose(found, sorted(truth), atol=1e-5)
