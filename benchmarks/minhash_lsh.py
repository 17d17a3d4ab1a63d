"""Row 4: our batch MinHash vs datasketch, and LSH candidate finding on a synthetic 100k corpus."""

import random
from collections import defaultdict
from pathlib import Path

import numpy as np
from datasketch import MinHash, MinHashLSH

from benchmarks.corpora import distinct_texts, stdlib_records
from benchmarks.deployment import Stopwatch
from benchmarks.table import Row, verdict
from embedding_assets.core.minhash import (
    BANDS,
    NEAR_DUPLICATE_JACCARD,
    NUM_PERM,
    ROWS_PER_BAND,
    MinHasher,
    band_hashes,
    datasketch_minhash,
    shingles,
)


def _signature_rows(texts: list[str]) -> Row:
    hasher = MinHasher()
    with Stopwatch() as ours:
        signatures = hasher.signatures(texts)
    with Stopwatch() as theirs:
        reference = [datasketch_minhash(text).hashvalues for text in texts]
    identical = bool(np.array_equal(np.stack(reference), signatures))
    ratio = theirs.seconds / ours.seconds
    return Row(
        "4a. MinHash signatures/s",
        f"{len(texts) / ours.seconds:,.0f}/s",
        f"{len(texts) / theirs.seconds:,.0f}/s (datasketch update_batch per doc)",
        ratio,
        "≥ 10×, identical",
        verdict(ratio >= 10 and identical),
        f"{len(texts):,} docs of the default corpus; signatures identical to datasketch: {identical}",
    )


def _near_duplicate_corpus(pool: list[str], size: int, rng: random.Random) -> tuple[list[str], list[tuple[int, int]]]:
    """size/2 base documents (three pool texts each) and an edited copy of each (1 to 6 words replaced)."""
    vocabulary = sorted({word for text in pool[:500] for word in text.split()})
    texts, pairs = [], []
    for _ in range(size // 2):
        words = " ".join(rng.sample(pool, 3)).split()
        copy = list(words)
        for position in rng.sample(range(len(copy)), min(len(copy), rng.randint(1, 6))):
            copy[position] = rng.choice(vocabulary)
        pairs.append((len(texts), len(texts) + 1))
        texts += [" ".join(words), " ".join(copy)]
    return texts, pairs


def _jaccard(first: str, second: str) -> float:
    a, b = set(shingles(first)), set(shingles(second))
    return len(a & b) / len(a | b)


def _lsh_row(pool: list[str], size: int) -> Row:
    texts, pairs = _near_duplicate_corpus(pool, size, random.Random(7))
    signatures = MinHasher().signatures(texts)
    with Stopwatch() as ours:
        keys = band_hashes(signatures)
        buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, row in enumerate(keys):
            for band, key in enumerate(row.tolist()):
                buckets[(band, key)].append(index)
        candidates = {(a, b) for members in buckets.values() for a in members for b in members if a < b}
    with Stopwatch() as theirs:
        lsh = MinHashLSH(threshold=NEAR_DUPLICATE_JACCARD, num_perm=NUM_PERM, params=(BANDS, ROWS_PER_BAND))
        minhashes = [MinHash(hashvalues=signature, scheme="affine32") for signature in signatures]
        for index, minhash in enumerate(minhashes):
            lsh.insert(index, minhash)
        for minhash in minhashes:
            lsh.query(minhash)
    sample = pairs[:2000]
    true_pairs = [(a, b) for a, b in sample if _jaccard(texts[a], texts[b]) >= NEAR_DUPLICATE_JACCARD]
    recall = sum((a, b) in candidates for a, b in true_pairs) / max(1, len(true_pairs))
    return Row(
        f"4b. LSH candidates on {size:,} docs",
        f"{ours.seconds:.2f} s, recall {recall:.3f}",
        f"{theirs.seconds:.2f} s (datasketch MinHashLSH insert + query)",
        theirs.seconds / ours.seconds,
        "high recall at J ≥ 0.85",
        verdict(recall >= 0.95),
        f"recall over {len(true_pairs):,} sampled pairs with exact Jaccard ≥ 0.85 "
        f"({BANDS} bands × {ROWS_PER_BAND} rows); {len(candidates):,} candidate pairs in all",
    )


def run(work: Path, cache_dir: Path, lsh_documents: int) -> list[Row]:
    texts = distinct_texts(stdlib_records(cache_dir), 4000)
    return [_signature_rows(texts), _lsh_row(texts, lsh_documents)]
