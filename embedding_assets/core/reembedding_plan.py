"""What re-embedding the corpus with a model version will cost, said before the first model call.

`core.reembedding_count` counts the representatives the backfill will really encode, their windows
and tokens, and times a sample on the run's device; the plan turns those into an ETA (calls /
measured rate / GPU runs allowed at once) and a price. The budget stops a backfill whose plan exceeds
it; after the backfill, `plan_errors` says how far each estimate was from what happened.
"""

import json
from dataclasses import asdict, dataclass
from datetime import datetime

import pyarrow as pa

from embedding_assets.core.schemas import REEMBEDDING_PLANS_SCHEMA
from embedding_assets.core.store import LanceStore, scan, sql_literal
from gpu_ops.batch_api import BATCH_PRICE_FACTOR


@dataclass(frozen=True)
class Budget:
    """Limits on one version's re-embedding; 0 means no limit."""

    max_cost_usd: float = 0.0
    max_hours: float = 0.0


@dataclass(frozen=True)
class ReembeddingPlan:
    model_version: str
    documents: int
    # Documents whose rows the backfill writes, and how they get their vectors.
    to_write: int
    up_to_date: int
    reuse_exact: int
    reuse_near: int
    reuse_stored: int
    # Representatives the model encodes (the backfill's model_calls) when shards run one after another;
    # shards running at once may each encode a representative they share, at most `calls_if_shards_race`.
    calls: int
    calls_if_shards_race: int
    quarantined: int
    windows: int
    tokens: int
    shards_to_run: int
    # The measured throughput: a timed sample on the run's own device, and the model's load time.
    device: str
    sample_calls: int
    sample_seconds: float
    load_seconds: float
    concurrent_runs: int
    price_per_1k_tokens: float
    batch_api: bool
    gpu_hour_usd: float

    @property
    def calls_per_second(self) -> float:
        return self.sample_calls / self.sample_seconds if self.sample_seconds else 0.0

    @property
    def eta_seconds(self) -> float:
        """Encoding at the measured rate plus one model load per shard run, spread over the runs allowed at once."""
        encoding = self.calls / self.calls_per_second if self.calls_per_second else 0.0
        return (encoding + self.shards_to_run * self.load_seconds) / max(1, self.concurrent_runs)

    @property
    def cost_usd(self) -> float:
        """At list price: a hosted model's tokens, or a local model's GPU hours."""
        if self.price_per_1k_tokens:
            return self.tokens / 1000 * self.price_per_1k_tokens
        return self.eta_seconds * max(1, self.concurrent_runs) / 3600 * self.gpu_hour_usd

    @property
    def batch_cost_usd(self) -> float | None:
        return self.tokens / 1000 * self.price_per_1k_tokens * BATCH_PRICE_FACTOR if self.price_per_1k_tokens else None

    @property
    def billed_cost_usd(self) -> float:
        """What the backfill will pay: the Batch API price where the version uses it."""
        return self.batch_cost_usd if self.batch_api and self.batch_cost_usd is not None else self.cost_usd

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ReembeddingPlan":
        return cls(**json.loads(text))

    def metadata(self) -> dict:
        return {
            "documents": self.documents,
            "documents_to_write": self.to_write,
            "up_to_date": self.up_to_date,
            "reuse_exact_dup": self.reuse_exact,
            "reuse_near_dup": self.reuse_near,
            "reuse_stored_vectors": self.reuse_stored,
            "model_calls": self.calls,
            "model_calls_if_shards_race": self.calls_if_shards_race,
            "quarantined_too_long": self.quarantined,
            "windows": self.windows,
            "tokens": self.tokens,
            "shards_to_run": self.shards_to_run,
            "device": self.device,
            "measured_calls_per_second": round(self.calls_per_second, 2),
            "measured_sample": f"{self.sample_calls} representatives in {self.sample_seconds:.2f}s",
            "model_load_seconds": round(self.load_seconds, 2),
            "gpu_runs_at_once": self.concurrent_runs,
            "eta_hours": round(self.eta_seconds / 3600, 4)
            if self.sample_calls
            else "not measured (hosted or nothing to do)",
            "estimated_cost_usd": round(self.cost_usd, 6),
            "estimated_batch_cost_usd": round(self.batch_cost_usd, 6) if self.batch_cost_usd is not None else "n/a",
            "billed_at": "Batch API price" if self.batch_api and self.price_per_1k_tokens else "list price",
        }


def over_budget(plan: ReembeddingPlan, budget: Budget) -> str | None:
    """Why the plan exceeds the budget, with its numbers; None when it fits."""
    reasons = []
    if budget.max_cost_usd and plan.billed_cost_usd > budget.max_cost_usd:
        reasons.append(
            f"estimated cost ${plan.billed_cost_usd:,.4f} > max_reembed_cost ${budget.max_cost_usd:,.4f} "
            f"({plan.calls:,} calls, {plan.tokens:,} tokens)"
        )
    hours = plan.eta_seconds / 3600
    if budget.max_hours and hours > budget.max_hours:
        reasons.append(
            f"estimated {hours:,.3f} h > max_reembed_hours {budget.max_hours:,.3f} h ({plan.calls:,} calls at "
            f"{plan.calls_per_second:,.2f}/s measured on {plan.device}, {plan.concurrent_runs} GPU run(s) at once)"
        )
    return "; ".join(reasons) or None


def record_plan(store: LanceStore, plan: ReembeddingPlan, reason: str | None, now: datetime) -> None:
    row = {
        "model_version": plan.model_version,
        "planned_at": now,
        "within_budget": reason is None,
        "reason": reason or "",
        "plan": plan.to_json(),
    }
    store.table("reembedding_plans").add(pa.Table.from_pylist([row], schema=REEMBEDDING_PLANS_SCHEMA))


@dataclass(frozen=True)
class RecordedPlan:
    plan: ReembeddingPlan
    planned_at: datetime
    within_budget: bool
    reason: str


def latest_plan(store: LanceStore, model_version: str) -> RecordedPlan | None:
    rows = scan(store.table("reembedding_plans"), f"model_version = {sql_literal(model_version)}").to_pylist()
    if not rows:
        return None
    row = max(rows, key=lambda r: r["planned_at"])
    return RecordedPlan(ReembeddingPlan.from_json(row["plan"]), row["planned_at"], row["within_budget"], row["reason"])


@dataclass(frozen=True)
class Outcome:
    """What the backfill did, summed over its shard runs."""

    calls: int
    tokens: int
    cost_usd: float
    wall_seconds: float


def plan_errors(plan: ReembeddingPlan, outcome: Outcome) -> dict[str, dict[str, float]]:
    """Each estimate beside what happened, and its relative error ((planned - actual) / actual)."""
    pairs = {
        "calls": (plan.calls, outcome.calls),
        "tokens": (plan.tokens, outcome.tokens),
        "cost_usd": (plan.billed_cost_usd, outcome.cost_usd),
        "wall_seconds": (plan.eta_seconds, outcome.wall_seconds),
    }
    return {
        name: {
            "planned": round(planned, 6),
            "actual": round(actual, 6),
            "error": round((planned - actual) / actual, 4) if actual else (0.0 if not planned else float("inf")),
        }
        for name, (planned, actual) in pairs.items()
    }
