"""What changes for readers when a candidate version replaces the live one: a version-diff report.

Both versions answer the same queries: the evaluation set's, and a sample of the corpus's own
documents used as queries (the text a user might paste). For each query the two top-10 lists
are compared: neighbour overlap@10, how far shared documents moved in rank, and which documents
lost visibility (found by the live version for some query, by the candidate for none) or gained
it. Recall@10 and MRR of both on the evaluation set sit beside them. The report is informational
unless thresholds are set (`DiffThresholds`), which then block a promotion.
"""

import hashlib
import heapq
import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from embedding_assets.core.documents import LIVE_DOCUMENTS, live_doc_ids
from embedding_assets.core.evaluation import EvalQuery, K
from embedding_assets.core.schemas import VERSION_DIFFS_SCHEMA
from embedding_assets.core.store import LanceStore, scan, scan_batches, sql_literal, upsert
from embedding_assets.core.vector_search import nearest_documents_many
from gpu_ops.registry import ModelSpec

# Documents used as queries: enough for a stable overlap, few enough for a slow candidate on a CPU.
SAMPLE_DOCUMENTS = 50
# Characters of a document used as its query (about one window of text).
QUERY_CHARS = 600
EXAMPLES = 2


@dataclass(frozen=True)
class DiffThresholds:
    """0 / 1.0: no limit. A candidate below `min_overlap_at_10`, or losing more than `max_lost_share`
    of the documents the live version surfaces, is not promoted."""

    min_overlap_at_10: float = 0.0
    max_lost_share: float = 1.0


@dataclass
class VersionDiff:
    candidate: str
    live: str
    eval_queries: int
    document_queries: int
    overlap_at_10: float
    eval_overlap_at_10: float
    document_overlap_at_10: float
    # |rank under the live version - rank under the candidate| of documents both put in a top 10.
    rank_shift: dict[str, float]
    visible_live: int
    lost: int
    gained: int
    lost_examples: list[dict] = field(default_factory=list)
    gained_examples: list[dict] = field(default_factory=list)
    candidate_recall_at_10: float = 0.0
    candidate_mrr: float = 0.0
    live_recall_at_10: float = 0.0
    live_mrr: float = 0.0

    @property
    def lost_share(self) -> float:
        return self.lost / self.visible_live if self.visible_live else 0.0

    def describe(self) -> str:
        return (
            f"{self.candidate} vs {self.live}: overlap@10 {self.overlap_at_10:.2f} on {self.eval_queries} evaluation "
            f"and {self.document_queries} document queries; rank shift median {self.rank_shift['p50']:.0f}, "
            f"p90 {self.rank_shift['p90']:.0f}; {self.lost} documents lost visibility "
            f"({self.lost_share:.1%} of {self.visible_live}), {self.gained} gained; recall@10 "
            f"{self.candidate_recall_at_10:.3f} vs {self.live_recall_at_10:.3f}, MRR {self.candidate_mrr:.3f} "
            f"vs {self.live_mrr:.3f}"
        )

    def metadata(self) -> dict:
        return {
            "diff_overlap_at_10": round(self.overlap_at_10, 4),
            "diff_eval_overlap_at_10": round(self.eval_overlap_at_10, 4),
            "diff_document_overlap_at_10": round(self.document_overlap_at_10, 4),
            "diff_rank_shift": json.dumps(self.rank_shift),
            "diff_lost_documents": self.lost,
            "diff_gained_documents": self.gained,
            "diff_lost_share": round(self.lost_share, 4),
            "diff_lost_examples": json.dumps(self.lost_examples),
            "diff_gained_examples": json.dumps(self.gained_examples),
            "diff_queries": f"{self.eval_queries} evaluation + {self.document_queries} documents",
            "diff_candidate_recall_at_10": round(self.candidate_recall_at_10, 4),
            "diff_candidate_mrr": round(self.candidate_mrr, 4),
            "diff_live_recall_at_10": round(self.live_recall_at_10, 4),
            "diff_live_mrr": round(self.live_mrr, 4),
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "VersionDiff":
        return cls(**json.loads(text))


def diff_refusal(diff: VersionDiff, thresholds: DiffThresholds) -> str | None:
    """Why the thresholds refuse the candidate, or None."""
    reasons = []
    if thresholds.min_overlap_at_10 and diff.overlap_at_10 < thresholds.min_overlap_at_10:
        reasons.append(f"overlap@10 {diff.overlap_at_10:.3f} < {thresholds.min_overlap_at_10}")
    if thresholds.max_lost_share < 1.0 and diff.lost_share > thresholds.max_lost_share:
        reasons.append(f"{diff.lost_share:.1%} of documents lost visibility > {thresholds.max_lost_share:.1%}")
    return "; ".join(reasons) or None


def document_queries(store: LanceStore, size: int = SAMPLE_DOCUMENTS) -> list[tuple[str, str]]:
    """(doc_id, text) of `size` live documents chosen by a hash of their content: the same ones on every run."""
    batches = scan_batches(store.table("documents"), f"{LIVE_DOCUMENTS} AND text != ''", ["doc_id", "text"])
    rows = (row for batch in batches for row in batch.to_pylist())

    def rank(row: dict) -> bytes:
        return hashlib.sha1(f"version-diff:{row['doc_id']}".encode()).digest()

    return [(row["doc_id"], row["text"][:QUERY_CHARS]) for row in heapq.nsmallest(size, rows, key=rank)]


def _ranked(store: LanceStore, spec: ModelSpec, encoder, table_version: int | None, texts: list[str]):
    if not texts:
        return []
    table = store.open_embeddings_table(spec.key, table_version)
    vectors = encoder.encode_texts(texts).vectors
    return [[row["doc_id"] for row in found] for found in nearest_documents_many(table, vectors, K)]


def _score(ranked: list[list[str]], queries: list[EvalQuery]) -> tuple[float, float]:
    ranks = [next((i for i, d in enumerate(r, start=1) if d in q.relevant), None) for r, q in zip(ranked, queries)]
    found = [rank for rank in ranks if rank]
    return (len(found) / len(queries), sum(1.0 / rank for rank in found) / len(queries)) if queries else (0.0, 0.0)


def _overlap(pairs: list[tuple[list[str], list[str]]]) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in pairs])) if pairs else 0.0


def compute_version_diff(
    store: LanceStore,
    candidate: tuple[ModelSpec, object, int | None],
    live: tuple[ModelSpec, object, int | None],
    eval_queries: list[EvalQuery],
    sample_documents: int = SAMPLE_DOCUMENTS,
) -> VersionDiff:
    """The candidate (spec, encoder, table version) against the live one, on the same queries."""
    corpus = live_doc_ids(store, {doc_id for query in eval_queries for doc_id in query.relevant})
    applicable = [q for q in eval_queries if any(doc_id in corpus for doc_id in q.relevant)]
    documents = document_queries(store, sample_documents)
    texts = [q.query for q in applicable] + [text for _, text in documents]
    labels = [f"query: {q.query[:120]}" for q in applicable] + [f"document {doc_id}" for doc_id, _ in documents]
    mine = _ranked(store, candidate[0], candidate[1], candidate[2], texts)
    theirs = _ranked(store, live[0], live[1], live[2], texts)
    pairs = list(zip(theirs, mine))
    shifts = [abs(a.index(d) - b.index(d)) for a, b in pairs for d in set(a) & set(b)]
    found_live = {d: label for ranked, label in zip(theirs, labels) for d in ranked}
    found_mine = {d: label for ranked, label in zip(mine, labels) for d in ranked}
    lost = sorted(found_live.keys() - found_mine.keys())
    gained = sorted(found_mine.keys() - found_live.keys())
    candidate_recall, candidate_mrr = _score(mine[: len(applicable)], applicable)
    live_recall, live_mrr = _score(theirs[: len(applicable)], applicable)
    return VersionDiff(
        candidate=candidate[0].key,
        live=live[0].key,
        eval_queries=len(applicable),
        document_queries=len(documents),
        overlap_at_10=_overlap(pairs),
        eval_overlap_at_10=_overlap(pairs[: len(applicable)]),
        document_overlap_at_10=_overlap(pairs[len(applicable) :]),
        rank_shift={
            "p50": float(np.percentile(shifts, 50)) if shifts else 0.0,
            "p90": float(np.percentile(shifts, 90)) if shifts else 0.0,
            "max": float(max(shifts, default=0)),
            "unchanged_share": round(shifts.count(0) / len(shifts), 4) if shifts else 0.0,
        },
        visible_live=len(found_live),
        lost=len(lost),
        gained=len(gained),
        lost_examples=[{"doc_id": d, "found_by_live_for": found_live[d]} for d in lost[:EXAMPLES]],
        gained_examples=[{"doc_id": d, "found_by_candidate_for": found_mine[d]} for d in gained[:EXAMPLES]],
        candidate_recall_at_10=candidate_recall,
        candidate_mrr=candidate_mrr,
        live_recall_at_10=live_recall,
        live_mrr=live_mrr,
    )


def _diff_id(candidate: str, candidate_table_version: int, live: str, live_table_version: int) -> str:
    return f"{candidate}@{candidate_table_version}:{live}@{live_table_version}"


def stored_diff(store: LanceStore, candidate: str, candidate_table_version: int, live: str, live_table_version: int):
    """The report already made for exactly these two table versions (by the check), if any."""
    key = _diff_id(candidate, candidate_table_version, live, live_table_version)
    rows = scan(store.table("version_diffs"), f"id = {sql_literal(key)}", ["report"]).to_pylist()
    return VersionDiff.from_json(rows[0]["report"]) if rows else None


def store_diff(store: LanceStore, diff: VersionDiff, candidate_table_version: int, live_table_version: int) -> None:
    row = {
        "id": _diff_id(diff.candidate, candidate_table_version, diff.live, live_table_version),
        "report": diff.to_json(),
    }
    upsert(store.table("version_diffs"), pa.Table.from_pylist([row], schema=VERSION_DIFFS_SCHEMA), on="id")


def version_diff_for(
    store: LanceStore,
    candidate: tuple[ModelSpec, object, int],
    live: tuple[ModelSpec, object, int],
    eval_queries: list[EvalQuery],
) -> VersionDiff:
    """The stored report for these two table versions, else a new one (stored)."""
    found = stored_diff(store, candidate[0].key, candidate[2], live[0].key, live[2])
    if found is None:
        found = compute_version_diff(store, candidate, live, eval_queries)
        store_diff(store, found, candidate[2], live[2])
    return found
