"""The rules a candidate version must meet to go live, and how many retired tables to keep."""

from pathlib import Path

from dagster import ConfigurableResource

from embedding_assets.core.evaluation import EvalQuery, load_eval_set


class PromotionPolicyResource(ConfigurableResource):
    """Frozen evaluation set, recall tolerance against the live version, and retention."""

    eval_set_path: str
    # A candidate may score at most this much below the live version's recall@10.
    recall_tolerance: float = 0.02
    # Retired version tables kept besides the live and previous ones.
    keep_retired_versions: int = 1

    def eval_set(self) -> list[EvalQuery]:
        return load_eval_set(Path(self.eval_set_path))
