"""Vector search for the API: the pinned table version of each request, filters on row metadata."""

from dataclasses import dataclass

from embedding_assets.core.aliases import Alias
from embedding_assets.core.canary import Canary
from embedding_assets.core.gates import readable_table_version
from embedding_assets.core.store import LanceStore, sql_in, sql_literal
from embedding_assets.core.text_search import ranked_documents
from embedding_assets.core.vector_search import Hit, hits_of
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


def search_version(
    store: LanceStore,
    model_version: str,
    vector,
    k: int,
    where: str | None,
    alias: Alias | Canary | None,
    mode: str = "vector",
    query: str | None = None,
    collapse: bool = False,
) -> SearchResult:
    """The best documents for `mode` (vector, text, hybrid) in the table version readers may see: the
    one the alias (or its canary) pins, or for a version named by its key the newest one whose gates
    passed. Never the table's latest."""
    table_version = alias.table_version if alias else readable_table_version(store, model_version)
    if table_version is None:
        message = (
            f"model {model_version} has no table version that passed its gates yet: "
            "materialize its embeddings and live_index (which checks it), or search the 'live' alias"
        )
        raise APIError(404, message, "index_not_found", "model")
    try:
        table = store.open_embeddings_table(model_version, table_version)
    except (ValueError, FileNotFoundError) as error:
        message = f"model {model_version} has no embeddings table: materialize its embeddings first"
        raise APIError(404, message, "index_not_found", "model") from error
    hits = hits_of(store, ranked_documents(store, table, mode, vector, query, k, where, collapse), SNIPPET_CHARS)
    return SearchResult(table_version, [_hit_payload(hit) for hit in hits])


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
