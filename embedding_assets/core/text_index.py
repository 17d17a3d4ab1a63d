"""The full-text index of `documents.text`, kept by `lance_index` for text and hybrid search
(core/text_search.py). Built with token positions, so a quoted query matches an exact phrase."""

from lancedb.index import FTS

from embedding_assets.core.store import LanceStore

TEXT_COLUMN = "text"
# Rebuilt when rows written since the last build outnumber this share of the indexed ones: LanceDB
# searches unindexed rows too (so results stay right), only more slowly.
REBUILD_UNINDEXED_SHARE = 0.1


def ensure_text_index(store: LanceStore) -> str:
    """The full-text index on `documents.text`: created when missing, rebuilt when much is unindexed."""
    documents = store.table("documents")
    existing = next(
        (index for index in documents.list_indices() if TEXT_COLUMN in index.columns and index.index_type == "FTS"),
        None,
    )
    if existing is None:
        if not documents.count_rows():
            return "none (no documents)"
        documents.create_index(TEXT_COLUMN, config=FTS(with_position=True))
        return "created"
    stats = documents.index_stats(existing.name)
    if stats.num_unindexed_rows > REBUILD_UNINDEXED_SHARE * max(1, stats.num_indexed_rows):
        documents.create_index(TEXT_COLUMN, config=FTS(with_position=True), replace=True)
        return "rebuilt"
    return "current"
