"""Search a model version's table: one hit per document, its best window.

A query is text. On a multimodal version it goes through the model's text tower into the space of
its images, so it finds images, pairs (by their image or their caption) and texts alike.
"""

from dataclasses import dataclass

from embedding_assets.core.index_build import vector_query
from embedding_assets.core.store import LanceStore, scan_in

PROVENANCE_COLUMNS = ("content_hash", "chunk", "origin", "origin_hash", "model_id", "model_version", "generated_at")
HIT_COLUMNS = ["id", "doc_id", *PROVENANCE_COLUMNS, "_distance"]
SNIPPET_CHARS = 160


@dataclass(frozen=True)
class Hit:
    doc_id: str
    title: str | None
    score: float
    row_id: str
    origin: str
    # The document's text, or an image's caption ("" for an image without one).
    snippet: str
    modality: str
    # How the row's vector was made: content_hash, chunk, origin, origin_hash, model_id,
    # model_version, generated_at.
    provenance: dict


def nearest_documents(table, vector, k: int, where: str | None = None) -> list[dict]:
    """The k best rows with distinct doc_id (among rows matching `where`), over-fetching until k are found."""
    fetch = k * 4
    while True:
        query = vector_query(table, vector, fetch)
        if where:
            query = query.where(where, prefilter=True)
        rows = query.select(HIT_COLUMNS).to_arrow().to_pylist()
        best: dict[str, dict] = {}
        for row in rows:
            best.setdefault(row["doc_id"], row)
        if len(best) >= k or len(rows) < fetch:
            return sorted(best.values(), key=lambda row: row["_distance"])[:k]
        fetch *= 4


def documents_by_id(store: LanceStore, doc_ids: list[str]) -> dict[str, dict]:
    """Title, text and modality of the hits' documents, for display."""
    documents = {}
    for part in scan_in(store.table("documents"), "doc_id", doc_ids, ["doc_id", "title", "text", "modality"]):
        documents.update({row["doc_id"]: row for row in part.to_pylist()})
    return documents


def nearest_hits(
    store: LanceStore, table, vector, k: int, where: str | None = None, snippet_chars: int = SNIPPET_CHARS
) -> list[Hit]:
    """The k nearest documents in `table` (a version's table, at whatever version it is opened at)."""
    rows = [{**row, "_score": 1.0 - row["_distance"]} for row in nearest_documents(table, vector, k, where)]
    return hits_of(store, rows, snippet_chars)


def hits_of(store: LanceStore, rows: list[dict], snippet_chars: int = SNIPPET_CHARS) -> list[Hit]:
    """Hits of ranked rows of a version's table (each with `_score`), with their documents' title and text."""
    documents = documents_by_id(store, [row["doc_id"] for row in rows])
    hits = []
    for row in rows:
        document = documents.get(row["doc_id"], {})
        hits.append(
            Hit(
                doc_id=row["doc_id"],
                title=document.get("title"),
                score=row["_score"],
                row_id=row["id"],
                origin=row["origin"],
                snippet=(document.get("text") or "")[:snippet_chars],
                modality=document.get("modality") or "text",
                provenance={column: row[column] for column in PROVENANCE_COLUMNS},
            )
        )
    return hits


def search(store: LanceStore, model_version: str, table_version: int, encoder, query: str, k: int = 5) -> list[Hit]:
    vector = encoder.encode_texts([query]).vectors[0]
    return nearest_hits(store, store.open_embeddings_table(model_version, table_version), vector, k)
