"""The inbox: documents written through the serving API (`POST` / `DELETE /v1/documents`), read by the corpus stage
beside the configured source.

It is a LanceDB table beside `documents` (under EMBEDDINGS_URI): it survives a server restart, every run
already reads that database, and no new datastore comes in. Rows are only ever appended, one per write
(a delete too), so a write is durable once its commit returns. A change run reads the inbox at one table
version, the one its sensor planned from, and marks applied only what that version held as pending:
writes that land while it runs wait for the next run instead of being marked applied unseen.

Precedence: the inbox wins. An id the inbox names is what its newest write says (a document, or nothing
after a delete), whatever the source holds under that id; ids the inbox never named come from the source.
"""

import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa

from embedding_assets.core.schemas import INBOX_SCHEMA
from embedding_assets.core.sharding import shard_of
from embedding_assets.core.sources import SourceDocument, SourceRecord, SourceRejection
from embedding_assets.core.store import IN_LIST_SIZE, LanceStore, scan, sql_in, sql_literal

UPSERT = "upsert"
DELETE = "delete"
# The source_uri of a document that came through the inbox, followed by its change id: quarantine rows cite it.
INBOX_SOURCE = "inbox"


@dataclass(frozen=True)
class InboxWrite:
    doc_id: str
    op: str
    text: str = ""
    title: str | None = None
    metadata: dict | None = None


def new_change_id() -> str:
    return f"inbox-{uuid.uuid4().hex[:16]}"


def inbox_rows(change_id: str, writes: list[InboxWrite], received_at: datetime) -> list[dict]:
    """The rows one request appends; entry ids keep the writes' order within it (the later one wins)."""
    return [
        {
            "entry_id": f"{change_id}#{index:06d}",
            "change_id": change_id,
            "doc_id": write.doc_id,
            "shard": shard_of(write.doc_id),
            "op": write.op,
            "title": write.title,
            "text": write.text,
            "metadata": json.dumps(write.metadata) if write.metadata is not None else None,
            "received_at": received_at,
            "applied_by": "",
            "applied_at": None,
        }
        for index, write in enumerate(writes)
    ]


def append_rows(store: LanceStore, rows: list[dict]) -> None:
    """One commit: when it returns, the writes survive any restart."""
    if rows:
        store.table("inbox").add(pa.Table.from_pylist(rows, schema=INBOX_SCHEMA))


def newest(entries: Iterable[dict]) -> dict[str, dict]:
    """doc_id -> its newest write (by arrival, then order within a request)."""
    latest: dict[str, dict] = {}
    for entry in sorted(entries, key=lambda e: (e["received_at"], e["entry_id"])):
        latest[entry["doc_id"]] = entry
    return latest


@dataclass(frozen=True)
class InboxSnapshot:
    """The inbox at one table version (of one shard, or all)."""

    version: int
    named: dict[str, dict] = field(default_factory=dict)
    pending: list[dict] = field(default_factory=list)

    @property
    def pending_shards(self) -> set[str]:
        return {entry["shard"] for entry in self.pending}

    @property
    def oldest_pending(self) -> float | None:
        """When the longest-waiting write arrived (epoch seconds): the start of a change's freshness."""
        return min((entry["received_at"].timestamp() for entry in self.pending), default=None)


def read_inbox(store: LanceStore, version: int | None = None, shard: str | None = None) -> InboxSnapshot:
    """The inbox at `version` (its latest when None), of `shard` (all when None)."""
    table = store.table("inbox")
    if version is not None:
        table.checkout(version)
    entries = scan(table, f"shard = {sql_literal(shard)}" if shard is not None else None).to_pylist()
    pending = [entry for entry in entries if not entry["applied_by"]]
    return InboxSnapshot(table.version, newest(entries), pending)


def with_inbox(records: Iterable[SourceRecord], inbox: InboxSnapshot, shard: str | None) -> Iterator[SourceRecord]:
    """The source's records with the inbox laid over them: an id the inbox names is the inbox's."""
    for record in records:
        source_wide = isinstance(record, SourceRejection) and record.whole_source
        if source_wide or record.doc_id not in inbox.named:
            yield record
    for doc_id, entry in sorted(inbox.named.items()):
        if entry["op"] == UPSERT and (shard is None or entry["shard"] == shard):
            yield SourceDocument(doc_id, entry["text"], entry["title"], f"{INBOX_SOURCE}:{entry['change_id']}")


def mark_applied(store: LanceStore, entries: list[dict], run_id: str, now: datetime) -> int:
    """Mark `entries` applied by `run_id`. A rerun of the same snapshot marks the same rows again, never others."""
    ids = sorted({entry["entry_id"] for entry in entries})
    table = store.table("inbox")
    for start in range(0, len(ids), IN_LIST_SIZE):
        table.update(
            where=sql_in("entry_id", ids[start : start + IN_LIST_SIZE]),
            values={"applied_by": run_id, "applied_at": now},
        )
    return len(ids)


def compact_inbox(store: LanceStore) -> None:
    """Merge the small fragments writes leave (one per commit) so the inbox reads fast. Compaction commutes
    with the server's appends; old versions stay readable for LanceDB's default week, longer than any
    planned change waits for its run."""
    store.table("inbox").optimize()


def inbox_fingerprint(store: LanceStore) -> int:
    """Changes with every write (rows are only appended), not when a run marks writes applied."""
    return store.table("inbox").count_rows()


def newest_write(store: LanceStore, doc_id: str) -> dict | None:
    """The newest write naming `doc_id`, or None."""
    return newest(scan(store.table("inbox"), f"doc_id = {sql_literal(doc_id)}").to_pylist()).get(doc_id)


def applied_by_run(store: LanceStore, run_id: str) -> list[dict]:
    return scan(store.table("inbox"), f"applied_by = {sql_literal(run_id)}", ["entry_id", "received_at"]).to_pylist()
