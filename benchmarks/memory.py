"""Row 6: peak RSS of one shard's embedding at two corpus sizes, 10× apart, each in a fresh process."""

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.corpora import distinct_texts, one_shard_records, stdlib_records, write_jsonl
from benchmarks.table import Row, verdict


def peak_rss_mb() -> float:
    """This process's own high-water mark (ru_maxrss survives exec, so a child would report its parent's)."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def probe(documents: int, stride: int, work: Path, cache_dir: Path) -> dict:
    """Runs in the child: embed one shard of `documents` docs (every `stride`-th text), report peak RSS."""
    from benchmarks.deployment import temporary_deployment

    texts = distinct_texts(stdlib_records(cache_dir), documents * stride)[::stride]
    corpus = write_jsonl(work / f"memory-{documents}.jsonl", one_shard_records(texts))
    deployment, cleanup = temporary_deployment(corpus, cache_dir)
    try:
        deployment.execute("corpus_job", "000")
        deployment.execute("dedup_job", "000")
        before_embedding = peak_rss_mb()
        metadata = deployment.embed("000")
    finally:
        cleanup()
    return {
        "documents": documents,
        "vectors": metadata["vectors_written"],
        "peak_rss_mb": peak_rss_mb(),
        "peak_before_embedding_mb": before_embedding,
    }


def _measure(documents: int, stride: int, work: Path, cache_dir: Path) -> dict:
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", str(documents), str(stride), str(work), str(cache_dir)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(output.strip().splitlines()[-1])


def run(work: Path, cache_dir: Path, small: int) -> list[Row]:
    # The small corpus is every 10th document of the large one: same lengths, a tenth of the count.
    low, high = _measure(small, 10, work, cache_dir), _measure(small * 10, 1, work, cache_dir)
    ratio = high["peak_rss_mb"] / low["peak_rss_mb"]
    return [
        Row(
            "6. peak RSS of one shard's embedding",
            f"{high['peak_rss_mb']:,.0f} MB at {high['documents']:,} docs",
            f"{low['peak_rss_mb']:,.0f} MB at {low['documents']:,} docs",
            ratio,
            "flat in corpus size",
            verdict(ratio <= 1.25),
            f"each size in a fresh process (model, Dagster run, LanceDB writes included); before embedding "
            f"{low['peak_before_embedding_mb']:,.0f} / {high['peak_before_embedding_mb']:,.0f} MB",
        )
    ]


if __name__ == "__main__":
    print(json.dumps(probe(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))))
