"""Row 6: peak RSS of one shard's embedding at two corpus sizes, 10× apart, each in a fresh process."""

import json
import resource
import subprocess
import sys
from pathlib import Path

from benchmarks.corpora import distinct_texts, one_shard_records, stdlib_records, write_jsonl
from benchmarks.table import Row, verdict


def probe(documents: int, work: Path, cache_dir: Path) -> dict:
    """Runs in the child: build one shard of `documents` docs, embed it, report peak RSS."""
    from benchmarks.deployment import temporary_deployment

    corpus = write_jsonl(
        work / f"memory-{documents}.jsonl", one_shard_records(distinct_texts(stdlib_records(cache_dir), documents))
    )
    deployment, cleanup = temporary_deployment(corpus, cache_dir)
    try:
        deployment.execute("corpus_job", "000")
        deployment.execute("dedup_job", "000")
        metadata = deployment.embed("000")
    finally:
        cleanup()
    return {
        "documents": documents,
        "vectors": metadata["vectors_written"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _measure(documents: int, work: Path, cache_dir: Path) -> dict:
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", str(documents), str(work), str(cache_dir)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(output.strip().splitlines()[-1])


def run(work: Path, cache_dir: Path, small: int) -> list[Row]:
    low, high = _measure(small, work, cache_dir), _measure(small * 10, work, cache_dir)
    ratio = high["peak_rss_mb"] / low["peak_rss_mb"]
    return [
        Row(
            "6. peak RSS of one shard's embedding",
            f"{high['peak_rss_mb']:,.0f} MB at {high['documents']:,} docs",
            f"{low['peak_rss_mb']:,.0f} MB at {low['documents']:,} docs",
            ratio,
            "flat in corpus size",
            verdict(ratio <= 1.25),
            "each size in a fresh process: model, Dagster run and LanceDB writes included",
        )
    ]


if __name__ == "__main__":
    print(json.dumps(probe(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))))
