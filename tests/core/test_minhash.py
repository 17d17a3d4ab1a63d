import random

import numpy as np
from datasketch import MinHash, MinHashLSH

from embedding_assets.core.minhash import (
    BANDS,
    NUM_PERM,
    ROWS_PER_BAND,
    MinHasher,
    band_hashes,
    datasketch_minhash,
    estimated_jaccard,
    shingle_hash,
    shingles,
)
from embedding_assets.core.text import normalize_text


def test_signatures_equal_datasketch_bit_for_bit_on_real_and_odd_texts(stdlib_table):
    texts = [normalize_text(t) for t in stdlib_table.column("text").to_pylist()[::40]]
    texts += ["", "a", "ab", "abc", "🎉🎉", "Ünïcödé ∑ 日本語テキスト", "x" * 50_000]
    ours = MinHasher().signatures(texts)
    assert ours.dtype == np.uint32 and ours.shape == (len(texts), NUM_PERM)
    for text, signature in zip(texts, ours):
        assert np.array_equal(signature, datasketch_minhash(text).hashvalues)


def test_batches_larger_than_one_step_and_block_match_single_texts():
    rng = random.Random(7)
    texts = ["".join(rng.choice("abcdefgh ") for _ in range(rng.randint(1, 30_000))) for _ in range(120)]
    hasher = MinHasher()
    together = hasher.signatures(texts)
    for text, signature in zip(texts[:10], together[:10]):
        assert np.array_equal(signature, hasher.signatures([text])[0])


def test_shingle_hash_is_32_bit_and_pads_short_shingles():
    assert shingles("ab") == ["ab"] and shingles("abcd") == ["abc", "bcd"]
    assert 0 <= shingle_hash("abc") < 2**32
    assert shingle_hash("ab") == shingle_hash("ab\0")


def test_estimated_jaccard_tracks_true_jaccard():
    base = "the quick brown fox jumps over the lazy dog " * 6
    edited = base.replace("lazy", "sleepy", 1)
    a, b = MinHasher().signatures([base, edited])
    true = len(set(shingles(base)) & set(shingles(edited))) / len(set(shingles(base)) | set(shingles(edited)))
    assert abs(estimated_jaccard(a, b) - true) < 0.1
    assert estimated_jaccard(a, a) == 1.0


def test_signatures_work_inside_datasketch_lsh_and_band_keys_agree():
    texts = [
        "Return a new list containing all items from the iterable in ascending order.",
        "Return a new list containing all items from the iterable in ascending order!",
        "Open file and return a corresponding file object.",
    ]
    signatures = MinHasher().signatures(texts)
    lsh = MinHashLSH(threshold=0.85, num_perm=NUM_PERM, params=(BANDS, ROWS_PER_BAND))
    for name, signature in zip("abc", signatures):
        lsh.insert(name, MinHash(hashvalues=signature, scheme="affine32", hashfunc=shingle_hash))
    assert set(lsh.query(MinHash(hashvalues=signatures[0], scheme="affine32"))) == {"a", "b"}
    keys = band_hashes(signatures)
    assert keys.shape == (3, BANDS) and keys.dtype == np.int64
    assert (keys[0] == keys[1]).any() and not (keys[0] == keys[2]).any()
