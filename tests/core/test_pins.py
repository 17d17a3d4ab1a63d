"""Pinned table versions survive compaction and cleanup, and rollback returns to the exact pin."""

from datetime import datetime, timedelta, timezone

import pyarrow as pa
from lancedb.index import BTree

from embedding_assets.core.aliases import (
    current_alias,
    open_pinned,
    previous_pin,
    protected_table_versions,
    switch_alias,
)
from embedding_assets.core.index_build import DEFAULT_CLEANUP_AGE, MAX_FRAGMENTS, cleanup_horizon, needs_optimize
from embedding_assets.core.schemas import embeddings_schema

DIM = 4


def _write(table, ids: list[str]) -> None:
    rows = [
        {"id": i, "doc_id": i, "chunk": 0, "shard": "000", "content_hash": i, "vector": [1.0, 0.0, 0.0, 0.0],
         "model_id": "m", "model_version": "v", "dim": DIM, "generated_at": datetime.now(timezone.utc),
         "origin": "computed", "origin_hash": i}
        for i in ids
    ]  # fmt: skip
    table.add(pa.Table.from_pylist(rows, schema=embeddings_schema(DIM)))


def test_cleanup_keeps_every_pinned_version_however_old(store):
    table = store.embeddings_table("v", DIM)
    _write(table, ["a", "b"])
    switch_alias(store, "v", table.version, "test", datetime.now(timezone.utc))
    for batch in (["c"], ["d"], ["e"]):
        _write(table, batch)
    pinned = current_alias(store)
    assert protected_table_versions(store, "v") == {pinned.table_version}
    # A month on, cleanup would pass LanceDB's week: the horizon stretches to keep the pin.
    month_later = datetime.now(timezone.utc) + timedelta(days=30)
    horizon = cleanup_horizon(table, {pinned.table_version}, month_later)
    assert horizon > timedelta(days=30) and cleanup_horizon(table, set(), month_later) == DEFAULT_CLEANUP_AGE
    table.optimize(cleanup_older_than=cleanup_horizon(table, {pinned.table_version}, datetime.now(timezone.utc)))
    assert sorted(open_pinned(store, pinned).to_arrow().column("id").to_pylist()) == ["a", "b"]
    assert table.count_rows() == 5


def test_rollback_target_is_the_exact_table_version_that_served(store):
    now = datetime.now(timezone.utc)
    old = store.embeddings_table("old", DIM)
    _write(old, ["a"])
    switch_alias(store, "old", old.version, "test", now)
    _write(old, ["b"])  # written after the switch away: never served
    new = store.embeddings_table("new", DIM)
    _write(new, ["x"])
    switch_alias(store, "new", new.version, "test", now + timedelta(minutes=1))
    target = previous_pin(store)
    assert (target.model_version, target.table_version) == ("old", 2)
    assert open_pinned(store, target).count_rows() == 1
    assert protected_table_versions(store, "old") == {2}


def test_a_change_compacts_and_reindexes_only_once_enough_rows_wait(store):
    table = store.embeddings_table("v", DIM)
    _write(table, [f"doc-{n}" for n in range(200)])
    table.create_index("doc_id", config=BTree())
    assert not needs_optimize(table)
    _write(table, ["late-1", "late-2"])
    # 2 unindexed rows of 202: readers scan them exactly; compacting would rewrite all 202.
    assert not needs_optimize(table)
    _write(table, [f"later-{n}" for n in range(20)])
    assert needs_optimize(table)
    table.optimize()
    assert not needs_optimize(table)
    for n in range(MAX_FRAGMENTS + 1):
        table.delete(f"id = 'doc-{n}'")
        _write(table, [f"doc-{n}"])
    assert needs_optimize(table)
