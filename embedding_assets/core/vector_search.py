"""Search a model version's table: one hit per document, its best window.

A query is text. On a multimodal version it goes through the model's text tower into the space of
its images, so it finds images, pairs (by their image or their caption) and texts alike.
"""

from dataclasses import dataclass

from embedding_assets.core.index_build import rows_per_query, vector_query
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
    return nearest_documents_many(table, [vector], k, where)[0]


def nearest_documents_many(table, vectors, k: int, where: str | None = None) -> list[list[dict]]:
    """`nearest_documents` of each vector, in one search per round for all of them (an evaluation set's
    queries cost one scan of an unindexed table, not one each). A query whose fetched rows hold fewer
    than k documents (windows of one document crowd it) is fetched again, four times deeper."""
    results: list[list[dict]] = [[] for _ in vectors]
    pending, fetch = list(range(len(vectors))), k * 4
    while pending:
        # One vector is a plain search (no query_index); several are a batch.
        batch = vectors[pending[0]] if len(pending) == 1 else [vectors[n] for n in pending]
        query = vector_query(table, batch, fetch)
        if where:
            query = query.where(where, prefilter=True)
        deeper = []
        for n, found in zip(pending, rows_per_query(query.select(HIT_COLUMNS), len(pending))):
            best: dict[str, dict] = {}
            for row in found:
                best.setdefault(row["doc_id"], row)
            if len(best) >= k or len(found) < fetch:
                results[n] = list(best.values())[:k]
            else:
                deeper.append(n)
        pending, fetch = deeper, fetch * 4
    return results


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
