"""Search a model version's table: one hit per document, its best window."""

from dataclasses import dataclass

from embedding_assets.core.index_build import vector_query
from resources.lance_store import LanceStore, scan_in

HIT_COLUMNS = ["id", "doc_id", "chunk", "content_hash", "origin", "origin_hash", "model_version", "_distance"]


@dataclass(frozen=True)
class Hit:
    doc_id: str
    title: str | None
    score: float
    row_id: str
    origin: str
    snippet: str


def nearest_documents(table, vector, k: int) -> list[dict]:
    """The k best rows with distinct doc_id, over-fetching until k documents are found."""
    fetch = k * 4
    while True:
        rows = vector_query(table, vector, fetch).select(HIT_COLUMNS).to_arrow().to_pylist()
        best: dict[str, dict] = {}
        for row in rows:
            best.setdefault(row["doc_id"], row)
        if len(best) >= k or len(rows) < fetch:
            return sorted(best.values(), key=lambda row: row["_distance"])[:k]
        fetch *= 4


def search(store: LanceStore, model_version: str, encoder, query: str, k: int = 5) -> list[Hit]:
    vector = encoder.encode_texts([query]).vectors[0]
    rows = nearest_documents(store.open_embeddings_table(model_version), vector, k)
    documents = {}
    for part in scan_in(
        store.table("documents"), "doc_id", [row["doc_id"] for row in rows], ["doc_id", "title", "text"]
    ):
        documents.update({row["doc_id"]: row for row in part.to_pylist()})
    return [
        Hit(
            doc_id=row["doc_id"],
            title=documents.get(row["doc_id"], {}).get("title"),
            score=1.0 - row["_distance"],
            row_id=row["id"],
            origin=row["origin"],
            snippet=(documents.get(row["doc_id"], {}).get("text") or "")[:160],
        )
        for row in rows
    ]
