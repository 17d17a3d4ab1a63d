"""The rules a table version must meet to serve, and how many retired tables to keep."""

from datetime import datetime, timezone
from pathlib import Path

from dagster import ConfigurableResource

from embedding_assets.core.eval_sets import EvalSet, eval_set_for_corpus
from embedding_assets.core.evaluation import load_eval_set
from embedding_assets.core.store import LanceStore
from embedding_assets.core.version_diff import DiffThresholds


class PromotionPolicyResource(ConfigurableResource):
    """Evaluation set, recall tolerance against the live version, and retention."""

    # A JSONL file of {"query", "relevant": [doc ids]}, used while it covers the corpus. Empty (the
    # default): a set derived from the corpus itself and frozen in the store.
    eval_set_path: str = ""
    # A candidate may score at most this much below the live version's recall@10.
    recall_tolerance: float = 0.02
    # Retired version tables kept besides the live and previous ones.
    keep_retired_versions: int = 1
    # The version-diff report against the live version blocks a promotion only when these are set:
    # neighbour overlap@10 at least this (0: no limit), documents losing visibility at most this share (1: none).
    diff_min_overlap_at_10: float = 0.0
    diff_max_lost_share: float = 1.0

    def diff_thresholds(self) -> DiffThresholds:
        return DiffThresholds(self.diff_min_overlap_at_10, self.diff_max_lost_share)

    def eval_set(self, store: LanceStore) -> EvalSet:
        given = load_eval_set(Path(self.eval_set_path)) if self.eval_set_path else None
        return eval_set_for_corpus(store, given, self.eval_set_path, datetime.now(timezone.utc))
