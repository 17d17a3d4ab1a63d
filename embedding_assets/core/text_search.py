"""Full-text and hybrid search over a pinned version table.

Texts live once in `documents`, vectors per version in `embeddings__<version>`: LanceDB's built-in
hybrid query needs both in one table, which would copy every text into every version's table. So
the full-text index is built on `documents.text` (with positions, for exact phrases), its matches are
kept only where the pinned version table has rows for them (so a text hit is always a document the
version serves, at the table version the reader pinned), and the two ranked lists are fused here by
reciprocal rank on doc_id, LanceDB's default fusion (Cormack et al., k = 60).
"""

from lancedb.query import MatchQuery, PhraseQuery

from embedding_assets.core.store import LanceStore, sql_in
from embedding_assets.core.text_index import TEXT_COLUMN
from embedding_assets.core.vector_search import HIT_COLUMNS, nearest_documents

RRF_K = 60
MODES = ("vector", "text", "hybrid")


def text_query(query: str):
    """A query wholly in double quotes is an exact phrase; anything else matches its terms (BM25)."""
    stripped = query.strip()
    if len(stripped) > 2 and stripped[0] == stripped[-1] == '"':
        return PhraseQuery(stripped[1:-1], TEXT_COLUMN)
    return MatchQuery(stripped, TEXT_COLUMN)


def text_documents(store: LanceStore, table, query: str, k: int, where: str | None = None) -> list[dict]:
    """The k best full-text matches that `table` (a version's table, as pinned) holds rows for, best
    first: one row per document (its first window), among rows matching `where`."""
    fetch = k * 4
    while True:
        matches = (
            store.table("documents")
            .search(text_query(query), query_type="fts")
            .where("deleted = false", prefilter=True)
            .select(["doc_id", "_score"])
            .limit(fetch)
            .to_arrow()
            .to_pylist()
        )
        scores: dict[str, float] = {}
        for match in matches:
            scores.setdefault(match["doc_id"], match["_score"])
        rows = _rows_of(table, list(scores), where)
        found = [{**rows[doc_id], "_score": score} for doc_id, score in scores.items() if doc_id in rows]
        if len(found) >= k or len(matches) < fetch:
            return found[:k]
        fetch *= 4


def _rows_of(table, doc_ids: list[str], where: str | None) -> dict[str, dict]:
    if not doc_ids:
        return {}
    condition = sql_in("doc_id", doc_ids) + (f" AND ({where})" if where else "")
    columns = [column for column in HIT_COLUMNS if column != "_distance"]
    rows = table.search().where(condition).select(columns).limit(None).to_arrow().to_pylist()
    best: dict[str, dict] = {}
    for row in sorted(rows, key=lambda row: row["chunk"]):
        best.setdefault(row["doc_id"], row)
    return best


def fuse(ranked_lists: list[list[dict]], k: int) -> list[dict]:
    """Reciprocal-rank fusion by doc_id: each list adds 1 / (RRF_K + rank); `_score` is the sum."""
    scores: dict[str, float] = {}
    rows: dict[str, dict] = {}
    for ranked in ranked_lists:
        for rank, row in enumerate(ranked, start=1):
            scores[row["doc_id"]] = scores.get(row["doc_id"], 0.0) + 1.0 / (RRF_K + rank)
            rows.setdefault(row["doc_id"], row)
    order = sorted(scores, key=lambda doc_id: -scores[doc_id])[:k]
    return [{**rows[doc_id], "_score": scores[doc_id]} for doc_id in order]


def collapse_duplicates(rows: list[dict]) -> list[dict]:
    """One row per content (content_hash): the best-ranked of documents with the same normalized text."""
    seen: set[str] = set()
    kept = []
    for row in rows:
        if row["content_hash"] not in seen:
            seen.add(row["content_hash"])
            kept.append(row)
    return kept


def ranked_documents(
    store: LanceStore, table, mode: str, vector, query: str | None, k: int, where: str | None, collapse: bool
) -> list[dict]:
    """The k best rows of `table` for `mode`, each with `_score` (higher is better): cosine similarity for
    vector, BM25 for text, the fused reciprocal-rank score for hybrid."""
    fetch = k * 2 if collapse else k
    vector_rows, text_rows = [], []
    if mode in ("vector", "hybrid"):
        vector_rows = [
            {**row, "_score": 1.0 - row["_distance"]} for row in nearest_documents(table, vector, fetch, where)
        ]
    if mode in ("text", "hybrid"):
        text_rows = text_documents(store, table, query, fetch, where)
    rows = fuse([vector_rows, text_rows], fetch) if mode == "hybrid" else vector_rows or text_rows
    return (collapse_duplicates(rows) if collapse else rows)[:k]
