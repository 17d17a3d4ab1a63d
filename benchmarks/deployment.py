"""A throwaway deployment (store, instance, Definitions) for a benchmark to run the real pipeline on."""

import tempfile
import time
from pathlib import Path

from dagster import DagsterInstance, SkipReason, build_sensor_context, instance_for_test

from embedding_assets.definitions import build_definitions, local_resources
from partitions import embedding_partition_key, model_version_partitions
from resources.lance_store import LanceStore

DEFAULT_VERSION = "minilm-l6-v1"


class BenchDeployment:
    def __init__(self, root: Path, corpus_path: Path, cache_dir: Path, instance: DagsterInstance):
        self.store = LanceStore(str(root / "lance"))
        self.defs = build_definitions(local_resources(str(corpus_path), str(root / "lance"), cache_dir))
        self.instance = instance
        instance.add_dynamic_partitions(model_version_partitions.name, [DEFAULT_VERSION])

    def execute(self, job: str, partition_key=None, tags=None):
        result = self.defs.resolve_job_def(job).execute_in_process(
            partition_key=partition_key, instance=self.instance, tags=tags
        )
        assert result.success, f"{job} {partition_key} failed"
        return result

    def embed(self, shard: str, version: str = DEFAULT_VERSION) -> dict:
        result = self.execute("embed_job", embedding_partition_key(version, shard))
        return {k: v.value for k, v in result.asset_materializations_for_node("embeddings")[0].metadata.items()}

    def apply_source_change(self) -> dict:
        """Tick corpus_change_sensor and run what it asks, as the daemon would, until it settles."""
        cursor, calls, runs = None, 0, 0
        for _ in range(20):
            context = build_sensor_context(
                instance=self.instance, definitions=self.defs, resources=self.defs.resources, cursor=cursor
            )
            result = self.defs.resolve_sensor_def("corpus_change_sensor")(context)
            if isinstance(result, SkipReason):
                break
            cursor = result.cursor
            for request in result.run_requests:
                run = self.execute(request.job_name, request.partition_key, request.tags)
                runs += 1
                if request.job_name == "embed_job":
                    calls += run.asset_materializations_for_node("embeddings")[0].metadata["model_calls"].value
            if not result.run_requests and "batch" not in cursor:
                break
        self.execute("index_job", DEFAULT_VERSION)
        return {"model_calls": calls, "runs": runs}


def temporary_deployment(corpus_path: Path, cache_dir: Path):
    """(deployment, cleanup): a fresh store and a fresh Dagster instance."""
    scratch = tempfile.TemporaryDirectory(prefix="bench-")
    instance_context = instance_for_test()
    instance = instance_context.__enter__()
    deployment = BenchDeployment(Path(scratch.name), corpus_path, cache_dir, instance)

    def cleanup():
        instance_context.__exit__(None, None, None)
        scratch.cleanup()

    return deployment, cleanup


class Stopwatch:
    def __enter__(self):
        self.started = time.perf_counter()
        return self

    def __exit__(self, *_):
        self.seconds = time.perf_counter() - self.started
