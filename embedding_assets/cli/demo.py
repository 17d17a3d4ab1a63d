"""`make demo`: build everything for every registered model version, then say what was built."""

import argparse
import os

from dagster import DagsterInstance

from embedding_assets.cli.pipeline_runner import PipelineReport, run_pipeline
from embedding_assets.cli.search import format_hits, search_live

SAMPLE_QUERY = "How do I parse a JSON string into a Python object?"
# On the image corpus, a caption. The offline CLIP has random weights and never serves: MiniLM, which
# reads the captions, is what goes live there.
SAMPLE_QUERIES = {"skimage": "Chelsea the cat."}


def summary(report: PipelineReport) -> str:
    lines = [
        "",
        "=== What was built ===",
        f"documents            {report.totals['documents']:,}",
        f"exact duplicates     {report.totals['exact_duplicates']:,}",
        f"near duplicates      {report.totals['near_duplicates']:,}",
        f"quarantined (corpus) {report.totals['corpus_quarantined']:,}",
    ]
    for version, counter in report.per_version.items():
        calls = counter["model_calls"]
        lines += [
            f"[{version}]",
            f"  model calls        {calls:,}" + ("  (everything was already embedded)" if calls == 0 else ""),
            f"  vectors written    {counter['vectors_written']:,}  (table rows {counter['rows']:,})",
            f"  reused             exact {counter['reused_exact_dup']:,}, near {counter['reused_near_dup']:,}, "
            f"cache {counter['reused_cache']:,}",
            f"  quarantined        {counter['quarantined']:,}",
            f"  skipped (modality) {counter['skipped_modality']:,}",
            f"  exported           {counter['exported_rows']:,} rows as Parquet (parquet_export)",
        ]
        for check in (c for c in report.checks if c.model_version == version):
            lines.append(f"  check {check.name:<28} {check.verdict}  {check.description}")
    lines.append(f"live index           {report.live_version or 'not switched: ' + str(report.live_error)}")
    for error in report.registry_errors:
        lines.append(f"registry error       {error}")
    lines.append(f"wall time            {report.seconds:.1f}s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--allow-mass-delete",
        action="store_true",
        help="let the corpus mark more documents deleted than MASS_DELETE_MAX_SHARE / MASS_DELETE_FLOOR allow "
        "(for a source that really lost many documents; `make demo ALLOW_MASS_DELETE=1`)",
    )
    arguments = parser.parse_args(argv)
    from embedding_assets.definitions import defs

    instance = DagsterInstance.get()
    report = run_pipeline(defs, instance, allow_mass_delete=arguments.allow_mass_delete)
    print(summary(report))
    if report.live_version:
        query = SAMPLE_QUERIES.get(defs.resources["corpus_source"].uri, SAMPLE_QUERY)
        version, hits = search_live(defs, query)
        print(f"\nTop 5 for {query!r} on live ({version}):\n{format_hits(hits)}")
    print(
        f"\nDagster instance: {os.environ.get('DAGSTER_HOME')}\n"
        "Open the UI with `make ui` (http://127.0.0.1:3000): runs, materializations, partitions and check results.\n"
        'Search with `make search q="your question"`.'
    )
    # A candidate that fails its checks is reported and stays off; what serves must be sound.
    if report.live_error or any(c.verdict == "FAIL" and c.model_version == report.live_version for c in report.checks):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
