"""A throwaway deployment (store, instance, Definitions) for a benchmark to run the real pipeline on."""

import socket
import tempfile
import time
from pathlib import Path

from dagster import DagsterInstance, instance_for_test

from embedding_assets.cli.pipeline_runner import apply_source_changes
from embedding_assets.core.store import LanceStore
from embedding_assets.definitions import build_definitions
from partitions import embedding_partition_key, model_version_partitions
from resources.deployments import PROJECT_ROOT, local_resources

DEFAULT_VERSION = "minilm-l6-v1"
MODELS_YAML = PROJECT_ROOT / "models.yaml"


class BenchDeployment:
    def __init__(self, root: Path, corpus_path: Path, cache_dir: Path, instance: DagsterInstance, registry: Path):
        self.store = LanceStore(str(root / "lance"))
        self.resources = local_resources(str(corpus_path), str(root / "lance"), cache_dir, registry)
        self.defs = build_definitions(self.resources)
        self.instance = instance
        versions = list(self.resources["model_registry"].registry().specs)
        instance.add_dynamic_partitions(model_version_partitions.name, versions)

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
        """The change through corpus_change_sensor and the one run it asks for (index and live pin included)."""
        _, made = apply_source_changes(self.defs, self.instance)
        calls = sum(m.metadata.get("model_calls", 0) for m in made if m.asset == "embeddings")
        live = next((m.metadata for m in made if m.asset == "live_index"), {})
        # Where the run's time went: each phase (op) of apply_change_job.
        run = self.instance.get_runs(limit=1)[0]
        phases = {s.step_key: round(s.end_time - s.start_time, 1) for s in self.instance.get_run_step_stats(run.run_id)}
        return {"model_calls": calls, "materializations": len(made), "live": live, "phases": phases}


def temporary_deployment(corpus_path: Path, cache_dir: Path, registry: Path = MODELS_YAML):
    """(deployment, cleanup): a fresh store and a fresh Dagster instance, with every version of `registry`."""
    scratch = tempfile.TemporaryDirectory(prefix="bench-")
    instance_context = instance_for_test()
    instance = instance_context.__enter__()
    deployment = BenchDeployment(Path(scratch.name), corpus_path, cache_dir, instance, registry)

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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
