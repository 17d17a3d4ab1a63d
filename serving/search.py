"""Vector search for the API: one pinned table version per request, filters on row metadata."""

from dataclasses import dataclass

from embedding_assets.core.search import documents_by_id, nearest_documents
from resources.lance_store import LanceStore, sql_in, sql_literal
from serving.errors import APIError

# Columns of a version's table a search may filter on (equality, or membership for a list).
FILTER_COLUMNS = ("doc_id", "shard", "origin", "content_hash", "origin_hash")
SNIPPET_CHARS = 200


@dataclass(frozen=True)
class SearchResult:
    table_version: int
    hits: list[dict]


def metadata_filter(filters: dict[str, str | list[str]]) -> str | None:
    """A Lance SQL predicate from `{column: value or [values]}`; `doc_id_prefix` matches a prefix."""
    clauses = []
    for column, value in sorted(filters.items()):
        if column == "doc_id_prefix":
            escaped = str(value).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append(f"doc_id LIKE {sql_literal(escaped + '%')} ESCAPE '\\'")
        elif column not in FILTER_COLUMNS:
            allowed = ", ".join((*FILTER_COLUMNS, "doc_id_prefix"))
            raise APIError(400, f"cannot filter on {column!r}; filters: {allowed}", "invalid_filter", "filters")
        elif isinstance(value, list):
            clauses.append(sql_in(column, value) if value else "false")
        else:
            clauses.append(f"{column} = {sql_literal(value)}")
    return " AND ".join(clauses) or None


def search_version(store: LanceStore, model_version: str, vector, k: int, where: str | None) -> SearchResult:
    """Nearest documents in `model_version`'s table, read at the version current when the request began."""
    try:
        table = store.open_embeddings_table(model_version)
    except (ValueError, FileNotFoundError) as error:
        message = f"model {model_version} has no embeddings table yet: materialize its embeddings first"
        raise APIError(404, message, "index_not_found", "model") from error
    pinned = table.version
    table.checkout(pinned)
    rows = nearest_documents(table, vector, k, where)
    documents = documents_by_id(store, [row["doc_id"] for row in rows])
    hits = []
    for row in rows:
        document = documents.get(row["doc_id"], {})
        hits.append(
            {
                "doc_id": row["doc_id"],
                "id": row["id"],
                "score": 1.0 - row["_distance"],
                "title": document.get("title"),
                "snippet": (document.get("text") or "")[:SNIPPET_CHARS],
                "provenance": {
                    "content_hash": row["content_hash"],
                    "chunk": row["chunk"],
                    "origin": row["origin"],
                    "origin_hash": row["origin_hash"],
                    "model_id": row["model_id"],
                    "model_version": row["model_version"],
                    "generated_at": row["generated_at"].isoformat(),
                },
            }
        )
    return SearchResult(pinned, hits)
