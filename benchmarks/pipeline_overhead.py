"""Row 1: docs/s of the `embeddings` materialization vs SentenceTransformer.encode on the same texts.

Near duplicates are removed from the texts first, so both sides embed exactly the same work.
The baseline gets its best batch size; the pipeline run includes everything a run does
(model load, planning, windows, validation, LanceDB writes).
"""

from pathlib import Path

import numpy as np
from sentence_transformers import SentenceTransformer

from benchmarks.corpora import distinct_texts, one_shard_records, stdlib_records, write_jsonl
from benchmarks.deployment import DEFAULT_VERSION, Stopwatch, temporary_deployment
from benchmarks.table import Row, verdict
from embedding_assets.core.minhash import MinHasher, band_hashes
from gpu_ops.registry import load_registry

BATCH_SIZES = (16, 32, 64, 128)


def without_near_duplicates(texts: list[str]) -> list[str]:
    keys = band_hashes(MinHasher().signatures(texts))
    seen: set[tuple[int, int]] = set()
    kept = []
    for text, bands in zip(texts, keys):
        candidates = {(band, int(key)) for band, key in enumerate(bands)}
        if not candidates & seen:
            kept.append(text)
        seen |= candidates
    return kept


def baseline_docs_per_second(model: SentenceTransformer, texts: list[str], normalize: bool) -> tuple[float, int]:
    model.encode(texts[:64], batch_size=32, normalize_embeddings=normalize)
    best = (0.0, 0)
    for batch_size in BATCH_SIZES:
        with Stopwatch() as watch:
            model.encode(texts, batch_size=batch_size, normalize_embeddings=normalize, show_progress_bar=False)
        best = max(best, (len(texts) / watch.seconds, batch_size))
    return best


def run(work: Path, cache_dir: Path, documents: int, device: str) -> list[Row]:
    texts = without_near_duplicates(distinct_texts(stdlib_records(cache_dir), int(documents * 1.1)))[:documents]
    spec = load_registry(Path(__file__).resolve().parents[1] / "models.yaml").spec(DEFAULT_VERSION)
    model = SentenceTransformer(spec.resolved_source(cache_dir), device=device)
    model.max_seq_length = spec.max_tokens
    baseline, batch_size = baseline_docs_per_second(model, texts, spec.normalize)

    corpus = write_jsonl(work / "overhead.jsonl", one_shard_records(texts))
    deployment, cleanup = temporary_deployment(corpus, cache_dir)
    try:
        deployment.execute("corpus_job", "000")
        deployment.execute("dedup_job", "000")
        with Stopwatch() as watch:
            metadata = deployment.embed("000")
    finally:
        cleanup()
    ours = len(texts) / watch.seconds
    assert metadata["model_calls"] == len(texts), metadata
    ratio = ours / baseline
    return [
        Row(
            "1. pipeline overhead (embeddings docs/s)",
            f"{ours:.1f} docs/s",
            f"{baseline:.1f} docs/s (ST encode, best batch {batch_size})",
            ratio,
            "≥ 0.95×, beat 1.0×",
            verdict(ratio >= 0.95),
            f"{len(texts):,} distinct docs, one shard, {device}; ours includes model load and LanceDB writes "
            f"({metadata['batches']} token-budget batches, {np.mean([len(t) for t in texts]):.0f} chars/doc)",
        )
    ]
