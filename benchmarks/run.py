"""`make bench`: every benchmark row, printed as one Markdown table and written to benchmarks/results.md.

Each timing is a ratio against a baseline measured in the same run on the same data; sizes are
flags so a bigger machine can run bigger ones.
"""

import argparse
import os
import platform
import tempfile
from datetime import date
from pathlib import Path

import lancedb
import torch

from benchmarks import (
    freshness,
    gpu,
    incremental,
    lancedb_index,
    memory,
    minhash_lsh,
    pipeline_overhead,
    production_serving,
    runtimes,
    scale,
    serving,
    vector_storage,
)
from benchmarks.table import markdown

RESULTS = Path(__file__).resolve().parent / "results.md"
ALL_ROWS = "1,2,3,4,5,6,7,8,9,10,11,12,12e,13"


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    accelerator = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores ({model}), {accelerator}; torch {torch.__version__}, lancedb {lancedb.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run")
    parser.add_argument("--rows", default=ALL_ROWS, help="which rows to run")
    parser.add_argument("--documents", type=int, default=2000, help="rows 1, 7 and 12: distinct documents")
    parser.add_argument("--change-share", type=float, default=0.01, help="row 3: share of documents edited")
    parser.add_argument("--change-documents", type=int, default=20_000, help="rows 2-3: corpus size (varied)")
    parser.add_argument("--lsh-documents", type=int, default=100_000, help="row 4: synthetic corpus size")
    parser.add_argument("--lance-rows", type=int, default=1_000_000, help="row 5: vectors")
    parser.add_argument("--memory-documents", type=int, default=400, help="row 6: the smaller size (the other is 10×)")
    parser.add_argument("--serve-documents", type=int, default=1000, help="row 8: documents in the served index")
    parser.add_argument("--serve-seconds", type=float, default=30, help="row 8: load per scenario")
    parser.add_argument("--serve-clients", type=int, default=8, help="row 8: concurrent HTTP clients")
    parser.add_argument(
        "--serve-registry", type=Path, default=serving.MODELS_YAML, help="row 8: its first version is served"
    )
    parser.add_argument("--production-seconds", type=float, default=20, help="row 9: load per scenario")
    parser.add_argument("--fresh-documents", type=int, default=0, help="row 10: documents watched (0: all embedded)")
    parser.add_argument("--fresh-edits", type=int, default=20, help="row 10: edits timed")
    parser.add_argument("--fresh-upserts", type=int, default=20, help="row 10: upserts through the API timed")
    parser.add_argument("--storage-rows", type=int, default=200_000, help="row 11: vectors per variant")
    parser.add_argument("--scale-documents", type=int, default=25_000, help="row 13: the smaller corpus")
    parser.add_argument("--scale-large", type=int, default=250_000, help="row 13: the larger corpus")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", default=".data/cache")
    args = parser.parse_args()
    wanted = set(args.rows.split(","))
    cache = Path(args.cache_dir).resolve()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        work = Path(scratch)
        steps = [
            ("1", lambda: pipeline_overhead.run(work, cache, args.documents, args.device)),
            ("2", lambda: incremental.run(work, cache, args.change_share, args.change_documents)),
            ("4", lambda: minhash_lsh.run(work, cache, args.lsh_documents)),
            ("5", lambda: lancedb_index.run(work, args.lance_rows)),
            ("6", lambda: memory.run(work, cache, args.memory_documents)),
            ("7", lambda: gpu.run(work, cache, args.documents)),
            (
                "8",
                lambda: serving.run(
                    work, cache, args.serve_documents, args.serve_seconds, args.serve_clients, args.serve_registry
                ),
            ),
            ("9", lambda: production_serving.run(work, cache, seconds=args.production_seconds)),
            ("10", lambda: freshness.run(work, cache, args.fresh_documents, args.fresh_edits, args.fresh_upserts)),
            ("11", lambda: vector_storage.run(work, args.storage_rows)),
            ("12", lambda: runtimes.run(work, cache, args.documents)),
            ("12e", lambda: [runtimes.demo_against_raw_torch(work, cache)]),
            ("13", lambda: scale.run(work, cache, args.scale_documents, args.scale_large)),
        ]
        for key, step in steps:
            if key in wanted or (key == "2" and "3" in wanted):
                print(f"running row {key} …", flush=True)
                rows += step()
    table = markdown(rows)
    header = f"Measured {date.today().isoformat()} on {machine()}.\n\n"
    if wanted >= set(ALL_ROWS.split(",")):
        RESULTS.write_text(f"# Benchmarks\n\n{header}{table}\n")
        where = f"written to {RESULTS}"
    else:
        where = f"a partial run: {RESULTS.name} keeps the last full table"
    print(f"\n{header}{table}\n\n({where})")


if __name__ == "__main__":
    main()
