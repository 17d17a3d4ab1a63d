"""Rows 2 and 3: call economy of a full build, and the cost of a change after it.

The embedded default corpus grown to `documents` (20,000 by default: see `varied_records`),
exported to JSONL so that it can be edited. Each change goes through corpus_change_sensor and
the one run it asks for (index and live pin included), as in production: 1 % of the documents
edited, then 10 deleted, then 10 added.
"""

from pathlib import Path

from benchmarks.corpora import stdlib_records, varied_records, write_jsonl
from benchmarks.deployment import DEFAULT_VERSION, Stopwatch, temporary_deployment
from benchmarks.table import Row, verdict
from embedding_assets.cli.pipeline_runner import run_pipeline
from embedding_assets.core.store import scan


def run(work: Path, cache_dir: Path, change_share: float, documents: int = 20_000) -> list[Row]:
    records = varied_records(stdlib_records(cache_dir), documents)
    corpus = write_jsonl(work / "varied.jsonl", records)
    deployment, cleanup = temporary_deployment(corpus, cache_dir)
    try:
        with Stopwatch() as full:
            report = run_pipeline(deployment.defs, deployment.instance, say=lambda _: None)
        full_calls = report.per_version[DEFAULT_VERSION]["model_calls"]
        signatures = scan(deployment.store.table("signatures"), None, ["doc_id", "representative_hash"])
        representative_of = dict(zip(*(signatures.column(c).to_pylist() for c in ("doc_id", "representative_hash"))))
        representatives = len(set(representative_of.values()))
        # Representatives the stage refused before any call (too many tokens): their documents and near
        # duplicates share one refusal, so they count once.
        refused = scan(deployment.store.table("quarantine"), "stage = 'embed'", ["doc_id"]).column("doc_id")
        quarantined = len({representative_of[doc_id] for doc_id in refused.to_pylist()})

        step = round(1 / change_share)
        changed = [r["id"] for r in records[::step]]
        edited = [
            {**r, "text": r["text"] + f" (Revised: note {n}.)"} if r["id"] in set(changed) else r
            for n, r in enumerate(records)
        ]
        write_jsonl(corpus, edited)
        with Stopwatch() as incremental:
            change = deployment.apply_source_change()
        # 10 documents deleted, then 10 added (texts of the corpus under new ids: content never embedded
        # under them, so each addition is a lookup, or one call if its text is new to the version).
        removed = {r["id"] for r in edited[1::997][:10]}
        write_jsonl(corpus, [r for r in edited if r["id"] not in removed])
        with Stopwatch() as deletion:
            deletes = deployment.apply_source_change()
        additions = [
            {"id": f"added:{n}", "title": None, "text": f"Added note {n}: " + r["text"]}
            for n, r in enumerate(edited[5::1999][:10])
        ]
        write_jsonl(corpus, [r for r in edited if r["id"] not in removed] + additions)
        with Stopwatch() as addition:
            adds = deployment.apply_source_change()
    finally:
        cleanup()

    documents = report.totals["documents"]
    call_share = change["model_calls"] / full_calls
    wall_share = incremental.seconds / full.seconds
    return [
        Row(
            "2. call economy (full build)",
            f"{full_calls:,} model calls",
            f"{representatives:,} unique representatives ({quarantined} refused: too many tokens)",
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
            f"one apply_change_job run over every shard; pin {change['live'].get('decision')}, "
            f"{change['live'].get('write_to_pin_seconds')} s from the last write to the pin; phases (s): "
            + ", ".join(f"{step} {seconds}" for step, seconds in change["phases"].items()),
        ),
        Row(
            "3c. 10 deletes, then 10 additions",
            f"{deletion.seconds:.1f} s ({deletes['model_calls']} calls); {addition.seconds:.1f} s "
            f"({adds['model_calls']} calls)",
            f"{full.seconds:.1f} s (full build)",
            max(deletion.seconds, addition.seconds) / full.seconds,
            "≤ 5 % of full",
            verdict(max(deletion.seconds, addition.seconds) / full.seconds <= 0.05),
            f"pin advanced: {deletes['live'].get('decision')}, {adds['live'].get('decision')}; "
            "one call per added text, none per delete",
        ),
    ]
