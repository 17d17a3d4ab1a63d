"""Whether a candidate model version may replace the live one, and why.

The gates are the blocking checks, evaluated again at the moment of the switch (a table can
change between its checks and its promotion), plus retrieval quality on the frozen evaluation
set: the candidate must score no worse than the live version minus a tolerance. `force`
waives the quality comparison only: an incomplete or insane table never goes live.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from embedding_assets.core.evaluation import EvalQuery, RetrievalScore, evaluate_retrieval
from embedding_assets.core.index_checks import (
    CheckOutcome,
    ann_recall,
    count_parity,
    single_model_version,
    vector_sanity,
)
from embedding_assets.core.store import LanceStore
from gpu_ops.registry import ModelSpec


@dataclass
class QualityComparison:
    candidate: RetrievalScore
    live: RetrievalScore | None
    tolerance: float

    @property
    def delta(self) -> float | None:
        return None if self.live is None else self.candidate.recall_at_k - self.live.recall_at_k

    @property
    def measured(self) -> bool:
        return self.candidate.queries > 0

    @property
    def passed(self) -> bool:
        """Unmeasured (no query applies to this corpus: point EVAL_SET at your own set) is no veto."""
        return not self.measured or self.live is None or self.delta >= -self.tolerance

    def describe(self) -> str:
        if not self.measured:
            return "not measured: no query of the evaluation set has a relevant document in this corpus"
        mine = f"recall@10 {self.candidate.recall_at_k:.3f} (MRR {self.candidate.mrr:.3f})"
        if self.live is None:
            return f"{mine}; no other version is live to compare with"
        verdict = "within" if self.passed else "below"
        return (
            f"{mine} vs live {self.live.recall_at_k:.3f} (MRR {self.live.mrr:.3f}): "
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
) -> QualityComparison:
    (candidate_spec, candidate_encoder) = candidate
    mine = evaluate_retrieval(store, candidate_spec.key, candidate_encoder, queries)
    theirs = None
    if live is not None and live[0].key != candidate_spec.key:
        theirs = evaluate_retrieval(store, live[0].key, live[1], queries)
    return QualityComparison(mine, theirs, tolerance)


@dataclass
class PromotionDecision:
    candidate: str
    promote: bool
    gates: dict[str, CheckOutcome] = field(default_factory=dict)
    quality: QualityComparison | None = None
    forced: bool = False

    @property
    def reasons(self) -> list[str]:
        failed = [f"{name}: {outcome.description}" for name, outcome in self.gates.items() if not outcome.passed]
        if self.quality is not None and not self.quality.passed:
            failed.append(f"eval_recall: {self.quality.describe()}" + (" (waived by force)" if self.forced else ""))
        return failed


def decide_promotion(
    store: LanceStore,
    candidate: tuple[ModelSpec, object],
    load_live: Callable[[], tuple[ModelSpec, object] | None],
    queries: list[EvalQuery],
    tolerance: float,
    force: bool = False,
) -> PromotionDecision:
    spec, encoder = candidate
    gates = {
        "count_parity": count_parity(store, spec, encoder.token_spans),
        "single_model_version": single_model_version(store, spec),
        "vector_sanity": vector_sanity(store, spec),
        "ann_recall": ann_recall(store, spec),
    }
    decision = PromotionDecision(spec.key, False, gates, forced=force)
    if all(outcome.passed for outcome in gates.values()):
        # The live model is loaded only now: a candidate that fails a gate never needs it.
        decision.quality = compare_quality(store, candidate, load_live(), queries, tolerance)
        decision.promote = decision.quality.passed or force
    return decision
