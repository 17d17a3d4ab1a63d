"""Vector search for the API: one pinned table version per request, filters on row metadata."""

from dataclasses import dataclass

from embedding_assets.core.store import LanceStore, sql_in, sql_literal
from embedding_assets.core.vector_search import Hit, nearest_hits
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
    hits = nearest_hits(store, table, vector, k, where, SNIPPET_CHARS)
    return SearchResult(pinned, [_hit_payload(hit) for hit in hits])


def _hit_payload(hit: Hit) -> dict:
    provenance = {**hit.provenance, "generated_at": hit.provenance["generated_at"].isoformat()}
    return {
        "doc_id": hit.doc_id,
        "id": hit.row_id,
        "score": hit.score,
        "title": hit.title,
        "snippet": hit.snippet,
        "provenance": provenance,
    }
