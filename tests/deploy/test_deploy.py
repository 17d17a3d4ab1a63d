"""The production instance configs, and the whole graph on the real PostgreSQL at 127.0.0.1:5432."""

import importlib
import shutil
import uuid
from pathlib import Path

import psycopg2
import pytest
import yaml
from dagster import AssetCheckKey, AssetKey, DagsterEventType, DagsterInstance, EventRecordsFilter
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config

from embedding_assets.cli.pipeline_runner import run_pipeline
from embedding_assets.definitions import build_definitions
from resources.deployments import PROJECT_ROOT
from tests.builders import DEFAULT_VERSION, make_resources, write_jsonl

DEPLOY = PROJECT_ROOT / "deploy"
CONFIG_DIRS = [DEPLOY, DEPLOY / "ecs", DEPLOY / "k8s"]
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def postgres_url(monkeypatch):
    """An isolated database for this test, dropped afterwards."""
    name = f"embedding_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    monkeypatch.setenv("DAGSTER_PG_URL", url)
    yield url
    admin.cursor().execute(f"DROP DATABASE {name} WITH (FORCE)")
    admin.close()


def _class_config_errors(section: dict) -> list[str]:
    klass = getattr(importlib.import_module(section["module"]), section["class"])
    result = validate_config(klass.config_type(), section.get("config", {}))
    return [error.message for error in result.errors] if not result.success else []


@pytest.mark.parametrize("folder", CONFIG_DIRS, ids=lambda p: p.name)
def test_every_deployment_config_validates_as_a_dagster_instance(folder, monkeypatch):
    for variable in ("DAGSTER_PG_URL", "DAGSTER_ECS_TASK_DEFINITION", "DAGSTER_JOB_IMAGE", "DAGSTER_K8S_NAMESPACE"):
        monkeypatch.setenv(variable, "set-by-the-deployment")
    config, _ = dagster_instance_config(str(folder))
    raw = yaml.safe_load((folder / "dagster.yaml").read_text())
    assert config["storage"]["postgres"]["postgres_url"] == {"env": "DAGSTER_PG_URL"}
    limits = raw["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert {"key": "gpu", "value": "true", "limit": 2} in limits
    assert _class_config_errors(raw["run_coordinator"]) == []
    if "run_launcher" in raw:
        assert _class_config_errors(raw["run_launcher"]) == []
    # Connection strings and secrets come from the environment, never from the file's values.
    assert "://" not in yaml.safe_dump(raw) and "password" not in yaml.safe_dump(raw).lower()


def test_a_broken_launcher_config_is_caught():
    section = yaml.safe_load((DEPLOY / "ecs" / "dagster.yaml").read_text())["run_launcher"]
    section["config"]["run_resources"] = {"cpu": 1024, "gpus": "yes"}
    assert _class_config_errors(section)


def test_the_whole_graph_on_postgres_is_read_back_by_a_fresh_instance(
    postgres_url, tmp_path, sample_records, cache_dir
):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", sample_records[:60])
    defs = build_definitions(make_resources(str(corpus), str(tmp_path / "lance"), cache_dir))
    # The production config in a home of its own, so compute logs land in tmp_path, not in deploy/.
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", home)
    instance = DagsterInstance.from_config(str(home))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        report = run_pipeline(defs, instance, say=lambda _: None)
        assert report.live_version == DEFAULT_VERSION
    finally:
        instance.dispose()

    fresh = DagsterInstance.from_config(str(home))
    try:
        runs = fresh.get_runs()
        # corpus, dedup and embeddings per shard; plan, index and export per version; live_index.
        assert len(runs) == 16 * 3 + 3 + 1 and all(run.is_success for run in runs)
        assert len(fresh.get_materialized_partitions(AssetKey("embeddings"))) == 16
        assert fresh.get_dynamic_partitions("model_versions") == [DEFAULT_VERSION]
        event = fresh.get_latest_materialization_event(AssetKey("embeddings"))
        assert "model_calls" in event.asset_materialization.metadata
        checks = fresh.get_event_records(
            EventRecordsFilter(event_type=DagsterEventType.ASSET_CHECK_EVALUATION), limit=50
        )
        evaluations = {r.event_log_entry.dagster_event.event_specific_data.check_name: r for r in checks}
        assert {"count_parity_check", "eval_recall_check", "vector_sanity_check"} <= evaluations.keys()
        key = AssetCheckKey(AssetKey("lance_index"), "count_parity_check")
        assert fresh.event_log_storage.get_latest_asset_check_execution_by_key([key])[key].status.value == "SUCCEEDED"
    finally:
        fresh.dispose()
    assert Path(tmp_path / "lance").exists()
