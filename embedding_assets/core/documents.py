"""Reads of the `documents` table that every stage makes: live documents, texts and images by content.

A document's `text` is its text, or its caption when it is an image ("" for an image alone).
"""

from collections.abc import Iterable, Iterator

from embedding_assets.core.store import LanceStore, scan, scan_in, sql_literal

# The SQL filter of documents that are not tombstones.
LIVE_DOCUMENTS = "deleted = false"


def _live_in(shard: str | None) -> str:
    return f"shard = {sql_literal(shard)} AND {LIVE_DOCUMENTS}" if shard is not None else LIVE_DOCUMENTS


def live_documents(store: LanceStore, shard: str | None = None) -> dict[str, str]:
    """doc_id -> content_hash of the live documents of `shard` (all shards when None)."""
    rows = scan(store.table("documents"), _live_in(shard), ["doc_id", "content_hash"])
    return dict(zip(rows.column("doc_id").to_pylist(), rows.column("content_hash").to_pylist()))


def live_documents_with_modality(store: LanceStore, shard: str | None = None) -> dict[str, tuple[str, str]]:
    """doc_id -> (content_hash, modality) of the live documents of `shard` (all shards when None)."""
    rows = scan(store.table("documents"), _live_in(shard), ["doc_id", "content_hash", "modality"])
    columns = (rows.column(name).to_pylist() for name in ("doc_id", "content_hash", "modality"))
    return {doc_id: (content, modality) for doc_id, content, modality in zip(*columns)}


def live_doc_ids(store: LanceStore, doc_ids: Iterable[str]) -> set[str]:
    """Those of `doc_ids` that are live: bounded lookups of the ids asked about, so a check that needs a few
    hundred ids does not hold every doc id of the corpus in memory."""
    live: set[str] = set()
    for part in scan_in(store.table("documents"), "doc_id", doc_ids, ["doc_id"], LIVE_DOCUMENTS):
        live.update(part.column("doc_id").to_pylist())
    return live


def live_content_modalities(store: LanceStore) -> dict[str, str]:
    """content_hash -> modality of every live content (one content hash never spans two modalities)."""
    rows = scan(store.table("documents"), LIVE_DOCUMENTS, ["content_hash", "modality"])
    return dict(zip(rows.column("content_hash").to_pylist(), rows.column("modality").to_pylist()))


def iter_texts_by_content(store: LanceStore, hashes: Iterable[str]) -> Iterator[dict[str, str]]:
    """content_hash -> text, one dict per bounded lookup, from any live document holding it."""
    for part in scan_in(store.table("documents"), "content_hash", hashes, ["content_hash", "text"], LIVE_DOCUMENTS):
        texts: dict[str, str] = {}
        for content, text in zip(part.column("content_hash").to_pylist(), part.column("text").to_pylist()):
            texts.setdefault(content, text)
        yield texts


def texts_by_content(store: LanceStore, hashes: Iterable[str]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for part in iter_texts_by_content(store, hashes):
        texts.update(part)
    return texts


def images_by_content(store: LanceStore, hashes: Iterable[str]) -> dict[str, bytes]:
    """content_hash -> image bytes, for those of `hashes` that are images or pairs."""
    images: dict[str, bytes] = {}
    for part in scan_in(
        store.table("documents"),
        "content_hash",
        hashes,
        ["content_hash", "image"],
        f"{LIVE_DOCUMENTS} AND image IS NOT NULL",
    ):
        for content, image in zip(part.column("content_hash").to_pylist(), part.column("image").to_pylist()):
            images.setdefault(content, image)
    return images


def doc_ids_by_content(store: LanceStore, hashes: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(doc_id, content_hash) of every live document holding one of `hashes`, across shards."""
    for part in scan_in(store.table("documents"), "content_hash", hashes, ["doc_id", "content_hash"], LIVE_DOCUMENTS):
        yield from zip(part.column("doc_id").to_pylist(), part.column("content_hash").to_pylist())
