"""The `mpnet-base-v1` upgrade, planned and then done: the plan's estimates beside the outcome, and the
version-diff report of the upgrade.

`python -m benchmarks.upgrade_plan --documents 600` builds MiniLM (v1, live) over a stable sample of
the embedded corpus (Python's documentation), registers all-mpnet-base-v2, materializes its
re-embedding plan, runs the backfill shard by shard as the daemon would (one GPU run at a time),
indexes it (the plan-vs-outcome and version-diff checks run there) and writes
benchmarks/upgrade_results.md. Figures are what this machine measured; rerun on the target device.
"""

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

import yaml
from dagster import instance_for_test

from benchmarks.corpora import stdlib_records, write_jsonl
from benchmarks.run import machine
from embedding_assets.cli.pipeline_runner import run_pipeline
from embedding_assets.definitions import build_definitions
from partitions import embedding_partition_key, shard_partitions
from resources.deployments import PROJECT_ROOT, local_resources

RESULTS = Path(__file__).resolve().parent / "upgrade_results.md"
MPNET = {
    "key": "mpnet-base-v1",
    "backend": "sentence-transformers",
    "model_id": "sentence-transformers/all-mpnet-base-v2",
    "source": "split-zip:all-mpnet-base-v2",
    "revision": "1",
    "dim": 768,
    "max_tokens": 384,
    "normalize": True,
    "dtype": "auto",
}


def sample(records: list[dict], size: int) -> list[dict]:
    """`size` documents chosen by the sha1 of their id (the same on every machine), duplicates kept."""
    return sorted(records, key=lambda r: hashlib.sha1(r["id"].encode()).digest())[:size]


def _metadata(result, node: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(node)[-1].metadata.items()}


def run(documents: int, cache_dir: Path, device: str) -> str:
    with tempfile.TemporaryDirectory(prefix="bench-upgrade-") as scratch, instance_for_test() as instance:
        root = Path(scratch)
        registry = root / "models.yaml"
        shutil.copy(PROJECT_ROOT / "models.yaml", registry)
        records = stdlib_records(cache_dir)
        whole = documents >= len(records)
        corpus = write_jsonl(root / "corpus.jsonl", sample(records, documents))
        resources = local_resources(str(corpus), str(root / "lance"), cache_dir, registry, device=device)
        report = run_pipeline(build_definitions(resources), instance, say=lambda _: None)
        assert report.live_version == "minilm-l6-v1", report.live_error
        versions = yaml.safe_load(registry.read_text())["versions"]
        registry.write_text(yaml.safe_dump({"versions": [*versions, MPNET]}, sort_keys=False))
        defs = build_definitions(resources)
        instance.add_dynamic_partitions("model_versions", [MPNET["key"]])

        def execute(job: str, key):
            result = defs.resolve_job_def(job).execute_in_process(partition_key=key, instance=instance)
            assert result.success
            return result

        plan = _metadata(execute("plan_job", MPNET["key"]), "reembedding_plan")
        started = time.perf_counter()
        shards = [
            _metadata(execute("embed_job", embedding_partition_key(MPNET["key"], shard)), "embeddings")
            for shard in shard_partitions.get_partition_keys()
        ]
        backfill_seconds = time.perf_counter() - started
        checks = {e.check_name: e for e in execute("index_job", MPNET["key"]).get_asset_check_evaluations()}
    outcome = checks["reembedding_plan_check"].metadata
    diff = {k: v.value for k, v in checks["version_diff_check"].metadata.items()}
    rows = []
    for name in ("calls", "tokens", "wall_seconds"):
        planned, actual = outcome[f"{name}_planned"].value, outcome[f"{name}_actual"].value
        rows.append(f"| {name} | {planned:,.1f} | {actual:,.1f} | {outcome[f'{name}_error'].value:+.1%} |")
    lines = [
        "# The mpnet-base-v1 upgrade: plan vs outcome, and its version diff",
        "",
        f"Machine: {machine()}, device `{device}`; measured {time.strftime('%Y-%m-%d')} while other jobs shared "
        "the CPU (wall times are this machine's under load, the ratios are what to compare).",
        "",
        f"Corpus: {plan['documents']:,} documents of the embedded corpus"
        + (" (all of it)" if whole else " (a stable sample: sha1 of the id)")
        + ", MiniLM live; upgrade to all-mpnet-base-v2. Backfill: 16 shard runs one after another "
        f"({backfill_seconds:,.1f} s from the first to the last).",
        "",
        "## Plan (materialized before any model call)",
        "",
        "| | |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in plan.items()],
        "",
        "## Plan vs outcome",
        "",
        "| estimate | planned | actual | error |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Model calls of the 16 shard runs: {sum(s['model_calls'] for s in shards):,}; tokens "
        f"{sum(s['tokens'] for s in shards):,}; windows {sum(s['windows_encoded'] for s in shards):,} "
        f"(planned {plan['windows']:,}).",
        "",
        "## Version diff (mpnet-base-v1 against the live minilm-l6-v1)",
        "",
        f"{checks['version_diff_check'].description}",
        "",
        f"- rank shift: {diff['diff_rank_shift']}",
        f"- lost visibility, two examples: {diff['diff_lost_examples']}",
        f"- gained visibility, two examples: {diff['diff_gained_examples']}",
        "",
    ]
    text = "\n".join(lines)
    RESULTS.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.upgrade_plan")
    parser.add_argument("--documents", type=int, default=600)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", default=".data/cache")
    args = parser.parse_args()
    print(run(args.documents, Path(args.cache_dir).resolve(), args.device))
    print(json.dumps({"written": str(RESULTS)}))


if __name__ == "__main__":
    main()
