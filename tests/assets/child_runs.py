"""A deployment usable in-process and from child processes (the real `dagster asset materialize` CLI on a
shared instance), so that tests can kill a run with SIGKILL at a chosen moment."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from dagster import DagsterInstance

from embedding_assets.core.store import LanceStore, scan
from embedding_assets.definitions import build_definitions
from resources.deployments import PROJECT_ROOT
from tests.builders import DEFAULT_VERSION, make_resources, write_jsonl


class Deployment:
    """A Dagster home, a corpus and a store, usable in-process and from child processes."""

    def __init__(self, root, records, cache_dir):
        """A new deployment in `root`, or the one a copy of another deployment's `root` holds."""
        self.home = root / "dagster_home"
        if not self.home.exists():
            self.home.mkdir(parents=True)
            shutil.copy(PROJECT_ROOT / "dagster.yaml", self.home / "dagster.yaml")
        self.corpus = write_jsonl(root / "corpus.jsonl", records)
        self.lance = root / "lance"
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            "CORPUS_URI": str(self.corpus),
            "EMBEDDINGS_URI": str(self.lance),
            "EMBEDDINGS_DATA_DIR": str(cache_dir.parent),
            "HF_HUB_OFFLINE": "1",
        }
        self.defs = build_definitions(make_resources(str(self.corpus), str(self.lance), cache_dir))
        self.instance = DagsterInstance.from_config(str(self.home))
        self.instance.add_dynamic_partitions("model_versions", [DEFAULT_VERSION])
        self.store = LanceStore(str(self.lance))

    def run(self, job: str, partition_key: str | None = None, config: dict | None = None):
        return self.defs.resolve_job_def(job).execute_in_process(
            partition_key=partition_key, instance=self.instance, run_config=config, raise_on_error=False
        )

    def ingest(self, shards):
        for job in ("corpus_job", "dedup_job"):
            for shard in shards:
                assert self.run(job, shard).success

    def materialize_in_child(self, select: str, partition: str | None = None, config: dict | None = None):
        command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "embedding_assets.definitions",
                   "--select", select]  # fmt: skip
        if partition:
            command += ["--partition", partition]
        if config:
            command += ["--config-json", json.dumps(config)]
        return subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=self.env, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def rows(self, table=None):
        table = table if table is not None else self.store.open_embeddings_table(DEFAULT_VERSION)
        columns = ["id", "content_hash", "origin", "origin_hash", "vector"]
        return {row["id"]: row for row in scan(table, None, columns).to_pylist()}


def kill_when(child: subprocess.Popen, ready: Callable[[], bool], timeout_s: float = 300) -> bool:
    """SIGKILL the child's process group as soon as `ready()`; True if it was killed before finishing."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and child.poll() is None:
        if ready():
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            return True
        time.sleep(0.005)
    child.wait()
    return False
