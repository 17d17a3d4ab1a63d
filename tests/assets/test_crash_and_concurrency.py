"""A run killed with SIGKILL mid-shard, and four shards embedding into one table at once.

Both drive the real `dagster asset materialize` CLI in child processes on a shared instance.
"""

import os
import signal
import time

import numpy as np
import pytest

from embedding_assets.core.index_checks import count_parity
from embedding_assets.core.sharding import shard_of
from embedding_assets.core.store import scan
from partitions import embedding_partition_key, shard_partitions
from tests.assets.child_runs import Deployment
from tests.builders import DEFAULT_VERSION

SHARD = "000"


def _embed(deployment, shard, commit_group=256):
    config = {"ops": {"embeddings": {"config": {"commit_group_contents": commit_group}}}}
    result = deployment.run("embed_job", embedding_partition_key(DEFAULT_VERSION, shard), config)
    return {k: v.value for k, v in result.asset_materializations_for_node("embeddings")[0].metadata.items()}


def _embed_in_child(deployment, shard, commit_group=256):
    config = {"ops": {"embeddings": {"config": {"commit_group_contents": commit_group}}}}
    return deployment.materialize_in_child("embeddings", f"{DEFAULT_VERSION}|{shard}", config)


@pytest.fixture(scope="module")
def one_shard_records(stdlib_table):
    """300 distinct real docstrings under ids that all fall in one shard: one long embedding run."""
    texts = list(dict.fromkeys(r["text"] for r in stdlib_table.to_pylist() if 200 <= len(r["text"]) <= 1500))
    ids = [doc_id for doc_id in (f"crash-{n}" for n in range(20_000)) if shard_of(doc_id) == SHARD]
    return [{"id": doc_id, "text": text} for doc_id, text in zip(ids[:300], texts)]


def test_a_run_killed_mid_shard_resumes_to_the_same_table(
    tmp_path, one_shard_records, cache_dir, minilm_spec, minilm_encoder
):
    reference = Deployment(tmp_path / "reference", one_shard_records, cache_dir)
    reference.ingest([SHARD])
    uninterrupted = _embed(reference, SHARD)

    crashed = Deployment(tmp_path / "crashed", one_shard_records, cache_dir)
    crashed.ingest([SHARD])
    child = _embed_in_child(crashed, SHARD, commit_group=5)
    deadline = time.monotonic() + 300
    committed = 0
    while time.monotonic() < deadline and child.poll() is None:
        if crashed.store.has_table(f"embeddings__{DEFAULT_VERSION}"):
            committed = crashed.store.open_embeddings_table(DEFAULT_VERSION).count_rows()
            if committed:
                os.killpg(child.pid, signal.SIGKILL)
                break
        time.sleep(0.01)
    child.wait()
    assert child.returncode == -signal.SIGKILL, child.stdout.read().decode()[-2000:]
    committed = crashed.store.open_embeddings_table(DEFAULT_VERSION).count_rows()
    assert 0 < committed < uninterrupted["vectors_written"]

    resumed = _embed(crashed, SHARD, commit_group=5)
    # Only what was not committed reaches the model: committed documents are up to date.
    assert resumed["up_to_date"] > 0
    assert resumed["model_calls"] == uninterrupted["model_calls"] - resumed["up_to_date"]
    expected, got = reference.rows(), crashed.rows()
    assert got.keys() == expected.keys()
    for row_id, row in expected.items():
        assert {k: got[row_id][k] for k in ("content_hash", "origin", "origin_hash")} == {
            k: row[k] for k in ("content_hash", "origin", "origin_hash")
        }
        assert np.allclose(got[row_id]["vector"], row["vector"], atol=1e-5)
    assert count_parity(crashed.store, minilm_spec, minilm_encoder.token_spans).passed


def test_four_shards_embedding_at_once_lose_nothing(tmp_path, sample_records, cache_dir, minilm_spec, minilm_encoder):
    deployment = Deployment(tmp_path, sample_records, cache_dir)
    shards = shard_partitions.get_partition_keys()
    deployment.ingest(shards)
    children = [_embed_in_child(deployment, shard, commit_group=3) for shard in shards[:4]]
    outputs = [child.communicate(timeout=600)[0].decode() for child in children]
    assert [child.returncode for child in children] == [0, 0, 0, 0], "\n".join(o[-1500:] for o in outputs)
    for shard in shards[4:]:
        _embed(deployment, shard)
    ids = scan(deployment.store.open_embeddings_table(DEFAULT_VERSION), None, ["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids))
    parity = count_parity(deployment.store, minilm_spec, minilm_encoder.token_spans)
    assert parity.passed, parity.metadata
