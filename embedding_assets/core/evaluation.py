"""Retrieval quality of a model version: recall@10 and MRR of an evaluation set's queries.

A query is a text and the ids of the documents that answer it. Which set is used (the user's
`EVAL_SET` file, or one derived from the corpus and frozen) is `core/eval_sets.py`'s concern.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from embedding_assets.core.documents import live_documents
from embedding_assets.core.store import LanceStore
from embedding_assets.core.vector_search import nearest_documents

K = 10


@dataclass(frozen=True)
class EvalQuery:
    query: str
    relevant: tuple[str, ...]


@dataclass(frozen=True)
class RetrievalScore:
    recall_at_k: float
    mrr: float
    queries: int
    skipped: int


def load_eval_set(path: Path) -> list[EvalQuery]:
    with open(path, encoding="utf-8") as lines:
        return [EvalQuery(row["query"], tuple(row["relevant"])) for row in map(json.loads, lines) if row]


def evaluate_retrieval(
    store: LanceStore,
    model_version: str,
    encoder,
    queries: list[EvalQuery],
    k: int = K,
    table_version: int | None = None,
) -> RetrievalScore:
    """Recall@k and MRR over the queries whose relevant documents are in the live corpus, searching
    `table_version` of the version's table (its latest when None)."""
    live = live_documents(store)
    applicable = [q for q in queries if any(doc_id in live for doc_id in q.relevant)]
    if not applicable:
        return RetrievalScore(0.0, 0.0, 0, len(queries))
    vectors = encoder.encode_texts([q.query for q in applicable]).vectors
    table = store.open_embeddings_table(model_version, table_version)
    hits, reciprocal = 0, 0.0
    for query, vector in zip(applicable, vectors):
        ranked = [row["doc_id"] for row in nearest_documents(table, vector, k)]
        rank = next((i for i, doc_id in enumerate(ranked, start=1) if doc_id in query.relevant), None)
        if rank:
            hits += 1
            reciprocal += 1.0 / rank
    return RetrievalScore(
        hits / len(applicable), reciprocal / len(applicable), len(applicable), len(queries) - len(applicable)
    )
