"""Rows 2 and 3: call economy of a full build, and the cost of a 1 % change after it.

The embedded default corpus, exported to JSONL so that 1 % of its documents can be edited;
the change goes through corpus_change_sensor and the runs it asks for, as in production.
"""

from pathlib import Path

from benchmarks.corpora import stdlib_records, write_jsonl
from benchmarks.deployment import DEFAULT_VERSION, Stopwatch, temporary_deployment
from benchmarks.table import Row, verdict
from embedding_assets.cli.pipeline_runner import run_pipeline
from embedding_assets.core.store import scan


def run(work: Path, cache_dir: Path, change_share: float) -> list[Row]:
    records = stdlib_records(cache_dir)
    corpus = write_jsonl(work / "stdlib.jsonl", records)
    deployment, cleanup = temporary_deployment(corpus, cache_dir)
    try:
        with Stopwatch() as full:
            report = run_pipeline(deployment.defs, deployment.instance, say=lambda _: None)
        full_calls = report.per_version[DEFAULT_VERSION]["model_calls"]
        signatures = scan(deployment.store.table("signatures"), None, ["representative_hash"])
        representatives = len(set(signatures.column("representative_hash").to_pylist()))
        quarantined = report.per_version[DEFAULT_VERSION]["quarantined"]

        step = round(1 / change_share)
        changed = [r["id"] for r in records[::step]]
        edited = [
            {**r, "text": r["text"] + f" (Revised: note {n}.)"} if r["id"] in set(changed) else r
            for n, r in enumerate(records)
        ]
        write_jsonl(corpus, edited)
        with Stopwatch() as incremental:
            change = deployment.apply_source_change()
    finally:
        cleanup()

    documents = report.totals["documents"]
    call_share = change["model_calls"] / full_calls
    wall_share = incremental.seconds / full.seconds
    return [
        Row(
            "2. call economy (full build)",
            f"{full_calls:,} model calls",
            f"{representatives:,} unique representatives ({quarantined} quarantined)",
            full_calls / (representatives - quarantined),
            "calls = representatives",
            verdict(full_calls == representatives - quarantined),
            f"{documents:,} documents: dedup saved {1 - full_calls / documents:.1%} of the calls",
        ),
        Row(
            f"3a. incremental calls ({len(changed)} docs = {change_share:.0%} edited)",
            f"{change['model_calls']:,} calls",
            f"{full_calls:,} calls (full build)",
            call_share,
            "≤ 1 % of full",
            verdict(call_share <= 0.01),
            f"one call per edited document ({len(changed)}); the full build needed {full_calls / documents:.0%} "
            "of a call per document, so 1 % of documents is more than 1 % of its calls",
        ),
        Row(
            "3b. incremental wall",
            f"{incremental.seconds:.1f} s (1 run, {change['materializations']} partitions)",
            f"{full.seconds:.1f} s (full build)",
            wall_share,
            "≤ 5 % of full",
            verdict(wall_share <= 0.05),
            "1 % of documents spread over every shard, applied by one apply_change_job run (index and pin included)",
        ),
    ]
