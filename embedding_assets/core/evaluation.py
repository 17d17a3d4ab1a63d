"""Retrieval quality of a model version: recall@10 and MRR of an evaluation set's queries.

A query is a text and the ids of the documents that answer it. Which set is used (the user's
`EVAL_SET` file, or one derived from the corpus and frozen) is `core/eval_sets.py`'s concern.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedding_assets.core.documents import live_doc_ids
from embedding_assets.core.model_memo import remembered
from embedding_assets.core.store import LanceStore
from embedding_assets.core.vector_search import nearest_documents_many

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


@dataclass
class EncodedQueries:
    """The queries whose relevant documents are in the live corpus, encoded once by one model: a
    version's table versions are scored with the same vectors."""

    applicable: list[EvalQuery]
    vectors: object
    skipped: int


def encode_queries(store: LanceStore, encoder, queries: list[EvalQuery]) -> EncodedQueries:
    live = live_doc_ids(store, {doc_id for query in queries for doc_id in query.relevant})
    applicable = [q for q in queries if any(doc_id in live for doc_id in q.relevant)]
    return EncodedQueries(
        applicable, query_vectors(store, encoder, [q.query for q in applicable]), len(queries) - len(applicable)
    )


def query_vectors(store: LanceStore, encoder, texts: list[str]) -> np.ndarray:
    """The vectors of `texts` under the encoder's model version, each encoded once and kept in `query_vectors`
    (core/model_memo.py)."""
    if not texts:
        return np.zeros((0, encoder.spec.dim), dtype=np.float32)
    text_of = {hashlib.sha256(text.encode()).hexdigest(): text for text in texts}

    def encode(digests: list[str]) -> dict:
        return dict(zip(digests, encoder.encode_texts([text_of[d] for d in digests]).vectors.tolist()))

    vectors = remembered(store, "query_vectors", "vector", encoder.spec, text_of, encode)
    return np.asarray([vectors[hashlib.sha256(text.encode()).hexdigest()] for text in texts], dtype=np.float32)


def score_retrieval(
    store: LanceStore, model_version: str, encoded: EncodedQueries, k: int = K, table_version: int | None = None
) -> RetrievalScore:
    """Recall@k and MRR of encoded queries, searching `table_version` of the version's table (its latest when None)."""
    if not encoded.applicable:
        return RetrievalScore(0.0, 0.0, 0, encoded.skipped)
    table = store.open_embeddings_table(model_version, table_version)
    hits, reciprocal = 0, 0.0
    for query, found in zip(encoded.applicable, nearest_documents_many(table, encoded.vectors, k)):
        ranked = [row["doc_id"] for row in found]
        rank = next((i for i, doc_id in enumerate(ranked, start=1) if doc_id in query.relevant), None)
        if rank:
            hits += 1
            reciprocal += 1.0 / rank
    applicable = len(encoded.applicable)
    return RetrievalScore(hits / applicable, reciprocal / applicable, applicable, encoded.skipped)


def evaluate_retrieval(
    store: LanceStore,
    model_version: str,
    encoder,
    queries: list[EvalQuery],
    k: int = K,
    table_version: int | None = None,
) -> RetrievalScore:
    """Recall@k and MRR over the queries whose relevant documents are in the live corpus."""
    return score_retrieval(store, model_version, encode_queries(store, encoder, queries), k, table_version)
