"""Whether a table version may become what readers see, and why.

Two decisions share one gate. A candidate model version replaces the live one only if the
blocking checks pass on the exact table version to be pinned and its retrieval quality on the
evaluation set is no worse than the live version's minus a tolerance. The live version's pin
advances to a newer table version of the same model (after a corpus change, a delete, a
re-embedding) under the same checks, its quality compared with the pinned table version's. A gate
that could not measure fails closed; `force` waives the quality comparison only, never the checks.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from embedding_assets.core.evaluation import (
    EvalQuery,
    RetrievalScore,
    encode_queries,
    evaluate_retrieval,
    score_retrieval,
)
from embedding_assets.core.gates import GateVerdict, check_table_version
from embedding_assets.core.store import LanceStore
from gpu_ops.registry import ModelSpec


@dataclass
class QualityComparison:
    candidate: RetrievalScore
    live: RetrievalScore | None
    tolerance: float
    # What `live` scored: the live version, or the table version the pin holds now.
    baseline: str = "live"

    @property
    def delta(self) -> float | None:
        return None if self.live is None else self.candidate.recall_at_k - self.live.recall_at_k

    @property
    def measured(self) -> bool:
        return self.candidate.queries > 0

    @property
    def passed(self) -> bool:
        """Unmeasured fails closed: a gate that could not look is no evidence of quality."""
        return self.measured and (self.live is None or self.delta >= -self.tolerance)

    def describe(self) -> str:
        if not self.measured:
            return "not measured (fails closed): no query of the evaluation set has a relevant document in this corpus"
        mine = f"recall@10 {self.candidate.recall_at_k:.3f} (MRR {self.candidate.mrr:.3f})"
        if self.live is None:
            return f"{mine}; no other version is live to compare with"
        verdict = "within" if self.passed else "below"
        return (
            f"{mine} vs {self.baseline} {self.live.recall_at_k:.3f} (MRR {self.live.mrr:.3f}): "
            f"delta {self.delta:+.3f}, {verdict} the tolerance of {self.tolerance}"
        )

    def metadata(self) -> dict:
        figures = {
            "measured": self.measured,
            "candidate_recall_at_10": self.candidate.recall_at_k,
            "candidate_mrr": self.candidate.mrr,
            "queries": self.candidate.queries,
            "queries_not_in_corpus": self.candidate.skipped,
            "tolerance": self.tolerance,
        }
        if self.live is not None:
            figures |= {
                "live_recall_at_10": self.live.recall_at_k,
                "live_mrr": self.live.mrr,
                "recall_delta": self.delta,
            }
        return figures


def compare_quality(
    store: LanceStore,
    candidate: tuple[ModelSpec, object],
    live: tuple[ModelSpec, object] | None,
    queries: list[EvalQuery],
    tolerance: float,
    table_version: int | None = None,
    live_table_version: int | None = None,
) -> QualityComparison:
    """The candidate's score at `table_version` against the live version's at the version it pins."""
    (candidate_spec, candidate_encoder) = candidate
    mine = evaluate_retrieval(store, candidate_spec.key, candidate_encoder, queries, table_version=table_version)
    theirs = None
    if live is not None and live[0].key != candidate_spec.key:
        theirs = evaluate_retrieval(store, live[0].key, live[1], queries, table_version=live_table_version)
    return QualityComparison(mine, theirs, tolerance)


@dataclass
class PromotionDecision:
    candidate: str
    promote: bool
    verdict: GateVerdict
    quality: QualityComparison | None = None
    forced: bool = False
    # Other refusals the caller added (the version-diff thresholds), each "<gate>: <why>".
    refusals: list[str] = field(default_factory=list)

    @property
    def table_version(self) -> int:
        return self.verdict.table_version

    @property
    def reasons(self) -> list[str]:
        failed = list(self.verdict.reasons)
        if self.quality is not None and not self.quality.passed:
            failed.append(f"eval_recall: {self.quality.describe()}" + (" (waived by force)" if self.forced else ""))
        return failed + [refusal + (" (waived by force)" if self.forced else "") for refusal in self.refusals]


def decide_promotion(
    store: LanceStore,
    candidate: tuple[ModelSpec, object],
    load_live: Callable[[], tuple[tuple[ModelSpec, object], int] | None],
    queries: list[EvalQuery],
    tolerance: float,
    force: bool = False,
) -> PromotionDecision:
    """Gate the candidate's latest table version; `load_live` gives the live model and the version it pins."""
    spec, encoder = candidate
    verdict = check_table_version(store, spec, encoder.token_spans, store.open_embeddings_table(spec.key).version)
    decision = PromotionDecision(spec.key, False, verdict, forced=force)
    if verdict.passed:
        # The live model is loaded only now: a candidate that fails a gate never needs it.
        live = load_live()
        decision.quality = compare_quality(
            store,
            candidate,
            live[0] if live else None,
            queries,
            tolerance,
            verdict.table_version,
            live[1] if live else None,
        )
        decision.promote = decision.quality.passed or force
    return decision


def decide_advance(
    store: LanceStore, live: tuple[ModelSpec, object], pinned: int, queries: list[EvalQuery], tolerance: float
) -> PromotionDecision:
    """Whether the pin of the live version may move from table version `pinned` to the table's latest."""
    spec, encoder = live
    verdict = check_table_version(store, spec, encoder.token_spans, store.open_embeddings_table(spec.key).version)
    decision = PromotionDecision(spec.key, False, verdict)
    if verdict.passed:
        encoded = encode_queries(store, encoder, queries)
        now = score_retrieval(store, spec.key, encoded, table_version=verdict.table_version)
        before = score_retrieval(store, spec.key, encoded, table_version=pinned)
        decision.quality = QualityComparison(
            now, before if before.queries else None, tolerance, f"table version {pinned}"
        )
        decision.promote = decision.quality.passed
    return decision
