"""Row 13: the whole pipeline at two corpus sizes 10× apart (25,000 and 250,000 by default), through the real
Dagster jobs with the static model (`models-static.yaml`), stage by stage.

Each run kind (every partition of one job: 16 corpus runs, 16 dedup runs, the plan, 16 embedding runs, the
index with its checks, the live pin, the export, a sensor tick on the unchanged source, then one after 0.1 %
of the documents were edited, with the `apply_change_job` run it asks for) runs on a Dagster instance and a
LanceDB store kept on disk between them, each run in a fresh process, as Dagster's run launcher starts every
run in its own process: a kind's peak RSS is the highest of its runs' own high-water marks (model and Dagster
included). What grows with the corpus shows as a peak RSS ratio above 1 between the two sizes; the goal is at
most 1.2×.
"""

import json
import multiprocessing
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from benchmarks.corpora import first_sentence, scaled_records, stdlib_records, write_jsonl
from benchmarks.memory import peak_rss_mb
from benchmarks.table import Row, verdict
from embedding_assets.core.sharding import SHARD_COUNT
from resources.deployments import PROJECT_ROOT

STATIC_REGISTRY = PROJECT_ROOT / "models-static.yaml"
RUN_KINDS = ("corpus", "dedup", "plan", "embed", "index", "live", "export", "resync", "change")
# Kinds that tick corpus_change_sensor and run what it asks for: on the unchanged source, then after edits.
SENSOR_KINDS = ("resync", "change")
# One document in EDIT_EVERY is edited before the `change` kind (0.1 %).
EDIT_EVERY = 1_000
RSS_GOAL = 1.2
# Kinds run once per shard, each run in its own process; the others are one run.
RUNS_OF_KIND = dict.fromkeys(("corpus", "dedup", "embed"), SHARD_COUNT)


def _numbers(result) -> Counter:
    """Every numeric metadata value the run's materializations reported, summed, as `asset.key`."""
    totals = Counter()
    for event in result.all_events:
        if event.is_step_materialization:
            materialization = event.event_specific_data.materialization
            for key, value in materialization.metadata.items():
                if isinstance(value.value, int | float) and not isinstance(value.value, bool):
                    totals[f"{materialization.asset_key.to_user_string()}.{key}"] += value.value
    return totals


def probe(kind: str, root: Path, corpus: Path, cache_dir: Path, registry: Path, number: int) -> dict:
    """Runs in the child: run `number` of one kind on the kept instance and store; wall time, metadata,
    peak RSS."""
    from dagster import DagsterInstance

    from benchmarks.deployment import BenchDeployment
    from embedding_assets.cli.pipeline_runner import apply_source_changes
    from partitions import embedding_partition_key, shard_partitions

    deployment = BenchDeployment(
        root, corpus, cache_dir, DagsterInstance.local_temp(tempdir=str(root / "dagster")), registry
    )
    version = next(iter(deployment.resources["model_registry"].registry().specs))
    shards = shard_partitions.get_partition_keys()
    partitions = {
        "corpus": [("corpus_job", shard) for shard in shards],
        "dedup": [("dedup_job", shard) for shard in shards],
        "plan": [("plan_job", version)],
        "embed": [("embed_job", embedding_partition_key(version, shard)) for shard in shards],
        "index": [("index_job", version)],
        "live": [("live_index_job", None)],
        "export": [("export_job", version)],
    }
    before = peak_rss_mb()
    totals, seconds, failed, checks, phases = Counter(), [], [], {}, {}
    if kind in SENSOR_KINDS:
        started = time.perf_counter()
        _, made = apply_source_changes(deployment.defs, deployment.instance)
        seconds.append(time.perf_counter() - started)
        totals["materializations"] = len(made)
        totals["embeddings.model_calls"] = sum(
            m.metadata.get("model_calls", 0) for m in made if m.asset == "embeddings"
        )
        if made:
            # Where the change run's time went, op by op (as row 3b reports it).
            run = deployment.instance.get_runs(limit=1)[0]
            phases = {
                step.step_key: round(step.end_time - step.start_time, 1)
                for step in deployment.instance.get_run_step_stats(run.run_id)
            }
    for job, partition in partitions.get(kind, [])[number : number + 1]:
        started = time.perf_counter()
        result = deployment.defs.resolve_job_def(job).execute_in_process(
            partition_key=partition, instance=deployment.instance, raise_on_error=False
        )
        seconds.append(time.perf_counter() - started)
        totals += _numbers(result)
        if not result.success:
            failed.append(partition or job)
        checks |= {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    return {
        "kind": kind,
        "runs": len(seconds),
        "seconds": sum(seconds),
        "slowest_run_s": max(seconds, default=0.0),
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_runs_mb": before,
        "failed": failed,
        "checks": checks,
        "phases": phases,
        "totals": dict(totals),
    }


def edited(records: list[dict]) -> list[dict]:
    """One document in EDIT_EVERY gains a sentence: the first of the document after it (a cross-reference)."""
    return [
        {**r, "text": f"{r['text']}\n\nSee also: {first_sentence(records[(k + 1) % len(records)]['text'])}"}
        if k % EDIT_EVERY == 0
        else r
        for k, r in enumerate(records)
    ]


def table_sizes_mib(lance_dir: Path) -> dict[str, float]:
    return {
        table.name.removesuffix(".lance"): sum(f.stat().st_size for f in table.rglob("*") if f.is_file()) / 2**20
        for table in sorted(lance_dir.glob("*.lance"))
    }


def measure(size: int, total: int, work: Path, cache_dir: Path, registry: Path = STATIC_REGISTRY) -> dict:
    """One size end to end, each run kind in its own process; `total` is the corpus the documents are drawn from."""
    records = scaled_records(stdlib_records(cache_dir), size, total)
    corpus = write_jsonl(work / f"scale-{size}.jsonl", records)
    root = work / f"scale-{size}"
    (root / "dagster").mkdir(parents=True, exist_ok=True)
    kinds = {}
    for kind in RUN_KINDS:
        if kind == "change":
            write_jsonl(corpus, edited(records))
        print(f"  {size:,} documents: {kind} …", flush=True)
        output = subprocess.run(
            [sys.executable, "-m", "benchmarks.scale", kind, str(root), str(corpus), str(cache_dir), str(registry)],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        kinds[kind] = json.loads(output.strip().splitlines()[-1])
        print(f"    {json.dumps(kinds[kind])}", flush=True)
    return {"documents": size, "kinds": kinds, "tables_mib": table_sizes_mib(root / "lance")}


def probe_kind(kind: str, root: Path, corpus: Path, cache_dir: Path, registry: Path) -> dict:
    """Runs in the child: each run of the kind in a process forked from this one once Dagster and the
    pipeline are imported (what a run launcher's fresh process has before its run starts)."""
    import benchmarks.deployment  # noqa: F401  (imported once, before the forks)

    fork = multiprocessing.get_context("fork")
    runs = []
    for number in range(RUNS_OF_KIND.get(kind, 1)):
        # Not a pool: its workers are daemons, and a change run's executor starts processes of its own.
        received, sent = fork.Pipe(duplex=False)
        child = fork.Process(target=lambda: sent.send(probe(kind, root, corpus, cache_dir, registry, number)))
        child.start()
        sent.close()  # so a child that dies ends `recv` (EOFError) instead of leaving it waiting
        runs.append(received.recv())
        child.join()
    return _kind_totals(kind, runs)


def _kind_totals(kind: str, runs: list[dict]) -> dict:
    """A kind's runs, each measured in its own process, as one figure: times and counts summed, the peak the
    highest of the runs'."""
    totals = Counter()
    for run in runs:
        totals.update(run["totals"])
    return {
        "kind": kind,
        "runs": sum(run["runs"] for run in runs),
        "seconds": sum(run["seconds"] for run in runs),
        "slowest_run_s": max(run["slowest_run_s"] for run in runs),
        "peak_rss_mb": max(run["peak_rss_mb"] for run in runs),
        "rss_before_runs_mb": max(run["rss_before_runs_mb"] for run in runs),
        "failed": [partition for run in runs for partition in run["failed"]],
        "checks": {name: passed for run in runs for name, passed in run["checks"].items()},
        "phases": {step: seconds for run in runs for step, seconds in run["phases"].items()},
        "totals": dict(totals),
    }


def _prepare_model(cache_dir: Path, registry: Path) -> None:
    """The static model is distilled once per machine: before any timing, in a process of its own."""
    subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; from gpu_ops.loading import load_encoder; "
         "from gpu_ops.registry import load_registry; "
         "[load_encoder(s, Path(sys.argv[1]), 'cpu') for s in load_registry(Path(sys.argv[2])).specs.values()]",
         str(cache_dir), str(registry)],
        check=True,
    )  # fmt: skip


def _stage_note(kind: dict) -> str:
    totals = kind["totals"]
    interesting = (
        "corpus.dagster/row_count",
        "dedup_signatures.exact_duplicates",
        "dedup_signatures.near_duplicates",
        "reembedding_plan.model_calls",
        "embeddings.model_calls",
        "embeddings.vectors_written",
        "embeddings.quarantined",
        "lance_index.dagster/row_count",
        "parquet_export.dagster/row_count",
        "materializations",
    )
    parts = [
        f"{key.split('.')[-1].removeprefix('dagster/')} {totals[key]:,.0f}" for key in interesting if key in totals
    ]
    if kind["failed"]:
        parts.append(f"failed: {', '.join(kind['failed'])}")
    if kind.get("phases"):
        parts.append("phases " + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in kind["phases"].items()))
    if kind["checks"]:
        parts.append(
            "checks " + ", ".join(f"{n} {'pass' if ok else 'FAIL'}" for n, ok in sorted(kind["checks"].items()))
        )
    return "; ".join(parts) or "—"


def rows(small: dict, large: dict) -> list[Row]:
    result = []
    for name in RUN_KINDS:
        low, high = small["kinds"].get(name), large["kinds"].get(name)
        if low is None or high is None:
            ran = low or high
            size = small["documents"] if low else large["documents"]
            result.append(
                Row(
                    f"13. {name}",
                    "not run" if high is None else f"{high['seconds']:,.1f} s, peak {high['peak_rss_mb']:,.0f} MB",
                    "not run" if low is None else f"{low['seconds']:,.1f} s, peak {low['peak_rss_mb']:,.0f} MB",
                    None,
                    f"peak RSS ≤ {RSS_GOAL}× the smaller run's",
                    "—",
                    f"{size:,}: {_stage_note(ran)}" if ran else "",
                )
            )
            continue
        ratio = high["peak_rss_mb"] / low["peak_rss_mb"]
        result.append(
            Row(
                f"13. {name} ({high['runs']} run{'s' if high['runs'] > 1 else ''})",
                f"{high['seconds']:,.1f} s, peak {high['peak_rss_mb']:,.0f} MB at {large['documents']:,}",
                f"{low['seconds']:,.1f} s, peak {low['peak_rss_mb']:,.0f} MB at {small['documents']:,}",
                ratio,
                f"peak RSS ≤ {RSS_GOAL}× the smaller run's",
                verdict(ratio <= RSS_GOAL),
                f"wall {high['seconds'] / low['seconds']:.1f}× for 10× the documents; before the first run "
                f"{low['rss_before_runs_mb']:,.0f} / {high['rss_before_runs_mb']:,.0f} MB; "
                f"{large['documents']:,}: {_stage_note(high)}; {small['documents']:,}: {_stage_note(low)}",
            )
        )
    sizes = [(small["tables_mib"], small["documents"]), (large["tables_mib"], large["documents"])]
    low_total, high_total = (sum(tables.values()) for tables, _ in sizes)
    result.append(
        Row(
            "13. LanceDB tables on disk",
            f"{high_total:,.0f} MiB at {large['documents']:,}",
            f"{low_total:,.0f} MiB at {small['documents']:,}",
            high_total / low_total,
            "reported",
            "—",
            "; ".join(
                f"{name}: {sizes[1][0].get(name, 0):,.1f} / {sizes[0][0].get(name, 0):,.1f} MiB"
                for name in sorted(set(sizes[0][0]) | set(sizes[1][0]))
            ),
        )
    )
    return result


def run(work: Path, cache_dir: Path, small: int, large: int, registry: Path = STATIC_REGISTRY) -> list[Row]:
    _prepare_model(cache_dir, registry)
    low = measure(small, large, work, cache_dir, registry)
    high = measure(large, large, work, cache_dir, registry)
    (work / "scale.json").write_text(json.dumps({"small": low, "large": high}, indent=1))
    return rows(low, high)


if __name__ == "__main__":
    kind, root, corpus, cache_dir, registry = sys.argv[1:6]
    print(json.dumps(probe_kind(kind, Path(root), Path(corpus), Path(cache_dir), Path(registry))))
