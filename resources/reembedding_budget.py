"""What a model version's re-embedding may cost and take, and what a GPU hour costs."""

from dagster import ConfigurableResource

from embedding_assets.core.reembedding_plan import Budget


class ReembeddingBudgetResource(ConfigurableResource):
    """Limits checked by each version's re-embedding plan before its backfill makes any model call."""

    # Dollars at the price the backfill pays (hosted: tokens at list or Batch API price; local: GPU hours);
    # 0: no limit.
    max_reembed_cost: float = 0.0
    # Hours of the backfill at the measured rate over the GPU runs allowed at once; 0: no limit.
    max_reembed_hours: float = 0.0
    # What an hour of the GPU a backfill run gets costs, to price local models (0: not priced).
    gpu_hour_usd: float = 0.0
    # GPU runs allowed at once; 0: read from the instance's `gpu` tag concurrency limit.
    gpu_concurrent_runs: int = 0

    def budget(self) -> Budget:
        return Budget(self.max_reembed_cost, self.max_reembed_hours)
