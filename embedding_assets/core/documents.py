"""Reads of the `documents` table that every stage makes: live documents and texts by content."""

from collections.abc import Iterable, Iterator

from resources.lance_store import LanceStore, scan, scan_in, sql_literal

LIVE = "deleted = false"


def live_documents(store: LanceStore, shard: str | None = None) -> dict[str, str]:
    """doc_id -> content_hash of the live documents of `shard` (all shards when None)."""
    where = f"shard = {sql_literal(shard)} AND {LIVE}" if shard is not None else LIVE
    rows = scan(store.table("documents"), where, ["doc_id", "content_hash"])
    return dict(zip(rows.column("doc_id").to_pylist(), rows.column("content_hash").to_pylist()))


def live_content_hashes(store: LanceStore) -> set[str]:
    return set(scan(store.table("documents"), LIVE, ["content_hash"]).column("content_hash").to_pylist())


def iter_texts_by_content(store: LanceStore, hashes: Iterable[str]) -> Iterator[dict[str, str]]:
    """content_hash -> text, one dict per bounded lookup, from any live document holding it."""
    for part in scan_in(store.table("documents"), "content_hash", hashes, ["content_hash", "text"], LIVE):
        texts: dict[str, str] = {}
        for content, text in zip(part.column("content_hash").to_pylist(), part.column("text").to_pylist()):
            texts.setdefault(content, text)
        yield texts


def texts_by_content(store: LanceStore, hashes: Iterable[str]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for part in iter_texts_by_content(store, hashes):
        texts.update(part)
    return texts


def doc_ids_by_content(store: LanceStore, hashes: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(doc_id, content_hash) of every live document holding one of `hashes`, across shards."""
    for part in scan_in(store.table("documents"), "content_hash", hashes, ["doc_id", "content_hash"], LIVE):
        yield from zip(part.column("doc_id").to_pylist(), part.column("content_hash").to_pylist())
