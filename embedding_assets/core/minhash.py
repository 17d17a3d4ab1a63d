"""MinHash signatures and LSH band keys for near-duplicate detection.

Signatures are bit-identical to `datasketch.MinHash(num_perm, seed, hashfunc=shingle_hash)`
fed the character 3-grams of a text (same permutations, same affine32 scheme), so they can
be loaded into datasketch's `MinHash`/`MinHashLSH`; the work is vectorised with numpy over
a whole batch of documents instead of one Python call per shingle.
"""

import numpy as np
from datasketch import MinHash

NUM_PERM = 128
SEED = 1
SHINGLE_SIZE = 3
# 16 bands of 8 rows: a pair at J = 0.85 shares a band with probability 0.994 (datasketch's
# "optimal" 8 x 16 gives 0.46 there). Candidates are confirmed on the full signatures, so a false
# candidate costs one comparison while a missed one costs a model call.
BANDS = 16
ROWS_PER_BAND = 8
NEAR_DUPLICATE_JACCARD = 0.85
# Texts are hashed in steps of about this many characters, and permuted in blocks of this many
# shingles (a 4 MB buffer at 128 permutations: it stays in cache).
_CHARACTERS_PER_STEP = 1_000_000
_SHINGLES_PER_BLOCK = 8_192

_U64_MASK = (1 << 64) - 1
_FMIX64 = (np.uint64(33), np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53))
_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35))


def _fmix64(values: np.ndarray) -> np.ndarray:
    shift, first, second = _FMIX64
    values = values ^ (values >> shift)
    values = values * first
    values = values ^ (values >> shift)
    values = values * second
    return values ^ (values >> shift)


def _fmix32(values: np.ndarray) -> np.ndarray:
    shift1, first, shift2, second = _FMIX32
    values = values ^ (values >> shift1)
    values = values * first
    values = values ^ (values >> shift2)
    values = values * second
    return values ^ (values >> shift1)


def _pack(first, second, third):
    return (first << 42) | (second << 21) | third


def shingles(text: str) -> list[str]:
    """Character 3-grams; a text shorter than that is its own single shingle."""
    if len(text) < SHINGLE_SIZE:
        return [text]
    return [text[i : i + SHINGLE_SIZE] for i in range(len(text) - SHINGLE_SIZE + 1)]


def shingle_hash(shingle: str) -> int:
    """32-bit hash of one shingle: its code points packed into 63 bits, mixed by fmix64.

    The scalar twin of the vectorised hash below, for use as datasketch's `hashfunc`.
    """
    points = [ord(c) for c in shingle] + [0] * (SHINGLE_SIZE - len(shingle))
    value = _pack(*points)
    value ^= value >> 33
    value = (value * 0xFF51AFD7ED558CCD) & _U64_MASK
    value ^= value >> 33
    value = (value * 0xC4CEB9FE1A85EC53) & _U64_MASK
    value ^= value >> 33
    return value & 0xFFFFFFFF


def datasketch_minhash(text: str) -> MinHash:
    """The reference: datasketch's own MinHash of `text`, one shingle at a time."""
    minhash = MinHash(num_perm=NUM_PERM, seed=SEED, hashfunc=shingle_hash)
    minhash.update_batch(shingles(text))
    return minhash


class MinHasher:
    """Batch MinHash with datasketch's permutations.

    The permutation step runs over fixed-size column blocks of one reused buffer: allocating
    a fresh (shingles x permutations) array per batch costs more in page faults than the math.
    """

    def __init__(self, num_perm: int = NUM_PERM, seed: int = SEED):
        slopes, offsets = MinHash(num_perm=num_perm, seed=seed).permutations
        self.slopes = slopes.astype(np.uint32)[:, None]
        self.offsets = offsets.astype(np.uint32)[:, None]
        self._block = np.empty((num_perm, _SHINGLES_PER_BLOCK), dtype=np.uint32)

    def signatures(self, texts: list[str]) -> np.ndarray:
        """(len(texts), num_perm) uint32 signatures."""
        result = np.empty((len(texts), len(self.slopes)), dtype=np.uint32)
        start = 0
        while start < len(texts):
            stop, characters = start + 1, len(texts[start])
            while stop < len(texts) and characters + len(texts[stop]) <= _CHARACTERS_PER_STEP:
                characters += len(texts[stop])
                stop += 1
            result[start:stop] = self._signatures_of_step(texts[start:stop])
            start = stop
        return result

    def _shingle_hashes(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Hashes of every shingle of every text, concatenated, and where each text's run starts."""
        padded = [text if len(text) >= SHINGLE_SIZE else text + "\0" * (SHINGLE_SIZE - len(text)) for text in texts]
        lengths = np.fromiter((len(text) for text in padded), dtype=np.int64, count=len(padded))
        points = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        keys = _pack(points[:-2], points[1:-1], points[2:])
        counts = lengths - (SHINGLE_SIZE - 1)
        text_starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        run_starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        # Shingles that would straddle two texts are skipped: each run begins at its text's start.
        positions = np.repeat(text_starts - run_starts, counts) + np.arange(counts.sum())
        hashes = _fmix32((_fmix64(keys[positions]) & np.uint64(0xFFFFFFFF)).astype(np.uint32))
        return hashes, run_starts

    def _signatures_of_step(self, texts: list[str]) -> np.ndarray:
        hashes, run_starts = self._shingle_hashes(texts)
        minimums = np.full((len(texts), len(self.slopes)), np.iinfo(np.uint32).max, dtype=np.uint32)
        for block_start in range(0, len(hashes), _SHINGLES_PER_BLOCK):
            block_hashes = hashes[block_start : block_start + _SHINGLES_PER_BLOCK]
            block = self._block[:, : len(block_hashes)]
            np.multiply(self.slopes, block_hashes[None, :], out=block)
            np.add(block, self.offsets, out=block)
            # The texts with shingles in this block, and where each one's part of the block begins.
            first = np.searchsorted(run_starts, block_start, side="right") - 1
            last = np.searchsorted(run_starts, block_start + len(block_hashes), side="left")
            texts_in_block = np.arange(first, last)
            cuts = np.maximum(run_starts[texts_in_block] - block_start, 0)
            partial = np.minimum.reduceat(block, cuts, axis=1).T
            minimums[texts_in_block] = np.minimum(minimums[texts_in_block], partial)
        return minimums


def estimated_jaccard(first: np.ndarray, second: np.ndarray) -> float:
    return float(np.count_nonzero(first == second)) / len(first)


def band_hashes(signatures: np.ndarray) -> np.ndarray:
    """(n, BANDS) int64 keys: two documents share a key in some band iff that band's rows are equal."""
    bands = signatures.reshape(len(signatures), BANDS, ROWS_PER_BAND).astype(np.uint64)
    keys = np.full(bands.shape[:2], 0xCBF29CE484222325, dtype=np.uint64)
    for row in range(ROWS_PER_BAND):
        keys = _fmix64(keys ^ bands[:, :, row])
    return keys.view(np.int64)
