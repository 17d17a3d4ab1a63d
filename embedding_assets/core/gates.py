"""Whether one table version of a model version may serve readers, and the record of that verdict.

Readers never open a table's latest version: a write is visible only once the blocking checks
passed on exactly the table version that holds it. The alias pins such a version; a version read
by its own key (the serving API, `make search --version`, exports) opens the newest table version
with a passing verdict. Every verdict is kept, so what was checked, when and why it failed can be
read back.
"""

from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from embedding_assets.core.ann_recall import ann_recall
from embedding_assets.core.index_checks import (
    CheckOutcome,
    count_parity,
    single_model_version,
    vector_sanity,
)
from embedding_assets.core.schemas import GATE_VERDICTS_SCHEMA
from embedding_assets.core.store import LanceStore, scan, sql_literal, upsert
from gpu_ops.registry import ModelSpec


@dataclass
class GateVerdict:
    model_version: str
    table_version: int
    outcomes: dict[str, CheckOutcome]

    @property
    def passed(self) -> bool:
        return all(outcome.passed for outcome in self.outcomes.values())

    @property
    def reasons(self) -> list[str]:
        return [f"{name}: {outcome.description}" for name, outcome in self.outcomes.items() if not outcome.passed]


def trained_weights(spec: ModelSpec) -> CheckOutcome:
    """A model with random weights (a test fixture) embeds nothing meaningful: it never serves."""
    if spec.random_weights:
        return CheckOutcome(False, f"{spec.key} has random weights (source {spec.source}): never served")
    return CheckOutcome(True, "trained weights")


def check_table_version(store: LanceStore, spec: ModelSpec, token_spans, table_version: int) -> GateVerdict:
    """The blocking checks, each on `table_version` of the version's table."""
    return GateVerdict(
        spec.key,
        table_version,
        {
            "trained_weights": trained_weights(spec),
            "count_parity": count_parity(store, spec, token_spans, table_version),
            "single_model_version": single_model_version(store, spec, table_version),
            "vector_sanity": vector_sanity(store, spec, table_version),
            "ann_recall": ann_recall(store, spec, table_version),
        },
    )


def record_verdict(store: LanceStore, verdict: GateVerdict, now: datetime) -> None:
    row = {
        "id": f"{verdict.model_version}@{verdict.table_version}",
        "model_version": verdict.model_version,
        "table_version": verdict.table_version,
        "passed": verdict.passed,
        "reasons": "; ".join(verdict.reasons),
        "checked_at": now,
    }
    upsert(store.table("gate_verdicts"), pa.Table.from_pylist([row], schema=GATE_VERDICTS_SCHEMA), on="id")


def readable_table_version(store: LanceStore, model_version: str) -> int | None:
    """The newest table version of `model_version` whose blocking checks passed, if any."""
    passed = scan(
        store.table("gate_verdicts"),
        f"model_version = {sql_literal(model_version)} AND passed = true",
        ["table_version"],
    ).column("table_version")
    return max(passed.to_pylist(), default=None)
