import subprocess
import sys

from dagster import AssetKey

from embedding_assets.definitions import defs
from resources.deployments import PROJECT_ROOT


def test_definitions_load_with_every_asset_check_and_job():
    graph = defs.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == {
        "corpus",
        "dedup_signatures",
        "reembedding_plan",
        "embeddings",
        "lance_index",
        "live_index",
        "parquet_export",
    }
    checks = {key.name for key in graph.asset_check_keys if key.asset_key == AssetKey("lance_index")}
    assert checks == {
        "count_parity_check",
        "single_model_version_check",
        "vector_sanity_check",
        "ann_recall_check",
        "eval_recall_check",
        "vector_fidelity_check",
        "quarantine_check",
        "reembedding_plan_check",
        "version_diff_check",
    }
    jobs = {job.name for job in defs.resolve_all_job_defs()}
    assert jobs >= {
        "corpus_job",
        "dedup_job",
        "plan_job",
        "embed_job",
        "index_job",
        "live_index_job",
        "rollback_job",
        "retention_job",
        "export_job",
        "retained_gc_job",
    }
    assert {(schedule.job_name, schedule.cron_schedule) for schedule in defs.schedules} == {
        ("retained_gc_job", "0 3 * * *")
    }
    sensors = {sensor.name for sensor in defs.sensors}
    assert sensors == {
        "model_registry_sensor",
        "corpus_change_sensor",
        "hosted_backfill_sensor",
        "embedding_backfill_sensor",
        "index_and_promotion_sensor",
    }
    assert set(defs.resources) == {
        "lancedb",
        "corpus_source",
        "model_registry",
        "promotion_policy",
        "export_target",
        "reembedding_budget",
    }


def test_dagster_definitions_validate_passes():
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr
