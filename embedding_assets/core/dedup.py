"""The dedup stage: MinHash signatures, LSH bands stored as rows, and representatives.

A content hash is its own representative ("self") unless it is a near duplicate
(estimated Jaccard >= 0.85) of a smaller content hash that is itself a representative:
a greedy pass in hash order over the near-duplicate graph. The rule depends only on the
live corpus, never on which shard ran first, so any order of runs gives the same answer.
Candidates come from a join on `lsh_bands` over the whole corpus; content that has no
band rows yet (its shard has not been deduplicated) is signed on the fly, so a shard
never misses a neighbour in a shard that has not run.

Near duplicates are a notion of text: images and pairs (whose hash covers the image bytes) get no
signature and no band rows, and are only ever exact duplicates of the same bytes.
"""

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from embedding_assets.core.documents import (
    doc_ids_by_content,
    live_content_modalities,
    live_documents,
    texts_by_content,
)
from embedding_assets.core.minhash import (
    BANDS,
    NEAR_DUPLICATE_JACCARD,
    NUM_PERM,
    MinHasher,
    band_hashes,
    estimated_jaccard,
)
from embedding_assets.core.schemas import CONTENT_MINHASHES_SCHEMA, LSH_BANDS_SCHEMA, SIGNATURES_SCHEMA
from embedding_assets.core.sharding import SHARD_COUNT, shard_keys, shard_of
from embedding_assets.core.store import LanceStore, delete_in, fixed_size_lists, scan, scan_in, sql_literal, upsert

Neighbours = dict[str, list[tuple[str, float]]]
SIGN_BATCH = 2_048
# What decides whether a stored signature row is still right (decided_rows).
SIGNATURE_ROW_COLUMNS = ["doc_id", "content_hash", "representative_hash", "dup_kind", "jaccard"]


@dataclass
class DedupStats:
    documents: int = 0
    contents_signed: int = 0
    contents_banded: int = 0
    self_representatives: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    rows_written: int = 0
    rows_removed: int = 0


def choose_representatives(
    hashes: Iterable[str], neighbours_of: Callable[[set[str]], Neighbours]
) -> dict[str, tuple[str, float]]:
    """content hash -> (representative hash, Jaccard to it), by the greedy rule in hash order."""
    graph: Neighbours = {}
    frontier = set(hashes)
    while frontier:
        found = neighbours_of(frontier)
        for content in frontier:
            graph[content] = found.get(content, [])
        frontier = {
            other for content in frontier for other, _ in graph[content] if other < content and other not in graph
        }
    is_self: dict[str, bool] = {}
    for content in sorted(graph):
        is_self[content] = not any(is_self[other] for other, _ in graph[content] if other < content)
    chosen = {}
    for content in hashes:
        candidates = [(-jaccard, other) for other, jaccard in graph[content] if other < content and is_self[other]]
        if is_self[content]:
            chosen[content] = (content, 1.0)
        else:
            best_negative_jaccard, best = min(candidates)
            chosen[content] = (best, -best_negative_jaccard)
    return chosen


class SignatureIndex:
    """MinHash signatures and LSH band rows of the live corpus, read and completed on demand."""

    def __init__(self, store: LanceStore, hasher: MinHasher):
        self.store = store
        self.hasher = hasher
        self.signatures = store.table("signatures")
        self.bands = store.table("lsh_bands")
        self.content_minhashes = store.table("content_minhashes")
        modalities = live_content_modalities(store)
        self.live_hashes = set(modalities)
        self.text_hashes = {content for content, modality in modalities.items() if modality == "text"}
        self._cache: dict[str, np.ndarray] = {}
        self.signed = 0
        self._bands_complete = False

    def sign(self, texts: dict[str, str], keep: set[str] = frozenset()) -> dict[str, np.ndarray]:
        """Signatures of the given contents; those in `keep` stay cached for this run."""
        ordered = sorted(texts)
        self.signed += len(ordered)
        signatures = dict(zip(ordered, self.hasher.signatures([texts[c] for c in ordered])))
        self._cache.update({c: s for c, s in signatures.items() if c in keep})
        return signatures

    def complete_bands(self, keep: set[str], start_at: float = 0.0) -> int:
        """Write band rows for every live text that has none; returns how many contents this run signed
        for them. Once per index: a run that deduplicates several shards shares one index.

        Band rows are appended, not merged: a merge joins its rows against every band row of the corpus
        (16 per text), which at 250,000 documents took more memory than the rest of the run. Only texts
        with no band row are written, each text's rows in one commit, so a rerun or a killed run adds no
        copy. Runs of several shards at once start `start_at` of the way into the list and, once another
        run has committed since this one began, look again before each batch: they share the work
        instead of each writing it all. Two runs on one batch within that instant may both append it;
        candidates are sets, and `forget` removes every copy."""
        if self._bands_complete:
            return 0
        self._bands_complete = True
        banded = set(scan(self.bands, "band = 0", ["content_hash"]).column("content_hash").to_pylist())
        missing = sorted(self.text_hashes - banded)
        first = int(len(missing) * start_at)
        missing = missing[first:] + missing[:first]
        written_at, shared, signed = self.bands.version, False, 0
        for start in range(0, len(missing), SIGN_BATCH):
            batch = missing[start : start + SIGN_BATCH]
            self.bands.checkout_latest()
            shared = shared or self.bands.version != written_at
            if shared:
                batch = sorted(set(batch) - self._banded(batch))
            self._write_bands(self.sign(texts_by_content(self.store, batch), keep))
            written_at, signed = self.bands.version, signed + len(batch)
        return signed

    def _banded(self, hashes: list[str]) -> set[str]:
        found: set[str] = set()
        for part in scan_in(self.bands, "content_hash", hashes, ["content_hash"], "band = 0"):
            found.update(part.column("content_hash").to_pylist())
        return found

    def _write_bands(self, signatures: dict[str, np.ndarray]) -> None:
        """Band rows, then the MinHash of each content (a banded text is never signed again)."""
        if not signatures:
            return
        contents = list(signatures)
        stacked = np.stack([signatures[c] for c in contents])
        keys = band_hashes(stacked)
        rows = {
            "id": [f"{c}:{band}" for c in contents for band in range(BANDS)],
            "band": [band for _ in contents for band in range(BANDS)],
            "band_hash": keys.reshape(-1).tolist(),
            "content_hash": [c for c in contents for _ in range(BANDS)],
        }
        self.bands.add(pa.table(rows, schema=LSH_BANDS_SCHEMA))
        minhashes = pa.FixedSizeListArray.from_arrays(pa.array(stacked.reshape(-1), pa.uint32()), NUM_PERM)
        upsert(
            self.content_minhashes,
            pa.table([pa.array(contents), minhashes], schema=CONTENT_MINHASHES_SCHEMA),
            on="content_hash",
        )

    def minhashes(self, hashes: set[str]) -> dict[str, np.ndarray]:
        found = {c: self._cache[c] for c in hashes if c in self._cache}
        # Kept with the bands; a store banded before they were kept has them in its signature rows.
        for table in (self.content_minhashes, self.signatures):
            wanted = hashes - found.keys()
            for part in scan_in(table, "content_hash", wanted, ["content_hash", "minhash"]):
                found.update(zip(part.column("content_hash").to_pylist(), fixed_size_lists(part.column("minhash"))))
        unsigned = hashes - found.keys()
        if unsigned:
            found.update(self.sign(texts_by_content(self.store, unsigned)))
        return found

    def forget(self, contents: set[str]) -> None:
        """Drop the band rows and MinHashes of contents that left the corpus."""
        delete_in(self.bands, "content_hash", contents)
        delete_in(self.content_minhashes, "content_hash", contents)

    def band_candidates(self, hashes: set[str]) -> dict[str, set[str]]:
        """Live texts sharing at least one LSH band key with each of `hashes` (live or not, while its
        band rows are kept): the candidates, before any Jaccard is estimated."""
        own = defaultdict(set)
        for part in scan_in(self.bands, "content_hash", hashes, ["band", "band_hash", "content_hash"]):
            for band, key, content in zip(*(part.column(c).to_pylist() for c in ("band", "band_hash", "content_hash"))):
                own[(band, key)].add(content)
        candidates = defaultdict(set)
        for part in scan_in(self.bands, "band_hash", {key for _, key in own}, ["band", "band_hash", "content_hash"]):
            for band, key, other in zip(*(part.column(c).to_pylist() for c in ("band", "band_hash", "content_hash"))):
                for content in own.get((band, key), ()):
                    if other != content and other in self.text_hashes:
                        candidates[content].add(other)
        return candidates

    def neighbours(self, hashes: set[str]) -> Neighbours:
        """Live contents with estimated Jaccard >= the threshold, found through shared band keys."""
        candidates = self.band_candidates(hashes)
        signatures = self.minhashes(set(candidates) | {o for others in candidates.values() for o in others})
        result: Neighbours = defaultdict(list)
        for content, others in candidates.items():
            for other in sorted(others):
                jaccard = estimated_jaccard(signatures[content], signatures[other])
                if jaccard >= NEAR_DUPLICATE_JACCARD:
                    result[content].append((other, jaccard))
        return result

    def first_doc_ids(self, hashes: Iterable[str]) -> dict[str, str]:
        """content hash -> smallest live doc_id holding it, across all shards."""
        return first_doc_ids(doc_ids_by_content(self.store, hashes))


def first_doc_ids(holders: Iterable[tuple[str, str]]) -> dict[str, str]:
    """content hash -> the smallest doc_id among `holders` ((doc_id, content hash) pairs): the `self` of its
    exact duplicates."""
    first: dict[str, str] = {}
    for doc_id, content in holders:
        if content not in first or doc_id < first[content]:
            first[content] = doc_id
    return first


def decided_rows(
    documents: dict[str, str],
    representatives: dict[str, tuple[str, float]],
    first_doc: dict[str, str],
    previous: dict[str, dict],
) -> dict[str, list[dict]]:
    """The signature rows of `documents` (doc_id -> content) under the decided representatives:
    "all" of them, and those "changed" from `previous` (doc_id -> its stored row), the ones to write."""
    rows: dict[str, list[dict]] = {"all": [], "changed": []}
    for doc_id, content in sorted(documents.items()):
        representative, jaccard = representatives[content]
        kind = "near" if representative != content else ("exact" if first_doc[content] != doc_id else "self")
        row = {"doc_id": doc_id, "content_hash": content, "representative_hash": representative, "dup_kind": kind}
        rows["all"].append(row)
        old = previous.get(doc_id)
        if old and all(old[k] == v for k, v in row.items()) and abs(old["jaccard"] - jaccard) < 1e-6:
            continue
        rows["changed"].append({**row, "shard": shard_of(doc_id), "jaccard": jaccard})
    return rows


def write_rows(index: SignatureIndex, rows: list[dict]) -> int:
    """Upsert signature rows (each with its content's MinHash), in bounded batches; returns how many."""
    signatures = index.minhashes({row["content_hash"] for row in rows} & index.text_hashes)
    for start in range(0, len(rows), SIGN_BATCH):
        part = rows[start : start + SIGN_BATCH]
        for row in part:
            row["minhash"] = signatures.get(row["content_hash"])
        upsert(index.signatures, pa.Table.from_pylist(part, schema=SIGNATURES_SCHEMA), on="doc_id")
    return len(rows)


def dedup_shard(store: LanceStore, shard: str, hasher: MinHasher) -> DedupStats:
    """Representatives of all the shard's documents (a change decides only what it can move:
    core/dedup_change.py)."""
    store.ensure_lookup_indexes()
    index = SignatureIndex(store, hasher)
    in_shard = f"shard = {sql_literal(shard)}"
    documents = live_documents(store, shard)
    previous = {row["doc_id"]: row for row in scan(index.signatures, in_shard, SIGNATURE_ROW_COLUMNS).to_pylist()}
    shard_hashes = set(documents.values())
    stats = DedupStats(documents=len(documents))
    # Shards run at once start banding apart (complete_bands).
    stats.contents_banded = index.complete_bands(keep=shard_hashes, start_at=shard_keys().index(shard) / SHARD_COUNT)

    representatives = choose_representatives(shard_hashes, index.neighbours)
    rows = decided_rows(documents, representatives, index.first_doc_ids(shard_hashes), previous)
    for row in rows["all"]:
        stats.near_duplicates += row["dup_kind"] == "near"
        stats.exact_duplicates += row["dup_kind"] == "exact"
        stats.self_representatives += row["dup_kind"] == "self"
    stats.rows_written = write_rows(index, rows["changed"])
    stats.contents_signed = index.signed

    stats.rows_removed = delete_in(index.signatures, "doc_id", previous.keys() - documents.keys(), in_shard)
    dead_contents = {row["content_hash"] for row in previous.values()} - index.live_hashes
    index.forget(dead_contents)
    return stats
