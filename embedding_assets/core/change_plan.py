"""What a change of the source touches: the shards to re-ingest and the shards to re-deduplicate.

A document added, edited, deleted, newly refused or released from quarantine touches its own
shard. Representatives cross shards, so deduplication must also re-run where
- a document held an exact duplicate of a changed or removed content (its `self` may move),
- a document's representative was a changed or removed content (it needs a new one),
- a document's content is a near-duplicate candidate of a new content (found through the same
  LSH bands the dedup stage uses) or equal to it.
Embedding then re-runs on the re-deduplicated shards; unchanged documents cost nothing there.
"""

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

from embedding_assets.core.corpus_sync import classify
from embedding_assets.core.documents import LIVE_DOCUMENTS, doc_ids_by_content
from embedding_assets.core.minhash import MinHasher, band_hashes
from embedding_assets.core.quarantine import quarantined_in_corpus
from embedding_assets.core.sharding import shard_of
from embedding_assets.core.sources import SourceRecord
from embedding_assets.core.store import IN_LIST_SIZE, LanceStore, scan_batches, scan_in


@dataclass
class ChangePlan:
    ingest_shards: list[str] = field(default_factory=list)
    dedup_shards: list[str] = field(default_factory=list)
    added: int = 0
    edited: int = 0
    removed: int = 0
    refused: int = 0
    digest: str = ""

    @property
    def empty(self) -> bool:
        return not self.ingest_shards


def _batches(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _live_contents(store: LanceStore, doc_ids: list[str]) -> dict[str, str]:
    """doc_id -> content_hash of those of `doc_ids` that are live: one bounded lookup per batch of the source."""
    found: dict[str, str] = {}
    for part in scan_in(store.table("documents"), "doc_id", doc_ids, ["doc_id", "content_hash"], LIVE_DOCUMENTS):
        found.update(zip(part.column("doc_id").to_pylist(), part.column("content_hash").to_pylist()))
    return found


def plan_changes(store: LanceStore, records: Iterable[SourceRecord], hasher: MinHasher) -> ChangePlan:
    """The source is compared with the store a batch at a time, and the store's live documents are streamed to find
    what left the source: memory holds the source's doc ids and what changed, not every live document as well."""
    refused_before = quarantined_in_corpus(store)
    plan = ChangePlan()
    seen: set[str] = set()
    refused_now: set[tuple[str, str]] = set()
    refused_ids: set[str] = set()
    source_complete = True
    old_contents: set[str] = set()
    new_contents: set[str] = set()
    # Near duplicates are looked for among texts only (see dedup.py).
    new_texts: dict[str, str] = {}
    ingest: set[str] = set()
    changes = hashlib.sha256()

    for batch in _batches(classify(records), IN_LIST_SIZE):
        live = _live_contents(store, [item.record.doc_id for item in batch if not (item.refusal or item.unchanged)])
        for item in batch:
            doc_id = item.record.doc_id
            if item.unchanged:
                seen.add(doc_id)
                continue
            if item.refusal:
                source_complete &= not item.breaks_source
                refused_now.add((doc_id, item.refusal.reason))
                # As in the corpus stage: a document refused on its own merits leaves; a failed read removes nothing.
                if not item.breaks_source:
                    refused_ids.add(doc_id)
                continue
            seen.add(doc_id)
            if live.get(doc_id) == item.content_hash:
                continue
            plan.edited += doc_id in live
            plan.added += doc_id not in live
            if doc_id in live:
                old_contents.add(live[doc_id])
            new_contents.add(item.content_hash)
            if item.modality == "text":
                new_texts[item.content_hash] = item.normalized
            ingest.add(shard_of(doc_id))
            changes.update(f"{doc_id}\0{item.content_hash}\n".encode())

    for part in scan_batches(store.table("documents"), LIVE_DOCUMENTS, ["doc_id", "content_hash"]):
        for doc_id, content in zip(part.column("doc_id").to_pylist(), part.column("content_hash").to_pylist()):
            if doc_id not in seen and (source_complete or doc_id in refused_ids):
                plan.removed += 1
                old_contents.add(content)
                ingest.add(shard_of(doc_id))
                changes.update(f"{doc_id}\0-\n".encode())
    for doc_id, reason in refused_now ^ refused_before:
        ingest.add(shard_of(doc_id))
        changes.update(f"{doc_id}\0{reason}\n".encode())
    plan.refused = len(refused_now)

    dedup = set(ingest)
    dedup |= {shard_of(doc_id) for doc_id, _ in doc_ids_by_content(store, old_contents | new_contents)}
    for part in scan_in(store.table("signatures"), "representative_hash", old_contents, ["doc_id"]):
        dedup |= {shard_of(doc_id) for doc_id in part.column("doc_id").to_pylist()}
    dedup |= _near_duplicate_shards(store, new_texts, hasher)

    plan.ingest_shards, plan.dedup_shards = sorted(ingest), sorted(dedup)
    plan.digest = changes.hexdigest()
    return plan


def _near_duplicate_shards(store: LanceStore, new_texts: dict[str, str], hasher: MinHasher) -> set[str]:
    """Shards holding a document that shares an LSH band with a new content."""
    if not new_texts:
        return set()
    contents = list(new_texts)
    keys = band_hashes(hasher.signatures([new_texts[c] for c in contents]))
    candidates: set[str] = set()
    for part in scan_in(store.table("lsh_bands"), "band_hash", {int(k) for k in keys.reshape(-1)}, ["content_hash"]):
        candidates.update(part.column("content_hash").to_pylist())
    return {shard_of(doc_id) for doc_id, _ in doc_ids_by_content(store, candidates)}
