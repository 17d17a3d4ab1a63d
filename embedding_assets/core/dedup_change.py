"""Deduplication of a change: only the documents whose representative can move are decided again.

The greedy rule (core/dedup.py) decides a content from its smaller near-duplicate neighbours, so a
content that appeared or disappeared can move only the contents above it along chains of
neighbours: the upward closure of the changed contents, found through the LSH bands of each
frontier. Those are decided again by the same rule, whose answer depends only on the live corpus,
so the result equals a full re-run's; every other document keeps its row. A 1 % edit costs band
lookups of about 1 % of the corpus instead of a join over all of it.

A run killed halfway is repaired by the next: the rows of unchanged documents are written first and
those of the changed documents last, so until the end the changed documents still differ from
their signature rows and the next run finds the same change.
"""

from collections import defaultdict
from dataclasses import dataclass, field

from embedding_assets.core.dedup import (
    SIGNATURE_ROW_COLUMNS,
    DedupStats,
    SignatureIndex,
    choose_representatives,
    decided_rows,
    first_doc_ids,
    write_rows,
)
from embedding_assets.core.documents import doc_ids_by_content
from embedding_assets.core.store import LanceStore, delete_in, scan, scan_in, sql_in


@dataclass
class DocumentChange:
    """Documents of some shards whose content differs from their signature rows."""

    # doc_id -> content of documents added or edited since their shard was last deduplicated.
    changed: dict[str, str] = field(default_factory=dict)
    # Signature rows whose document is gone: doc_id -> the shard of its row.
    removed: dict[str, str] = field(default_factory=dict)
    # Contents whose set of holding documents changed: the new ones and the old ones.
    contents: set[str] = field(default_factory=set)


def document_change(store: LanceStore, shards: list[str]) -> DocumentChange:
    """The live documents of `shards` against their signature rows: two narrow scans, no join."""
    in_shards = sql_in("shard", shards)
    documents = scan(store.table("documents"), f"{in_shards} AND deleted = false", ["doc_id", "content_hash"])
    live = dict(zip(documents.column("doc_id").to_pylist(), documents.column("content_hash").to_pylist()))
    signed = scan(store.table("signatures"), in_shards, ["doc_id", "content_hash", "shard"]).to_pylist()
    before = {row["doc_id"]: row["content_hash"] for row in signed}
    change = DocumentChange()
    for doc_id, content in live.items():
        if before.get(doc_id) != content:
            change.changed[doc_id] = content
            change.contents.add(content)
            if doc_id in before:
                change.contents.add(before[doc_id])
    change.removed = {row["doc_id"]: row["shard"] for row in signed if row["doc_id"] not in live}
    change.contents |= {before[doc_id] for doc_id in change.removed}
    return change


def upward_closure(index: SignatureIndex, contents: set[str]) -> set[str]:
    """`contents` and every live text above one of them along a chain of near duplicates, each link
    going to a larger hash. A content no longer live is followed through its band candidates (a
    superset of its neighbours: its signature may be gone)."""
    closure, frontier = set(contents), set(contents)
    while frontier:
        live = frontier & index.live_hashes
        above: dict[str, set[str]] = defaultdict(set)
        for content, found in index.neighbours(live).items():
            above[content] |= {other for other, _ in found}
        for content, candidates in index.band_candidates(frontier - live).items():
            above[content] |= candidates
        frontier = {other for content, others in above.items() for other in others if other > content} - closure
        closure |= frontier
    return closure


def dedup_change(store: LanceStore, shards: list[str], index: SignatureIndex) -> dict[str, DedupStats]:
    """Decide again what a change of `shards` can move. Returns, per shard whose rows it wrote or removed,
    its stats (the shard's totals, with the contents signed and banded by the whole change): they may
    name shards beyond `shards`, since a chain of near duplicates crosses shards."""
    change = document_change(store, shards)
    if not change.contents:
        return {}
    signed_before = index.signed
    banded = index.complete_bands(keep=set(change.changed.values()))
    affected = upward_closure(index, change.contents) & index.live_hashes
    holders = dict(doc_ids_by_content(store, affected))
    previous = {
        row["doc_id"]: row
        for part in scan_in(index.signatures, "doc_id", holders, SIGNATURE_ROW_COLUMNS)
        for row in part.to_pylist()
    }
    representatives = choose_representatives(affected, index.neighbours)
    rows = decided_rows(holders, representatives, first_doc_ids(holders.items()), previous)["changed"]
    # Unchanged documents first, the change's own last (see the module's docstring).
    rows.sort(key=lambda row: row["doc_id"] in change.changed)
    stats: dict[str, DedupStats] = defaultdict(DedupStats)
    for row in rows:
        stats[row["shard"]].rows_written += 1
    write_rows(index, rows)
    for shard in change.removed.values():
        stats[shard].rows_removed += 1
    delete_in(index.signatures, "doc_id", change.removed)
    index.forget(change.contents - index.live_hashes)
    totals = scan(index.signatures, sql_in("shard", stats), ["shard", "dup_kind"])
    for shard, kind in zip(totals.column("shard").to_pylist(), totals.column("dup_kind").to_pylist()):
        stats[shard].documents += 1
        stats[shard].self_representatives += kind == "self"
        stats[shard].exact_duplicates += kind == "exact"
        stats[shard].near_duplicates += kind == "near"
    for shard_stats in stats.values():
        shard_stats.contents_signed = index.signed - signed_before
        shard_stats.contents_banded = banded
    return dict(stats)
