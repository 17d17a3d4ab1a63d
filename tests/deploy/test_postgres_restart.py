"""PostgreSQL restarted while a run writes to the Postgres-backed instance.

The instance lives on a private cluster, so the test can take it down mid-run. The run may finish or
fail, but cleanly: its end is recorded, LanceDB holds no half-written rows (every id once), and a rerun
completes, paying the model only for content the first run had not yet committed.
"""

import itertools
import shutil
import threading
from collections import Counter

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from embedding_assets.core.sharding import shard_of
from embedding_assets.core.store import scan
from embedding_assets.definitions import build_definitions
from partitions import embedding_partition_key, model_version_partitions
from resources.deployments import PROJECT_ROOT
from resources.model_registry import ModelRegistryResource
from tests.builders import DEFAULT_VERSION, make_resources, write_jsonl
from tests.private_services import PrivatePostgres

# Small commit groups: several model calls per run, each followed by a progress event in PostgreSQL.
RUN_CONFIG = {"ops": {"embeddings": {"config": {"commit_group_contents": 2}}}}


@pytest.fixture
def postgres():
    cluster = PrivatePostgres()
    cluster.start()
    yield cluster
    cluster.remove()


@pytest.fixture
def instance(postgres, tmp_path, monkeypatch):
    """The production instance config (deploy/dagster.yaml) pointed at the private cluster."""
    monkeypatch.setenv("DAGSTER_PG_URL", postgres.url)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "deploy" / "dagster.yaml", home)
    dagster_instance = DagsterInstance.from_config(str(home))
    yield dagster_instance
    dagster_instance.dispose()


class EncoderWithHook:
    """The real encoder; `on_encode` runs before each of its encode calls."""

    def __init__(self, encoder, on_encode):
        self.encoder = encoder
        self.on_encode = on_encode

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def encode_texts(self, texts, token_counts=None):
        self.on_encode()
        return self.encoder.encode_texts(texts, token_counts)


def _registry_with_hook(registry: ModelRegistryResource, on_encode) -> ModelRegistryResource:
    class RegistryWithHook(ModelRegistryResource):
        def encoder(self, spec):
            return EncoderWithHook(super().encoder(spec), on_encode)

    return RegistryWithHook(**registry.model_dump())


def _computed_hashes(store) -> set[str]:
    rows = scan(store.open_embeddings_table(DEFAULT_VERSION), "origin = 'computed'", ["content_hash"])
    return set(rows.column("content_hash").to_pylist())


def _assert_every_id_once(store) -> None:
    for table, column in ((store.open_embeddings_table(DEFAULT_VERSION), "id"), (store.table("documents"), "doc_id")):
        counts = Counter(scan(table, None, [column]).column(column).to_pylist())
        assert counts and max(counts.values()) == 1, f"{column} written twice: {counts.most_common(3)}"


def test_a_postgres_restart_mid_run_leaves_nothing_half_written_and_a_rerun_pays_only_for_the_rest(
    instance, postgres, tmp_path, sample_records, cache_dir, caplog
):
    records = sample_records[:120]
    shard = Counter(shard_of(record["id"]) for record in records).most_common(1)[0][0]
    resources = make_resources(str(write_jsonl(tmp_path / "corpus.jsonl", records)), str(tmp_path / "lance"), cache_dir)
    defs = build_definitions(resources)
    instance.add_dynamic_partitions(model_version_partitions.name, [DEFAULT_VERSION])
    for job_name in ("corpus_job", "dedup_job"):
        assert defs.resolve_job_def(job_name).execute_in_process(partition_key=shard, instance=instance).success

    # At the second model call PostgreSQL goes down (fast shutdown), and comes back a second later:
    # the run's next events meet a refused connection, then a database starting up.
    calls = itertools.count(1)
    restart = threading.Timer(1.0, postgres.start)

    def restart_postgres_on_the_second_call():
        if next(calls) == 2:
            postgres.stop()
            restart.start()

    faulty = build_definitions(
        {
            **resources,
            "model_registry": _registry_with_hook(resources["model_registry"], restart_postgres_on_the_second_call),
        }
    )
    partition = embedding_partition_key(DEFAULT_VERSION, shard)
    first = faulty.resolve_job_def("embed_job").execute_in_process(
        partition_key=partition, instance=instance, run_config=RUN_CONFIG, raise_on_error=False
    )
    restart.join()
    assert next(calls) > 3, "the run ended before PostgreSQL went down"
    # The run met the outage: dagster-postgres retried its connections (with backoff) until the restart.
    assert any("Retrying failed database connection" in record.getMessage() for record in caplog.records)
    assert postgres.answers()

    # The run's end is on record in the same instance object, which needs no reconnecting.
    assert instance.get_run_by_id(first.run_id).status == (
        DagsterRunStatus.SUCCESS if first.success else DagsterRunStatus.FAILURE
    )
    store = resources["lancedb"].store()
    _assert_every_id_once(store)
    committed = _computed_hashes(store)

    rerun = defs.resolve_job_def("embed_job").execute_in_process(partition_key=partition, instance=instance)
    assert rerun.success
    metadata = rerun.asset_materializations_for_node("embeddings")[-1].metadata
    _assert_every_id_once(store)
    assert metadata["model_calls"].value == len(_computed_hashes(store) - committed)
    if first.success:
        assert metadata["model_calls"].value == 0
    assert instance.get_run_by_id(rerun.run_id).status == DagsterRunStatus.SUCCESS
