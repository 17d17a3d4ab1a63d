"""The one `Definitions` of the project: wiring only.

Resources come from `resources.deployments`, picked by `DAGSTER_DEPLOYMENT` (`local` by default,
`prod` for EnvVar settings); assets, checks, jobs, schedules and sensors from the modules that define them.
"""

import os

from dagster import Definitions

from embedding_assets.checks import index_checks
from embedding_assets.corpus import corpus
from embedding_assets.dedup import dedup_signatures
from embedding_assets.embeddings import embeddings
from embedding_assets.export import parquet_export
from embedding_assets.index import lance_index, live_index
from embedding_assets.jobs import all_jobs, retained_gc_schedule
from embedding_assets.reembedding_plan import reembedding_plan
from gpu_ops.launch import GpuLaunchSettings
from resources.deployments import resources_for_deployment
from sensors.automation import build_automation_sensors
from sensors.corpus_change import corpus_change_sensor
from sensors.hosted_backfill import hosted_backfill_sensor
from sensors.model_registry import model_registry_sensor


def build_definitions(resources: dict) -> Definitions:
    """The project's graph bound to `resources`; tests bind it to temporary folders."""
    return Definitions(
        assets=[corpus, dedup_signatures, reembedding_plan, embeddings, lance_index, live_index, parquet_export],
        asset_checks=index_checks,
        jobs=all_jobs,
        schedules=[retained_gc_schedule],
        sensors=[
            model_registry_sensor,
            corpus_change_sensor,
            hosted_backfill_sensor,
            *build_automation_sensors(GpuLaunchSettings.from_env()),
        ],
        resources=resources,
    )


defs = build_definitions(resources_for_deployment(os.environ.get("DAGSTER_DEPLOYMENT", "local")))
