"""The frozen evaluation set and retrieval recall of a model version against it.

The shipped set is built deterministically from the embedded Python documentation: the
summary line of a docstring (its first sentence, unique in the corpus) is the query, and the
documents holding that docstring are the relevant ones. `python -m
embedding_assets.core.evaluation` rebuilds it; tests check that the shipped file is exactly
what the build gives. Point EVAL_SET at a JSONL file of {"query", "relevant": [doc ids]} to
use your own.
"""

import hashlib
import json
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from embedding_assets.core.documents import live_documents
from embedding_assets.core.store import LanceStore
from embedding_assets.core.text import content_hash, normalize_text
from embedding_assets.core.vector_search import nearest_documents

EVAL_SET_PATH = Path(__file__).resolve().parents[1] / "eval" / "stdlib_eval_v1.jsonl"
EVAL_SET_SIZE = 300
K = 10
_FIRST_SENTENCE = re.compile(r"^(.{20,200}?[.!?])\s+(?=\S)")


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


def build_eval_set(corpus: pa.Table, size: int = EVAL_SET_SIZE) -> list[EvalQuery]:
    """Summary-line queries from `corpus` (columns id, text), one per distinct docstring."""
    ids_by_content: dict[str, list[str]] = defaultdict(list)
    summary_of: dict[str, str] = {}
    for doc_id, text in zip(corpus.column("id").to_pylist(), corpus.column("text").to_pylist()):
        if not doc_id.startswith("py:"):
            continue
        normalized = normalize_text(text)
        content = content_hash(normalized)
        ids_by_content[content].append(doc_id)
        match = _FIRST_SENTENCE.match(normalized)
        if match and len(match.group(1).split()) >= 5:
            summary_of[content] = match.group(1)
    repeated = {summary for summary, count in Counter(summary_of.values()).items() if count > 1}
    candidates = sorted(
        (content for content, summary in summary_of.items() if summary not in repeated),
        key=lambda content: hashlib.sha1(content.encode()).digest(),
    )
    return [EvalQuery(summary_of[c], tuple(sorted(ids_by_content[c]))) for c in candidates[:size]]


def write_eval_set(path: Path, queries: list[EvalQuery]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(json.dumps({"query": q.query, "relevant": list(q.relevant)}) + "\n" for q in queries), encoding="utf-8"
    )


def load_eval_set(path: Path) -> list[EvalQuery]:
    with open(path, encoding="utf-8") as lines:
        return [EvalQuery(row["query"], tuple(row["relevant"])) for row in map(json.loads, lines) if row]


def evaluate_retrieval(
    store: LanceStore, model_version: str, encoder, queries: list[EvalQuery], k: int = K
) -> RetrievalScore:
    """Recall@k and MRR over the queries whose relevant documents are in the live corpus."""
    live = live_documents(store)
    applicable = [q for q in queries if any(doc_id in live for doc_id in q.relevant)]
    if not applicable:
        return RetrievalScore(0.0, 0.0, 0, len(queries))
    vectors = encoder.encode_texts([q.query for q in applicable]).vectors
    table = store.open_embeddings_table(model_version)
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


if __name__ == "__main__":
    import pyarrow.parquet as pq

    from embedding_assets.core.sources.stdlib_corpus import stdlib_corpus_path

    cache = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".data/cache")
    built = build_eval_set(pq.read_table(stdlib_corpus_path(cache)))
    write_eval_set(EVAL_SET_PATH, built)
    print(f"wrote {len(built)} queries to {EVAL_SET_PATH}")
