from collections import Counter
from datetime import datetime, timezone

import pytest

from embedding_assets.core.corpus_sync import (
    MassDeleteGuard,
    MassDeleteRefused,
    shard_passes,
    sync_corpus_shard,
    sync_corpus_shards,
)
from embedding_assets.core.sharding import shard_of
from embedding_assets.core.sources import SourceDocument, SourceRejection
from embedding_assets.core.store import scan

T1 = datetime(2026, 1, 1, tzinfo=timezone.utc)
T2 = datetime(2026, 1, 2, tzinfo=timezone.utc)


def _doc(doc_id, text, title=None):
    return SourceDocument(doc_id, text, title, "test://source")


def _documents(store):
    return {row["doc_id"]: row for row in scan(store.table("documents"), None).to_pylist()}


def test_first_sync_adds_normalized_hashed_documents(store):
    stats = sync_corpus_shard(store, [_doc("a", " Hello \n  world "), _doc("b", "Second", "B")], "000", T1)
    assert (stats.added, stats.changed, stats.unchanged, stats.deleted) == (2, 0, 0, 0)
    rows = _documents(store)
    assert rows["a"]["text"] == "Hello world" and rows["a"]["shard"] == "000"
    assert len(rows["a"]["content_hash"]) == 64 and rows["b"]["title"] == "B"
    assert not rows["a"]["deleted"] and rows["a"]["modality"] == "text"


def test_resync_writes_only_what_changed_and_marks_deletions(store):
    sync_corpus_shard(store, [_doc("a", "one"), _doc("b", "two"), _doc("c", "three")], "000", T1)
    version = store.table("documents").version
    stats = sync_corpus_shard(store, [_doc("a", "one"), _doc("b", "two"), _doc("c", "three")], "000", T2)
    assert (stats.added, stats.changed, stats.unchanged, stats.deleted) == (0, 0, 3, 0)
    assert store.table("documents").version == version

    stats = sync_corpus_shard(store, [_doc("a", "one"), _doc("b", "two, edited"), _doc("d", "four")], "000", T2)
    assert (stats.added, stats.changed, stats.unchanged, stats.deleted) == (1, 1, 1, 1)
    rows = _documents(store)
    assert rows["c"]["deleted"] and rows["c"]["updated_at"] == T2
    assert rows["b"]["text"] == "two, edited" and not rows["b"]["deleted"]

    stats = sync_corpus_shard(
        store, [_doc("a", "one"), _doc("b", "two, edited"), _doc("c", "three"), _doc("d", "four")], "000", T2
    )
    assert stats.changed == 1 and not _documents(store)["c"]["deleted"]


def test_bad_input_is_quarantined_with_a_reason_and_released_when_fixed(store):
    records = [
        _doc("good", "fine text"),
        _doc("empty", ""),
        _doc("blank", "   \n"),
        _doc("nul", "bad\x00text"),
        SourceRejection("broken.txt", "invalid_utf8", "byte 3: invalid start byte", "dir/broken.txt"),
    ]
    stats = sync_corpus_shard(store, records, "000", T1)
    assert stats.live == 1 and stats.quarantined == 4
    assert dict(stats.quarantine_reasons) == {
        "empty_text": 1,
        "whitespace_only": 1,
        "control_characters": 1,
        "invalid_utf8": 1,
    }
    quarantine = {row["doc_id"]: row for row in scan(store.table("quarantine"), None).to_pylist()}
    assert quarantine["nul"]["stage"] == "corpus" and "U+0000" in quarantine["nul"]["detail"]

    stats = sync_corpus_shard(store, [_doc("good", "fine text"), _doc("nul", "fixed text")], "000", T2)
    assert stats.quarantined == 0 and stats.added == 1
    assert scan(store.table("quarantine"), None).num_rows == 0


def test_a_document_that_turns_bad_leaves_the_live_set(store):
    sync_corpus_shard(store, [_doc("a", "fine")], "000", T1)
    sync_corpus_shard(store, [_doc("a", "")], "000", T2)
    assert _documents(store)["a"]["deleted"]


def test_an_unreadable_source_never_deletes(store):
    sync_corpus_shard(store, [_doc("a", "one"), _doc("b", "two")], "000", T1)
    unreadable = SourceRejection(
        "export.parquet", "missing_columns", "lacks column(s) text", "export.parquet", whole_source=True
    )
    stats = sync_corpus_shard(store, [unreadable], "000", T2)
    assert not stats.source_complete and stats.deleted == 0
    assert not any(row["deleted"] for row in _documents(store).values())


def test_a_failed_read_of_a_known_document_keeps_it_live(store):
    sync_corpus_shard(store, [_doc("a", "one"), _doc("b", "two")], "000", T1)
    unreadable = SourceRejection("a", "unreadable_file", "a: Permission denied", "dir/a", whole_source=True)
    stats = sync_corpus_shard(store, [unreadable], "000", T2)
    assert not stats.source_complete and stats.deleted == 0
    assert stats.source_problems == ["unreadable_file: a: Permission denied"]
    assert not any(row["deleted"] for row in _documents(store).values())


def test_a_mass_delete_fails_before_any_tombstone_unless_allowed(store):
    sync_corpus_shard(store, [_doc(f"d{n}", f"text {n}") for n in range(40)], "000", T1)
    kept = [_doc(f"d{n}", f"text {n}") for n in range(30)]
    with pytest.raises(MassDeleteRefused, match=r"would mark 10 of its 40 live documents deleted \(25%\)") as refused:
        sync_corpus_shard(store, kept, "000", T2)
    assert "allow_mass_delete: true" in str(refused.value) and "d30, d31" in str(refused.value)
    assert not any(row["deleted"] for row in _documents(store).values())

    stats = sync_corpus_shard(store, kept, "000", T2, guard=None)
    assert stats.deleted == 10
    assert sorted(doc_id for doc_id, row in _documents(store).items() if row["deleted"]) == sorted(
        f"d{n}" for n in range(30, 40)
    )


def test_the_mass_delete_guard_allows_its_share_and_its_floor(store):
    guard = MassDeleteGuard(max_share=0.10, floor=5)
    assert guard.allows(5, 6) and guard.allows(10, 100) and not guard.allows(11, 100) and not guard.allows(6, 6)
    sync_corpus_shard(store, [_doc(f"d{n}", f"text {n}") for n in range(8)], "000", T1)
    # A small shard may lose up to the floor at once: 5 of 8 is allowed.
    stats = sync_corpus_shard(store, [_doc(f"d{n}", f"text {n}") for n in range(3)], "000", T2, guard)
    assert stats.deleted == 5


def test_a_change_over_many_shards_syncs_them_in_passes_bounded_by_their_documents(store):
    records = [_doc(f"doc-{n}", f"Text number {n}.") for n in range(60)]
    shards = sorted({shard_of(r.doc_id) for r in records})
    first = sync_corpus_shards(store, records, shards[:3], T1)
    # A pass reads the whole source and keeps only its own shards' records.
    assert set(first) == set(shards[:3])
    assert {row["shard"] for row in _documents(store).values()} == set(shards[:3])
    sync_corpus_shards(store, records, shards[3:], T1)
    per_shard = Counter(shard_of(r.doc_id) for r in records)
    assert shard_passes(store, shards) == [shards]
    passes = shard_passes(store, shards, budget=10)
    assert [shard for group in passes for shard in group] == shards and len(passes) > 1
    assert all(sum(per_shard[s] for s in group) <= 10 or len(group) == 1 for group in passes)
