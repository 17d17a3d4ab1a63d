"""The inbox laid over the source: which write wins, and what a run marks applied."""

from datetime import datetime, timedelta, timezone

from embedding_assets.core.freshness import freshness_since, record_freshness
from embedding_assets.core.inbox import (
    DELETE,
    UPSERT,
    InboxWrite,
    append_rows,
    compact_inbox,
    inbox_rows,
    mark_applied,
    new_change_id,
    read_inbox,
    with_inbox,
)
from embedding_assets.core.sources import SourceDocument, SourceRejection

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def _write(store, *writes: InboxWrite, at: datetime = NOW) -> str:
    change_id = new_change_id()
    append_rows(store, inbox_rows(change_id, list(writes), at))
    return change_id


def test_the_inbox_wins_over_the_source_for_the_ids_it_names(store):
    source = [
        SourceDocument("kept", "from the source", None, "corpus.jsonl"),
        SourceDocument("overwritten", "old text", None, "corpus.jsonl"),
        SourceDocument("deleted", "gone soon", None, "corpus.jsonl"),
        SourceRejection("line 9", "missing_id", "the record has no id", "corpus.jsonl:9", whole_source=True),
    ]
    _write(store, InboxWrite("overwritten", UPSERT, "first"), InboxWrite("deleted", DELETE))
    later = _write(
        store,
        InboxWrite("overwritten", UPSERT, "newest", "title"),
        InboxWrite("new", UPSERT, "x"),
        at=NOW + timedelta(1),
    )

    records = list(with_inbox(source, read_inbox(store), None))

    by_id = {record.doc_id: record for record in records}
    assert set(by_id) == {"kept", "overwritten", "new", "line 9"}
    assert by_id["overwritten"].text == "newest" and by_id["overwritten"].source_uri == f"inbox:{later}"
    # A read that is not provably whole stays so: the inbox cannot make it whole.
    assert by_id["line 9"].whole_source


def test_a_run_marks_applied_only_what_the_version_it_read_held(store):
    _write(store, InboxWrite("a", UPSERT, "one"))
    planned = read_inbox(store)
    _write(store, InboxWrite("b", UPSERT, "two"), at=NOW + timedelta(seconds=1))

    # The run reads the version planned from; the second write landed meanwhile and waits.
    seen = read_inbox(store, planned.version)
    assert set(seen.named) == {"a"}
    assert mark_applied(store, seen.pending, "run-1", NOW) == 1
    # Marked twice (a rerun of the same change), still one row marked, by the run that marked it last.
    mark_applied(store, seen.pending, "run-2", NOW)
    latest = read_inbox(store)
    assert [entry["doc_id"] for entry in latest.pending] == ["b"]
    assert latest.named["a"]["applied_by"] == "run-2"
    assert store.table("inbox").count_rows() == 2


def test_freshness_rows_count_from_each_write_and_are_read_once(store):
    _write(store, InboxWrite("a", UPSERT, "one"))
    mark_applied(store, read_inbox(store).pending, "run-1", NOW)
    searchable = NOW + timedelta(seconds=12)

    rows = record_freshness(store, "run-1", (NOW - timedelta(seconds=30)).timestamp(), 7, searchable)

    assert sorted((row["origin"], row["seconds"]) for row in rows) == [("edit", 42.0), ("upsert", 12.0)]
    assert len(freshness_since(store, NOW)) == 2
    assert freshness_since(store, searchable) == []


def test_compaction_merges_the_fragments_writes_leave_and_keeps_planned_versions_readable(store):
    for n in range(20):
        _write(store, InboxWrite(f"doc-{n}", UPSERT, "text"), at=NOW + timedelta(seconds=n))
    planned = read_inbox(store)
    mark_applied(store, planned.pending[:5], "run-1", NOW)

    compact_inbox(store)

    assert store.table("inbox").stats()["fragment_stats"]["num_fragments"] < 5
    assert len(read_inbox(store).pending) == 15
    assert len(read_inbox(store, planned.version).pending) == 20
