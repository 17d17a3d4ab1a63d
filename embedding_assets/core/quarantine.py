"""The quarantine table: every input that was refused, with the stage and a readable reason.

Each stage owns its rows per (shard, model_version): a stage run replaces them, so fixing
the source and re-running releases a document.
"""

from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from embedding_assets.core.schemas import QUARANTINE_SCHEMA
from embedding_assets.core.store import LanceStore, delete_in, scan, sql_literal, upsert


@dataclass(frozen=True)
class QuarantineEntry:
    doc_id: str
    reason: str
    detail: str
    content_hash: str = ""
    source_uri: str = ""


def _owner_filter(stage: str, shard: str, model_version: str) -> str:
    owner = {"stage": stage, "shard": shard, "model_version": model_version}
    return " AND ".join(f"{column} = {sql_literal(value)}" for column, value in owner.items())


def quarantine_id(stage: str, model_version: str, entry: QuarantineEntry) -> str:
    """One row per refused record: a duplicated id is refused once per extra occurrence."""
    return f"{stage}|{model_version}|{entry.doc_id}|{entry.source_uri}"


def replace_quarantine(
    store: LanceStore,
    stage: str,
    shard: str,
    entries: list[QuarantineEntry],
    seen_at: datetime,
    model_version: str = "",
) -> None:
    """Make `entries` the whole quarantine of (stage, shard, model_version)."""
    table = store.table("quarantine")
    current_ids = {quarantine_id(stage, model_version, e) for e in entries}
    previous = scan(table, _owner_filter(stage, shard, model_version), ["id", "reason", "detail", "content_hash"])
    unchanged = {(row["id"], row["reason"], row["detail"], row["content_hash"]) for row in previous.to_pylist()}
    fresh = [
        e
        for e in entries
        if (quarantine_id(stage, model_version, e), e.reason, e.detail, e.content_hash) not in unchanged
    ]
    upsert(
        table,
        pa.Table.from_pylist(
            [
                {
                    "id": quarantine_id(stage, model_version, e),
                    "doc_id": e.doc_id,
                    "shard": shard,
                    "stage": stage,
                    "model_version": model_version,
                    "content_hash": e.content_hash,
                    "reason": e.reason,
                    "detail": e.detail,
                    "source_uri": e.source_uri,
                    "seen_at": seen_at,
                }
                for e in fresh
            ],
            schema=QUARANTINE_SCHEMA,
        ),
        on="id",
    )
    released = set(previous.column("id").to_pylist()) - current_ids
    delete_in(table, "id", released)


def quarantined(store: LanceStore, stage: str, shard: str, model_version: str = "") -> dict[str, QuarantineEntry]:
    """doc_id -> entry, for what (stage, shard, model_version) holds in quarantine."""
    columns = ["doc_id", "reason", "detail", "content_hash", "source_uri"]
    rows = scan(store.table("quarantine"), _owner_filter(stage, shard, model_version), columns)
    return {row["doc_id"]: QuarantineEntry(**row) for row in rows.to_pylist()}


def quarantined_in_corpus(store: LanceStore) -> set[tuple[str, str]]:
    """(doc_id, reason) of every input the corpus stage refused, across shards."""
    rows = scan(store.table("quarantine"), "stage = 'corpus'", ["doc_id", "reason"])
    return set(zip(rows.column("doc_id").to_pylist(), rows.column("reason").to_pylist()))
